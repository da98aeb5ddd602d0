"""Fine-tuning approaches behind the registry (daug/approaches/): every registered approach trains,
saves, reloads and evaluates on the tiny model through the normal train and evaluate stages, and
trains exactly the parameters its definition says (counted here from the model's shapes, not from
the approach); prompt and prefix tuning change the forward pass (their virtual tokens must change
the loss, and the fast loss must not skip them); the bottleneck adapter is Houlsby et al.'s layer;
an approach that cannot do what params ask fails before any work."""
from __future__ import annotations

import copy
import json
from typing import ClassVar

import pytest
import torch

from daug import DaugError
from daug.approaches import APPROACHES, get_approach
from daug.chat import GEMMA_END
from daug.io import read_records, write_jsonl
from daug.training.data import collate, encode_records
from daug.runs import Grid
from tests.conftest import REPO

RAW = REPO / "data/raw/zhenhuan/huanhuan.json"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("approach-data")
    records = [{"id": f"zhenhuan-{i:05d}", "input": "", **r} for i, r in enumerate(read_records(RAW)[:20])]
    for name, rows in (("train", records[:8]), ("val", records[8:12]), ("test", records[12:20])):
        write_jsonl(root / f"{name}.jsonl", rows)
    return root


# Each approach at its own learning rate, as peft's method comparison tunes them (prompt and prefix
# tuning want more, full fine-tuning less).
LEARNING_RATES = {"lora-qv": 0.05, "lora-all": 0.05, "dora": 0.05, "ia3": 0.05, "prompt": 0.5, "prefix": 0.5,
                  "adapter": 0.05, "last-layers": 0.01, "full": 0.005}


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
                              "params": params, "tiny_model_dir": tiny_model_dir}
    return _TRAINED[approach]


@pytest.fixture(scope="module", params=sorted(LEARNING_RATES))
def trained(request, smoke_params, data, tiny_model_dir, tmp_path_factory):
    return trained_run(request.param, smoke_params, data, tiny_model_dir, tmp_path_factory)


@pytest.fixture(scope="module", params=["prompt", "prefix"])
def prompt_tuned(request, smoke_params, data, tiny_model_dir, tmp_path_factory):
    return trained_run(request.param, smoke_params, data, tiny_model_dir, tmp_path_factory)


PEFT_TYPES = {"lora-qv": "LORA", "lora-all": "LORA", "dora": "LORA", "ia3": "IA3", "prompt": "PROMPT_TUNING",
              "prefix": "PREFIX_TUNING"}


