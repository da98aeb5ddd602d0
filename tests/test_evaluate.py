"""The evaluation stage (`python -m daug evaluate`) on the tiny model with two training seeds' adapters:
every file of the output layout with one row per seed x example, the per-example test loss (the
primary endpoint) equal to the training code's loss, adapters (with their trainable end-of-turn
embedding) really applied, the base model evaluated like a method, degeneration flags, determinism,
errors."""
import contextlib
import copy
import io
import json
import math

import pytest

from daug import DaugError, degeneration
from daug.cli import main
from daug.evaluate import config, load, prompts, stage, stop_ids
from daug.io import read_records, write_jsonl
from daug.approaches import get_approach
from daug.paths import BASE
from daug.runs import Grid
from tests.conftest import REPO

DATASET, METHOD, SEEDS = "zhenhuan", "rd", [0, 1]
N_GEN, N_LOSS = 5, 6
FLAG_FIELDS = set(degeneration.FLAGS)
SCORES = {"bleu", "rouge1", "rouge2", "rougeL", "chrf"}
LORA_QV = get_approach("lora-qv")


def _end_of_turn(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<end_of_turn>")


@pytest.fixture(scope="module")
def layout(tmp_path_factory, tiny_model_dir, tokenizer):
    """Prepared data (real Zhen Huan records) and one LoRA adapter per training seed, each with
    non-zero LoRA weights and a trained `<end_of_turn>` embedding row (peft TrainableTokens)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from daug.basemodel import load_model

    root = tmp_path_factory.mktemp("eval")
    raw = json.loads((REPO / "data/raw/zhenhuan/huanhuan.json").read_text(encoding="utf-8"))
    records = [{"id": f"zhenhuan-{i:05d}", "input": "", **r} for i, r in enumerate(raw[:16])]
    write_jsonl(root / "data" / DATASET / "test.jsonl", records[:10])
    write_jsonl(root / "data" / DATASET / "val.jsonl", records[10:])
    for seed in SEEDS:
        torch.manual_seed(seed)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                          trainable_token_indices=[_end_of_turn(tokenizer)], task_type="CAUSAL_LM")
        model = get_peft_model(load_model(tiny_model_dir), lora)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "trainable_tokens_delta" in name:
                    p.add_(torch.randn_like(p))
        model.save_pretrained(root / "adapters" / DATASET / METHOD / f"seed-{seed}")
    return root


def _params(smoke_params, seeds=SEEDS, **evaluate_overrides):
    params = copy.deepcopy(smoke_params)
    params["evaluate"].update(evaluate_overrides)
    params["train"]["seeds"] = list(seeds)
    return params


def _fp32(smoke_params, seeds=SEEDS):
    return _params(smoke_params, seeds, max_examples=N_GEN, loss_examples=N_LOSS, dtype=None)


def _stage(params, layout, tiny_model_dir, out, method=METHOD, train_val=None):
    """`train_val`: the training stage's validation losses (default: none, so they are computed)."""
    return stage(params, Grid.of(params).run(DATASET, method), base=tiny_model_dir, adapter=layout / "adapters" / DATASET / METHOD,
                 train_val=train_val or layout / "no-training-stage" / "val.jsonl",
                 test=layout / "data" / DATASET / "test.jsonl", val=layout / "data" / DATASET / "val.jsonl",
                 out_dir=layout / out, timings=layout / out / "timings.json", progress=False)


def _files(layout, out, method=METHOD):
    stem = layout / out / f"{DATASET}-{method}"
    return {"metrics": stem.with_suffix(".json"), "losses": layout / out / f"{DATASET}-{method}.losses.jsonl",
            "predictions": layout / out / f"{DATASET}-{method}.predictions.jsonl"}


@pytest.fixture(scope="module")
def fp32_run(layout, tiny_model_dir, smoke_params, tmp_path_factory):
    """`python -m daug evaluate` over both seeds, in float32 (exact comparisons below)."""
    import yaml

    params = _fp32(smoke_params)
    params_file = tmp_path_factory.mktemp("params") / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["evaluate", "--dataset", DATASET, "--method", METHOD, "--params", str(params_file),
                     "--base", str(tiny_model_dir), "--adapter", str(layout / "adapters" / DATASET / METHOD),
                     "--test", str(layout / "data" / DATASET / "test.jsonl"),
                     "--val", str(layout / "data" / DATASET / "val.jsonl"), "--out", str(layout / "out"),
                     "--train-val", str(layout / "no-training-stage" / "val.jsonl"),
                     "--timings", str(layout / "out" / "timings.json")])
    assert code == 0
    assert out.getvalue().startswith(f"{DATASET}-{METHOD} seed-0: test_loss ")
    files = _files(layout, "out")
    return params, {k: json.loads(f.read_text(encoding="utf-8")) if k == "metrics" else read_records(f)
                    for k, f in files.items()}


