"""Cost per training seed of one cell (train + evaluate, real Gemma 3 270M): today's design vs the
levers of issue 21, side by side in one run.

Both designs train and evaluate the same cell (`<dataset>-none` of the cpu profile) from the same
data and base model, each as the pipeline does: `python -m daug train`, then `python -m daug
evaluate`, two fresh processes (process start and model loads included). Per seed cost = the two
processes' wall time / training seeds.
  today   the committed params before issue 21 (a7a8d55): 2 seeds, validation at steps 0, 10, 20, 30
          for every seed, replies from every seed, 300 test examples, every row's chat template and
          system prompt run through the model (today's code also computed each seed's validation loss
          again in the evaluation)
  levers  the cpu profile as it stands: the dataset's seeds (Zhen Huan 3, Paimon 6), validation at
          step 0 once per run (every seed starts as the base model) and at step 30, replies from
          the first 2 seeds only, the dataset's test examples (Paimon 200), the prompt tokens every
          row shares run once per batch (daug/training/loss.py shared_prefix)
  study   `levers` with params model.vocabulary: study (daug/vocabulary.py): the softmax and the
          generation over the tokens of the training and validation replies (~5,800 of 262,144).
          A different model, so an explicit profile choice: its effect is printed on VALIDATION
          data (each design's weights evaluated once more with the validation split as the test
          input: loss, degeneration shares), never on the test split
  unshared `study` with the shared prefix switched off: its own lever's ratio
Each lever's ratio is read off the measured parts (train and evaluate timings files): the per-seed
cost of today's design with only that lever applied, over today's. The totals are measured.
Target: the run's per-seed cost <= 0.5 x today's (exit 1 otherwise): every cell's train + evaluate
seconds over every training seed, one `none` cell per dataset standing for that dataset's cells
(both datasets have the same methods); each dataset's own ratio is printed too.

Run: python benchmarks/bench_seed_cost.py [--dataset zhenhuan|paimon|both] [--base models/base] [--effect]
Needs models/base, data/prepared/<dataset> and data/augmented/<dataset>/none.jsonl (`dvc repro
augment@<dataset>-none`). Takes ~45 min for both datasets on 2 idle cores (--effect: also
evaluates both vocabularies' weights on the validation split, a few minutes more).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daug.params import resolve  # noqa: E402
from daug.runs import tables  # noqa: E402

TARGET = 0.5
# What the committed params were before issue 21 (params/cpu.yaml at a7a8d55).
TODAY = {"model": {"vocabulary": "full"}, "train": {"seeds": [0, 1], "seeds_by_dataset": None, "eval_every": 10},
         "evaluate": {"generate_seeds": None, "loss_examples": 300, "loss_examples_by_dataset": None}}
# Today's code evaluated step 0 for every seed, and ran every row's chat template and system prompt
# through the body (daug/training/loss.py shared_prefix): the CLI runs with both switched off.
NO_SHARED_STEP0 = "import daug.approaches.lora as L; L.LoraQV.starts_as_base = False; "
NO_SHARED_PREFIX = ("import daug.training.loss as Lo, daug.training.loop as Lp; "
                    "Lo.shared_prefix = Lp.shared_prefix = lambda examples: 0; ")


def design(params: dict, overrides: dict | None) -> dict:
    out = copy.deepcopy(params)
    for section, values in (overrides or {}).items():
        out[section].update(values)
    return out


def run_cell(params: dict, name: str, folder: Path, base: Path, shared_step0: bool, reuse_val: bool = True,
             shared_prefix: bool = True) -> dict:
    """Train then evaluate the cell in two fresh processes; (wall seconds of each, their timings files).
    `reuse_val`: the evaluation reads each seed's validation loss from the training stage's file
    (today's code computed it again); `shared_prefix`: the prompt tokens every row shares run once
    per batch (today's code ran them per row)."""
    folder.mkdir(parents=True)
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    prefix = ("" if shared_step0 else NO_SHARED_STEP0) + ("" if shared_prefix else NO_SHARED_PREFIX)
    common = ["--params", str(params_file), "--run", name, "--base", str(base)]
    train = common + ["--out", str(folder / "adapters"), "--runs", str(folder / "runs"),
                      "--report-csv", str(folder / "train.csv"), "--report-json", str(folder / "train.json"),
                      "--report-val", str(folder / "val.jsonl"), "--report-timings", str(folder / "train-timings.json")]
    evaluate = common + ["--adapter", str(folder / "adapters"), "--out", str(folder / "eval"),
                         "--timings", str(folder / "eval-timings.json"),
                         "--train-val", str(folder / ("val.jsonl" if reuse_val else "no-such-file"))]
    walls = {}
    for stage, args in (("train", train), ("evaluate", evaluate)):
        start = time.perf_counter()
        cli(stage, args, prefix)
        walls[stage] = time.perf_counter() - start
    timings = {"train": json.loads((folder / "train-timings.json").read_text()),
               "evaluate": json.loads((folder / "eval-timings.json").read_text())["seconds"]}
    seeds = [k for k in timings["train"] if k.startswith("seed-")]
    return {"walls": walls, "timings": timings, "seeds": seeds, "common": common, "folder": folder}


def cli(stage: str, args: list[str], prefix: str = "") -> None:
    code = f"{prefix}import sys; from daug.cli import main; sys.exit(main({[stage, *args]!r}))"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def on_validation(cell: dict, val: Path) -> dict:
    """The cell's weights evaluated with the validation split as the test input: mean loss and
    degeneration shares over its seeds (the effect of a model choice, never read off the test split)."""
    out = cell["folder"] / "val-eval"
    cli("evaluate", cell["common"] + ["--adapter", str(cell["folder"] / "adapters"), "--out", str(out), "--test",
                                      str(val), "--timings", str(cell["folder"] / "val-eval-timings.json"),
                                      "--train-val", str(cell["folder"] / "val.jsonl")])
    name = cell["common"][cell["common"].index("--run") + 1]
    metrics = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))  # evaluate.run_files' name
    seeds = [m for k, m in metrics.items() if k.startswith("seed-")]
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    shares = {k: mean([m["degeneration"]["share"][k] for m in seeds if "degeneration" in m])
              for k in ("loops", "at_limit", "foreign_script", "empty")}
    return {"loss": mean([m["test_loss"] for m in seeds]), **shares}


