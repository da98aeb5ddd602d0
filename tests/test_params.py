import pytest
import yaml

from daug import DaugError
import copy
import shutil

from daug.params import deep_merge, load, resolve, write_profile
from daug.runs import tables
from tests.conftest import REPO


def test_committed_params_yaml_is_the_resolved_cpu_profile():
    """params.yaml is generated (`python -m daug profile cpu`); a hand edit or a stale copy fails here."""
    committed = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    cpu = resolve("cpu", REPO / "params")
    assert committed == {**cpu, **tables(cpu, cpu["study"])}


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["approaches"]["lora-qv"].update(rank=16), "approaches.lora-qv.rank: unknown key; known: learning_rate, r, alpha"),
    (lambda p: p["model"].update(dtype=16), r"model.dtype: expected str \(as in params/base.yaml\), got 16"),
    (lambda p: p["model"]["tiny"].update(hidden=3), "model.tiny.hidden: unknown key; known: hidden_size"),
    (lambda p: p["train"].update(stepz=5), "train.stepz: unknown key"),
    (lambda p: p["train"].update(steps="ten"), "train.steps: expected int"),
    (lambda p: p["schedules"].update(long={"step": 100}), "schedules.long.step: unknown key"),
    (lambda p: p.update(lora={"r": 8}), "lora: unknown key; known: seed, datasets"),
    (lambda p: p["augment"]["rd"].update(q=0.1), "augment.rd.q: unknown key; known: p"),
])
def test_a_bad_key_or_type_fails_on_load_with_one_line_naming_file_and_key(edit, message, tmp_path):
    params = copy.deepcopy(resolve("cpu", REPO / "params"))
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DaugError, match=message) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_a_bad_profile_file_is_named_before_any_work(tmp_path):
    params_dir = tmp_path / "params"
    shutil.copytree(REPO / "params", params_dir)
    (params_dir / "cpu.yaml").write_text("approaches:\n  lora-qv: {rank: 16}\n", encoding="utf-8")
    with pytest.raises(DaugError, match=r"params/cpu.yaml: approaches.lora-qv.rank: unknown key"):
        write_profile("cpu", params_dir, tmp_path / "params.yaml")
    assert not (tmp_path / "params.yaml").exists()


def test_profiles_override_base_keys_and_merge_nested_ones():
    assert deep_merge({"a": {"x": 1, "y": 2}, "l": [1]}, {"a": {"y": 3}, "l": [2]}) == {"a": {"x": 1, "y": 3}, "l": [2]}
    smoke = resolve("smoke", REPO / "params")
    assert smoke["profile"] == "smoke" and smoke["model"]["source"] == "tiny"
    assert smoke["datasets"] == resolve("cpu", REPO / "params")["datasets"]


def test_unknown_profile_lists_the_choices():
    with pytest.raises(DaugError, match="choose one of: cpu, paper, smoke"):
        resolve("gpu", REPO / "params")


def test_a_dataset_can_train_more_seeds_and_score_fewer_test_examples(smoke_params):
    """A dataset limited by seed variance (Paimon in the cpu profile) gets its own seeds, and one
    limited by seeds rather than examples its own test-example count; the other datasets keep
    `train.seeds` and `evaluate.loss_examples`. The run's train section carries its dataset's seeds."""
    from daug.params import loss_examples, training_seeds
    from daug.runs import Grid, train_params

    params = copy.deepcopy(smoke_params)
    first, second = list(params["datasets"])[:2]
    params["train"].update(seeds=[0, 1, 2], seeds_by_dataset={second: [0, 1, 2, 3, 4, 5]})
    params["evaluate"].update(loss_examples=300, loss_examples_by_dataset={second: 150})
    assert training_seeds(params, first) == [0, 1, 2] and training_seeds(params) == [0, 1, 2]
    assert training_seeds(params, second) == [0, 1, 2, 3, 4, 5]
    assert loss_examples(params, first) == 300 and loss_examples(params, second) == 150
    grid = Grid.of(params)
    assert train_params(params, grid.run(second, "none"))["seeds"] == [0, 1, 2, 3, 4, 5]
    assert train_params(params, grid.run(first, "none"))["seeds"] == [0, 1, 2]
    params["train"]["seeds_by_dataset"][second] = [0, 0]
    with pytest.raises(DaugError, match=rf"params train.seeds_by_dataset.{second}: \[0, 0\]; expected a list"):
        training_seeds(params, second)
    params["evaluate"]["loss_examples_by_dataset"][second] = 0
    with pytest.raises(DaugError, match=rf"evaluate.loss_examples_by_dataset.{second}: 0; expected an integer >= 1"):
        loss_examples(params, second)