def test_writes_every_file_with_one_row_per_seed_and_example(fp32_run, layout):
    params, out = fp32_run
    test = read_records(layout / "data" / DATASET / "test.jsonl")
    assert [(r["seed"], r["id"]) for r in out["losses"]] == [(s, t["id"]) for s in SEEDS for t in test[:N_LOSS]]
    assert all(set(r) == {"seed", "id", "tokens", "loss"} and r["tokens"] > 0 and r["loss"] > 0 for r in out["losses"])
    rows = out["predictions"]
    assert [(r["seed"], r["id"]) for r in rows] == [(s, t["id"]) for s in SEEDS for t in test[:N_GEN]]
    assert [r["reference"] for r in rows] == [t["output"] for t in test[:N_GEN]] * 2
    for r in rows:
        assert set(r) == {"seed", "id", "instruction", "input", "reference", "prediction", "reply_tokens"} | SCORES | FLAG_FIELDS
        assert isinstance(r["prediction"], str) and 0 <= r["reply_tokens"] <= params["evaluate"]["max_new_tokens"]
        assert all(0 <= r[m] <= 100 for m in SCORES)
        assert r == {**r, **degeneration.flags(r["prediction"], r["reference"], r["reply_tokens"], 8)}

    assert list(out["metrics"]) == ["seed-0", "seed-1"]
    for seed in SEEDS:
        m = out["metrics"][f"seed-{seed}"]
        assert m["seed"] == seed and m["n"] == N_GEN and m["n_loss"] == N_LOSS and m["val_examples"] == 4
        losses = [r["loss"] for r in out["losses"] if r["seed"] == seed]
        assert m["test_loss"] == pytest.approx(sum(losses) / N_LOSS, abs=1e-6)  # each example weight 1
        for s in SCORES:
            assert m[s]["ci_low"] <= m[s]["score"] <= m[s]["ci_high"] or m[s]["ci_low"] == m[s]["ci_high"]
        assert math.isfinite(m["val_loss"]) and m["perplexity"] == pytest.approx(math.exp(m["val_loss"]))
        assert m["max_new_tokens"] == 8 and m["dtype"] == "float32" and m["bleu_tokenizer"] == "zh"
        seed_rows = [r for r in rows if r["seed"] == seed]
        assert m["degeneration"] == degeneration.summary(seed_rows, 8)
        assert m["replies_at_limit"] == sum(r["at_limit"] for r in seed_rows)
    assert out["metrics"]["seed-0"]["test_loss"] != out["metrics"]["seed-1"]["test_loss"]  # two different adapters
    timings = json.loads((layout / "out" / "timings.json").read_text(encoding="utf-8"))["seconds"]
    assert set(timings) == {"load_base", "seed-0", "seed-1", "total"}
    assert set(timings["seed-1"]) == {"load", "test_loss", "generate", "score", "val_loss"}
    assert "seconds" not in json.dumps(out["metrics"])  # results only: the timings have their own file


def test_per_example_losses_are_the_training_losses(fp32_run, layout, tiny_model_dir, tokenizer, smoke_params):
    """Token-weighted, the per-example losses give validation_loss's mean on the same records, with the
    adapter applied unmerged by peft: the merged model (with its trainable token row) is the same function."""
    from peft import PeftModel

    from daug.basemodel import load_model
    from daug.train import validation_loss

    _, out = fp32_run
    test = read_records(layout / "data" / DATASET / "test.jsonl")[:N_LOSS]
    system = smoke_params["datasets"][DATASET]["system_prompt"]
    for seed in SEEDS:
        rows = [r for r in out["losses"] if r["seed"] == seed]
        weighted = sum(r["loss"] * r["tokens"] for r in rows) / sum(r["tokens"] for r in rows)
        peft = PeftModel.from_pretrained(load_model(tiny_model_dir), str(layout / "adapters" / DATASET / METHOD / f"seed-{seed}"))
        assert weighted == pytest.approx(validation_loss(peft, tokenizer, test, system, 128, 4), rel=1e-5)
    base = validation_loss(load_model(tiny_model_dir), tokenizer, test, system, 128, 4)
    assert abs(weighted - base) > 1e-3


