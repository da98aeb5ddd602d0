"""The paper profile's QLoRA path, for real, on CPU: the tiny Gemma 3 quantised to NF4 by bitsandbytes,
prepared for k-bit training by peft, LoRA-trained by daug's own loop, then evaluated with the adapter
kept unmerged (generation and validation loss). The same code the paper profile runs on a GPU.
Also: `dvc repro --dry` plans the paper profile's whole pipeline without touching the network."""
from __future__ import annotations

import copy
import json
import math
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from daug.io import read_records, write_jsonl
from daug.params import load, resolve
from tests.conftest import REPO
from tests.test_pipeline import checkout_copy, ran_stages, run, stage_names

DATASET, METHOD = "zhenhuan", "none"
RAW = REPO / "data/raw/zhenhuan/huanhuan.json"


def qlora_params(smoke_params) -> dict:
    """The smoke profile with the paper profile's 4-bit settings: model dtype (the NF4 compute dtype),
    training precision and the evaluation dtype (null: the 4-bit model keeps its own)."""
    paper = resolve("paper", REPO / "params")
    params = copy.deepcopy(smoke_params)
    params["model"].update(load_in_4bit=True, dtype=paper["model"]["dtype"])
    params["train"].update(precision=paper["train"]["precision"], steps=8, batch_size=4, learning_rate=0.05,
                           max_length=64, log_every=2, eval_every=4, val_examples=4, seeds=[0], patience=100)
    params["train"]["trainable_tokens"] = paper["train"]["trainable_tokens"]  # Llama 3 Instruct knows its template
    params["evaluate"].update(dtype=paper["evaluate"]["dtype"], max_examples=4, max_new_tokens=6,
                              val_examples=4, max_length=64)  # validation as in training: same records, length
    return params


@pytest.fixture(scope="module")
def qlora(tmp_path_factory, smoke_params, tiny_model_dir):
    """One train + evaluate run of the 4-bit path, run the way the pipeline runs it (the stage
    functions with their default paths, in a temporary repository layout); the models the stages
    built are kept for inspection."""
    from daug import evaluate, train
    from daug.paths import Paths
    from daug.runs import Grid
    from daug.training import loop

    root = tmp_path_factory.mktemp("qlora")
    params = qlora_params(smoke_params)
    layout = Paths.of(params, root)
    run = Grid.of(params).run(DATASET, METHOD)
    records = read_records(RAW)
    write_jsonl(layout.augmented(run.augmentation), records[:8])
    write_jsonl(layout.prepared(DATASET, "val"), records[8:12])
    write_jsonl(layout.prepared(DATASET, "test"), records[12:16])
    layout.base_model().parent.mkdir(parents=True)
    layout.base_model().symlink_to(tiny_model_dir, target_is_directory=True)
    built = {}

    def spy(name, fn):
        def wrapper(*args, **kwargs):
            built[name] = fn(*args, **kwargs)
            return built[name]
        return wrapper

    with pytest.MonkeyPatch.context() as mp:  # spies only: the real functions run
        mp.chdir(root)
        mp.setattr(loop, "trainable_model", spy("train", loop.trainable_model))
        mp.setattr(evaluate, "load", spy("eval", evaluate.load))
        started = time.perf_counter()
        summary = train.stage(params, run)
        trained = time.perf_counter()
        metrics = evaluate.stage(params, run, progress=False)
    print(f"4-bit CPU: train {trained - started:.1f} s, evaluate {time.perf_counter() - trained:.1f} s")
    return {"layout": layout, "params": params, "summary": summary, "metrics": metrics, "run": run,
            "train_model": built["train"], "eval_model": built["eval"][0]}


def nf4_layers(model) -> dict:
    import bitsandbytes as bnb

    return {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def test_training_runs_lora_over_nf4_layers_prepared_for_kbit_training(qlora):
    model = qlora["train_model"]
    base = model.get_base_model()
    assert base.is_loaded_in_4bit and base.is_activation_checkpointing  # peft's k-bit preparation ran
    layers = nf4_layers(model)
    targets = qlora["params"]["approaches"]["lora-qv"]["target_modules"]
    wrapped = [n for n in layers if n.endswith(".base_layer")]  # LoRA sits on top of the frozen NF4 layers
    assert {n.split(".")[-2] for n in wrapped} == set(targets)
    q = layers[wrapped[0]]
    assert q.weight.quant_state.quant_type == "nf4" and q.weight.quant_state.nested  # double quantisation
    assert q.compute_dtype == getattr(torch, qlora["params"]["model"]["dtype"])
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and p.dtype == torch.float32 for n, p in trainable)


def test_training_learns_and_saves_a_peft_adapter(qlora):
    summary = qlora["summary"]["seed-0"]
    assert summary["stop_step"] == summary["max_steps"] == qlora["params"]["train"]["steps"]
    assert summary["precision"] == qlora["params"]["train"]["precision"] and summary["trainable_tokens"] == []
    assert math.isfinite(summary["val_loss_best"]) and summary["val_loss_best"] < summary["val_loss_initial"]
    adapter = qlora["layout"].adapter(qlora["run"], 0)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and set(config["target_modules"]) == set(qlora["params"]["approaches"]["lora-qv"]["target_modules"])
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [w for n, w in weights.items() if "lora_B" in n]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b)  # B starts at zero: training moved it


def test_evaluation_keeps_the_adapter_unmerged_over_nf4_and_scores_it(qlora):
    from peft import PeftModel

    model, metrics, params = qlora["eval_model"], qlora["metrics"]["metrics"]["seed-0"], qlora["params"]
    assert isinstance(model, PeftModel) and not model.training
    layers = nf4_layers(model)
    assert any(n.endswith(".base_layer") for n in layers)  # not merged: merging would re-quantise NF4
    predictions = read_records(qlora["layout"].predictions(qlora["run"]))
    assert len(predictions) == metrics["n"] == params["evaluate"]["max_examples"]
    assert all(isinstance(p["prediction"], str) for p in predictions)
    assert metrics["dtype"] == params["model"]["dtype"]  # the unquantised weights (embeddings) keep it
    # the adapter (the best state) scores the same validation records as training did there: same model
    assert metrics["val_loss"] == pytest.approx(qlora["summary"]["seed-0"]["val_loss_best"], rel=0.02)


def test_dvc_dry_run_plans_the_paper_profile_offline(tmp_path, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any network request fails at once
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = checkout_copy(tmp_path)
    run([sys.executable, "-m", "daug", "profile", "paper"], repo)
    active = load(repo / "params.yaml")
    assert active["profile"] == "paper" and active["model"]["load_in_4bit"]
    # --force: in a checkout without outputs, DVC 3.67's plain --dry stops at the first stage whose
    # dependency an upstream stage would write (its run-cache lookup hashes the missing file,
    # dvc/stage/cache.py:_can_hash -> FileNotFoundError; treeverse/dvc#9021). Here every stage is
    # out of date anyway, so forcing plans exactly what a real `dvc repro` would run.
    proc = run(["dvc", "repro", "--dry", "--force"], repo)
    planned = ran_stages(proc.stdout)
    assert planned == stage_names(repo)  # every stage planned, none skipped
    assert "base_model" in planned and any(s.startswith("train@") for s in planned)
    assert "results/paper/notebooks/base_model.ipynb" in proc.stdout  # the paper profile's commands
    # a dry run only plans: no stage ran (the hub model was never fetched), nothing was written
    assert not (repo / "models").exists() and not (repo / "data/prepared").exists()
    assert not (repo / "reports/paper").exists()
