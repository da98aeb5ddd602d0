"""Fine-tuning approaches behind the registry (daug/approaches/): approaches registered here, in the
test, train, save, reload and evaluate on the tiny model through the normal train and evaluate
stages; one of them changes the forward pass (prompt tuning: its virtual tokens must change the
loss, and the fast loss must not skip them); an approach that cannot train token rows says so
before any work."""
from __future__ import annotations

import copy
import json
from typing import ClassVar

import pytest
import torch

from daug import DaugError
from daug.approaches import APPROACHES, Approach, get_approach, register
from daug.io import read_records, write_jsonl
from daug.runs import Grid
from tests.conftest import REPO

RAW = REPO / "data/raw/zhenhuan/huanhuan.json"


@register
class ToyIA3(Approach):
    """IA3 (peft): learned rescaling of keys, values and the MLP's down projection; merges."""
    name = "toy-ia3"
    defaults: ClassVar[dict] = {"target_modules": ["k_proj", "v_proj", "down_proj"]}

    def wrap(self, model, token_ids):
        from peft import IA3Config, get_peft_model

        targets = list(self.params["target_modules"])
        return get_peft_model(model, IA3Config(target_modules=targets, feedforward_modules=["down_proj"],
                                               task_type="CAUSAL_LM"))


@register
class ToyPrompt(Approach):
    """Prompt tuning (peft): virtual tokens prepended in the peft model's forward; nothing to merge."""
    name = "toy-prompt"
    changes_forward = True
    merges = False
    defaults: ClassVar[dict] = {"virtual_tokens": 4}

    def wrap(self, model, token_ids):
        from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=self.params["virtual_tokens"],
                                    prompt_tuning_init=PromptTuningInit.RANDOM)
        return get_peft_model(model, config)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("approach-data")
    records = [{"id": f"zhenhuan-{i:05d}", "input": "", **r} for i, r in enumerate(read_records(RAW)[:20])]
    for name, rows in (("train", records[:8]), ("val", records[8:12]), ("test", records[12:20])):
        write_jsonl(root / f"{name}.jsonl", rows)
    return root


# Each approach at its own learning rate, as peft's method comparison tunes them (prompt tuning wants more).
LEARNING_RATES = {"toy-ia3": 0.05, "toy-prompt": 0.5}


def approach_params(smoke_params, learning_rate: float = 0.05) -> dict:
    params = copy.deepcopy(smoke_params)
    params["train"].update(seeds=[0], steps=4, batch_size=4, learning_rate=learning_rate, max_length=96,
                           log_every=1, eval_every=2, patience=None, val_examples=4, trainable_tokens=[])
    # validation as in training (the same records and length), so the reloaded weights reproduce its loss
    params["evaluate"].update(max_examples=2, max_new_tokens=4, loss_examples=4, val_examples=4, dtype=None,
                              max_length=96)
    return params


def train_and_evaluate(params, approach: str, data, tiny_model_dir, root):
    from daug import evaluate, train

    run = Grid.of({**params, "approaches": {**params["approaches"], approach: {}}}).run("zhenhuan", "none", approach)
    summary = train.stage(params, run, data=data / "train.jsonl", val=data / "val.jsonl", base=tiny_model_dir,
                          out=root / "weights", runs=root / "runs", report_csv=root / "loss.csv",
                          report_json=root / "train.json", report_val=root / "val.jsonl",
                          report_timings=root / "train-timings.json")
    result = evaluate.stage(params, run, base=tiny_model_dir, adapter=root / "weights", test=data / "test.jsonl",
                            val=data / "val.jsonl", out_dir=root / "eval", timings=root / "eval-timings.json",
                            progress=False)
    return run, summary, result


_TRAINED: dict[str, dict] = {}  # approach -> its trained run: each approach trains once per session


def trained_run(approach: str, smoke_params, data, tiny_model_dir, tmp_path_factory) -> dict:
    if approach not in _TRAINED:
        root = tmp_path_factory.mktemp(approach)
        params = approach_params(smoke_params, LEARNING_RATES[approach])
        run, summary, result = train_and_evaluate(params, approach, data, tiny_model_dir, root)
        _TRAINED[approach] = {"approach": approach, "root": root, "run": run, "summary": summary, "result": result,
                              "params": params}
    return _TRAINED[approach]


