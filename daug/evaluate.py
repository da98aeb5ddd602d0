"""Evaluation stage: generate replies to test prompts with a LoRA adapter and score them.

For one dataset x augmentation method:
  1. load the base model and the method's adapter, merged into the weights for inference (same
     function, no LoRA detour at every layer; 4-bit models keep the adapter unmerged), then cast to
     `evaluate.dtype` if set. The cpu profile evaluates in bfloat16: on this AVX512-BF16 CPU it
     makes generation ~2.5x and validation loss ~2.8x faster than float32 (weights are read from
     memory at every decoding step; half the bytes, native bf16 dot products). The merge happens
     in the loaded precision, so the adapter is rounded once. The cost: bf16 rounding depends on
     matmul shapes, so a greedy reply can flip at a near-tie with the batch size (measured by
     benchmarks/bench_evaluate.py: 66% of 64-token replies identical batched vs one at a time in
     bf16, 100% in float32). Replies stay byte-identical for the same params, and every method is
     evaluated the same way;
  2. greedy replies to the first `evaluate.max_examples` test prompts, formatted exactly as in
     training (`daug.chat` with the dataset's system prompt), through `daug.generate.generate`;
  3. BLEU / ROUGE-1/2/L with 95% bootstrap CIs (`daug.scoring`), per example too;
  4. validation loss (the training stage's reply-only masking) and perplexity = exp(loss).
Outputs (daug/paths.py): the predictions (one line per test example, with its reference,
prediction and scores, so every number can be audited), the metrics (the DVC metric: results only,
same params, same bytes) and the run's timings, in a file of their own.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from daug import DaugError
from daug.io import read_records, write_json, write_jsonl, write_metrics
from daug.paths import Paths

DTYPES = ("float32", "bfloat16", "float16")


def config(params: dict) -> dict:
    """The `evaluate` params section with params/base.yaml's defaults filled in, checked."""
    from daug.params import section

    cfg = section(params, "evaluate")
    for key in ("max_new_tokens", "batch_size", "val_batch_size", "max_length"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise DaugError(f"evaluate params: {key} must be a positive integer, got {cfg[key]!r}")
    for key in ("max_examples", "val_examples"):
        if cfg[key] is not None and (not isinstance(cfg[key], int) or cfg[key] < 0):
            raise DaugError(f"evaluate params: {key} must be a non-negative integer or null (all), got {cfg[key]!r}")
    if cfg["dtype"] is not None and cfg["dtype"] not in DTYPES:
        raise DaugError(f"evaluate params: dtype must be null (the model's) or one of {', '.join(DTYPES)}, got {cfg['dtype']!r}")
    return cfg


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:])


def load(base_dir: str | Path, adapter_dir: str | Path, model_params: dict | None = None, merge: bool = True,
         dtype: str | None = None):
    """(model, tokenizer): the base model with the LoRA adapter applied, in eval mode, cast to `dtype`."""
    import torch
    from peft import PeftModel

    from daug.basemodel import load_model, load_tokenizer

    model_params = model_params or {}
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise DaugError(f"{adapter_dir}: no LoRA adapter here (adapter_config.json missing); run the train stage first")
    tokenizer = load_tokenizer(base_dir)
    four_bit = bool(model_params.get("load_in_4bit"))
    base = load_model(base_dir, model_params.get("dtype", "float32"), four_bit)
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    if merge and not four_bit:  # merging into NF4 weights would re-quantise them: keep LoRA separate there
        model = model.merge_and_unload()
    # torch 2.13 on CPU: F.linear of a non-contiguous 3-D input with a weight that does not require
    # grad (peft freezes everything) runs as bmm over an expanded copy of the weight. transformers
    # feeds the head hidden[:, -1:, :] at prefill: for Gemma's 262k x 640 head that copy took ~30 s
    # per batch of 16 (and ~1 s per prompt one at a time). A contiguous input costs nothing.
    model.get_output_embeddings().register_forward_pre_hook(_contiguous_input)
    if dtype is not None:
        if four_bit:
            raise DaugError("evaluate.dtype must be null when model.load_in_4bit is true (the 4-bit model keeps its compute dtype)")
        model = model.to(getattr(torch, dtype))
    return model.eval(), tokenizer


def prompts(tokenizer, records: list[dict], system_prompt: str | None) -> list[str]:
    """The generation prompts, formatted as `daug.training` formats training prompts."""
    from daug.chat import messages, prompt_text

    return [prompt_text(tokenizer, messages(r, system_prompt)) for r in records]


def _first(records: list[dict], n: int | None) -> list[dict]:
    return records if n is None else records[:n]


def predict(model, tokenizer, records: list[dict], system_prompt: str | None, max_new_tokens: int,
            batch_size: int, progress: bool = True) -> list[str]:
    """Greedy replies to `records`, in order."""
    from daug.generate import generate

    return generate(model, tokenizer, prompts(tokenizer, records, system_prompt), max_new_tokens,
                    batch_size=batch_size, progress=progress)


def prediction_records(records: list[dict], predictions: list[str], per_example: list[dict],
                       reply_tokens: list[int]) -> list[dict]:
    return [{"id": r.get("id"), "instruction": r["instruction"], "input": r.get("input", ""),
             "reference": r["output"], "prediction": p, "reply_tokens": n, **s}
            for r, p, s, n in zip(records, predictions, per_example, reply_tokens)]


