"""Train stage: fine-tune LoRA adapters for a dataset x augmentation method, one per training seed.

Reads every record of the augmented file (originals and augmented) and the first
`train.val_examples` records of the prepared val split, and trains, for each seed of `train.seeds`
in this one process (tokenizer and data loaded once; a fresh base model + LoRA per seed), for the
`train.steps` that every method shares (early stopping with `train.patience` may end sooner; `null`:
never), keeping the best evaluated state (daug/training/loop.py). Writes each seed's adapter
(PEFT safetensors + README.md model card), and per run the loss log (seed,step,split,loss; split =
train|val), the summary metrics per seed (best and stopping step, passes over the originals and
over the augmentations, ...), each validation example's loss at the best and at the last
evaluation and, apart from them, the run's timings; every path is named in daug/paths.py.
Checkpoints go to `Paths.runs` (outside DVC's outputs): a killed run resumes there when the stage
re-runs, if nothing that determines the result has changed.

Multi-process (DDP; gloo on CPU, NCCL on GPUs): `torchrun --standalone --nproc_per_node 2 -m daug train ...`
or `accelerate launch --multi_gpu --num_processes 2 -m daug train ...` (on a CPU-only machine this
starts two gloo processes; accelerate's `--cpu` flag would start one). Rank 0 writes the outputs.
Evaluation reuses `encode_example`/`encode_records` and `validation_loss` for identical masking.
"""
from __future__ import annotations

import gc
import hashlib
from pathlib import Path

from daug import DaugError
from daug.io import (atomic_write_text, read_records, round_floats, stable_hash, write_json, write_jsonl,
                     write_metrics)
from daug.paths import Paths, seed_dir
from daug.records import ORIGINAL
from daug.training.data import Encoded, Example, encode_example, encode_records  # noqa: F401  (public API)
from daug.training.loss import validation_loss  # noqa: F401  (public API)


def code() -> list[Path]:
    """The source files a trained adapter depends on: the train stage's import closure (daug/deps.py),
    the same set dvc.yaml declares for the stage."""
    from daug import deps

    return deps.files(deps.stage_closure("train"))


def paths(params: dict, dataset: str, method: str) -> dict[str, Path]:
    """Where the stage reads and writes (daug/paths.py); `out` and `runs` hold one folder per seed."""
    p = Paths.of(params)
    return {"data": p.augmented(dataset, method), "val": p.prepared(dataset, "val"), "base": p.base_model(),
            "out": p.adapters(dataset, method), "csv": p.train_curve(dataset, method),
            "json": p.train_metrics(dataset, method), "val_losses": p.val_losses(dataset, method),
            "timings": p.timings("train", dataset, method), "runs": p.runs(dataset, method, 0).parent}


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(params: dict, dataset: str, seed: int, files: list[Path], base: Path, world: int) -> str:
    """Everything one seed's adapter depends on: params, the seed, data, base model, training code,
    processes (not the other seeds: adding a seed keeps the finished ones' checkpoints)."""
    base_files = sorted(p for p in Path(base).rglob("*") if p.is_file())
    train = {k: v for k, v in (params.get("train") or {}).items() if k != "seeds"}
    return format(stable_hash(
        {"model": params.get("model"), "train": train, "lora": params.get("lora"), "seed": seed},
        params["datasets"][dataset].get("system_prompt"),
        [_file_digest(Path(f)) for f in files],
        {str(p.relative_to(base)): _file_digest(p) for p in base_files},
        [_file_digest(p) for p in code()], world), "016x")


def loss_csv(logs: dict[int, list[dict]]) -> str:
    """The loss log of every seed (the DVC plot): seed,step,split,loss."""
    return "seed,step,split,loss\n" + "".join(f"{seed},{r['step']},{r['split']},{r['loss']:.6f}\n"
                                              for seed, log in logs.items() for r in log)


def is_original(record: dict) -> bool:
    """An original record (a file without provenance, e.g. a prepared split, holds originals only)."""
    return record.get("method", ORIGINAL) == ORIGINAL