def test_every_approach_trains_saves_reloads_and_evaluates(trained):
    from daug.approaches import from_params
    from daug.basemodel import load_model

    root, run, approach = trained["root"], trained["run"], trained["approach"]
    default = trained["params"]["grid"]["approach"] if "grid" in trained["params"] else "lora-qv"
    # named by its non-default axis (the default approach leaves the name as it was)
    assert run.name == ("zhenhuan-none" if approach == default else f"zhenhuan-none-{approach}")
    saved = root / "weights" / "seed-0"
    if approach in PEFT_TYPES:
        config = json.loads((saved / "adapter_config.json").read_text(encoding="utf-8"))
        assert config["peft_type"] == PEFT_TYPES[approach] and config.get("use_dora", False) == (approach == "dora")
    elif approach in ("full", "last-layers"):  # a plain Hugging Face checkpoint
        assert (saved / "config.json").exists() and (saved / "model.safetensors").exists()
    else:
        assert (saved / "bottleneck.safetensors").exists()
    card = (saved / "README.md").read_text(encoding="utf-8")
    assert f"# {approach} weights: {run.name}" in card
    s = trained["summary"]["seed-0"]
    assert s["stop_step"] == 4
    base = load_model(trained["tiny_model_dir"])
    expected = expected_trainable(approach, from_params(trained["params"], approach).params, base)
    added = 0 if approach in ("full", "last-layers") else expected  # the others add their weights to the model's
    assert (s["trainable_parameters"], s["total_parameters"]) == (expected,
                                                                  sum(p.numel() for p in base.parameters()) + added)
    assert s["trainable_share"] == pytest.approx(expected / s["total_parameters"], rel=1e-3, abs=1e-6)  # 6 decimals
    assert json.loads((root / "train-timings.json").read_text())["seed-0"]["peak_rss_mb"] > 0
    if approach in ("prompt", "prefix"):  # virtual tokens on the random tiny model (loss ~ ln(vocab)): no rate
        # tried (0.01-2) lowered validation in 4 steps reliably (it is the next test that they are used):
        curve = [float(line.split(",")[3]) for line in (root / "loss.csv").read_text().splitlines()[1:]
                 if ",train," in line]  # its training loss must still move
        assert curve[-1] != curve[0]
    else:
        assert s["val_loss_best"] < s["val_loss_initial"]  # it learned something
    metrics = trained["result"]["metrics"]["seed-0"]
    assert metrics["n_loss"] == 4 and metrics["n"] == 2 and metrics["val_loss"] is not None
    losses = read_records(root / "eval" / f"{run.name}.losses.jsonl")
    predictions = read_records(root / "eval" / f"{run.name}.predictions.jsonl")
    assert len(losses) == 4 and len(predictions) == 2 and all(isinstance(p["prediction"], str) for p in predictions)
    # evaluation reloaded the saved weights: its validation loss is the trained state's, not the base model's
    assert metrics["val_loss"] == pytest.approx(s["val_loss_best"], rel=1e-4)


def expected_trainable(name: str, params: dict, model) -> int:
    """What `name` trains on `model`, from its definition and the model's shapes (not from the approach)."""
    c = model.config
    layers, h, inter = c.num_hidden_layers, c.hidden_size, c.intermediate_size
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, inter),
              "up_proj": (h, inter), "down_proj": (inter, h)}
    r = params.get("r")
    if name == "lora-qv":
        return layers * sum(r * (i + o) for i, o in (shapes["q_proj"], shapes["v_proj"]))
    if name == "lora-all":
        return layers * sum(r * (i + o) for i, o in shapes.values())
    if name == "dora":  # LoRA's A and B plus one magnitude per output feature
        return layers * sum(r * (i + o) + o for i, o in (shapes["q_proj"], shapes["v_proj"]))
    if name == "ia3":  # a vector over k's and v's outputs and over down_proj's input
        return layers * (kv + kv + inter)
    if name == "prompt":
        return params["virtual_tokens"] * h
    if name == "prefix":  # a key and a value prefix per layer, per key/value head
        return params["virtual_tokens"] * layers * 2 * kv
    if name == "adapter":  # two adapters per layer: down (h x s + s) and up (s x h + h)
        s = params["size"]
        return layers * 2 * (h * s + s + s * h + h)
    if name == "last-layers":
        one_layer = sum(p.numel() for p in model.model.layers[-1].parameters())
        return params["layers"] * one_layer + h  # the final norm's weight
    if name == "full":
        return sum(p.numel() for p in model.parameters())  # the tied embedding/head counted once
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(LEARNING_RATES))
def test_trainable_parameters_match_each_approachs_definition(name, tiny_model_dir):
    from daug.basemodel import load_model

    approach = get_approach(name)
    expected = expected_trainable(name, approach.params, load_model(tiny_model_dir))
    model = approach.wrap(load_model(tiny_model_dir), [])
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_the_bottleneck_adapter_is_houlsbys_layer():
    """h + W_up f(W_down h + b_down) + b_up on a hand-made case, and the identity at initialisation."""
    from daug.approaches.bottleneck_layer import Bottleneck

    layer = Bottleneck(hidden=2, size=1, nonlinearity="relu")
    h = torch.tensor([[1.0, -2.0]])
    assert torch.equal(layer(h), h)  # W_up = 0, b_up = 0: the base model's function
    with torch.no_grad():
        layer.down.weight.copy_(torch.tensor([[0.5, 0.25]]))
        layer.down.bias.copy_(torch.tensor([1.0]))
        layer.up.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        layer.up.bias.copy_(torch.tensor([0.1, 0.2]))
    # W_down h + b_down = 0.5 - 0.5 + 1 = 1; relu(1) = 1; W_up 1 + b_up = (2.1, -0.8)
    assert torch.allclose(layer(h), torch.tensor([[1.0 + 2.1, -2.0 - 0.8]]))