def stage(params: dict, dataset: str | None = None, method: str | None = None, *,
          base: str | Path | None = None, adapter: str | Path | None = None, test: str | Path | None = None,
          val: str | Path | None = None, out_dir: str | Path | None = None, timings: str | Path | None = None,
          progress: bool = True) -> dict:
    """Evaluate one dataset x method's adapter; write predictions, metrics and timings (daug/paths.py;
    the keyword arguments override them, `out_dir` for predictions and metrics). Returns the metrics,
    with the timings under `timings`."""
    from daug import params as P
    from daug import scoring
    from daug.records import check_records
    from daug.train import validation_loss

    if not dataset or not method:
        raise DaugError("evaluate: needs a dataset and a method (--dataset D --method M)")
    start = time.perf_counter()
    cfg = config(params)
    ds = P.dataset(params, dataset)
    seed = int(params.get("seed", 0))
    paths = Paths.of(params)
    base = Path(base or paths.base_model())
    adapter = Path(adapter or paths.adapter(dataset, method))
    test_file, val_file = Path(test or paths.prepared(dataset, "test")), Path(val or paths.prepared(dataset, "val"))
    metrics_file, predictions_file = paths.eval_metrics(dataset, method), paths.predictions(dataset, method)
    if out_dir is not None:
        metrics_file, predictions_file = Path(out_dir) / metrics_file.name, Path(out_dir) / predictions_file.name
    test_records = _first(read_records(test_file), cfg["max_examples"])
    val_records = _first(read_records(val_file), cfg["val_examples"])
    if not test_records:
        raise DaugError(f"{test_file}: no test records to evaluate")
    check_records(test_records, str(test_file))

    seconds = {}
    t = time.perf_counter()
    model, tokenizer = load(base, adapter, params.get("model"), dtype=cfg["dtype"])
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    predictions = predict(model, tokenizer, test_records, ds.get("system_prompt"), cfg["max_new_tokens"],
                          cfg["batch_size"], progress)
    seconds["generate"] = time.perf_counter() - t
    reply_tokens = [len(ids) for ids in tokenizer(predictions, add_special_tokens=False)["input_ids"]]

    t = time.perf_counter()
    references = [r["output"] for r in test_records]
    examples = scoring.example_scores(predictions, references, cfg["rouge_tokenizer"])
    summary = scoring.summarize(examples, cfg["bootstrap"], seed)
    seconds["score"] = time.perf_counter() - t

    t = time.perf_counter()
    val_loss = validation_loss(model, tokenizer, val_records, ds.get("system_prompt"), cfg["max_length"],
                               cfg["val_batch_size"]) if val_records else float("nan")
    seconds["val_loss"] = time.perf_counter() - t

    write_jsonl(predictions_file, prediction_records(test_records, predictions, examples.per_example(), reply_tokens))
    metrics = write_metrics(metrics_file, {
        "dataset": dataset, "method": method, **summary,
        "val_loss": val_loss if math.isfinite(val_loss) else None,
        "perplexity": scoring.perplexity(val_loss),
        "val_examples": len(val_records), "max_new_tokens": cfg["max_new_tokens"],
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        # replies whose (re-encoded) length reached max_new_tokens: likely cut, not finished
        "replies_at_limit": sum(n >= cfg["max_new_tokens"] for n in reply_tokens),
        "adapter": str(adapter), "base_model": str(base), "predictions": str(predictions_file),
    })
    seconds["total"] = time.perf_counter() - start
    times = {"seconds": {k: round(v, 2) for k, v in seconds.items()}}
    write_json(Path(timings or paths.timings("evaluate", dataset, method)), times)
    return {**metrics, "timings": times}


def table(metrics: dict):
    """The scores with their 95% CIs, one row per metric (for notebooks)."""
    import pandas as pd

    from daug.scoring import METRICS

    return pd.DataFrame({m: metrics[m] for m in METRICS}).T[["score", "ci_low", "ci_high"]]


def samples(metrics: dict, n: int = 10):
    """The first `n` test prompts with reference and predicted replies side by side, and their scores."""
    import pandas as pd

    rows = read_records(metrics["predictions"])[:n]
    return pd.DataFrame(rows)[["id", "instruction", "reference", "prediction", "bleu", "rougeL"]]


# --- CLI -------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    from daug.cli import stage_arguments

    stage_arguments(parser, dataset=True, method=True)
    parser.add_argument("--base", help="base model directory (default: models/base)")
    parser.add_argument("--adapter", help="LoRA adapter directory (default: models/adapters/DATASET/METHOD)")
    parser.add_argument("--test", help="test records (default: data/prepared/DATASET/test.jsonl)")
    parser.add_argument("--val", help="validation records (default: data/prepared/DATASET/val.jsonl)")
    parser.add_argument("--out", help="directory for the metrics and predictions (default: reports/PROFILE/eval)")
    parser.add_argument("--timings", help="timings file (default: reports/PROFILE/timings/evaluate-DATASET-METHOD.json)")


def run(args) -> int:
    from daug.cli import stage_runs
    from daug.params import load as load_params

    params = load_params(args.params)
    overrides = {"base": args.base, "adapter": args.adapter, "test": args.test, "val": args.val,
                 "out_dir": args.out, "timings": args.timings}
    runs = stage_runs(params, args.dataset, args.method)
    if len(runs) > 1 and any(v is not None for k, v in overrides.items() if k != "base"):
        raise DaugError("path options (--adapter, --out, ...) name one run's files: give --dataset and --method")
    for dataset, method in runs:
        metrics = stage(params, dataset, method, **overrides)
        scores = "  ".join(f"{m} {metrics[m]['score']:.2f}" for m in ("bleu", "rouge1", "rouge2", "rougeL"))
        print(f"{dataset}/{method}: n={metrics['n']}  {scores}  val_loss {metrics['val_loss']}  "
              f"({metrics['timings']['seconds']['total']:.1f} s)")
    return 0