def with_vocabulary(params: dict, base: Path, folder: Path) -> Path:
    """A base-model folder beside `base` (its files linked) holding the study vocabulary of `params`."""
    from daug import vocabulary

    folder.mkdir(parents=True)
    for f in base.iterdir():
        if f.name != vocabulary.FILE:
            (folder / f.name).symlink_to(f.resolve())
    content = vocabulary.write(params, folder)
    print(f"{content.get('choice')} vocabulary: {content.get('count')} tokens (the training replies of "
          f"{', '.join(params['datasets'])})")
    return folder


def parts(cell: dict) -> dict:
    """Mean seconds per seed of each part, and the per-cell rest (process start, loads)."""
    t, e, seeds = cell["timings"]["train"], cell["timings"]["evaluate"], cell["seeds"]
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    steps = mean([t[s]["train_seconds"] for s in seeds])
    validation = mean([t[s]["eval_seconds"] for s in seeds])
    test_loss = mean([e[s]["test_loss"] for s in seeds])
    replies = sum(e[s].get("generate", 0.0) + e[s].get("score", 0.0) for s in seeds) / len(seeds)
    val_loss = mean([e[s]["val_loss"] for s in seeds])
    load = mean([e[s]["load"] for s in seeds])
    total = sum(cell["walls"].values())
    rest = total - len(seeds) * (steps + validation + test_loss + replies + val_loss + load)  # per cell
    return {"steps": steps, "validation": validation, "test_loss": test_loss, "replies": replies,
            "val_loss": val_loss, "load": load, "rest": rest, "seeds": len(seeds), "total": total}


def per_seed(p: dict) -> float:
    return p["steps"] + p["validation"] + p["test_loss"] + p["replies"] + p["val_loss"] + p["load"] + p["rest"] / p["seeds"]


def measure(params: dict, dataset: str, base: Path, tmp: Path, effect: bool) -> dict:
    """One dataset's `none` cell under each design, side by side: their parts, and the validation
    effect of the vocabulary when asked."""
    levers = design(params, {"model": {"vocabulary": "full"}})  # the profile's levers, Gemma's whole vocabulary
    study = design(params, {"model": {"vocabulary": "study"}})
    name = f"{dataset}-none"
    # models/base holds the profile's vocabulary: each design gets a folder with its own
    full_base = with_vocabulary(levers, base, tmp / "base-full")
    study_base = with_vocabulary(study, base, tmp / "base-study")
    today = parts(run_cell(design(params, TODAY), name, tmp / "today", full_base, False, False, False))
    cells = {"levers": run_cell(levers, name, tmp / "levers", full_base, True),
             "study": run_cell(study, name, tmp / "study", study_base, True)}
    unshared = parts(run_cell(study, name, tmp / "unshared", study_base, True, shared_prefix=False))
    val = REPO / f"data/prepared/{dataset}/val.jsonl"
    shown = {key: on_validation(cell, val) for key, cell in cells.items()} if effect else None
    return {"name": name, "today": today, "levers": parts(cells["levers"]), "study": parts(cells["study"]),
            "unshared": unshared, "effect": shown}