def test_merging_keeps_the_trained_end_of_turn_row_in_embedding_and_tied_head(layout, tiny_model_dir, tokenizer):
    from safetensors.torch import load_file

    from daug.basemodel import load_model

    eot = _end_of_turn(tokenizer)
    adapter = layout / "adapters" / DATASET / METHOD / "seed-0"
    delta = next(w for n, w in load_file(adapter / "adapter_model.safetensors").items() if "trainable_tokens" in n)
    original = load_model(tiny_model_dir)
    model, _ = load(tiny_model_dir, adapter, approach=LORA_QV)
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert not any("lora" in n or "token_adapter" in n for n, _ in model.named_parameters())  # a plain model
    assert (embedding[eot] - original.get_input_embeddings().weight[eot]).abs().max() > 0.1
    assert embedding[eot].tolist() == delta[0].tolist()  # peft stores the trained row itself, merged by index_copy
    assert head[eot].tolist() == embedding[eot].tolist()  # Gemma ties the head to the embedding
    assert embedding[eot + 1].tolist() == original.get_input_embeddings().weight[eot + 1].tolist()


def test_one_seed_alone_gives_the_same_rows_as_beside_another(fp32_run, layout, tiny_model_dir, smoke_params):
    """The base model is loaded once and reused across seeds: nothing of seed 0 leaks into seed 1."""
    _, out = fp32_run
    _stage(_fp32(smoke_params, seeds=[1]), layout, tiny_model_dir, "seed1")
    alone = {k: read_records(f) for k, f in _files(layout, "seed1").items() if k != "metrics"}
    assert alone["losses"] == [r for r in out["losses"] if r["seed"] == 1]
    assert alone["predictions"] == [r for r in out["predictions"] if r["seed"] == 1]


def test_a_trained_seeds_validation_loss_is_read_from_the_training_stage_when_its_examples_match(
        fp32_run, layout, tiny_model_dir, smoke_params, tokenizer):
    """The training stage measured each seed's validation loss at its best step on the same records:
    the evaluation reads it (reply-token weighted, as `validation_loss`) instead of computing it
    again. A seed whose rows are not exactly these examples is computed here, and says so."""
    from daug.training.data import encode_records

    _, full = fp32_run
    records = read_records(layout / "data" / DATASET / "val.jsonl")
    system = smoke_params["datasets"][DATASET]["system_prompt"]
    examples = encode_records(tokenizer, records, system, smoke_params["evaluate"]["max_length"], source="v").examples
    rows = [{"seed": 0, "id": e.id, "tokens": t, "loss_best": loss, "loss_final": 9.0}
            for e, t, loss in zip(examples, [3, 1, 2, 4], [1.0, 2.0, 4.0, 0.5])]
    rows += [{"seed": 1, "id": e.id, "tokens": 2, "loss_best": 1.0, "loss_final": 1.0} for e in examples[1:]]
    write_jsonl(layout / "training" / "val.jsonl", rows)
    metrics = _stage(_fp32(smoke_params), layout, tiny_model_dir, "read-val", train_val=layout / "training" / "val.jsonl")
    seed0, seed1 = metrics["metrics"]["seed-0"], metrics["metrics"]["seed-1"]
    assert seed0["val_loss_from"] == "train" and seed0["val_loss"] == pytest.approx((3 + 2 + 8 + 2) / 10)
    assert seed0["perplexity"] == pytest.approx(math.exp(1.5))
    assert seed1["val_loss_from"] == "evaluate" and seed1["val_loss"] == full["metrics"]["seed-1"]["val_loss"]
    assert full["metrics"]["seed-0"]["val_loss_from"] == "evaluate"
    assert _files(layout, "read-val")["losses"].read_bytes() == _files(layout, "out")["losses"].read_bytes()


def test_the_base_model_is_evaluated_like_a_method_with_seed_null(fp32_run, layout, tiny_model_dir, smoke_params):
    _, out = fp32_run
    result = _stage(_fp32(smoke_params), layout, tiny_model_dir, "base", method=BASE)
    files = _files(layout, "base", BASE)
    metrics = json.loads(files["metrics"].read_text(encoding="utf-8"))
    assert list(metrics) == ["base"] and metrics["base"]["seed"] is None and result["metrics"] == metrics
    losses, rows = read_records(files["losses"]), read_records(files["predictions"])
    assert [r["seed"] for r in losses] == [None] * N_LOSS and [r["seed"] for r in rows] == [None] * N_GEN
    assert [r["id"] for r in losses] == [r["id"] for r in out["losses"] if r["seed"] == 0]
    assert [r["loss"] for r in losses] != [r["loss"] for r in out["losses"] if r["seed"] == 0]
    assert set(metrics["base"]["degeneration"]["share"]) == FLAG_FIELDS
    timings = json.loads((layout / "base" / "timings.json").read_text(encoding="utf-8"))["seconds"]
    assert set(timings) == {"load_base", "base", "total"}


