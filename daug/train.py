"""Train stage: fine-tune one LoRA adapter for a dataset x augmentation method.

Reads every record of the augmented file (originals and augmented) and the first
`train.val_examples` records of the prepared val split, trains with the budget in params `train` /
`lora` (the same for every method) and writes the adapter (PEFT safetensors + README.md model card),
the loss log (step,split,loss; split = train|val), the summary metrics and, apart from them, the
run's timings; every path is named in daug/paths.py.
Checkpoints go to `Paths.runs` (outside DVC's outputs): a killed run resumes
there when the stage re-runs, if nothing that determines the result has changed.

Multi-process (DDP; gloo on CPU, NCCL on GPUs): `torchrun --standalone --nproc_per_node 2 -m daug train ...`
or `accelerate launch --multi_gpu --num_processes 2 -m daug train ...` (on a CPU-only machine this
starts two gloo processes; accelerate's `--cpu` flag would start one). Rank 0 writes the outputs.
Evaluation reuses `encode_example`/`encode_records` and `validation_loss` for identical masking.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

from daug import DaugError
from daug.io import atomic_write_text, read_records, round_floats, stable_hash, write_json, write_metrics
from daug.paths import Paths
from daug.training.data import Encoded, Example, encode_example, encode_records  # noqa: F401  (public API)
from daug.training.loss import validation_loss  # noqa: F401  (public API)


def code() -> list[Path]:
    """The source files a trained adapter depends on: the train stage's import closure (daug/deps.py),
    the same set dvc.yaml declares for the stage."""
    from daug import deps

    return deps.files(deps.stage_closure("train"))


def paths(params: dict, dataset: str, method: str) -> dict[str, Path]:
    """Where the stage reads and writes (daug/paths.py)."""
    p = Paths.of(params)
    return {"data": p.augmented(dataset, method), "val": p.prepared(dataset, "val"), "base": p.base_model(),
            "out": p.adapter(dataset, method), "csv": p.train_curve(dataset, method),
            "json": p.train_metrics(dataset, method), "timings": p.timings("train", dataset, method),
            "runs": p.runs(dataset, method)}


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(params: dict, dataset: str, files: list[Path], base: Path, world: int) -> str:
    """Everything the trained adapter depends on: params, data, base model, training code, processes."""
    base_files = sorted(p for p in Path(base).rglob("*") if p.is_file())
    return format(stable_hash(
        {k: params.get(k) for k in ("seed", "model", "train", "lora")},
        params["datasets"][dataset].get("system_prompt"),
        [_file_digest(Path(f)) for f in files],
        {str(p.relative_to(base)): _file_digest(p) for p in base_files},
        [_file_digest(p) for p in code()], world), "016x")


def loss_csv(log: list[dict]) -> str:
    return "step,split,loss\n" + "".join(f"{r['step']},{r['split']},{r['loss']:.6f}\n" for r in log)


def summarize(progress: dict, train: Encoded, val: Encoded, records: int, cfg, world: int) -> dict:
    log = progress["log"]
    vals = [r for r in log if r["split"] == "val"]
    trains = [r for r in log if r["split"] == "train"]
    best = min(vals, key=lambda r: r["loss"] if math.isfinite(r["loss"]) else math.inf)
    return {
        "steps": progress["step"], "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
        "records": records, "examples": len(train.examples), "dropped": len(train.dropped),
        "truncated": train.truncated, "val_examples": len(val.examples), "val_truncated": val.truncated,
        "epochs": round(progress["step"] * cfg.batch_size / len(train.examples), 3),
        "train_loss_final": trains[-1]["loss"] if trains else None,
        "val_loss_initial": vals[0]["loss"], "val_loss_final": vals[-1]["loss"],
        "val_loss_best": best["loss"], "val_loss_best_step": best["step"],
        "tokens": progress["tokens"], "reply_tokens": progress["reply_tokens"],
        "padding_fraction": round(1 - progress["tokens"] / max(1, progress["padded_tokens"]), 4),
        "processes": world, "precision": cfg.precision, "resumed_from": progress["resumed_from"],
    }


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
    metrics = {k: summary[k] for k in ("steps", "examples", "truncated", "dropped", "epochs", "train_loss_final",
                                       "val_loss_initial", "val_loss_final", "val_loss_best", "val_loss_best_step")}
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
        f"\"{layout.adapter(dataset, method).as_posix()}\")\n```\n\n"
        f"## Params\n\n```json\n{dumps({k: params.get(k) for k in ('seed', 'model', 'train', 'lora')}, indent=2)}\n```\n\n"
        f"## Metrics (loss per reply token)\n\n| metric | value |\n|---|---|\n{rows}"
    )


def stage(params: dict, dataset: str | None = None, method: str | None = None, *, data: str | Path | None = None,
          val: str | Path | None = None, out: str | Path | None = None, base: str | Path | None = None,
          runs: str | Path | None = None, report_csv: str | Path | None = None,
          report_json: str | Path | None = None, report_timings: str | Path | None = None) -> dict:
    """Run the train stage for one dataset x method; paths default to daug/paths.py (the keyword
    arguments override them). Returns the summary metrics (all ranks), with the timings under `timings`."""
    import torch

    from daug.basemodel import load_tokenizer
    from daug.params import dataset as dataset_entry
    from daug.training.loop import TrainConfig, device_for, dist_info, lora_model, seed_everything, train_loop

    if not dataset or not method:
        raise DaugError("train: needs a dataset and a method (--dataset D --method M)")
    p = paths(params, dataset, method)
    given = {"data": data, "val": val, "out": out, "base": base, "runs": runs, "csv": report_csv, "json": report_json,
             "timings": report_timings}
    p.update({k: Path(v) for k, v in given.items() if v is not None})
    cfg = TrainConfig.from_params(params.get("train") or {})
    ds = dataset_entry(params, dataset)
    seed = int(params.get("seed", 0))
    rank, world = dist_info()
    device = device_for(rank)
    seed_everything(seed)

    tokenizer = load_tokenizer(p["base"])
    records = read_records(p["data"])
    if not records:
        raise DaugError(f"{p['data']}: no records to train on")
    train = encode_records(tokenizer, records, ds["system_prompt"], cfg.max_length, source=str(p["data"]))
    val_enc = encode_records(tokenizer, read_records(p["val"])[:cfg.val_examples], ds["system_prompt"],
                             cfg.max_length, source=str(p["val"]))
    if rank == 0:
        print(f"train: {len(records)} records -> {len(train.examples)} examples ({train.truncated} truncated, "
              f"{len(train.dropped)} dropped: prompt alone >= max_length {cfg.max_length}); "
              f"val: {len(val_enc.examples)} examples; {world} process(es)")
        if train.dropped:
            print(f"dropped ids: {', '.join(train.dropped[:20])}{' ...' if len(train.dropped) > 20 else ''}")

    fp = fingerprint(params, dataset, [p["data"], p["val"]], p["base"], world)
    model = lora_model(p["base"], params["model"], params["lora"], seed, cfg.precision, device)
    progress = train_loop(model, tokenizer, train, val_enc, cfg, seed, p["runs"], fp, rank, world, device)
    summary = summarize(progress, train, val_enc, len(records), cfg, world)
    times = timings(progress)
    if rank == 0:
        model.save_pretrained(p["out"], safe_serialization=True)
        atomic_write_text(p["out"] / "README.md", model_card(params, dataset, method, p["base"], summary))
        atomic_write_text(p["csv"], loss_csv(progress["log"]))
        write_metrics(p["json"], summary)
        write_json(p["timings"], times)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return {**round_floats(summary), "timings": times}


# --- CLI -------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    from daug.cli import stage_arguments

    stage_arguments(parser, dataset=True, method=True)
    parser.add_argument("--data", help="training records (default: data/augmented/DATASET/METHOD.jsonl)")
    parser.add_argument("--val", help="validation records (default: data/prepared/DATASET/val.jsonl)")
    parser.add_argument("--base", help="base model dir (default: models/base)")
    parser.add_argument("--out", help="adapter dir (default: models/adapters/DATASET/METHOD)")
    parser.add_argument("--runs", help="checkpoint dir (default: runs/PROFILE/DATASET/METHOD)")
    parser.add_argument("--report-csv", help="loss log (default: reports/PROFILE/train/DATASET-METHOD.csv)")
    parser.add_argument("--report-json", help="summary (default: reports/PROFILE/train/DATASET-METHOD.json)")
    parser.add_argument("--report-timings", help="timings (default: reports/PROFILE/timings/train-DATASET-METHOD.json)")


def run(args) -> int:
    import os

    from daug.cli import stage_runs
    from daug.params import load

    params = load(args.params)
    overrides = {"data": args.data, "val": args.val, "out": args.out, "base": args.base, "runs": args.runs,
                 "report_csv": args.report_csv, "report_json": args.report_json, "report_timings": args.report_timings}
    runs = stage_runs(params, args.dataset, args.method)
    if len(runs) > 1 and any(v is not None for v in overrides.values()):
        raise DaugError("path options (--data, --out, ...) name one run's files: give --dataset and --method")
    for dataset, method in runs:
        summary = stage(params, dataset, method, **overrides)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"trained {dataset}/{method}: {summary['steps']} steps, val loss "
                  f"{summary['val_loss_initial']:.4f} -> {summary['val_loss_final']:.4f}, "
                  f"{summary['timings']['seconds']} s")
    return 0
