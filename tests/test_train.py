"""The train stage on the tiny Gemma 3: masking, truncation, learning, resume after a real kill,
NaN handling, two processes, 4-bit code path, and the adapter's PEFT format."""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from daug import DaugError
from daug.chat import messages, prompt_text
from daug.io import read_records, write_jsonl
from daug.train import encode_example, encode_records, stage, validation_loss
from daug.training.data import IGNORE, batch_schedule, collate
from daug.training.loop import TrainConfig
from tests.conftest import REPO

SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"
RAW = REPO / "data/raw/zhenhuan/huanhuan.json"  # vendored: no stage has to run first
ADAPTER = "adapter_model.safetensors"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one thread is several times faster than two on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return read_records(RAW)[:8]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, records) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_jsonl(path, records)
    return path


def tiny_params(smoke_params, dropout: float = 0.1, **train) -> dict:
    params = copy.deepcopy(smoke_params)
    params["train"].update({"steps": 24, "batch_size": 4, "learning_rate": 0.1, "max_length": 64, "log_every": 4,
                            "eval_every": 8, "checkpoint_every": 2, "val_examples": 8, **train})
    params["lora"]["dropout"] = dropout  # random: a resumed run must restore the generator's state
    return params


def stage_paths(root: Path) -> dict:
    return {"out": root / "adapter", "runs": root / "runs", "report_csv": root / "loss.csv",
            "report_json": root / "summary.json", "report_timings": root / "timings.json"}


def run_stage(params, root: Path, data: Path, base: Path) -> dict:
    return stage(params, "zhenhuan", "none", data=data, val=data, base=base, **stage_paths(root))


def cli_args(params_file: Path, root: Path, data: Path, base: Path) -> list[str]:
    p = stage_paths(root)
    return ["-m", "daug", "train", "--params", str(params_file), "--dataset", "zhenhuan", "--method", "none",
            "--data", str(data), "--val", str(data), "--base", str(base), "--out", str(p["out"]),
            "--runs", str(p["runs"]), "--report-csv", str(p["report_csv"]), "--report-json", str(p["report_json"]),
            "--report-timings", str(p["report_timings"])]


def assert_same_adapter(a: Path, b: Path, atol: float) -> None:
    wa, wb = load_file(a / ADAPTER), load_file(b / ADAPTER)
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=0, msg=name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke_params, tiny_model_dir, data_file):
    """One uninterrupted run: 24 steps overfitting 8 records (validated on the same records)."""
    root = tmp_path_factory.mktemp("trained")
    params = tiny_params(smoke_params)
    summary = run_stage(params, root, data_file, tiny_model_dir)
    return {"root": root, "params": params, "summary": summary}


# --- formatting and masking -------------------------------------------------------------------------

def test_labels_are_ignored_exactly_on_prompt_and_padding(tokenizer):
    recs = [{"id": "a", "instruction": "你好", "input": "", "output": "臣妾明白。"},
            {"id": "b", "instruction": "这是一个更长一些的问题，你怎么看？", "input": "补充说明",
             "output": "好"}]
    enc = encode_records(tokenizer, recs, SYSTEM, 128)
    ids, mask, labels = collate(enc.examples, tokenizer.pad_token_id)
    for row, (record, example) in enumerate(zip(recs, enc.examples)):
        prompt = tokenizer(prompt_text(tokenizer, messages(record, SYSTEM))).input_ids
        reply = example.input_ids[len(prompt):]
        assert example.input_ids[:len(prompt)] == prompt  # the prompt exactly as generation sees it
        assert tokenizer.decode(reply) == record["output"] + "<end_of_turn>"
        pad = ids.shape[1] - len(example.input_ids)
        assert labels[row].tolist() == [IGNORE] * len(prompt) + reply + [IGNORE] * pad
        assert mask[row].tolist() == [1] * len(example.input_ids) + [0] * pad
        assert ids[row, len(example.input_ids):].eq(tokenizer.pad_token_id).all()