@pytest.fixture(scope="module", params=["toy-ia3", "toy-prompt"])
def trained(request, smoke_params, data, tiny_model_dir, tmp_path_factory):
    return trained_run(request.param, smoke_params, data, tiny_model_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def prompt_tuned(smoke_params, data, tiny_model_dir, tmp_path_factory):
    return trained_run("toy-prompt", smoke_params, data, tiny_model_dir, tmp_path_factory)


def test_a_registered_approach_trains_saves_reloads_and_evaluates(trained):
    root, run = trained["root"], trained["run"]
    assert run.name == f"zhenhuan-none-{trained['approach']}"  # named by its non-default axis
    config = json.loads((root / "weights" / "seed-0" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["peft_type"] == {"toy-ia3": "IA3", "toy-prompt": "PROMPT_TUNING"}[trained["approach"]]
    card = (root / "weights" / "seed-0" / "README.md").read_text(encoding="utf-8")
    assert f"# {trained['approach']} weights: {run.name}" in card and "lora" not in card.split("---")[1]
    s = trained["summary"]["seed-0"]
    assert s["stop_step"] == 4 and s["val_loss_best"] < s["val_loss_initial"]  # it learned something
    metrics = trained["result"]["metrics"]["seed-0"]
    assert metrics["n_loss"] == 4 and metrics["n"] == 2 and metrics["val_loss"] is not None
    losses = read_records(root / "eval" / f"{run.name}.losses.jsonl")
    predictions = read_records(root / "eval" / f"{run.name}.predictions.jsonl")
    assert len(losses) == 4 and len(predictions) == 2 and all(isinstance(p["prediction"], str) for p in predictions)
    # evaluation reloaded the saved weights: its validation loss is the trained state's, not the base model's
    assert metrics["val_loss"] == pytest.approx(s["val_loss_best"], rel=1e-5)


def test_virtual_tokens_change_the_loss_and_the_fast_loss_does_not_skip_them(prompt_tuned, data, tiny_model_dir,
                                                                               tokenizer, smoke_params):
    from daug.basemodel import load_model
    from daug.evaluate import load
    from daug.training.loss import validation_loss

    approach = get_approach("toy-prompt")
    model, _ = load(tiny_model_dir, prompt_tuned["root"] / "weights" / "seed-0", approach=approach)
    records = read_records(data / "val.jsonl")
    system = smoke_params["datasets"]["zhenhuan"]["system_prompt"]
    tuned = validation_loss(model, tokenizer, records, system, 96, 4, approach=approach)
    base = validation_loss(load_model(tiny_model_dir), tokenizer, records, system, 96, 4)
    assert abs(tuned - base) > 1e-3  # the virtual tokens are used
    assert tuned == pytest.approx(prompt_tuned["summary"]["seed-0"]["val_loss_best"], rel=1e-4)  # as in training
    # Without the approach, the fast loss runs the decoder stack alone and would miss them: the base loss.
    skipped = validation_loss(model, tokenizer, records, system, 96, 4)
    assert skipped == pytest.approx(base, rel=1e-5)


def test_an_approach_that_cannot_train_token_rows_fails_before_any_work(smoke_params, data, tiny_model_dir,
                                                                         tmp_path, monkeypatch):
    from daug.basemodel import load_model as real_load
    from daug.training import loop

    loads = []
    monkeypatch.setattr("daug.basemodel.load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    params = approach_params(smoke_params)
    params["train"]["trainable_tokens"] = ["<end_of_turn>"]
    with pytest.raises(DaugError, match=r"approach 'toy-ia3' cannot train token rows \(train.trainable_tokens\)"):
        loop.trainable_model(tiny_model_dir, params["model"], get_approach("toy-ia3"), ["<end_of_turn>"], 0,
                             "float32", torch.device("cpu"))
    assert loads == []  # checked before the model loads


def test_approach_params_are_checked_and_unknown_approaches_named():
    assert {"lora-qv", "toy-ia3", "toy-prompt"} <= set(APPROACHES)
    with pytest.raises(DaugError, match=r"approach 'lora-qv': unknown parameter 'rank'; valid parameters: alpha"):
        get_approach("lora-qv", {"rank": 16})
    with pytest.raises(DaugError, match=r"unknown fine-tuning approach 'dora'; choose one of: lora-qv"):
        get_approach("dora")
    assert get_approach("lora-qv").params["target_modules"] == ["q_proj", "v_proj"]  # base.yaml's block


def test_saved_weights_config_has_the_same_bytes_whatever_the_hash_seed(tiny_model_dir, tmp_path):
    """peft writes target_modules in set order, which follows PYTHONHASHSEED: same params, same bytes."""
    import os
    import subprocess
    import sys

    script = ("import sys\nfrom daug.approaches import get_approach\nfrom daug.basemodel import load_model\n"
              "a = get_approach('lora-qv', {'target_modules': ['q_proj', 'k_proj', 'v_proj', 'o_proj']})\n"
              "a.save(a.wrap(load_model(sys.argv[1]), []), sys.argv[2])\n")
    configs = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"hash-{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-c", script, str(tiny_model_dir), str(out)], env=env, check=True,
                       capture_output=True, timeout=300)
        configs.append((out / "adapter_config.json").read_bytes())
    assert len(set(configs)) == 1
    assert json.loads(configs[0])["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