def test_virtual_tokens_change_the_loss_and_the_fast_loss_does_not_skip_them(prompt_tuned, data, tiny_model_dir,
                                                                               tokenizer, smoke_params):
    from daug.basemodel import load_model
    from daug.evaluate import load
    from daug.training.loss import unwrap, validation_loss

    approach = get_approach(prompt_tuned["approach"])
    model, _ = load(tiny_model_dir, prompt_tuned["root"] / "weights" / "seed-0", approach=approach)
    records = read_records(data / "val.jsonl")
    system = smoke_params["datasets"]["zhenhuan"]["system_prompt"]
    tuned = validation_loss(model, tokenizer, records, system, 96, 4, approach=approach)
    base = validation_loss(load_model(tiny_model_dir), tokenizer, records, system, 96, 4)
    assert abs(tuned - base) > 1e-3  # the virtual tokens are used
    assert tuned == pytest.approx(prompt_tuned["summary"]["seed-0"]["val_loss_best"], rel=1e-4)  # as in training
    # The loss never runs the model's own head (on Gemma in bfloat16 it copied the 262k-row weight per
    # batch row: prompt tuning ran 7x slower); the head is back in place afterwards.
    head = unwrap(model).get_output_embeddings()
    calls = []
    handle = head.register_forward_hook(lambda *_: calls.append(1))
    try:
        assert validation_loss(model, tokenizer, records, system, 96, 4, approach=approach) == tuned
    finally:
        handle.remove()
    assert not calls and unwrap(model).get_output_embeddings() is head
    # The reply-only head on the captured hidden states = cross-entropy of the peft model's own logits.
    nll = tokens = 0.0
    with torch.no_grad():
        for e in encode_records(tokenizer, records, system, 96, source="val").examples:
            ids, labels = torch.tensor([e.input_ids]), torch.tensor([e.labels])
            total, count = own_nll(model, ids, torch.ones_like(ids), labels)
            nll, tokens = nll + total, tokens + count
    assert tuned == pytest.approx(nll / tokens, rel=1e-4)
    # Without the approach, the fast loss runs the decoder stack alone and would miss them: the base loss.
    skipped = validation_loss(model, tokenizer, records, system, 96, 4)
    assert skipped == pytest.approx(base, rel=1e-5)


def test_an_approach_that_cannot_train_token_rows_fails_before_any_work(smoke_params, data, tiny_model_dir,
                                                                         tmp_path, monkeypatch):
    from daug.approaches.ia3 import IA3
    from daug.basemodel import load_model as real_load
    from daug.training import loop

    loads = []
    monkeypatch.setattr("daug.basemodel.load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(IA3, "trains_token_rows", False)  # every registered approach can; one that could not
    params = approach_params(smoke_params)
    with pytest.raises(DaugError, match=r"approach 'ia3' cannot train token rows \(train.trainable_tokens\)"):
        loop.trainable_model(tiny_model_dir, params["model"], get_approach("ia3"), ["<end_of_turn>"], 0,
                             "float32", torch.device("cpu"))
    assert loads == []  # checked before the model loads


def own_nll(model, ids, mask, labels) -> tuple[float, int]:
    """(summed negative log-likelihood, tokens) of the reply tokens under the model's own logits at
    every position (a prompt-tuned model's come after its virtual tokens): the reference daug's
    reply-only loss must equal."""
    from daug.training.loss import IGNORE

    logits = model(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1]:]
    keep = labels[:, 1:] != IGNORE
    nll = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), labels[:, 1:][keep], reduction="sum")
    return nll.item(), int(keep.sum())