def test_long_reply_is_cut_and_long_prompt_dropped_and_both_are_counted(tokenizer):
    short = {"id": "s", "instruction": "你好", "input": "", "output": "好"}
    long_reply = {"id": "r", "instruction": "你好", "input": "", "output": "臣妾明白了。" * 40}
    long_prompt = {"id": "p", "instruction": "朕" * 300, "input": "", "output": "好"}
    enc = encode_records(tokenizer, [short, long_reply, long_prompt], SYSTEM, 48)
    assert [e.id for e in enc.examples] == ["s", "r"]
    assert (enc.truncated, enc.dropped) == (1, ["p"])
    cut = enc.examples[1]
    assert cut.truncated and len(cut.input_ids) == 48
    kept = tokenizer.decode([t for t in cut.labels if t != IGNORE])
    assert long_reply["output"].startswith(kept) and len(kept) < len(long_reply["output"])
    assert encode_example(tokenizer, long_prompt, SYSTEM, 48) is None
    assert enc.stats()["truncated"] == 1 and enc.stats()["dropped"] == 1


def test_malformed_record_names_file_and_record(tokenizer):
    with pytest.raises(DaugError, match=r"aug\.jsonl: record 2 \(id 'x-2'\): missing field 'output'"):
        encode_records(tokenizer, [{"instruction": "a", "output": "b"}, {"id": "x-2", "instruction": "a"}],
                       SYSTEM, 64, source="aug.jsonl")


def test_fast_reply_loss_equals_the_models_own_masked_loss(tiny_model_dir, tokenizer, records):
    from daug.basemodel import load_model
    from daug.training.loss import ReplyLoss

    model = load_model(tiny_model_dir).eval()
    enc = encode_records(tokenizer, records, SYSTEM, 64)
    ids, mask, labels = collate(enc.examples, tokenizer.pad_token_id)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()  # logits everywhere
        total, count = ReplyLoss(model)(ids, mask, labels)
    assert int(count) == sum(e.reply_tokens for e in enc.examples)
    assert total.item() / int(count) == pytest.approx(full, rel=1e-5)
    one_by_one = validation_loss(model, tokenizer, records, SYSTEM, 64, 1)
    assert one_by_one == pytest.approx(validation_loss(model, tokenizer, records, SYSTEM, 64, 5), rel=1e-5)
    assert one_by_one == pytest.approx(full, rel=1e-5)


@pytest.mark.parametrize("softcap", [None, 0.05])
def test_fast_reply_loss_has_the_models_own_gradient(tiny_model_dir, tokenizer, records, softcap):
    """The fused frozen-head cross-entropy gives the LoRA weights the gradient plain autograd gives."""
    from daug.training.loop import lora_model
    from daug.training.loss import ReplyLoss

    model = lora_model(tiny_model_dir, {"dtype": "float32"},
                       {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}, 0, "float32",
                       torch.device("cpu"))
    model.get_base_model().config.final_logit_softcapping = softcap  # Gemma 2 style capping, if a model has it
    torch.manual_seed(1)
    with torch.no_grad():  # B starts at zero; make every LoRA weight receive a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids, mask, labels = collate(encode_records(tokenizer, records, SYSTEM, 64).examples, tokenizer.pad_token_id)
    model.train()
    full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    full.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    total, count = ReplyLoss(model)(ids, mask, labels)
    (total / count).backward()
    assert (total / count).item() == pytest.approx(full.item(), rel=1e-5)
    for name, grad in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-7, msg=name)


def test_batch_order_is_fixed_by_seed_and_groups_lengths():
    lengths = [(i * 37) % 101 for i in range(200)]
    a = batch_schedule(lengths, 8, 60, seed=3)
    assert a == batch_schedule(lengths, 8, 60, seed=3) and a != batch_schedule(lengths, 8, 60, seed=4)
    assert all(len(b) == 8 for b in a) and len(a) == 60
    first_epoch = [i for b in a[:25] for i in b]
    assert len(set(first_epoch)) == 200  # an epoch sees every example once
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    assert spread < 20  # random batches of 8 would spread ~80


