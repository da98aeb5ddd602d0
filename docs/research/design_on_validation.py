"""Issue 21: the schedule and passes decisions of docs/training.md redone on VALIDATION data. For each
committed default run (git history of reports/cpu), the best validation loss of every seed of every
augmented cell (48 validation records, the train stage's metrics): the mean |seed 0 - seed 1| over
the 16 augmented cells and over the 2 `none` cells, the quantity docs/training.md had read off test
losses.

Run: python docs/research/design_on_validation.py   (reads git history; writes nothing)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNS = {"f3436ee": "48 steps, patience 1, passes by record", "7053bed": "30 steps to lr 0, passes by record",
        "a76f1fd": "30 steps to lr 0, passes by source"}
METHODS = ["none", "rd", "ri", "rs", "sr", "bt", "pg", "refine", "expand"]


def best_val(commit: str, ds: str, method: str) -> list[float]:
    text = subprocess.run(["git", "show", f"{commit}:reports/cpu/train/{ds}-{method}.json"], cwd=REPO,
                          check=True, capture_output=True, text=True).stdout
    metrics = json.loads(text)
    return [metrics[k]["val_loss_best"] for k in sorted(metrics) if k.startswith("seed-")]


def main() -> int:
    print("run | mean |seed 0 - seed 1| of the best val loss: augmented cells / none cells")
    for commit, what in RUNS.items():
        gaps = {m: [] for m in METHODS}
        for ds in ("zhenhuan", "paimon"):
            for m in METHODS:
                v = best_val(commit, ds, m)
                gaps[m].append(abs(v[0] - v[1]))
        augmented = [g for m in METHODS if m != "none" for g in gaps[m]]
        print(f"{commit} ({what}) | {sum(augmented) / len(augmented):.4f} / {sum(gaps['none']) / 2:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
