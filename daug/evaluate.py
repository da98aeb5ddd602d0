"""Evaluation stage: per-example test loss, greedy replies scored and checked for degeneration.

One run of the grid (daug/runs.py) covers every training seed of its dataset (`daug.params.
training_seeds`: the dataset's `seeds`, else `train.seeds`) (method
`base`, `daug.runs.BASE`: the untuned base model, once, seed null). For each seed:
  1. the base model with that seed's trained weights (`Paths.adapter(run, seed)`), loaded by the
     run's approach (daug/approaches/) and, where the approach merges, merged into the weights
     for inference (same function, no LoRA detour at every layer; 4-bit models keep the adapter
     unmerged; prompt or prefix tuning runs through the peft model's own forward). peft's TrainableTokens rows (the learned `<end_of_turn>` embedding) merge
     too: `merge_and_unload` writes them into the embedding, and so into the tied head. The base
     model is loaded once per process; each seed gets a deep copy of it (tied weights stay tied),
     since applying and merging an adapter changes the model in place. Then cast to
     `evaluate.dtype` if set. The cpu profile evaluates in bfloat16: on this AVX512-BF16 CPU it
     makes generation ~2.5x and the losses ~2.8x faster than float32. The merge happens in the
     loaded precision, so the adapter is rounded once. The cost: bf16 rounding depends on matmul
     shapes, so a greedy reply can flip at a near-tie with the batch size (benchmarks/
     bench_evaluate.py). Outputs stay byte-identical for the same params, and every method is
     evaluated the same way;
  2. THE PRIMARY ENDPOINT, the per-example test loss: for each of the first `evaluate.loss_examples`
     test records (the dataset's own `loss_examples` when set: `daug.params.loss_examples`), the teacher-forced loss of its reference reply given its prompt, in mean nats per
     reply token, formatted, masked and truncated exactly as in training (`daug.training.loss.
     example_losses`, batched by length, `evaluate.loss_batch_size` rows at a time). A run's test
     loss is the mean over examples, each example weight 1;
  3. for the first `evaluate.generate_seeds` training seeds (null: every seed; the secondary
     endpoints decide nothing, and a seed's replies cost as much as its test loss), greedy replies
     to the first `evaluate.max_examples` test prompts (`daug.generate.generate`,
     prompts as in training), scored per example (sentence BLEU, ROUGE-1/2/L, sentence chrF:
     `daug.scoring`, corpus scores with 95% bootstrap CIs) and flagged for degeneration
     (`daug.degeneration`: at the token limit, loops, leaks, empty, stray line breaks);
  4. validation loss over the first `evaluate.val_examples` validation records and perplexity =
     exp(loss). For a trained seed, the training stage already measured it at the best step, the
     weights saved, on the same records (`Paths.val_losses`, when its examples are exactly these):
     it is read from there (`val_loss_from: train`; 5% of a seed's cost, issue 21), in the training
     precision and before the merge, so it can differ from a re-computation by bf16 rounding (~1e-3).
     Otherwise (the base model, other records) it is computed here with the training stage's
     function (`val_loss_from: evaluate`).
Outputs (daug/paths.py), one line per seed x example: the per-example test losses and the
predictions (reference, reply, scores, flags: every number can be audited); the metrics (the DVC
metric, keyed `seed-<k>` or `base`: results only, same params, same bytes) and the timings, in a
file of their own.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

from daug import DaugError
from daug.io import read_records, write_json, write_jsonl, write_metrics
from daug.paths import Paths, seed_dir
from daug.runs import BASE

DTYPES = ("float32", "bfloat16", "float16")


def config(params: dict) -> dict:
    """The `evaluate` params section with params/base.yaml's defaults filled in, checked."""
    from daug.params import integer, number, one_of, require, section

    cfg = section(params, "evaluate")
    positive, count = integer(1), integer(0, null=True)  # count: the first N records, null = all
    return require("evaluate", cfg, {
        "max_new_tokens": positive, "batch_size": positive, "loss_batch_size": positive, "max_length": positive,
        "max_examples": count, "loss_examples": count, "val_examples": count, "bootstrap": positive,
        "generate_seeds": integer(1, null=True),
        "repetition_penalty": number(1), "dtype": one_of(*DTYPES, null=True), "rouge_tokenizer": one_of("char", "jieba")})


def label(seed: int | None) -> str:
    """A run's key in the metrics file: `seed-<k>`, or `base` for the untuned base model."""
    return BASE if seed is None else seed_dir(seed)


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:])


