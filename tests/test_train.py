"""The train stage on the tiny Gemma 3: masking, truncation, the fast loss (with trainable token
rows), the end-of-turn remedy, early stopping at the validation minimum and best-state restore,
seeds, exposure, resume after a real kill, NaN handling, two processes, and the adapter's PEFT
format (load and merge)."""
from __future__ import annotations

import collections
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
from daug.chat import GEMMA_END, messages, prompt_text
from daug.io import read_records, write_jsonl
from daug.params import training_seeds
from daug.train import encode_example, encode_records, exposure, stage, validation_loss
from daug.training.data import IGNORE, batch_schedule, collate
from daug.approaches import get_approach
from daug.runs import Grid
from daug.training.loop import TrainConfig
from tests.conftest import REPO

SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"
RAW = REPO / "data/raw/zhenhuan/huanhuan.json"  # vendored: no stage has to run first
ADAPTER = "adapter_model.safetensors"
SEEDS = [0, 1]
# One vs two processes under SGD: the same summed gradients, rounded differently. Measured on an AMD
# EPYC: at most 9.3e-8 apart, while the LoRA B weights moved by 3e-2 from 0; 1e-5 leaves 100x room.
ATOL_SUM = 1e-5
EOT = [GEMMA_END]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return read_records(RAW)[:8]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, records) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_jsonl(path, records)
    return path


@pytest.fixture(scope="module")
def val_file(tmp_path_factory) -> Path:
    """Held-out records: the 8 training records overfit, so their loss turns (early stopping)."""
    path = tmp_path_factory.mktemp("val") / "val.jsonl"
    write_jsonl(path, read_records(RAW)[8:16])
    return path


def tiny_params(smoke_params, dropout: float = 0.1, **train) -> dict:
    params = copy.deepcopy(smoke_params)
    params["train"].update({"seeds": SEEDS, "steps": 24, "batch_size": 4, "learning_rate": 0.1, "max_length": 64,
                            "log_every": 2, "eval_every": 2, "patience": 2, "checkpoint_every": 1, "val_examples": 8,
                            **train})
    params["approaches"]["lora-qv"]["dropout"] = dropout  # random: a resumed run must restore the generator's state
    params["train"]["trainable_tokens"] = EOT
    return params


def stage_paths(root: Path) -> dict:
    return {"out": root / "adapter", "runs": root / "runs", "report_csv": root / "loss.csv",
            "report_json": root / "summary.json", "report_val": root / "val.jsonl",
            "report_timings": root / "timings.json"}


def run_stage(params, root: Path, data: Path, base: Path, val: Path | None = None) -> dict:
    return stage(params, Grid.of(params).run("zhenhuan", "none"), data=data, val=val or data, base=base,
                 **stage_paths(root))


def cli_args(params_file: Path, root: Path, data: Path, base: Path, val: Path) -> list[str]:
    p = stage_paths(root)
    return ["-m", "daug", "train", "--params", str(params_file), "--dataset", "zhenhuan", "--method", "none",
            "--data", str(data), "--val", str(val), "--base", str(base), "--out", str(p["out"]),
            "--runs", str(p["runs"]), "--report-csv", str(p["report_csv"]), "--report-json", str(p["report_json"]),
            "--report-val", str(p["report_val"]), "--report-timings", str(p["report_timings"])]


def assert_same_adapter(a: Path, b: Path, atol: float) -> None:
    wa, wb = load_file(a / ADAPTER), load_file(b / ADAPTER)
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=0, msg=name)


def seeds_of(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "timings"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke_params, tiny_model_dir, data_file, val_file):
    """One uninterrupted run per seed: at most 24 steps on 8 records, validated on 8 others every 2
    steps; the training records overfit, so each seed stops early at its validation minimum (at 0.15:
    at 0.1 seed 0's curve flattens without turning within 24 steps)."""
    root = tmp_path_factory.mktemp("trained")
    params = tiny_params(smoke_params, learning_rate=0.15)
    summary = run_stage(params, root, data_file, tiny_model_dir, val_file)
    return {"root": root, "params": params, "summary": summary}


SHORT = ["臣妾遵旨。", "是。", "好的，皇上。", "嗯。"]


