"""Issue 21: the variance components of a (method - none) per-example test-loss difference in a
committed run, the inputs of tests/test_stats.py's simulations (MEASURED) and of the seeds design.

For every method m of a dataset, D[s, i] = loss_m[s, i] - loss_none[s, i] over the training seeds s
and the test examples i, decomposed as a_i + b_s + e_si (two-way ANOVA without replication):
sigma_e^2 = MS_residual, sigma_b^2 = (MS_seed - MS_residual) / n, sigma_a^2 = (MS_example -
MS_residual) / S (negative estimates are set to 0). Each component is pooled over the methods
(mean of the variances), and printed as an SD.

Run: python docs/research/variance_components.py [reports/cpu]   (reads <folder>/eval; writes nothing)
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def losses(path: Path) -> dict[int, dict[str, float]]:
    out: dict = defaultdict(dict)
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        out[r["seed"]][r["id"]] = r["loss"]
    return out


def components(d: np.ndarray) -> dict[str, float]:
    """(seeds, n) differences -> variances of the example effect a, seed effect b, residual e."""
    s, n = d.shape
    grand = d.mean()
    ms_seed = n * ((d.mean(axis=1) - grand) ** 2).sum() / (s - 1)
    ms_example = s * ((d.mean(axis=0) - grand) ** 2).sum() / (n - 1)
    resid = d - d.mean(axis=1, keepdims=True) - d.mean(axis=0, keepdims=True) + grand
    ms_res = (resid ** 2).sum() / ((s - 1) * (n - 1))
    return {"a": max(0.0, (ms_example - ms_res) / s), "b": max(0.0, (ms_seed - ms_res) / n), "e": ms_res}


def main(folder: Path) -> int:
    for reference in sorted(folder.glob("eval/*-none.losses.jsonl")):
        ds = reference.name.split("-none.")[0]
        ref = losses(reference)
        seeds, ids = sorted(ref), sorted(ref[min(ref)])
        pooled = defaultdict(list)
        for path in sorted(folder.glob(f"eval/{ds}-*.losses.jsonl")):
            method = path.name[len(ds) + 1:].split(".losses")[0]
            if method in ("none", "base") or "-" in method:  # other axes (sizes, schedules) are other studies
                continue
            x = losses(path)
            if sorted(x) != seeds:
                continue
            d = np.array([[x[s][i] - ref[s][i] for i in ids] for s in seeds])
            for k, v in components(d).items():
                pooled[k].append(v)
        sd = {k: float(np.sqrt(np.mean(v))) for k, v in pooled.items()}
        print(f"{ds}: {len(pooled['a'])} methods - none, {len(seeds)} seeds, {len(ids)} examples: "
              + ", ".join(f"sigma_{k} {v:.4f}" for k, v in sd.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "reports/cpu"))