def exposure(batches: list[list[int]], train: Encoded, records: list[dict], steps: int) -> tuple[float | None, ...]:
    """(passes over the originals, passes over the augmentations) in the first `steps` batches:
    examples of each kind seen / records of that kind (None when the file has none of a kind)."""
    original = [is_original(records[i]) for i in train.records]
    seen = [original[i] for batch in batches[:steps] for i in batch]
    n_orig = sum(map(is_original, records))
    n_aug = len(records) - n_orig
    return (sum(seen) / n_orig if n_orig else None,
            (len(seen) - sum(seen)) / n_aug if n_aug else None)


def summarize(progress: dict, seed: int, batches: list[list[int]], train: Encoded, val: Encoded,
              records: list[dict], cfg, trainable_tokens: list[str], world: int) -> dict:
    """One seed's metrics (reports/<p>/train/<ds>-<m>.json holds one of these per seed)."""
    log = progress["log"]
    vals = [r for r in log if r["split"] == "val"]
    trains = [r for r in log if r["split"] == "train"]
    originals = sum(map(is_original, records))
    best, stop = progress["best_step"], progress["step"]
    orig_best, aug_best = exposure(batches, train, records, best)
    orig_stop, aug_stop = exposure(batches, train, records, stop)
    return {
        "seed": seed, "max_steps": cfg.steps, "best_step": best, "stop_step": stop,
        "stopped_early": progress["stopped_early"], "patience": cfg.patience, "eval_every": cfg.eval_every,
        "val_loss_initial": vals[0]["loss"], "val_loss_best": progress["best_loss"], "val_loss_final": vals[-1]["loss"],
        "train_loss_final": trains[-1]["loss"] if trains else None,
        "records": len(records), "originals": originals, "augmented": len(records) - originals,
        "examples": len(train.examples), "truncated": train.truncated, "dropped": len(train.dropped),
        "passes_original_best": orig_best, "passes_augmented_best": aug_best,
        "passes_original_stop": orig_stop, "passes_augmented_stop": aug_stop,
        "val_examples": len(val.examples), "val_truncated": val.truncated,
        "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate, "precision": cfg.precision,
        "trainable_tokens": trainable_tokens,
        "tokens": progress["tokens"], "reply_tokens": progress["reply_tokens"],
        "padding_fraction": round(1 - progress["tokens"] / max(1, progress["padded_tokens"]), 4),
        "processes": world, "resumed_from": progress["resumed_from"],
    }


def val_rows(seed: int, val: Encoded, progress: dict) -> list[dict]:
    """Each validation example's mean loss per reply token at the best and at the last evaluation."""
    return [{"seed": seed, "id": e.id, "tokens": tokens, "loss_best": best / tokens if tokens else None,
             "loss_final": last / tokens if tokens else None}
            for e, (best, tokens), (last, _) in zip(val.examples, progress["val_best"], progress["val_last"])]


def timings(progress: dict) -> dict:
    """The run's wall times and throughput (real tokens per second of training steps): not results."""
    seconds = progress["seconds"]
    return {"seconds": round(seconds + progress["eval_seconds"], 1), "train_seconds": round(seconds, 1),
            "eval_seconds": round(progress["eval_seconds"], 1),
            "tokens_per_second": round(progress["tokens"] / seconds, 1) if seconds else None}


