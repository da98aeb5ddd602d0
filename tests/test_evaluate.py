"""The evaluation stage (`python -m daug evaluate`) on the tiny model: predictions for every requested
example, metrics, the adapter really applied, prompts formatted as in training, determinism, errors."""
import contextlib
import copy
import io
import json
import math

import pytest

from daug import DaugError
from daug.cli import main
from daug.evaluate import config, load, prompts, stage
from daug.io import read_records, write_jsonl
from tests.conftest import REPO

DATASET, METHOD = "zhenhuan", "rd"


@pytest.fixture(scope="module")
def layout(tmp_path_factory, tiny_model_dir):
    """Prepared data (real Zhen Huan records) and a LoRA adapter with non-zero weights, in a temp dir."""
    import torch
    from peft import LoraConfig, get_peft_model

    from daug.basemodel import load_model

    root = tmp_path_factory.mktemp("eval")
    raw = json.loads((REPO / "data/raw/zhenhuan/huanhuan.json").read_text(encoding="utf-8"))
    records = [{"id": f"zhenhuan-{i:05d}", "input": "", **r} for i, r in enumerate(raw[:16])]
    write_jsonl(root / "data" / DATASET / "test.jsonl", records[:10])
    write_jsonl(root / "data" / DATASET / "val.jsonl", records[10:])
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    get_peft_model(load_model(tiny_model_dir), lora).save_pretrained(root / "adapters" / DATASET / METHOD)
    return root


def _params(smoke_params, **evaluate_overrides):
    params = copy.deepcopy(smoke_params)
    params["evaluate"].update(evaluate_overrides)
    return params


@pytest.fixture(scope="module")
def fp32_run(layout, tiny_model_dir, smoke_params, tmp_path_factory):
    """`python -m daug evaluate` on 5 of the 10 test records, in float32 (exact comparisons below)."""
    import yaml

    params = _params(smoke_params, max_examples=5, dtype=None)
    params_file = tmp_path_factory.mktemp("params") / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["evaluate", "--dataset", DATASET, "--method", METHOD, "--params", str(params_file),
                     "--base", str(tiny_model_dir), "--adapter", str(layout / "adapters" / DATASET / METHOD),
                     "--test", str(layout / "data" / DATASET / "test.jsonl"),
                     "--val", str(layout / "data" / DATASET / "val.jsonl"), "--out", str(layout / "out"),
                     "--timings", str(layout / "out" / "timings.json")])
    assert code == 0
    assert out.getvalue().startswith(f"{DATASET}/{METHOD}: n=5  bleu ")
    return params, json.loads((layout / "out" / f"{DATASET}-{METHOD}.json").read_text(encoding="utf-8"))


def test_writes_predictions_for_every_requested_example_and_the_metrics(fp32_run, layout):
    params, metrics = fp32_run
    test = read_records(layout / "data" / DATASET / "test.jsonl")[:5]
    rows = read_records(layout / "out" / f"{DATASET}-{METHOD}.predictions.jsonl")
    assert [r["id"] for r in rows] == [t["id"] for t in test]
    assert [r["reference"] for r in rows] == [t["output"] for t in test]
    assert [r["instruction"] for r in rows] == [t["instruction"] for t in test]
    for r in rows:
        assert isinstance(r["prediction"], str)
        assert 0 <= r["reply_tokens"] <= params["evaluate"]["max_new_tokens"]
        assert all(0 <= r[m] <= 100 for m in ("bleu", "rouge1", "rouge2", "rougeL"))

    saved = metrics
    assert saved["dataset"] == DATASET and saved["method"] == METHOD and saved["n"] == 5
    for m in ("bleu", "rouge1", "rouge2", "rougeL"):
        s = saved[m]
        assert s["ci_low"] <= s["score"] <= s["ci_high"] or s["ci_low"] == s["ci_high"]
    assert saved["val_examples"] == 4 and math.isfinite(saved["val_loss"])
    assert saved["perplexity"] == pytest.approx(math.exp(saved["val_loss"]))
    assert saved["bleu_tokenizer"] == "zh" and saved["rouge_tokenizer"] == "char"
    assert saved["max_new_tokens"] == 8 and saved["dtype"] == "float32"
    assert saved["adapter"].endswith(f"adapters/{DATASET}/{METHOD}")
    assert "seconds" not in saved  # results only: the timings have their own file
    timings = json.loads((layout / "out" / "timings.json").read_text(encoding="utf-8"))
    assert set(timings["seconds"]) == {"load", "generate", "score", "val_loss", "total"}