def load(base_dir: str | Path, adapter_dir: str | Path | None, model_params: dict | None = None, merge: bool = True,
         dtype: str | None = None, *, base_model=None, tokenizer=None, approach=None):
    """(model, tokenizer): the base model with the trained weights of `adapter_dir` applied by
    `approach` (daug/approaches/; none: the base model alone), in eval mode, cast to `dtype`.
    `base_model` is an already loaded base model to use instead of loading one; it is changed in
    place (pass a copy to keep the original)."""
    import torch

    from daug.basemodel import load_model, load_tokenizer
    from daug.vocabulary import attach_saved

    model_params = model_params or {}
    if adapter_dir is not None:
        if approach is None:
            raise DaugError(f"{adapter_dir}: loading trained weights needs their approach (daug/approaches/)")
        if not approach.is_saved(Path(adapter_dir)):
            raise DaugError(f"{adapter_dir}: no {approach.name} weights here ({approach.saved_file} missing); "
                            "run the train stage first")
    tokenizer = tokenizer or load_tokenizer(base_dir)
    four_bit = bool(model_params.get("load_in_4bit"))
    model = base_model if base_model is not None else load_model(base_dir, model_params.get("dtype", "float32"), four_bit)
    if adapter_dir is not None:
        model = approach.load(model, Path(adapter_dir))
        if merge:  # merging into NF4 weights would re-quantise them: the approach keeps them separate there
            model = approach.for_inference(model, four_bit)
    # torch 2.13 on CPU: F.linear of a non-contiguous 3-D input with a weight that does not require
    # grad (peft freezes everything) runs as bmm over an expanded copy of the weight. transformers
    # feeds the head hidden[:, -1:, :] at prefill: for Gemma's 262k x 640 head that copy took ~30 s
    # per batch of 16 (and ~1 s per prompt one at a time). A contiguous input costs nothing.
    model.get_output_embeddings().register_forward_pre_hook(_contiguous_input)
    attach_saved(model, base_dir)  # params model.vocabulary (daug/vocabulary.py)
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


def stop_ids(tokenizer, stop_at_newline: bool = False) -> list[int]:
    """Where a reply ends: the end-of-turn tokens (`daug.chat.stop_token_ids`), and with the dataset
    option `stop_at_newline` (for datasets whose replies are single lines) a line break too."""
    from daug.chat import stop_token_ids
    from daug.generate import newline_token_ids

    return sorted(set(stop_token_ids(tokenizer)) | (set(newline_token_ids(tokenizer)) if stop_at_newline else set()))


def predict(model, tokenizer, records: list[dict], system_prompt: str | None, max_new_tokens: int,
            batch_size: int, progress: bool = True, repetition_penalty: float = 1.0,
            stop_at_newline: bool = False, approach=None) -> list[str]:
    """Greedy replies to `records`, in order (with `repetition_penalty` on each reply's own tokens)."""
    from daug.generate import generate

    return generate(model, tokenizer, prompts(tokenizer, records, system_prompt), max_new_tokens,
                    batch_size=batch_size, progress=progress, repetition_penalty=repetition_penalty,
                    stop_ids=stop_ids(tokenizer, stop_at_newline), approach=approach)


def test_losses(model, tokenizer, encoded, batch_size: int, progress: bool = True, approach=None) -> list[dict]:
    """Per-example test loss rows {id, tokens, loss = mean nats per reply token}, in record order.

    The examples are sorted by length once and scored a few batches at a time (for the progress
    bar): the same batches as one `example_losses` call over all of them."""
    from tqdm import tqdm  # text on stderr: a widget would stay at "0%" in the executed notebook

    from daug.training.loss import example_losses

    examples = encoded.examples
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    step = batch_size * 4
    out = [None] * len(examples)
    with tqdm(total=len(examples), desc="test loss", unit="example", disable=not progress) as bar:
        for start in range(0, len(order), step):
            rows = order[start:start + step]
            batch = example_losses(model, [examples[i] for i in rows], tokenizer.pad_token_id, batch_size,
                                   approach=approach)
            for i, e in zip(rows, batch):
                out[i] = {"id": e.id, "tokens": e.tokens, "loss": e.loss / e.tokens}
            bar.update(len(rows))
    return out