def model_card(params: dict, dataset: str, method: str, base: Path, summary: dict) -> str:
    from daug.basemodel import resolve
    from daug.io import dumps

    layout = Paths.of(params)  # the card names the stage's own paths (relative to the repository)
    seed = summary["seed"]
    metrics = {k: summary[k] for k in ("seed", "best_step", "stop_step", "max_steps", "stopped_early", "examples",
                                       "truncated", "dropped", "passes_original_best", "passes_augmented_best",
                                       "val_loss_initial", "val_loss_best", "val_loss_final")}
    rows = "".join(f"| {k} | {round(v, 4) if isinstance(v, float) else v} |\n" for k, v in metrics.items())
    return (
        f"---\nlibrary_name: peft\nbase_model: {resolve(base)}\ntags: [lora, daug, {dataset}, {method}]\n---\n\n"
        f"# LoRA adapter: {dataset} / {method}\n\n"
        f"Trained by the daug `train` stage (profile `{params.get('profile')}`) on "
        f"`{layout.augmented(dataset, method).as_posix()}`: the {dataset} training split augmented with `{method}`. "
        f"Character: {params['datasets'][dataset].get('character')}; system prompt: "
        f"\"{params['datasets'][dataset].get('system_prompt')}\". Loss on reply tokens only.\n\n"
        f"Base model: `{resolve(base)}` ({params['model'].get('source')}).\n\n"
        "Load it with:\n\n```python\nfrom peft import PeftModel\nfrom daug.basemodel import load_model\n"
        f"model = PeftModel.from_pretrained(load_model(\"{layout.base_model().as_posix()}\"), "
        f"\"{layout.adapter(dataset, method, seed).as_posix()}\")\n```\n\n"
        f"The weights are those of the best validation loss (step {summary['best_step']} of at most "
        f"{summary['max_steps']}; training seed {seed}).\n\n"
        f"## Params\n\n```json\n{dumps({k: params.get(k) for k in ('seed', 'model', 'train', 'lora')}, indent=2)}\n```\n\n"
        f"## Metrics (loss per reply token)\n\n| metric | value |\n|---|---|\n{rows}"
    )


def stage(params: dict, dataset: str | None = None, method: str | None = None, *, data: str | Path | None = None,
          val: str | Path | None = None, out: str | Path | None = None, base: str | Path | None = None,
          runs: str | Path | None = None, report_csv: str | Path | None = None,
          report_json: str | Path | None = None, report_val: str | Path | None = None,
          report_timings: str | Path | None = None) -> dict:
    """Run the train stage for one dataset x method, every seed of `train.seeds`; paths default to
    daug/paths.py (the keyword arguments override them; `out` and `runs` get a seed-<k> folder per
    seed). Returns the metrics file's content ({"seed-0": {...}, ...}; all ranks), with the
    timings under `timings`."""
    import torch

    from daug.basemodel import load_tokenizer
    from daug.params import dataset as dataset_entry
    from daug.training.loop import TrainConfig, device_for, dist_info, lora_model, schedule, train_loop

    if not dataset or not method:
        raise DaugError("train: needs a dataset and a method (--dataset D --method M)")
    p = paths(params, dataset, method)
    given = {"data": data, "val": val, "out": out, "base": base, "runs": runs, "csv": report_csv, "json": report_json,
             "val_losses": report_val, "timings": report_timings}
    p.update({k: Path(v) for k, v in given.items() if v is not None})
    cfg = TrainConfig.from_params(params.get("train") or {})
    ds = dataset_entry(params, dataset)
    rank, world = dist_info()
    device = device_for(rank)

    tokenizer = load_tokenizer(p["base"])
    records = read_records(p["data"])
    if not records:
        raise DaugError(f"{p['data']}: no records to train on")
    train = encode_records(tokenizer, records, ds["system_prompt"], cfg.max_length, source=str(p["data"]))
    val_enc = encode_records(tokenizer, read_records(p["val"])[:cfg.val_examples], ds["system_prompt"],
                             cfg.max_length, source=str(p["val"]))
    if not val_enc.examples:
        raise DaugError(f"{p['val']}: no validation example to stop on (train.val_examples {cfg.val_examples})")
    if rank == 0:
        print(f"train: {len(records)} records -> {len(train.examples)} examples ({train.truncated} truncated, "
              f"{len(train.dropped)} dropped: prompt alone >= max_length {cfg.max_length}); "
              f"val: {len(val_enc.examples)} examples; seeds {cfg.seeds}; {world} process(es)")
        if train.dropped:
            print(f"dropped ids: {', '.join(train.dropped[:20])}{' ...' if len(train.dropped) > 20 else ''}")

    trainable_tokens = list(params["lora"].get("trainable_tokens") or [])
    summaries, logs, rows, times = {}, {}, [], {}
    for seed in cfg.seeds:
        fp = fingerprint(params, dataset, seed, [p["data"], p["val"]], p["base"], world)
        model = lora_model(p["base"], params["model"], params["lora"], seed, cfg.precision, device, tokenizer)
        progress = train_loop(model, tokenizer, train, val_enc, cfg, seed, p["runs"] / seed_dir(seed), fp,
                              rank, world, device)  # returns with the best state loaded
        summary = summarize(progress, seed, schedule(train, cfg, seed), train, val_enc, records, cfg,
                            trainable_tokens, world)
        key = seed_dir(seed)
        summaries[key], logs[seed], times[key] = summary, progress["log"], timings(progress)
        rows += val_rows(seed, val_enc, progress)
        if rank == 0:
            adapter = p["out"] / key
            model.save_pretrained(adapter, safe_serialization=True)
            atomic_write_text(adapter / "README.md", model_card(params, dataset, method, p["base"], summary))
            print(f"seed {seed}: best val loss {summary['val_loss_best']:.4f} at step {summary['best_step']}, "
                  f"stopped at {summary['stop_step']} of {cfg.steps}")
        del model
        gc.collect()
    times["seconds"] = round(sum(t["seconds"] for t in times.values()), 1)
    if rank == 0:
        atomic_write_text(p["csv"], loss_csv(logs))
        write_metrics(p["json"], summaries)
        write_jsonl(p["val_losses"], rows)
        write_json(p["timings"], times)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return {**round_floats(summaries), "timings": times}