def test_score_cli_on_one_seeds_predictions_reproduces_its_metrics(fp32_run, layout, tmp_path):
    """Every score can be audited: re-scoring a seed's saved predictions gives the same numbers."""
    from daug.io import round_floats

    params, out = fp32_run
    path = tmp_path / "seed-1.jsonl"
    write_jsonl(path, [r for r in out["predictions"] if r["seed"] == 1])
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["score", str(path), "--bootstrap", str(params["evaluate"]["bootstrap"]), "--seed", str(params["seed"])])
    assert code == 0
    rescored = json.loads(buffer.getvalue())
    for m in (*SCORES, "n"):
        assert round_floats(rescored[m]) == out["metrics"]["seed-1"][m]


def test_prompts_are_the_training_prompts(layout, tokenizer, smoke_params):
    from daug.training.data import IGNORE, encode_records

    records = read_records(layout / "data" / DATASET / "test.jsonl")
    system = smoke_params["datasets"][DATASET]["system_prompt"]
    ids = tokenizer(prompts(tokenizer, records, system)).input_ids
    for example, prompt in zip(encode_records(tokenizer, records, system, 512).examples, ids):
        n_prompt = sum(1 for t in example.labels if t == IGNORE)
        assert example.input_ids[:n_prompt] == prompt


def test_a_newline_stop_is_a_dataset_option(tokenizer):
    from daug.chat import stop_token_ids
    from daug.generate import newline_token_ids

    assert stop_ids(tokenizer) == sorted(stop_token_ids(tokenizer))  # by default a reply ends at its turn's end only
    with_newline = stop_ids(tokenizer, stop_at_newline=True)
    assert set(newline_token_ids(tokenizer)) and set(newline_token_ids(tokenizer)) <= set(with_newline)
    assert set(stop_token_ids(tokenizer)) <= set(with_newline)
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in with_newline


def test_same_params_same_bytes(fp32_run, layout, tiny_model_dir):
    params, _ = fp32_run
    _stage(params, layout, tiny_model_dir, "again")
    for name, first in _files(layout, "out").items():
        assert _files(layout, "again")[name].read_bytes() == first.read_bytes(), name


def test_bad_input_and_missing_adapters_are_clear_errors(layout, tiny_model_dir, smoke_params, tmp_path):
    with pytest.raises(DaugError, match=r"paimon/rd: no lora-qv weights here .*run the train stage"):
        load(tiny_model_dir, layout / "adapters" / "paimon" / "rd", approach=LORA_QV)
    with pytest.raises(DaugError, match=r"needs their approach"):
        load(tiny_model_dir, layout / "adapters" / DATASET / METHOD / "seed-0")
    with pytest.raises(DaugError, match=r"rd/seed-2: no lora-qv weights here .*training seeds \[0, 2\]"):
        _stage(_fp32(smoke_params, seeds=[0, 2]), layout, tiny_model_dir, "missing")
    with pytest.raises(DaugError, match=r"train.seeds: .*expected a list of distinct integers >= 0"):
        _stage(_fp32(smoke_params, seeds=[]), layout, tiny_model_dir, "missing")
    bad = read_records(layout / "data" / DATASET / "test.jsonl")
    bad[7]["output"] = 3
    write_jsonl(tmp_path / "test.jsonl", bad)
    with pytest.raises(DaugError, match=r"test.jsonl: record 8"):
        stage(_fp32(smoke_params), Grid.of(smoke_params).run(DATASET, METHOD), base=tiny_model_dir, test=tmp_path / "test.jsonl",
              adapter=layout / "adapters" / DATASET / METHOD, out_dir=tmp_path, progress=False)
    with pytest.raises(DaugError, match=r"params evaluate.max_new_tokens: 0; expected an integer >= 1"):
        config(_params(smoke_params, max_new_tokens=0))
    with pytest.raises(DaugError, match=r"params evaluate.loss_examples: -1; expected an integer >= 0 or null"):
        config(_params(smoke_params, loss_examples=-1))
    with pytest.raises(DaugError, match=r"evaluate.max_exmaples: unknown key; known: "):
        config(_params(smoke_params, max_exmaples=3))
    with pytest.raises(DaugError, match=r"params evaluate.dtype: 'fp8'; expected one of: float32, bfloat16, float16 \(or null\)"):
        config(_params(smoke_params, dtype="fp8"))