def test_unknown_train_key_is_a_clear_error():
    with pytest.raises(DaugError, match=r"unknown key\(s\) stepz"):
        TrainConfig.from_params({"stepz": 3})


def test_train_config_defaults_come_from_base_yaml_and_old_precisions_are_named():
    from daug.params import defaults

    assert vars(TrainConfig.from_params({})) == defaults()["train"]
    assert TrainConfig.from_params({"steps": 7}).steps == 7
    with pytest.raises(DaugError, match=r"train.precision: 'bf16' \(the old spelling of 'bfloat16'\); expected one "
                                        r"of: float32, bfloat16"):
        TrainConfig.from_params({"precision": "bf16"})


def test_example_losses_are_per_example_in_input_order_and_batch_independent(tiny_model_dir, tokenizer, records):
    from daug.basemodel import load_model
    from daug.training.loss import example_losses

    model = load_model(tiny_model_dir).eval()
    examples = encode_records(tokenizer, records, SYSTEM, 64).examples
    pad = tokenizer.pad_token_id
    batched = example_losses(model, examples, pad, 3)
    assert [e.id for e in batched] == [e.id for e in examples]
    assert [e.tokens for e in batched] == [e.reply_tokens for e in examples]
    for example, loss in zip(examples, batched):
        alone = example_losses(model, [example], pad, 1)[0]
        assert loss.loss == pytest.approx(alone.loss, rel=1e-5) and loss.loss > 0
    mean = sum(e.loss for e in batched) / sum(e.tokens for e in batched)
    assert validation_loss(model, tokenizer, records, SYSTEM, 64, 3) == pytest.approx(mean, rel=1e-12)


# --- training runs ----------------------------------------------------------------------------------

def test_loss_decreases_and_outputs_are_written(trained):
    root, summary = trained["root"], trained["summary"]
    log = (root / "loss.csv").read_text().splitlines()
    assert log[0] == "step,split,loss"
    rows = [line.split(",") for line in log[1:]]
    assert [(int(s), split) for s, split, _ in rows if split == "val"] == [(0, "val"), (8, "val"), (16, "val"), (24, "val")]
    assert [int(s) for s, split, _ in rows if split == "train"] == [4, 8, 12, 16, 20, 24]
    val = [float(x) for _, split, x in rows if split == "val"]
    train = [float(x) for _, split, x in rows if split == "train"]
    assert val[-1] < val[0] - 0.05 and train[-1] < train[0] - 0.05  # it learns the 8 records
    on_disk = json.loads((root / "summary.json").read_text())
    timings = json.loads((root / "timings.json").read_text())
    assert on_disk == json.loads(json.dumps({k: v for k, v in summary.items() if k != "timings"}))
    assert timings == summary["timings"] and not {"seconds", "tokens_per_second"} & set(on_disk)
    assert summary["steps"] == 24 and summary["examples"] + summary["dropped"] == 8
    assert summary["val_loss_final"] == pytest.approx(val[-1], abs=1e-6)
    assert timings["tokens_per_second"] > 0 and summary["resumed_from"] == []


def test_adapter_is_standard_peft_and_reproduces_the_final_val_loss(trained, tiny_model_dir, tokenizer, records):
    from peft import PeftModel

    from daug.basemodel import load_model

    out = trained["root"] / "adapter"
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", ADAPTER, "README.md"}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and f"base_model: {tiny_model_dir}" in card
    assert "zhenhuan / none" in card and "val_loss_final" in card and '"learning_rate": 0.1' in card
    model = PeftModel.from_pretrained(load_model(tiny_model_dir), out)
    loss = validation_loss(model, tokenizer, records, SYSTEM, 64, 4)
    assert loss == pytest.approx(trained["summary"]["val_loss_final"], rel=1e-5)


