"""Train stage: fine-tune one run of the grid (daug/runs.py), one set of weights per training seed.

A run names its dataset, augmentation, fine-tuning approach (daug/approaches/: LoRA on q/v by
default), training-set size and schedule (`schedules.<name>`: overrides of `train`). Reads every
record of the run's augmented file (originals and augmented) and the first
`train.val_examples` records of the prepared val split, and trains, for each seed of `train.seeds`
in this one process (tokenizer and data loaded once; a fresh base model + approach per seed), for the
`train.steps` that every method shares (early stopping with `train.patience` may end sooner; `null`:
never), keeping the best evaluated state (daug/training/loop.py). Writes each seed's weights
(the approach's format: PEFT safetensors for peft approaches + README.md model card), and per run the loss log (seed,step,split,loss; split =
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


def paths(params: dict, run) -> dict[str, Path]:
    """Where the stage reads and writes (daug/paths.py); `out` and `runs` hold one folder per seed."""
    p = Paths.of(params)
    return {"data": p.augmented(run.augmentation), "val": p.prepared(run.dataset, "val"), "base": p.base_model(),
            "out": p.adapters(run), "csv": p.train_curve(run), "json": p.train_metrics(run),
            "val_losses": p.val_losses(run), "timings": p.timings("train", run), "runs": p.runs(run, 0).parent}


# The stage's path options: stage() keywords, CLI flags (--report-csv ...), and the paths() key of each.
PATH_OPTIONS = {"data": "data", "val": "val", "out": "out", "base": "base", "runs": "runs", "report_csv": "csv",
                "report_json": "json", "report_val": "val_losses", "report_timings": "timings"}


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(params: dict, run, train: dict, approach, seed: int, files: list[Path], base: Path, world: int) -> str:
    """Everything one seed's weights depend on: params (the run's train section and approach), the
    seed, data, base model, training code, processes (not the other seeds: adding a seed keeps the
    finished ones' checkpoints)."""
    base_files = sorted(p for p in Path(base).rglob("*") if p.is_file())
    train = {k: v for k, v in train.items() if k not in ("seeds", "seeds_by_dataset")}
    return format(stable_hash(
        {"model": params.get("model"), "train": train, "approach": [approach.name, approach.params], "seed": seed},
        params["datasets"][run.dataset].get("system_prompt"),
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


def parameter_counts(model) -> dict:
    """The trained model's trainable and total parameters (a tensor shared by two modules, such as a
    tied embedding and head, counted once) and the trainable share."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_parameters": trainable, "total_parameters": total,
            "trainable_share": float(f"{trainable / total:.4g}") if total else None}


def summarize(progress: dict, seed: int, batches: list[list[int]], train: Encoded, val: Encoded,
              records: list[dict], cfg, trainable_tokens: list[str], world: int, counts: dict | None = None) -> dict:
    """One seed's metrics (Paths.train_metrics holds one of these per seed); `counts`: parameter_counts."""
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
        "processes": world, "resumed_from": progress["resumed_from"], **(counts or {}),
    }


def val_rows(seed: int, val: Encoded, progress: dict) -> list[dict]:
    """Each validation example's mean loss per reply token at the best and at the last evaluation."""
    return [{"seed": seed, "id": e.id, "tokens": tokens, "loss_best": best / tokens if tokens else None,
             "loss_final": last / tokens if tokens else None}
            for e, (best, tokens), (last, _) in zip(val.examples, progress["val_best"], progress["val_last"])]


def peak_memory_mb() -> float | None:
    """The process's peak resident memory so far (VmHWM, MiB; Linux), else None: a seed's value also
    covers the seeds before it in the same process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def timings(progress: dict) -> dict:
    """The run's wall times, throughput (real tokens per second of training steps) and peak memory
    (process resident, and CUDA when training ran there): not results."""
    import torch

    seconds = progress["seconds"]
    out = {"seconds": round(seconds + progress["eval_seconds"], 1), "train_seconds": round(seconds, 1),
           "eval_seconds": round(progress["eval_seconds"], 1),
           "tokens_per_second": round(progress["tokens"] / seconds, 1) if seconds else None,
           "peak_rss_mb": peak_memory_mb()}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def model_card(params: dict, run, train: dict, approach, base: Path, summary: dict) -> str:
    from daug.basemodel import resolve
    from daug.io import dumps

    layout = Paths.of(params)  # the card names the stage's own paths (relative to the repository)
    seed, dataset, method = summary["seed"], run.dataset, run.method
    metrics = {k: summary[k] for k in ("seed", "best_step", "stop_step", "max_steps", "stopped_early", "examples",
                                       "truncated", "dropped", "passes_original_best", "passes_augmented_best",
                                       "val_loss_initial", "val_loss_best", "val_loss_final")}
    rows = "".join(f"| {k} | {round(v, 4) if isinstance(v, float) else v} |\n" for k, v in metrics.items())
    tags = ", ".join([*approach.card_tags(), "daug", dataset, method])
    card_params = {"seed": params.get("seed"), "model": params.get("model"), "train": train,
                   "approach": {approach.name: approach.params}}
    return (
        f"---\nlibrary_name: {approach.library}\nbase_model: {resolve(base)}\ntags: [{tags}]\n---\n\n"
        f"# {approach.name} weights: {run.name}\n\n"
        f"Trained by the daug `train` stage (profile `{params.get('profile')}`, run `{run.name}`) on "
        f"`{layout.augmented(run.augmentation).as_posix()}`: the {dataset} training split augmented with `{method}`. "
        f"Character: {params['datasets'][dataset].get('character')}; system prompt: "
        f"\"{params['datasets'][dataset].get('system_prompt')}\". Loss on reply tokens only.\n\n"
        f"Base model: `{resolve(base)}` ({params['model'].get('source')}).\n\n"
        "Load it with:\n\n```python\nfrom daug.approaches import get_approach\nfrom daug.basemodel import load_model\n"
        f"model = get_approach(\"{approach.name}\", {approach.params!r}).load(load_model(\"{layout.base_model().as_posix()}\"), "
        f"\"{layout.adapter(run, seed).as_posix()}\")\n```\n\n"
        f"The weights are those of the best validation loss (step {summary['best_step']} of at most "
        f"{summary['max_steps']}; training seed {seed}).\n\n"
        f"## Params\n\n```json\n{dumps(card_params, indent=2)}\n```\n\n"
        f"## Metrics (loss per reply token)\n\n| metric | value |\n|---|---|\n{rows}"
    )


def stage(params: dict, run, **overrides) -> dict:
    """Run the train stage for one run (a daug.runs.Run, or its name), every seed of `train.seeds`;
    paths default to daug/paths.py (keywords of PATH_OPTIONS override them; `out` and `runs` get a
    seed-<k> folder per seed). Returns the metrics file's content ({"seed-0": {...}, ...}; all
    ranks), with the timings under `timings`."""
    import torch

    from daug.approaches import from_params as approach_of
    from daug.basemodel import load_tokenizer
    from daug.params import dataset as dataset_entry
    from daug.runs import lookup, train_params
    from daug.training.loop import TrainConfig, device_for, dist_info, schedule, train_loop, trainable_model

    run = lookup(params, run) if isinstance(run, str) else run
    unknown = sorted(set(overrides) - set(PATH_OPTIONS))
    if unknown:
        raise DaugError(f"train.stage: unknown path option(s) {', '.join(unknown)}; known: {', '.join(PATH_OPTIONS)}")
    p = paths(params, run)
    p.update({PATH_OPTIONS[k]: Path(v) for k, v in overrides.items() if v is not None})
    train_section = train_params(params, run)
    cfg = TrainConfig.from_params(train_section)
    approach = approach_of(params, run.approach)
    ds = dataset_entry(params, run.dataset)
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
        print(f"train {run.name} ({approach.name}): {len(records)} records -> {len(train.examples)} examples "
              f"({train.truncated} truncated, {len(train.dropped)} dropped: prompt alone >= max_length "
              f"{cfg.max_length}); val: {len(val_enc.examples)} examples; seeds {cfg.seeds}; {world} process(es)")
        if train.dropped:
            print(f"dropped ids: {', '.join(train.dropped[:20])}{' ...' if len(train.dropped) > 20 else ''}")

    trainable_tokens = list(cfg.trainable_tokens or [])
    summaries, logs, rows, times = {}, {}, [], {}
    initial_val = None  # the step-0 validation, computed by the first seed (daug/training/loop.py:train_loop)
    for seed in cfg.seeds:
        fp = fingerprint(params, run, train_section, approach, seed, [p["data"], p["val"]], p["base"], world)
        model = trainable_model(p["base"], params["model"], approach, trainable_tokens, seed, cfg.precision, device,
                                tokenizer)
        progress = train_loop(model, tokenizer, train, val_enc, cfg, seed, p["runs"] / seed_dir(seed), fp,
                              rank, world, device, approach, initial_val)  # returns with the best state loaded
        initial_val = initial_val or progress["val_initial"]
        summary = summarize(progress, seed, schedule(train, cfg, seed), train, val_enc, records, cfg,
                            trainable_tokens, world, parameter_counts(model))
        key = seed_dir(seed)
        summaries[key], logs[seed], times[key] = summary, progress["log"], timings(progress)
        rows += val_rows(seed, val_enc, progress)
        if rank == 0:
            adapter = p["out"] / key
            approach.save(model, adapter)
            atomic_write_text(adapter / "README.md", model_card(params, run, train_section, approach, p["base"], summary))
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
    from daug.paths import ADAPTERS, AUGMENTED, BASE_MODEL, CHECKPOINTS, PREPARED, RESULTS

    stage_arguments(parser, run=True)
    p = f"{RESULTS}/PROFILE/train/RUN"  # Paths.train_* with the run's name for RUN
    helps = {"data": f"training records (default: {AUGMENTED}/DATASET/<augmentation>.jsonl)",
             "val": f"validation records (default: {PREPARED}/DATASET/val.jsonl)",
             "base": f"base model dir (default: {BASE_MODEL})",
             "out": f"weights dir, one seed-<k> folder per training seed (default: {ADAPTERS}/<run folder>)",
             "runs": f"checkpoints dir, one seed-<k> folder per training seed (default: {CHECKPOINTS}/PROFILE/<run folder>)",
             "report_csv": f"loss log (default: {p}.csv)", "report_json": f"summary metrics (default: {p}.json)",
             "report_val": f"per-example val losses (default: {p}.val.jsonl)",
             "report_timings": f"timings (default: {RESULTS}/PROFILE/timings/train-RUN.json)"}
    for name in PATH_OPTIONS:
        parser.add_argument(f"--{name.replace('_', '-')}", help=helps[name])


def run(args) -> int:
    import os

    from daug.cli import path_overrides, stage_runs
    from daug.params import load

    params = load(args.params)
    runs = stage_runs(params, args)
    overrides = path_overrides(args, tuple(PATH_OPTIONS), runs)
    for one in runs:
        result = stage(params, one, **overrides)
        if int(os.environ.get("RANK", "0")) == 0:
            for key, summary in result.items():
                if key != "timings":
                    print(f"trained {one.name} {key}: val loss {summary['val_loss_initial']:.4f} -> "
                          f"{summary['val_loss_best']:.4f} (best, step {summary['best_step']}; stopped at "
                          f"{summary['stop_step']}), {result['timings'][key]['seconds']} s")
    return 0