def test_score_cli_on_the_predictions_reproduces_the_metrics(fp32_run, layout, capsys):
    """Every score can be audited: re-scoring the saved predictions gives the same numbers."""
    params, metrics = fp32_run
    cfg = params["evaluate"]
    code = main(["score", str(layout / "out" / f"{DATASET}-{METHOD}.predictions.jsonl"),
                 "--bootstrap", str(cfg["bootstrap"]), "--seed", str(params["seed"])])
    from daug.io import round_floats

    rescored = json.loads(capsys.readouterr().out)
    assert code == 0
    for m in ("bleu", "rouge1", "rouge2", "rougeL", "n"):
        assert round_floats(rescored[m]) == metrics[m]  # the metrics file states METRIC_DECIMALS places


def test_adapter_is_applied_and_merged_exactly(fp32_run, layout, tiny_model_dir, tokenizer, smoke_params):
    """val loss of the merged model equals the unmerged PeftModel's, and differs from the base model's."""
    from peft import PeftModel

    from daug.basemodel import load_model
    from daug.train import validation_loss

    _, metrics = fp32_run
    tok = tokenizer
    val = read_records(layout / "data" / DATASET / "val.jsonl")[:4]
    system = smoke_params["datasets"][DATASET]["system_prompt"]
    peft = PeftModel.from_pretrained(load_model(tiny_model_dir), str(layout / "adapters" / DATASET / METHOD))
    assert metrics["val_loss"] == pytest.approx(validation_loss(peft, tok, val, system, 128, 4), rel=1e-5)
    base = validation_loss(load_model(tiny_model_dir), tok, val, system, 128, 4)
    assert abs(metrics["val_loss"] - base) > 1e-3


def test_prompts_are_the_training_prompts(layout, tokenizer, smoke_params):
    from daug.training.data import IGNORE, encode_records

    records = read_records(layout / "data" / DATASET / "test.jsonl")
    system = smoke_params["datasets"][DATASET]["system_prompt"]
    ids = tokenizer(prompts(tokenizer, records, system)).input_ids
    for example, prompt in zip(encode_records(tokenizer, records, system, 512).examples, ids):
        n_prompt = sum(1 for t in example.labels if t == IGNORE)
        assert example.input_ids[:n_prompt] == prompt


def test_same_params_same_bytes(fp32_run, layout, tiny_model_dir):
    params, metrics = fp32_run
    again = stage(params, DATASET, METHOD, base=tiny_model_dir, adapter=layout / "adapters" / DATASET / METHOD,
                  test=layout / "data" / DATASET / "test.jsonl", val=layout / "data" / DATASET / "val.jsonl",
                  out_dir=layout / "again", timings=layout / "again" / "timings.json", progress=False)
    name = f"{DATASET}-{METHOD}.predictions.jsonl"
    assert (layout / "again" / name).read_bytes() == (layout / "out" / name).read_bytes()
    differ = {k for k in metrics if metrics[k] != again[k]}
    assert differ <= {"predictions"}
    again_file = json.loads((layout / "again" / f"{DATASET}-{METHOD}.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in again_file.items() if k != "predictions"} == {
        k: v for k, v in metrics.items() if k != "predictions"}  # same inputs, same metrics file


def test_missing_adapter_and_bad_params_are_clear_errors(layout, tiny_model_dir, smoke_params):
    with pytest.raises(DaugError, match=r"paimon/rd: no LoRA adapter here .*run the train stage"):
        load(tiny_model_dir, layout / "adapters" / "paimon" / "rd")
    with pytest.raises(DaugError, match="max_new_tokens must be a positive integer"):
        config(_params(smoke_params, max_new_tokens=0))
    with pytest.raises(DaugError, match="unknown key.*max_exmaples"):
        config(_params(smoke_params, max_exmaples=3))
    with pytest.raises(DaugError, match="dtype must be null .* got 'fp8'"):
        config(_params(smoke_params, dtype="fp8"))


def test_load_merges_the_adapter_and_casts_to_the_evaluation_dtype(layout, tiny_model_dir):
    import torch

    model, _ = load(tiny_model_dir, layout / "adapters" / DATASET / METHOD, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged: a plain model