def test_rerun_reuses_a_matching_checkpoint_and_ignores_a_stale_one(trained, tmp_path, tiny_model_dir, data_file):
    import shutil

    shutil.copytree(trained["root"] / "runs", tmp_path / "runs")
    same = run_stage(trained["params"], tmp_path, data_file, tiny_model_dir)  # finished: nothing to redo
    assert same["resumed_from"] == [24]
    assert (tmp_path / "loss.csv").read_bytes() == (trained["root"] / "loss.csv").read_bytes()
    assert (tmp_path / "adapter" / ADAPTER).read_bytes() == (trained["root"] / "adapter" / ADAPTER).read_bytes()
    changed = copy.deepcopy(trained["params"])
    changed["train"].update(steps=2, learning_rate=0.05)
    assert run_stage(changed, tmp_path, data_file, tiny_model_dir)["resumed_from"] == []


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
        monkeypatch, tmp_path, smoke_params, tiny_model_dir, data_file):
    from daug.training import loop

    original = loop.save_checkpoint

    def save_then_diverge(run_dir, fingerprint, step, model, *args):
        path = original(run_dir, fingerprint, step, model, *args)
        if step == 2:  # the weights blow up after the step-2 checkpoint is safely written
            with torch.no_grad():
                next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("inf"))
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_diverge)
    params = tiny_params(smoke_params, steps=6, checkpoint_every=1)
    with pytest.raises(DaugError, match=r"step 3: training loss is nan .*last good checkpoint: .*step-000002 \(step 2\)"):
        run_stage(params, tmp_path, data_file, tiny_model_dir)
    latest = json.loads((tmp_path / "runs" / "latest.json").read_text())
    assert latest["step"] == 2
    weights = load_file(tmp_path / "runs" / latest["dir"] / "adapter.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "loss.csv").exists()


# --- processes --------------------------------------------------------------------------------------

def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(trained, tmp_path, tiny_model_dir, data_file):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(trained["params"], allow_unicode=True), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, *cli_args(params_file, tmp_path, data_file, tiny_model_dir)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = tmp_path / "runs" / "latest.json"
    deadline = time.monotonic() + 300
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    killed_at = json.loads(latest.read_text())["step"]
    assert 0 < killed_at < 24 and not (tmp_path / "adapter").exists()

    summary = run_stage(trained["params"], tmp_path, data_file, tiny_model_dir)  # the stage re-runs
    assert summary["resumed_from"] == [killed_at]
    assert (tmp_path / "loss.csv").read_text() == (trained["root"] / "loss.csv").read_text()  # the curve continues
    assert_same_adapter(tmp_path / "adapter", trained["root"] / "adapter", atol=1e-6)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, smoke_params, tiny_model_dir, data_file):
    """torchrun, 2 gloo processes, 2 examples each in micro-batches of 1 vs one process, batch 4."""
    # no dropout: its masks would differ between one and two processes; nothing else may
    params = tiny_params(smoke_params, dropout=0.0, steps=6, eval_every=3, log_every=1, checkpoint_every=3)
    single = run_stage(params, tmp_path / "one", data_file, tiny_model_dir)
    params["train"]["micro_batch_size"] = 1  # gradient accumulation inside each process too
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2",
           *cli_args(params_file, tmp_path / "two", data_file, tiny_model_dir)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["processes"] == 2 and single["processes"] == 1
    assert two["tokens"] == single["tokens"]  # the same examples in the same order
    assert_same_adapter(tmp_path / "two" / "adapter", tmp_path / "one" / "adapter", atol=1e-5)
    for a, b in zip((tmp_path / "one" / "loss.csv").read_text().splitlines()[1:],
                    (tmp_path / "two" / "loss.csv").read_text().splitlines()[1:]):
        (sa, ka, la), (sb, kb, lb) = a.split(","), b.split(",")
        assert (sa, ka) == (sb, kb) and math.isclose(float(la), float(lb), rel_tol=1e-5)