def report(m: dict) -> float:
    """Print one dataset's parts and levers; its per-seed ratio (levers + study vocabulary)."""
    today, levers, vocab = m["today"], m["levers"], m["study"]
    base = per_seed(today)
    rows = {
        "validation at step 0 once per run and at step 30": {**today, "validation": levers["validation"]},
        f"replies from the first 2 of {levers['seeds']} seeds": {**today, "replies": today["replies"] * min(
            1.0, 2 / levers["seeds"])},
        "the dataset's test examples": {**today, "test_loss": levers["test_loss"]},
        f"{levers['seeds']} seeds share a cell's process start and loads": {**today, "seeds": levers["seeds"]},
        "validation loss read from the training stage": {**today, "val_loss": levers["val_loss"]},
        "the study vocabulary (model.vocabulary: study)": {
            **today, **{k: today[k] * vocab[k] / levers[k] for k in ("steps", "validation", "test_loss", "replies")}},
        "the shared prompt prefix run once per batch": {
            **today, **{k: today[k] * vocab[k] / m["unshared"][k] for k in ("steps", "validation", "test_loss")}},
    }
    unshared = m["unshared"]
    print(f"{m['name']}: seconds per seed, today ({today['seeds']} seeds) vs levers ({levers['seeds']} seeds, "
          f"Gemma's vocabulary) vs all levers (+ study vocabulary) vs all levers but the shared prefix")
    for key in ("steps", "validation", "test_loss", "replies", "val_loss", "load"):
        print(f"  {key:<12} {today[key]:7.1f} {levers[key]:7.1f} {vocab[key]:7.1f} {unshared[key]:7.1f}")
    print(f"  {'per cell':<12} {today['rest']:7.1f} {levers['rest']:7.1f} {vocab['rest']:7.1f} {unshared['rest']:7.1f}"
          "   (process start, base model loads)")
    print(f"  {'cell wall':<12} {today['total']:7.1f} {levers['total']:7.1f} {vocab['total']:7.1f} "
          f"{unshared['total']:7.1f}")
    for lever, p in rows.items():
        print(f"  lever: {lever:<52} {per_seed(p) / base:.3f} x today")
    if m["effect"]:
        print("  effect of the study vocabulary, on the validation split (mean over seeds; replies of the first 2):")
        for key in ("loss", "loops", "at_limit", "foreign_script", "empty"):
            print(f"    {key:<15} full {m['effect']['levers'][key]:.4f}   study {m['effect']['study'][key]:.4f}")
    ratio, ratio_vocab = per_seed(levers) / base, per_seed(vocab) / base
    print(f"  per-seed cost: today {base:.1f} s, levers {per_seed(levers):.1f} s: {ratio:.3f} x; "
          f"all levers {per_seed(vocab):.1f} s: {ratio_vocab:.3f} x (without the shared prefix "
          f"{per_seed(unshared) / base:.3f} x)")
    return ratio_vocab


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="both", choices=["zhenhuan", "paimon", "both"],
                        help="both: each dataset's cell, and the run's per-seed cost over the two (default)")
    parser.add_argument("--base", default=str(REPO / "models/base"))
    parser.add_argument("--effect", action="store_true",
                        help="also evaluate the full and study vocabularies on the validation split")
    args = parser.parse_args()
    os.chdir(REPO)  # the params' paths (prepared splits) are relative to the repository
    params = resolve("cpu")
    params.update(tables(params, "paper"))
    datasets = ["zhenhuan", "paimon"] if args.dataset == "both" else [args.dataset]
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            measured[dataset] = measure(params, dataset, Path(args.base), Path(tmp) / dataset, args.effect)
    ratios = {dataset: report(m) for dataset, m in measured.items()}
    # The run's per-seed cost: every cell's train + evaluate seconds over every training seed. Both
    # datasets have the same number of cells (the study's methods), so one cell of each stands for them.
    now = sum(per_seed(m["study"]) * m["study"]["seeds"] for m in measured.values()) / sum(
        m["study"]["seeds"] for m in measured.values())
    then = sum(per_seed(m["today"]) * m["today"]["seeds"] for m in measured.values()) / sum(
        m["today"]["seeds"] for m in measured.values())
    total = now / then
    seeds = " + ".join(f"{d} {m['study']['seeds']} seeds" for d, m in measured.items())
    per_dataset = ", ".join(f"{d} {r:.3f} x" for d, r in ratios.items())
    print(f"per-seed cost of a run ({seeds} per method): today {then:.1f} s, now {now:.1f} s: {total:.3f} x "
          f"(target <= {TARGET}); per dataset: {per_dataset}")
    return 0 if total <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