def own_loss(model, ids, mask, labels) -> float:
    """The model's own causal-LM loss over the reply tokens: mean nats per token (own_nll)."""
    total, count = own_nll(model, ids, mask, labels)
    return total / count


def moved(model, names=("trainable_tokens_delta", "daug_token_rows.rows", "lora_B")):
    """Every trainable tensor whose name holds one of `names` moved off its initial value."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and any(n in name for n in names):
                p.add_(torch.randn_like(p))
    return model


def test_daugs_token_rows_equal_peft_s_on_lora(tiny_model_dir, tokenizer, tmp_path):
    """The same LoRA weights and end-of-turn row, once as peft's TrainableTokens and once as daug's
    own rows (daug/approaches/token_rows.py): the same loss, fast loss and gradients, and after
    saving, loading and merging the same model."""
    from daug.approaches import token_rows
    from daug.basemodel import load_model
    from daug.training.loss import ReplyLoss

    lora = get_approach("lora-qv", {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    eot = tokenizer.convert_tokens_to_ids([GEMMA_END])
    peft_rows = moved(lora.wrap(load_model(tiny_model_dir), eot))
    own_rows = token_rows.add(lora.wrap(load_model(tiny_model_dir), []), eot)
    with torch.no_grad():
        named = dict(own_rows.named_parameters())
        for name, p in peft_rows.named_parameters():
            if "trainable_tokens_delta" in name:
                token_rows.of_model(own_rows).rows.copy_(p)
            elif p.requires_grad:
                named[name].copy_(p)
    records = read_records(RAW)[:6]
    ids, mask, labels = collate(encode_records(tokenizer, records, "system", 96).examples, tokenizer.pad_token_id)
    grads = []
    for model in (peft_rows, own_rows):
        model.train()
        model.zero_grad()
        total, count = ReplyLoss(model)(ids, mask, labels)
        (total / count).backward()
        grads.append((total.item() / int(count), own_loss(model, ids, mask, labels),
                      {n.replace("token_adapter.trainable_tokens_delta.default", "rows"): p.grad.clone()
                       for n, p in model.named_parameters() if p.requires_grad}))
    (fast_a, own_a, grad_a), (fast_b, own_b, grad_b) = grads
    assert fast_a == pytest.approx(own_a, rel=1e-5) and fast_b == pytest.approx(own_b, rel=1e-5)
    assert fast_b == pytest.approx(fast_a, rel=1e-6)
    rows_a = next(g for n, g in grad_a.items() if n.endswith("rows"))
    rows_b = next(g for n, g in grad_b.items() if n.endswith("daug_token_rows.rows"))
    assert rows_a.abs().sum() > 0
    torch.testing.assert_close(rows_b, rows_a, rtol=1e-4, atol=1e-6)
    for name, grad in grad_a.items():
        if not name.endswith("rows"):
            torch.testing.assert_close(grad_b[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    merged = []
    for k, model in enumerate((peft_rows, own_rows)):
        lora.save(model, tmp_path / str(k))
        merged.append(lora.for_inference(lora.load(load_model(tiny_model_dir), tmp_path / str(k)), False).eval())
    assert (tmp_path / "1" / token_rows.FILE).exists() and not (tmp_path / "0" / token_rows.FILE).exists()
    with torch.no_grad():
        torch.testing.assert_close(merged[1](input_ids=ids, attention_mask=mask).logits,
                                   merged[0](input_ids=ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)
    assert token_rows.of_model(merged[1]) is None  # folded into the embedding: a plain model


@pytest.mark.parametrize("name", ["ia3", "prompt", "prefix", "adapter", "last-layers"])
def test_approaches_without_peft_rows_train_the_end_of_turn_row_and_keep_it_through_save_and_load(
        name, tiny_model_dir, tokenizer, tmp_path):
    """daug's own rows on the approaches peft gives no TrainableTokens: the fast loss sees them (value
    and a gradient), the model's own forward too, and the saved, reloaded, inference-ready model
    computes the same loss; folded away, nothing of them is left on the model."""
    from daug.approaches import token_rows
    from daug.basemodel import load_model
    from daug.training.loss import ReplyLoss

    approach = get_approach(name)
    eot = tokenizer.convert_tokens_to_ids([GEMMA_END])
    model = moved(approach.wrap(load_model(tiny_model_dir), eot), names=("daug_token_rows.rows",))
    assert [n for n, p in model.named_parameters() if p.requires_grad and "daug_token_rows" in n]
    records = read_records(RAW)[:6]
    ids, mask, labels = collate(encode_records(tokenizer, records, "system", 96).examples, tokenizer.pad_token_id)
    assert (labels == eot[0]).any()
    model.eval()
    total, count = ReplyLoss(model, approach)(ids, mask, labels)
    (total / count).backward()
    rows = token_rows.of_model(model).rows
    assert rows.grad is not None and rows.grad.abs().sum() > 0
    with torch.no_grad():
        trained = own_loss(model, ids, mask, labels)
        assert total.item() / int(count) == pytest.approx(trained, rel=1e-5)
        plain = own_loss(approach.wrap(load_model(tiny_model_dir), []), ids, mask, labels)
        assert abs(plain - trained) > 1e-3  # the moved row matters
    approach.save(model, tmp_path / "w")
    reloaded = approach.for_inference(approach.load(load_model(tiny_model_dir), tmp_path / "w"), False).eval()
    assert token_rows.of_model(reloaded) is None
    with torch.no_grad():
        assert own_loss(reloaded, ids, mask, labels) == pytest.approx(trained, rel=1e-5)


def test_impossible_approach_settings_fail_with_the_reason(tiny_model_dir):
    from daug.basemodel import load_model

    with pytest.raises(DaugError, match=r"approach 'last-layers': layers must be 1\.\.\d+ for this model, got 99"):
        get_approach("last-layers", {"layers": 99}).wrap(load_model(tiny_model_dir), [])
    with pytest.raises(DaugError, match="approach 'adapter': size >= 1"):
        get_approach("adapter", {"size": 0})
    with pytest.raises(DaugError, match="approach 'prompt': init one of SAMPLE_VOCAB, RANDOM"):
        get_approach("prompt", {"init": "TEXT"})


def test_approach_params_are_checked_and_unknown_approaches_named():
    assert set(LEARNING_RATES) == set(APPROACHES)  # every registered approach is tested above
    with pytest.raises(DaugError, match=r"approach 'lora-qv': unknown parameter 'rank'; valid parameters: alpha"):
        get_approach("lora-qv", {"rank": 16})
    with pytest.raises(DaugError, match=r"unknown fine-tuning approach 'lora'; choose one of: adapter, dora"):
        get_approach("lora")
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


def test_a_run_s_learning_rate_is_the_schedule_s_else_the_approach_s_else_train_s_times_the_scale(smoke_params):
    """Approaches need their own learning rates (issue 24, fair tuning); a schedule's scale makes a grid."""
    import copy

    from daug.runs import Grid, train_params

    params = copy.deepcopy(smoke_params)
    params["train"]["learning_rate"] = 1e-3
    params["approaches"]["ia3"]["learning_rate"] = 1e-2
    params["schedules"] = {"default": {}, "x0.3": {"learning_rate_scale": 0.3},
                           "fixed": {"learning_rate": 5e-5, "learning_rate_scale": 2.0}}

    def rate(approach, schedule="default"):
        train = train_params(params, Grid.of(params).run("zhenhuan", "none", approach, None, schedule))
        assert train["learning_rate_scale"] == 1.0  # folded in: TrainConfig takes the final rate
        return train["learning_rate"]

    assert rate("lora-qv") == 1e-3 and rate("ia3") == 1e-2
    assert rate("lora-qv", "x0.3") == 3e-4 and rate("ia3", "x0.3") == 3e-3
    assert rate("ia3", "fixed") == 1e-4