def test_load_merges_the_adapter_and_casts_to_the_evaluation_dtype(layout, tiny_model_dir):
    import torch

    model, _ = load(tiny_model_dir, layout / "adapters" / DATASET / METHOD / "seed-0", dtype="bfloat16",
                    approach=LORA_QV)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged: a plain model


def test_generation_for_the_first_seeds_only_keeps_every_seeds_test_loss(fp32_run, layout, tiny_model_dir,
                                                                          smoke_params):
    """evaluate.generate_seeds: 1 generates replies for seed 0 only (the secondary endpoints decide
    nothing); every seed's test loss is written as before, byte for byte, and the seed without
    replies says so (`generated: false`), which the report's loaders accept."""
    from daug.report.load import evaluation_rows, score_rows

    import yaml

    params, full = fp32_run
    one = {**params, "evaluate": {**params["evaluate"], "generate_seeds": 1}}
    params_file = layout / "first-seed.yaml"
    params_file.write_text(yaml.safe_dump(one, allow_unicode=True), encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the CLI, which prints every seed's scores
        assert main(["evaluate", "--dataset", DATASET, "--method", METHOD, "--params", str(params_file),
                     "--base", str(tiny_model_dir), "--adapter", str(layout / "adapters" / DATASET / METHOD),
                     "--test", str(layout / "data" / DATASET / "test.jsonl"),
                     "--val", str(layout / "data" / DATASET / "val.jsonl"), "--out", str(layout / "first-seed"),
                     "--train-val", str(layout / "no-training-stage" / "val.jsonl"),
                     "--timings", str(layout / "first-seed" / "timings.json")]) == 0
    assert "seed-1: test_loss" in out.getvalue() and "no replies (past evaluate.generate_seeds)" in out.getvalue()
    result = {"timings": json.loads((layout / "first-seed" / "timings.json").read_text(encoding="utf-8"))}
    files = _files(layout, "first-seed")
    assert files["losses"].read_bytes() == _files(layout, "out")["losses"].read_bytes()
    assert {r["seed"] for r in read_records(files["predictions"])} == {0}
    metrics = json.loads(files["metrics"].read_text(encoding="utf-8"))
    assert metrics["seed-0"]["generated"] is True and metrics["seed-1"]["generated"] is False
    assert "bleu" not in metrics["seed-1"] and metrics["seed-1"]["test_loss"] == full["metrics"]["seed-1"]["test_loss"]
    assert "generate" not in result["timings"]["seconds"]["seed-1"]
    assert {r["seed"] for r in score_rows(DATASET, METHOD, metrics, files["metrics"])} == {0}
    rows = evaluation_rows(DATASET, METHOD, metrics, files["metrics"], {})
    assert [r["seed"] for r in rows] == [0, 1] and rows[1]["at_limit"] is None


def test_fresh_processes_evaluate_the_same_adapter_to_the_same_bytes(layout, tiny_model_dir, smoke_params, tmp_path):
    """Same params and adapter, three fresh `python -m daug evaluate` processes in bfloat16 (the cpu
    profile's dtype): byte-identical test losses, replies and metrics. A process-dependent first
    forward pass (a bf16 kernel's first-call path, memory alignment) would show here as one process
    differing; PYTHONHASHSEED varies between them as it does between pipeline runs."""
    import os
    import subprocess
    import sys

    import yaml

    params = _params(smoke_params, SEEDS, max_examples=N_GEN, loss_examples=N_LOSS, dtype="bfloat16")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    outputs = []
    for k in range(3):
        out = tmp_path / f"ev{k}"
        subprocess.run([sys.executable, "-m", "daug", "evaluate", "--dataset", DATASET, "--method", METHOD,
                        "--params", str(params_file), "--base", str(tiny_model_dir),
                        "--adapter", str(layout / "adapters" / DATASET / METHOD),
                        "--test", str(layout / "data" / DATASET / "test.jsonl"),
                        "--val", str(layout / "data" / DATASET / "val.jsonl"), "--out", str(out),
                        "--timings", str(out / "timings.json")],
                       cwd=REPO, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": str(k)})
        outputs.append({name: f.read_bytes() for name, f in _files(tmp_path, f"ev{k}").items()})
    assert outputs[0] == outputs[1] == outputs[2]