@pytest.fixture(scope="module")
def short_replies(records) -> list[dict]:
    return [dict(r, output=SHORT[i % len(SHORT)]) for i, r in enumerate(records)]


def overfit(tmp_path_factory, smoke_params, tiny_model_dir, short_replies, tokens: list[str]) -> dict:
    """One seed, 24 steps on 8 short replies (validated on the same records), no early stopping."""
    root = tmp_path_factory.mktemp("overfit")
    data = root / "short.jsonl"
    write_jsonl(data, short_replies)
    params = tiny_params(smoke_params, dropout=0.0, seeds=[0], max_length=128, eval_every=8, patience=None)
    params["train"]["trainable_tokens"] = tokens
    summary = run_stage(params, root, data, tiny_model_dir)
    return {"root": root, "adapter": root / "adapter" / "seed-0", "summary": summary["seed-0"]}


@pytest.fixture(scope="module")
def eot_trained(tmp_path_factory, smoke_params, tiny_model_dir, short_replies):
    return overfit(tmp_path_factory, smoke_params, tiny_model_dir, short_replies, EOT)


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


def lora_with_moved_rows(tiny_model_dir, tokens: list[str]):
    """A LoRA model whose every trainable weight is off its initial value (B starts at zero, the
    token rows at the base's), so each one changes the loss."""
    from daug.training.loop import trainable_model

    model = trainable_model(tiny_model_dir, {"dtype": "float32"}, get_approach("lora-qv", LORA), tokens, 0, "float32",
                            torch.device("cpu"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
            if "trainable_tokens_delta" in name:
                p.add_(torch.randn_like(p))
    trained_rows = [n for n, p in model.named_parameters() if p.requires_grad and "trainable_tokens_delta" in n]
    assert len(trained_rows) == bool(tokens)  # one set of rows, shared by the tied embedding and head
    return model


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


def test_fast_reply_loss_with_trained_token_rows_equals_the_peft_models_own_loss(tiny_model_dir, tokenizer,
                                                                                  records):
    """The end-of-turn row, trained: the fast loss (training) and the per-example loss (validation)
    both see it in the embedding and in the head, as peft's own forward does."""
    from daug.training.loss import ReplyLoss, example_losses

    model = lora_with_moved_rows(tiny_model_dir, EOT).eval()
    enc = encode_records(tokenizer, records, SYSTEM, 64)
    ids, mask, labels = collate(enc.examples, tokenizer.pad_token_id)
    eot = tokenizer.convert_tokens_to_ids(GEMMA_END)
    assert (labels == eot).sum() == len(enc.examples) - enc.truncated  # each whole reply ends with the row
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
        total, count = ReplyLoss(model)(ids, mask, labels)
        with model.disable_adapter():
            plain = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    assert total.item() / int(count) == pytest.approx(full, rel=1e-5)
    assert abs(plain - full) > 1e-3  # the moved rows and LoRA weights matter to the value
    per_example = example_losses(model, enc.examples, tokenizer.pad_token_id, 3)
    assert sum(e.loss for e in per_example) / sum(e.tokens for e in per_example) == pytest.approx(full, rel=1e-5)


@pytest.mark.parametrize("softcap,tokens", [(None, []), (0.05, []), (None, EOT), (0.05, EOT + ["<start_of_turn>"])])
def test_fast_reply_loss_has_the_models_own_gradient(tiny_model_dir, tokenizer, records, softcap, tokens):
    """The fused frozen-head cross-entropy gives the LoRA weights (and the trained token rows, which
    the tied embedding and head share) the gradient plain autograd gives."""
    from daug.training.loss import ReplyLoss

    model = lora_with_moved_rows(tiny_model_dir, tokens)
    model.get_base_model().config.final_logit_softcapping = softcap  # Gemma 2 style capping, if a model has it
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
        assert grad.abs().sum() > 0, name  # float32 rounding: atol ~1e-6 of gradients up to ~0.5
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("tokens", [[], EOT])
def test_the_shared_prompt_prefix_run_once_gives_every_rows_own_loss_and_gradient(tiny_model_dir, tokenizer, records,
                                                                                   tokens):
    """The chat template and system prompt that every row shares run once per batch (a key/value
    cache repeated over the rows): loss, per-example losses and gradients are those of running
    every row whole, also past the tiny model's 64-token sliding window."""
    from daug.training.loss import ReplyLoss, shared_prefix

    model = lora_with_moved_rows(tiny_model_dir, tokens)
    long = [dict(r, output=r["output"] * 6) for r in records]
    examples = encode_records(tokenizer, long, SYSTEM, 160).examples
    prefix = shared_prefix(examples)
    template = tokenizer(prompt_text(tokenizer, messages({"instruction": "", "input": ""}, SYSTEM))).input_ids
    assert 0 < prefix < len(template) and examples[0].input_ids[:prefix] == template[:prefix]
    assert all(t == IGNORE for e in examples for t in e.labels[:prefix + 1])  # no reply token is predicted from it
    ids, mask, labels = collate(examples, tokenizer.pad_token_id)
    assert ids.shape[1] > 64 and (mask.sum(1) < ids.shape[1]).any()  # past the window, with padding
    model.train()
    results = []
    for k in (0, prefix):
        model.zero_grad()
        total, count = ReplyLoss(model)(ids, mask, labels, k)
        (total / count).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            sums, counts = ReplyLoss(model).per_example(ids, mask, labels, k)
        results.append((total.item(), int(count), grads, sums, counts))
    (total0, count0, grads0, sums0, counts0), (total1, count1, grads1, sums1, counts1) = results
    assert count1 == count0 and torch.equal(counts1, counts0)
    assert total1 == pytest.approx(total0, rel=1e-5)
    torch.testing.assert_close(sums1, sums0, rtol=1e-5, atol=1e-6)
    for name, grad in grads0.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads1[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_shared_prefix_stops_at_the_first_difference_and_before_any_reply_target():
    from daug.training.data import Example
    from daug.training.loss import shared_prefix

    def ex(ids, prompt):
        return Example("x", ids, [IGNORE] * prompt + ids[prompt:])

    assert shared_prefix([ex([1, 2, 3, 4, 5], 3), ex([1, 2, 9, 4, 5], 3)]) == 2
    assert shared_prefix([ex([1, 2, 3, 4, 5], 3), ex([1, 2, 3, 4, 6], 4)]) == 2  # position 2 predicts a reply token
    assert shared_prefix([ex([1, 2, 3], 2)]) == 0  # one example: nothing to share


def test_a_trainable_token_outside_the_vocabulary_is_a_clear_error(tiny_model_dir):
    from daug.training.loop import trainable_model

    with pytest.raises(DaugError, match=r"train.trainable_tokens: '<end_of_reply>' is not a token of the tokenizer"):
        trainable_model(tiny_model_dir, {"dtype": "float32"}, get_approach("lora-qv", LORA), ["<end_of_reply>"], 0,
                        "float32", torch.device("cpu"))


def test_batch_order_is_fixed_by_seed_and_groups_lengths():
    lengths = [(i * 37) % 101 for i in range(200)]
    a = batch_schedule(lengths, 8, 60, seed=3)
    assert a == batch_schedule(lengths, 8, 60, seed=3) and a != batch_schedule(lengths, 8, 60, seed=4)
    assert all(len(b) == 8 for b in a) and len(a) == 60
    first_epoch = [i for b in a[:25] for i in b]
    assert len(set(first_epoch)) == 200  # an epoch sees every example once
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    assert spread < 20  # random batches of 8 would spread ~80


def test_passes_by_source_show_every_source_dialogue_equally_often_whatever_the_augmentation():
    # 40 source dialogues, each an original plus 0-2 augmentations (90 examples): each pass of 5
    # batches holds one example of every source, cycling through its variants
    sources = [f"s{i}" for i in range(40) for _ in range(i % 3 + 1)]
    lengths = [(i * 37) % 101 for i in range(len(sources))]
    a = batch_schedule(lengths, 8, 15, seed=3, sources=sources)
    assert a == batch_schedule(lengths, 8, 15, seed=3, sources=sources)
    assert a != batch_schedule(lengths, 8, 15, seed=4, sources=sources)
    seen = collections.Counter(sources[i] for b in a for i in b)
    assert set(seen.values()) == {3}  # 3 passes: every source 3 times
    first_pass = [sources[i] for b in a[:5] for i in b]
    assert sorted(first_pass) == sorted(set(sources))
    two = [i for i, s in enumerate(sources) if s == "s1"]  # a source with 2 examples: both, one of them twice
    assert sorted(collections.Counter(i for b in a for i in b if i in two).values()) == [1, 2]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    assert spread < 30


def test_passes_by_source_without_augmentation_are_the_epochs_of_passes_by_record():
    lengths = [(i * 37) % 101 for i in range(200)]
    assert batch_schedule(lengths, 8, 60, seed=3, sources=[f"s{i}" for i in range(200)]) == \
        batch_schedule(lengths, 8, 60, seed=3)


def test_train_passes_is_checked():
    assert TrainConfig.from_params({"passes": "record"}).passes == "record"
    with pytest.raises(DaugError, match=r"params train.passes: 'epoch'; expected one of: source, record"):
        TrainConfig.from_params({"passes": "epoch"})


def test_unknown_train_key_is_a_clear_error():
    with pytest.raises(DaugError, match=r"params train: train.stepz: unknown key; known: trainable_tokens, seeds"):
        TrainConfig.from_params({"stepz": 3})


@pytest.mark.parametrize("seeds", [[], [0, 0], [0.5], "0", [-1], [True]])
def test_bad_training_seeds_are_a_clear_error(seeds):
    # not a list at all: the type check of every params key; a bad list: the one seeds rule
    want = r"train.seeds: .*expected (a list of distinct integers >= 0|list \(as in params/base.yaml\))"
    with pytest.raises(DaugError, match=want):
        TrainConfig.from_params({"seeds": seeds})
    with pytest.raises(DaugError, match=want):
        training_seeds({"train": {"seeds": seeds}})  # what evaluate reads: the same rule and message


def test_exposure_counts_originals_and_augmentations_seen_up_to_a_step():
    """Passes = examples of a kind in the first `steps` batches / records of that kind; a dropped
    record (no example) still counts as a record."""
    from daug.training.data import Encoded

    records = [{"method": "none"}, {"method": "rd"}, {"method": "none"}, {"method": "rd"}, {"method": "rd"}, {}]
    train = Encoded([None] * 5, records=[0, 1, 2, 3, 5])  # record 4 was dropped; 5 has no provenance: original
    batches = [[0, 1], [2, 3], [4, 0], [1, 2]]
    assert exposure(batches, train, records, 0) == (0.0, 0.0)
    assert exposure(batches, train, records, 2) == (2 / 3, 2 / 3)   # examples 0, 2 / 1, 3
    assert exposure(batches, train, records, 4) == (5 / 3, 3 / 3)   # + 4 (record 5), 0, 2 / 1
    only_originals = Encoded([None] * 2, records=[0, 1])
    assert exposure([[0, 1]], only_originals, [records[0], records[2]], 1) == (1.0, None)  # no augmentation: None


def test_patience_null_means_no_early_stopping_and_zero_is_an_error():
    assert TrainConfig.from_params({"patience": None}).patience is None
    with pytest.raises(DaugError, match=r"params train.patience: 0; expected an integer >= 1, or null for no early stopping"):
        TrainConfig.from_params({"patience": 0})


def test_without_patience_the_run_follows_the_whole_schedule_and_keeps_its_best(eot_trained):
    s = eot_trained["summary"]
    assert (s["stop_step"], s["max_steps"], s["stopped_early"], s["patience"]) == (24, 24, False, None)
    assert 0 < s["best_step"] <= 24 and s["val_loss_best"] <= s["val_loss_final"]


def test_train_config_defaults_come_from_base_yaml_and_old_precisions_are_named():
    from daug.params import defaults

    # seeds_by_dataset is resolved into `seeds`, learning_rate_scale into learning_rate (daug.runs.train_params)
    resolved = {k: v for k, v in defaults()["train"].items() if k not in ("seeds_by_dataset", "learning_rate_scale")}
    assert vars(TrainConfig.from_params({})) == resolved
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

def read_curve(path: Path) -> dict[int, list[tuple[int, str, float]]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "seed,step,split,loss"
    out: dict[int, list] = {}
    for line in lines[1:]:
        seed, step, split, loss = line.split(",")
        out.setdefault(int(seed), []).append((int(step), split, float(loss)))
    return out


def test_each_seed_stops_at_its_validation_minimum_and_outputs_are_written(trained):
    root, summary, params = trained["root"], trained["summary"], trained["params"]
    cfg = params["train"]
    curves = read_curve(root / "loss.csv")
    assert list(curves) == SEEDS and list(seeds_of(summary)) == ["seed-0", "seed-1"]
    on_disk = json.loads((root / "summary.json").read_text())
    timings = json.loads((root / "timings.json").read_text())
    assert on_disk == json.loads(json.dumps(seeds_of(summary)))
    assert timings == summary["timings"] and timings["seconds"] > 0
    adapters = {}
    for seed in SEEDS:
        s = on_disk[f"seed-{seed}"]
        val = [(step, loss) for step, split, loss in curves[seed] if split == "val"]
        assert [step for step, _ in val] == list(range(0, s["stop_step"] + 1, cfg["eval_every"]))
        losses = [loss for _, loss in val]
        best = losses.index(min(losses))
        # the curve turned: `patience` evaluations after the best one without a new best, then stop
        assert s["stopped_early"] and s["stop_step"] < cfg["steps"] and len(val) - 1 - best == cfg["patience"]
        assert s["best_step"] == val[best][0] > 0 and s["val_loss_best"] == pytest.approx(losses[best], abs=1e-6)
        assert s["val_loss_best"] < s["val_loss_initial"] - 0.05  # it learned before it overfit
        assert s["val_loss_initial"] == pytest.approx(losses[0], abs=1e-6)
        assert s["val_loss_final"] == pytest.approx(losses[-1], abs=1e-6)
        train_steps = [step for step, split, _ in curves[seed] if split == "train"]
        assert train_steps == list(range(cfg["log_every"], s["stop_step"] + 1, cfg["log_every"]))
        assert (s["seed"], s["max_steps"], s["patience"], s["trainable_tokens"]) == (seed, 24, 2, EOT)
        assert (s["records"], s["originals"], s["augmented"]) == (8, 8, 0)
        assert s["examples"] + s["dropped"] == 8 and s["resumed_from"] == []
        # 4 examples a step, all originals: passes = steps x 4 / 8 records
        assert s["passes_original_best"] == pytest.approx(s["best_step"] * 4 / 8)
        assert s["passes_original_stop"] == pytest.approx(s["stop_step"] * 4 / 8)
        assert s["passes_augmented_best"] is None and s["passes_augmented_stop"] is None
        assert timings[f"seed-{seed}"]["tokens_per_second"] > 0
        adapters[seed] = load_file(root / "adapter" / f"seed-{seed}" / ADAPTER)
    first = next(iter(adapters[0]))
    assert not torch.equal(adapters[0][first], adapters[1][first])  # the seed changes LoRA init and batches


def test_the_saved_adapter_is_the_best_state_and_reproduces_the_best_val_loss(trained, tiny_model_dir, tokenizer,
                                                                            val_file):
    """Early stopping went `patience` evaluations past the minimum; the saved weights are the
    minimum's (restored), as the per-example val losses at the best say too."""
    from peft import PeftModel

    from daug.basemodel import load_model

    root = trained["root"]
    rows = read_records(root / "val.jsonl")
    val_examples = encode_records(tokenizer, read_records(val_file), SYSTEM, 64, source=str(val_file)).examples
    for seed in SEEDS:
        s = trained["summary"][f"seed-{seed}"]
        mine = [r for r in rows if r["seed"] == seed]
        assert [set(r) for r in mine[:1]] == [{"seed", "id", "tokens", "loss_best", "loss_final"}]
        assert [r["id"] for r in mine] == [e.id for e in val_examples] and s["val_examples"] == len(mine) > 3
        tokens = sum(r["tokens"] for r in mine)
        assert sum(r["loss_best"] * r["tokens"] for r in mine) / tokens == pytest.approx(s["val_loss_best"], rel=1e-5)
        assert sum(r["loss_final"] * r["tokens"] for r in mine) / tokens == pytest.approx(s["val_loss_final"], rel=1e-5)
        model = PeftModel.from_pretrained(load_model(tiny_model_dir), root / "adapter" / f"seed-{seed}")
        loss = validation_loss(model, tokenizer, read_records(val_file), SYSTEM, 64, 4)
        assert loss == pytest.approx(s["val_loss_best"], rel=1e-5)
        assert abs(loss - s["val_loss_final"]) > 1e-3  # not the last state


def test_adapter_is_standard_peft_with_the_trained_rows_and_merges_to_the_same_model(
        eot_trained, tiny_model_dir, tokenizer, short_replies):
    """The trained end-of-turn row lives in the standard adapter file; PeftModel.from_pretrained
    loads it, and merge_and_unload (what evaluation does) writes it into the tied embedding and head:
    the merged model's logits are the unmerged one's."""
    from peft import PeftModel

    from daug.basemodel import load_model

    out = eot_trained["adapter"]
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", ADAPTER, "README.md"}
    config = json.loads((out / "adapter_config.json").read_text())
    eot = tokenizer.convert_tokens_to_ids(GEMMA_END)
    assert config["peft_type"] == "LORA" and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert config["trainable_token_indices"] == [eot]
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and f"base_model: {tiny_model_dir}" in card
    assert "weights: zhenhuan-none" in card and "best_step" in card and '"learning_rate": 0.1' in card
    saved = load_file(out / ADAPTER)
    rows = [v for k, v in saved.items() if "trainable_tokens_delta" in k]
    assert len(rows) == 1 and rows[0].shape == (1, load_model(tiny_model_dir).config.hidden_size)

    base = load_model(tiny_model_dir)
    before = base.get_input_embeddings().weight[eot].clone()
    unmerged = PeftModel.from_pretrained(base, out).eval()
    enc = encode_records(tokenizer, short_replies, SYSTEM, 128).examples
    ids, mask, labels = collate(enc, tokenizer.pad_token_id)
    with torch.no_grad():
        expected = unmerged(input_ids=ids, attention_mask=mask).logits
        merged = unmerged.merge_and_unload().eval()
        got = merged(input_ids=ids, attention_mask=mask).logits
    emb, head = merged.get_input_embeddings().weight, merged.get_output_embeddings().weight
    torch.testing.assert_close(emb[eot], rows[0][0].to(emb.dtype))
    assert head.data_ptr() == emb.data_ptr()  # still tied: the head has the row too
    assert not torch.allclose(before, emb[eot])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (labels == eot).any()


def end_of_turn_behaviour(adapter: Path, tiny_model_dir, tokenizer, short_replies) -> tuple[list[int], list[int]]:
    """(the argmax token where each reply ends, teacher-forced; each greedy reply's token count,
    generated with <end_of_turn> as the only stop token)."""
    from peft import PeftModel

    from daug.basemodel import load_model
    from daug.generate import generate

    model = PeftModel.from_pretrained(load_model(tiny_model_dir), adapter).eval()
    enc = encode_records(tokenizer, short_replies, SYSTEM, 128).examples
    ids, mask, _ = collate(enc, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    ends = [int(logits[row, len(e.input_ids) - 2].argmax()) for row, e in enumerate(enc)]  # predicts the last label
    prompts = [prompt_text(tokenizer, messages(r, SYSTEM)) for r in short_replies]
    replies = generate(model, tokenizer, prompts, MAX_NEW, stop_ids=[tokenizer.convert_tokens_to_ids(GEMMA_END)],
                       progress=False)
    return ends, [len(tokenizer(r, add_special_tokens=False).input_ids) for r in replies]


MAX_NEW = 8


def test_the_trained_end_of_turn_row_makes_the_adapter_end_its_turn(
        eot_trained, tmp_path_factory, smoke_params, tiny_model_dir, tokenizer, short_replies):
    """train.trainable_tokens = [<end_of_turn>]: after a few steps the adapter predicts <end_of_turn>
    where each reply ends and greedy generation stops there, well inside the token limit. The
    same training without the trained row (q/v LoRA over the frozen tied head) does not stop."""
    eot = tokenizer.convert_tokens_to_ids(GEMMA_END)
    ends, lengths = end_of_turn_behaviour(eot_trained["adapter"], tiny_model_dir, tokenizer, short_replies)
    assert ends == [eot] * len(short_replies)
    assert max(lengths) < MAX_NEW  # every reply stopped, and the only stop token is <end_of_turn>
    plain = overfit(tmp_path_factory, smoke_params, tiny_model_dir, short_replies, [])
    ends, lengths = end_of_turn_behaviour(plain["adapter"], tiny_model_dir, tokenizer, short_replies)
    assert eot not in ends and min(lengths) >= MAX_NEW
    assert eot_trained["summary"]["val_loss_best"] < plain["summary"]["val_loss_best"]


def test_rerun_reuses_matching_checkpoints_and_ignores_stale_ones(trained, tmp_path, tiny_model_dir, data_file,
                                                                   val_file):
    import shutil

    shutil.copytree(trained["root"] / "runs", tmp_path / "runs")
    same = run_stage(trained["params"], tmp_path, data_file, tiny_model_dir, val_file)  # finished: nothing to redo
    for seed in SEEDS:
        key = f"seed-{seed}"
        assert same[key]["resumed_from"] == [trained["summary"][key]["stop_step"]]
        assert ((tmp_path / "adapter" / key / ADAPTER).read_bytes()
                == (trained["root"] / "adapter" / key / ADAPTER).read_bytes())
    for name in ("loss.csv", "val.jsonl"):
        assert (tmp_path / name).read_bytes() == (trained["root"] / name).read_bytes()
    more = copy.deepcopy(trained["params"])
    more["train"]["seeds"] = SEEDS + [2]  # a new seed trains; the others keep their checkpoints
    resumed = run_stage(more, tmp_path, data_file, tiny_model_dir, val_file)
    stops = [[same[f"seed-{k}"]["stop_step"]] for k in SEEDS]
    assert [resumed[f"seed-{k}"]["resumed_from"] for k in SEEDS + [2]] == stops + [[]]
    changed = copy.deepcopy(trained["params"])
    changed["train"].update(steps=2, learning_rate=0.05)
    assert run_stage(changed, tmp_path, data_file, tiny_model_dir, val_file)["seed-0"]["resumed_from"] == []


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
    params = tiny_params(smoke_params, steps=6, checkpoint_every=1, patience=100)
    with pytest.raises(DaugError, match=r"step 3: training loss is nan .*last good checkpoint: .*step-000002 \(step 2\)"):
        run_stage(params, tmp_path, data_file, tiny_model_dir)
    latest = json.loads((tmp_path / "runs" / "seed-0" / "latest.json").read_text())
    assert latest["step"] == 2
    weights = load_file(tmp_path / "runs" / "seed-0" / latest["dir"] / "adapter.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "loss.csv").exists()


# --- processes --------------------------------------------------------------------------------------

def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(trained, tmp_path, tiny_model_dir, data_file, val_file):
    """SIGKILL after seed 0 found its best but before it stopped: the re-run restores the best state
    and the patience counter, stops at the same step and saves the same adapters."""
    best, stop = (trained["summary"]["seed-0"][k] for k in ("best_step", "stop_step"))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(trained["params"], allow_unicode=True), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, *cli_args(params_file, tmp_path, data_file, tiny_model_dir, val_file)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = tmp_path / "runs" / "seed-0" / "latest.json"

    def checkpointed() -> int:
        try:
            return json.loads(latest.read_text())["step"]
        except (FileNotFoundError, json.JSONDecodeError):
            return 0

    deadline = time.monotonic() + 300
    while checkpointed() <= best and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    killed_at = checkpointed()
    assert best < killed_at < stop and not (tmp_path / "adapter").exists()

    summary = run_stage(trained["params"], tmp_path, data_file, tiny_model_dir, val_file)  # the stage re-runs
    assert summary["seed-0"]["resumed_from"] == [killed_at] and summary["seed-1"]["resumed_from"] == []
    for seed in SEEDS:
        key = f"seed-{seed}"
        for k in ("best_step", "stop_step", "val_loss_best", "passes_original_best"):
            assert summary[key][k] == trained["summary"][key][k], (key, k)
        assert ((tmp_path / "adapter" / key / ADAPTER).read_bytes()
                == (trained["root"] / "adapter" / key / ADAPTER).read_bytes())
    assert (tmp_path / "loss.csv").read_text() == (trained["root"] / "loss.csv").read_text()  # the curve continues
    assert (tmp_path / "val.jsonl").read_text() == (trained["root"] / "val.jsonl").read_text()


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, smoke_params, tiny_model_dir, data_file,
                                                            val_file, monkeypatch):
    """torchrun, 2 gloo processes, 2 examples each in micro-batches of 1 vs one process, batch 4.

    The invariant: the gradient summed over processes and micro-batches equals one process's. Both
    runs use SGD (tests/ddp_sgd.py), whose update is linear in the gradient, so equal gradients give
    weights equal to float rounding on any CPU. (With AdamW the seed-1 adapters differed by 4e-4 on
    an Intel Xeon and 4e-3 on an AMD EPYC: Adam divides by the gradient's size, so where a gradient
    is ~0 its last-bit rounding moves the update by up to the learning rate.)"""
    from daug.training import loop
    from tests.ddp_sgd import sgd

    monkeypatch.setattr(loop, "make_optimizer", sgd)
    # no dropout: its masks would differ between one and two processes; nothing else may
    params = tiny_params(smoke_params, dropout=0.0, steps=6, eval_every=3, log_every=1, checkpoint_every=3,
                         patience=100)
    single = run_stage(params, tmp_path / "one", data_file, tiny_model_dir, val_file)
    params["train"]["micro_batch_size"] = 1  # gradient accumulation inside each process too
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "tests.ddp_sgd",
           *cli_args(params_file, tmp_path / "two", data_file, tiny_model_dir, val_file)[2:]]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    for seed in SEEDS:
        key = f"seed-{seed}"
        assert two[key]["processes"] == 2 and single[key]["processes"] == 1
        assert two[key]["tokens"] == single[key]["tokens"]  # the same examples in the same order
        trained = load_file(tmp_path / "one" / "adapter" / key / ADAPTER)
        # LoRA's B starts at 0: SGD moved it, so the comparison below is not of two initialisations
        assert max(float(w.abs().max()) for n, w in trained.items() if "lora_B" in n) > 1e-3
        assert_same_adapter(tmp_path / "two" / "adapter" / key, tmp_path / "one" / "adapter" / key, atol=ATOL_SUM)
    for a, b in zip((tmp_path / "one" / "loss.csv").read_text().splitlines()[1:],
                    (tmp_path / "two" / "loss.csv").read_text().splitlines()[1:]):
        (ea, sa, ka, la), (eb, sb, kb, lb) = a.split(","), b.split(",")
        assert (ea, sa, ka) == (eb, sb, kb) and math.isclose(float(la), float(lb), rel_tol=1e-5)
    rows_one, rows_two = read_records(tmp_path / "one" / "val.jsonl"), read_records(tmp_path / "two" / "val.jsonl")
    assert [(r["seed"], r["id"], r["tokens"]) for r in rows_one] == [(r["seed"], r["id"], r["tokens"]) for r in rows_two]


def test_every_seed_starts_as_the_base_model_so_one_step_0_validation_serves_all(smoke_params, tiny_model_dir,
                                                                                tokenizer, val_file, trained):
    """train_loop evaluates step 0 once per run and gives the result to the other seeds: that is only
    right if every seed's fresh LoRA model scores the validation records exactly alike (B = 0, the
    trained token rows at their pretrained values), and a trained model does not."""
    from daug.training.loop import ReplyLoss, evaluate, trainable_model

    params = tiny_params(smoke_params, dropout=0.0)
    cfg = TrainConfig.from_params(params["train"])
    approach = get_approach("lora-qv", params["approaches"]["lora-qv"])
    assert approach.starts_as_base
    val = encode_records(tokenizer, read_records(val_file), None, cfg.max_length)
    scores = []
    for seed in (0, 1, 7):
        model = trainable_model(tiny_model_dir, params["model"], approach, EOT, seed, cfg.precision,
                                torch.device("cpu"), tokenizer)
        scores.append(evaluate(model, ReplyLoss(model, approach), val, tokenizer.pad_token_id, cfg, 0, 1))
    assert scores[0] == scores[1] == scores[2]  # the same bytes, whatever the seed's LoRA A
    curves = read_curve(trained["root"] / "loss.csv")
    step0 = {seed: [loss for step, split, loss in curves[seed] if split == "val" and step == 0] for seed in SEEDS}
    assert step0[0] == step0[1] and len(step0[0]) == 1