def prediction_records(records: list[dict], predictions: list[str], per_example: list[dict],
                       reply_tokens: list[int], max_new_tokens: int, seed: int | None = None) -> list[dict]:
    """The predictions file's rows: the test record, the reply, its scores and degeneration flags."""
    from daug.degeneration import flags

    return [{"seed": seed, "id": r.get("id"), "instruction": r["instruction"], "input": r.get("input", ""),
             "reference": r["output"], "prediction": p, "reply_tokens": n, **s,
             **flags(p, r["output"], n, max_new_tokens)}
            for r, p, s, n in zip(records, predictions, per_example, reply_tokens)]


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def evaluate_model(model, tokenizer, cfg: dict, system_prompt: str | None, seed: int | None, *, loss_examples,
                   gen_records: list[dict], val_records: list[dict], bootstrap_seed: int, source: str,
                   progress: bool = True, stop_at_newline: bool = False,
                   approach=None, trained_val: float | None = None) -> tuple[dict, list[dict], list[dict], dict]:
    """One model's evaluation: (metrics, loss rows, prediction rows, seconds) for the files of `stage`;
    `approach`: the one whose weights `model` holds (None: the base model); `trained_val`: the
    validation loss the training stage measured for these weights on `val_records` (None: compute it)."""
    from daug import degeneration, scoring
    from daug.training.loss import validation_loss

    seconds = {}
    t = time.perf_counter()
    losses = [{"seed": seed, **row}
              for row in test_losses(model, tokenizer, loss_examples, cfg["loss_batch_size"], progress, approach)]
    seconds["test_loss"] = time.perf_counter() - t

    generated, rows = {"generated": False}, []
    if gen_records:  # none: this seed is past evaluate.generate_seeds
        t = time.perf_counter()
        replies = predict(model, tokenizer, gen_records, system_prompt, cfg["max_new_tokens"], cfg["batch_size"],
                          progress, cfg["repetition_penalty"], stop_at_newline, approach)
        seconds["generate"] = time.perf_counter() - t
        reply_tokens = [len(ids) for ids in tokenizer(replies, add_special_tokens=False)["input_ids"]]

        t = time.perf_counter()
        examples = scoring.example_scores(replies, [r["output"] for r in gen_records], cfg["rouge_tokenizer"])
        summary = scoring.summarize(examples, cfg["bootstrap"], bootstrap_seed)
        rows = prediction_records(gen_records, replies, examples.per_example(), reply_tokens, cfg["max_new_tokens"],
                                  seed)
        degenerate = degeneration.summary(rows, cfg["max_new_tokens"], source)
        seconds["score"] = time.perf_counter() - t
        summary["bootstrap_seed"] = summary.pop("seed")
        generated = {"generated": True, **summary, "degeneration": degenerate,
                     "replies_at_limit": degenerate["count"]["at_limit"], "max_new_tokens": cfg["max_new_tokens"],
                     "repetition_penalty": cfg["repetition_penalty"]}

    t = time.perf_counter()
    if trained_val is not None:
        val_loss, val_from = trained_val, "train"
    else:
        val_loss = validation_loss(model, tokenizer, val_records, system_prompt, cfg["max_length"],
                                   cfg["loss_batch_size"], approach=approach) if val_records else float("nan")
        val_from = "evaluate"
    seconds["val_loss"] = time.perf_counter() - t

    metrics = {
        "seed": seed, "test_loss": _mean([r["loss"] for r in losses]), "n_loss": len(losses),
        "loss_dropped": len(loss_examples.dropped), "loss_truncated": loss_examples.truncated,
        "val_loss": val_loss if math.isfinite(val_loss) else None, "perplexity": scoring.perplexity(val_loss),
        "val_examples": len(val_records), "val_loss_from": val_from, **generated,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    return metrics, losses, rows, seconds


def trained_val_losses(path: Path, seeds: list, val_ids: list[str]) -> dict:
    """{seed: validation loss at the best step} from the training stage's per-example file, for each
    seed whose rows are exactly the examples `val_ids` (in order); the others are left out."""
    if not path.is_file():
        return {}
    rows: dict = {}
    for row in read_records(path):
        rows.setdefault(row["seed"], []).append(row)
    out = {}
    for seed in seeds:
        mine = rows.get(seed, [])
        if [r["id"] for r in mine] == val_ids and all(r["loss_best"] is not None for r in mine if r["tokens"]):
            tokens = math.fsum(r["tokens"] for r in mine)
            if tokens:
                out[seed] = math.fsum(r["loss_best"] * r["tokens"] for r in mine if r["tokens"]) / tokens
    return out


def run_files(params: dict, run, out_dir: str | Path | None = None) -> dict[str, Path]:
    """The run's metrics, predictions and test-loss files (daug/paths.py; `out_dir` moves all three)."""
    paths = Paths.of(params)
    files = {"metrics": paths.eval_metrics(run), "predictions": paths.predictions(run),
             "losses": paths.test_losses(run)}
    return files if out_dir is None else {k: Path(out_dir) / f.name for k, f in files.items()}


PATH_OPTIONS = ("base", "adapter", "train_val", "test", "val", "out_dir", "timings")  # stage() keywords = CLI path flags


def stage(params: dict, run, *, base: str | Path | None = None, adapter: str | Path | None = None,
          train_val: str | Path | None = None, test: str | Path | None = None, val: str | Path | None = None,
          out_dir: str | Path | None = None,
          timings: str | Path | None = None, progress: bool = True) -> dict:
    """Evaluate one run (a daug.runs.Run, or its name), every training seed (method `base`: the base
    model alone); write the test losses, predictions, metrics and timings (daug/paths.py; the keyword
    arguments override them: `adapter` is the run's folder of seed-<k> weights, `train_val` the
    training stage's per-example validation losses, `out_dir` holds the three result files). Returns {"metrics": the metrics file's document, "timings": ..., "files": {name: path}}."""
    from daug import params as P
    from daug.approaches import from_params as approach_of
    from daug.basemodel import load_model, load_tokenizer
    from daug.records import check_records
    from daug.runs import lookup
    from daug.training.data import encode_records

    run = lookup(params, run) if isinstance(run, str) else run
    start = time.perf_counter()
    cfg = config(params)
    ds = P.dataset(params, run.dataset)
    system_prompt = ds.get("system_prompt")
    paths = Paths.of(params)
    base = Path(base or paths.base_model())
    seeds: list[int | None] = [None] if run.is_base else P.training_seeds(params, run.dataset)
    approach = None if run.is_base else approach_of(params, run.approach)
    adapters = None if run.is_base else Path(adapter or paths.adapters(run))
    test_file, val_file = Path(test or paths.prepared(run.dataset, "test")), Path(val or paths.prepared(run.dataset, "val"))
    files = run_files(params, run, out_dir)
    test_records = read_records(test_file)
    if not test_records:
        raise DaugError(f"{test_file}: no test records to evaluate")
    check_records(test_records, str(test_file))
    gen_records = _first(test_records, cfg["max_examples"])
    val_records = _first(read_records(val_file), cfg["val_examples"])
    if adapters is not None:  # every seed's weights before any work: a missing one is found in a second
        for seed in seeds:
            if not approach.is_saved(adapters / seed_dir(seed)):
                raise DaugError(f"{adapters / seed_dir(seed)}: no {approach.name} weights here ({approach.saved_file} "
                                f"missing); run the train stage first (training seeds {seeds})")

    seconds: dict = {}
    t = time.perf_counter()
    model_params = params.get("model") or {}
    tokenizer = load_tokenizer(base)
    loss_examples = encode_records(tokenizer, _first(test_records, P.loss_examples(params, run.dataset)), system_prompt,
                                   cfg["max_length"], source=str(test_file))
    val_ids = [e.id for e in encode_records(tokenizer, val_records, system_prompt, cfg["max_length"],
                                            source=str(val_file)).examples]
    trained_val = {} if run.is_base else trained_val_losses(Path(train_val or paths.val_losses(run)), seeds, val_ids)
    four_bit = bool(model_params.get("load_in_4bit"))
    # One load per process; a 4-bit model is reloaded per seed instead (its quantised weights do not deep-copy).
    shared = None if four_bit else load_model(base, model_params.get("dtype", "float32"), False)
    seconds["load_base"] = time.perf_counter() - t

    metrics, losses, predictions = {}, [], []
    for seed in seeds:
        t = time.perf_counter()
        fresh = shared if seed == seeds[-1] or shared is None else copy.deepcopy(shared)  # the last seed may use it up
        model, _ = load(base, None if seed is None else adapters / seed_dir(seed), model_params, dtype=cfg["dtype"],
                        base_model=fresh, tokenizer=tokenizer, approach=approach)
        run_seconds = {"load": time.perf_counter() - t}
        generates = seed is None or cfg["generate_seeds"] is None or seeds.index(seed) < cfg["generate_seeds"]
        m, loss_rows, rows, more = evaluate_model(
            model, tokenizer, cfg, system_prompt, seed, loss_examples=loss_examples,
            gen_records=gen_records if generates else [],
            val_records=val_records, bootstrap_seed=int(params.get("seed", 0)), source=str(files["predictions"]),
            progress=progress, stop_at_newline=bool(ds.get("stop_at_newline", False)), approach=approach,
            trained_val=trained_val.get(seed))
        del model, fresh
        metrics[label(seed)] = m
        losses += loss_rows
        predictions += rows
        seconds[label(seed)] = {k: round(v, 2) for k, v in {**run_seconds, **more}.items()}

    write_jsonl(files["losses"], losses)
    write_jsonl(files["predictions"], predictions)
    doc = write_metrics(files["metrics"], metrics)
    seconds["total"] = time.perf_counter() - start
    times = {"seconds": {k: round(v, 2) if isinstance(v, float) else v for k, v in seconds.items()}}
    write_json(Path(timings or paths.timings("evaluate", run)), times)
    return {"metrics": doc, "timings": times, "files": files}


# --- for notebooks ---------------------------------------------------------------------------------

def table(result: dict):
    """Per seed: test loss, validation loss and each score with its 95% CI (one row per seed)."""
    import pandas as pd

    from daug.scoring import METRICS

    rows = {}
    for key, m in result["metrics"].items():
        rows[key] = {"test_loss": m["test_loss"], "n_loss": m["n_loss"], "val_loss": m["val_loss"],
                     "perplexity": m["perplexity"], "n": m.get("n", 0),
                     **{f"{s}{part}": m[s][k] if m.get("generated") else None
                        for s in METRICS for part, k in (("", "score"), (" low", "ci_low"), (" high", "ci_high"))}}
    return pd.DataFrame(rows).T


def degeneration_table(result: dict):
    """Per seed: the share of replies with each degeneration flag, and the length ratio."""
    import pandas as pd

    return pd.DataFrame({key: {**m["degeneration"]["share"], "length_ratio": m["degeneration"]["length_ratio"]}
                         for key, m in result["metrics"].items() if m.get("generated")}).T


def timings_table(result: dict):
    """Seconds per part of each seed's evaluation (load, test_loss, generate, score, val_loss), and the total."""
    import pandas as pd

    seconds = result["timings"]["seconds"]
    rows = {k: v for k, v in seconds.items() if isinstance(v, dict)}
    rows["run"] = {k: v for k, v in seconds.items() if not isinstance(v, dict)}
    return pd.DataFrame(rows).T


def samples(result: dict, n: int = 5):
    """The first `n` test prompts of every seed, reference and reply side by side, with scores and flags."""
    import pandas as pd

    rows = read_records(result["files"]["predictions"])
    by_seed: dict = {}
    for r in rows:
        by_seed.setdefault(r["seed"], []).append(r)
    picked = [r for seed_rows in by_seed.values() for r in seed_rows[:n]]
    return pd.DataFrame(picked)[["seed", "id", "instruction", "reference", "prediction", "chrf", "rougeL",
                                 "at_limit", "loops", "leaks"]]


# --- CLI -------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    from daug.cli import stage_arguments
    from daug.paths import ADAPTERS, BASE_MODEL, PREPARED, RESULTS

    stage_arguments(parser, run=True)
    parser.add_argument("--base", help=f"base model directory (default: {BASE_MODEL})")
    parser.add_argument("--adapter", help="the run's trained weights, one seed-<k> folder per training seed "
                                          f"(default: {ADAPTERS}/<run folder>)")
    parser.add_argument("--train-val", help="the training stage's per-example validation losses, read for each "
                                            f"seed's validation loss (default: {RESULTS}/PROFILE/train/RUN.val.jsonl)")
    parser.add_argument("--test", help=f"test records (default: {PREPARED}/DATASET/test.jsonl)")
    parser.add_argument("--val", help=f"validation records (default: {PREPARED}/DATASET/val.jsonl)")
    parser.add_argument("--out", dest="out_dir", help="directory for the metrics, predictions and test losses "
                                                      f"(default: {RESULTS}/PROFILE/eval)")
    parser.add_argument("--timings", help=f"timings file (default: {RESULTS}/PROFILE/timings/evaluate-RUN.json)")


def run(args) -> int:
    from daug.cli import path_overrides, stage_runs
    from daug.params import load as load_params
    from daug.runs import Grid

    params = load_params(args.params)
    runs = stage_runs(params, args)
    if args.run is None and args.method is None:  # every run, and the base model beside them
        runs += [Grid.of(params).base(d) for d in dict.fromkeys(r.dataset for r in runs)]
    overrides = path_overrides(args, tuple(k for k in PATH_OPTIONS if k != "base"), runs)
    for one in runs:
        result = stage(params, one, base=args.base, **overrides)
        for key, m in result["metrics"].items():
            scores = ("  ".join(f"{s} {m[s]['score']:.2f}" for s in ("bleu", "rouge1", "rouge2", "rougeL", "chrf"))
                      if m.get("generated") else "no replies (past evaluate.generate_seeds)")
            print(f"{one.name} {key}: test_loss {m['test_loss']} (n={m['n_loss']})  n={m.get('n', 0)}  {scores}  "
                  f"val_loss {m['val_loss']}")
        print(f"{one.name}: {result['timings']['seconds']['total']:.1f} s")
    return 0