# --- CLI -------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    from daug.cli import stage_arguments

    stage_arguments(parser, dataset=True, method=True)
    parser.add_argument("--data", help="training records (default: data/augmented/DATASET/METHOD.jsonl)")
    parser.add_argument("--val", help="validation records (default: data/prepared/DATASET/val.jsonl)")
    parser.add_argument("--base", help="base model dir (default: models/base)")
    parser.add_argument("--out", help="adapters dir, one seed-<k> folder per training seed (default: models/adapters/DATASET/METHOD)")
    parser.add_argument("--runs", help="checkpoints dir, one seed-<k> folder per training seed (default: runs/PROFILE/DATASET/METHOD)")
    parser.add_argument("--report-csv", help="loss log (default: reports/PROFILE/train/DATASET-METHOD.csv)")
    parser.add_argument("--report-json", help="summary (default: reports/PROFILE/train/DATASET-METHOD.json)")
    parser.add_argument("--report-val", help="per-example val losses (default: reports/PROFILE/train/DATASET-METHOD.val.jsonl)")
    parser.add_argument("--report-timings", help="timings (default: reports/PROFILE/timings/train-DATASET-METHOD.json)")


def run(args) -> int:
    import os

    from daug.cli import stage_runs
    from daug.params import load

    params = load(args.params)
    overrides = {"data": args.data, "val": args.val, "out": args.out, "base": args.base, "runs": args.runs,
                 "report_csv": args.report_csv, "report_json": args.report_json, "report_val": args.report_val,
                 "report_timings": args.report_timings}
    runs = stage_runs(params, args.dataset, args.method)
    if len(runs) > 1 and any(v is not None for v in overrides.values()):
        raise DaugError("path options (--data, --out, ...) name one run's files: give --dataset and --method")
    for dataset, method in runs:
        result = stage(params, dataset, method, **overrides)
        if int(os.environ.get("RANK", "0")) == 0:
            for key, summary in result.items():
                if key != "timings":
                    print(f"trained {dataset}/{method} {key}: val loss {summary['val_loss_initial']:.4f} -> "
                          f"{summary['val_loss_best']:.4f} (best, step {summary['best_step']}; stopped at "
                          f"{summary['stop_step']}), {result['timings'][key]['seconds']} s")
    return 0
