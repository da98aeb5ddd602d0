"""The notebooks as the report publishes them (daug/report/notebooks.py): a progress bar shows its
finished or last state, never every refresh; nothing else in a stream changes."""
from daug.report.notebooks import last_bar_states

NESTED = ("augment bt:   0%|          | 0/80 [00:00<?, ?rec/s]\n"
          + "".join(f"generate:  {p:2d}%|          | {p}/100 [00:0{i}<?, ?prompt/s]\n" for i, p in enumerate((0, 10, 50)))
          + "generate: 100%|##########| 100/100 [00:05<00:00, 20prompt/s]\n\n"
          + "augment bt: 100%|##########| 80/80 [00:06<00:00, 13rec/s]\n"
          + "made 80 augmentations\n")
PER_SEED = ("test loss:  50%|#####     | 150/300\ntest loss: 100%|##########| 300/300\n"
            "test loss:  30%|###       | 90/300\ntest loss: 100%|##########| 300/300\n")


def test_nested_bars_keep_their_finished_state_only():
    assert last_bar_states(NESTED).split("\n") == [
        "generate: 100%|##########| 100/100 [00:05<00:00, 20prompt/s]",
        "augment bt: 100%|##########| 80/80 [00:06<00:00, 13rec/s]", "made 80 augmentations", ""]


def test_each_finished_bar_stays_and_an_unfinished_one_keeps_its_last_refresh():
    assert last_bar_states(PER_SEED).split("\n") == ["test loss: 100%|##########| 300/300"] * 2 + [""]
    stopped = "train:  10%|#  | 3/30\ntrain:  20%|## | 6/30\nKeyboardInterrupt\n"
    assert last_bar_states(stopped) == "train:  20%|## | 6/30\nKeyboardInterrupt\n"
    plain = "seed 0: best val loss 4.33 at step 30\nratio: 50%| of nothing\n"
    assert last_bar_states(plain) == plain and last_bar_states("") == ""


def test_a_file_that_is_not_a_notebook_is_not_rendered(tmp_path):
    from daug.report.notebooks import render_html

    (tmp_path / "stub.ipynb").write_text("{}", encoding="utf-8")
    assert render_html(tmp_path / "stub.ipynb", tmp_path / "stub.html") is False
    assert not (tmp_path / "stub.html").exists()
