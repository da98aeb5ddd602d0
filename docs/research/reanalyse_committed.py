"""Issue 21: the committed default run (reports/cpu, 2 seeds, made by 6cf5448) judged by today's
procedure (seed-paired, pooled seed variance, one family of the claims' distinct comparisons,
margin 0.02): the numbers behind docs/report.md's worked examples.

Run: python docs/research/reanalyse_committed.py   (reads reports/cpu/{train,eval}; writes nothing)
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from daug.params import resolve  # noqa: E402
from daug.report import claims as C  # noqa: E402
from daug.report import config  # noqa: E402
from daug.report.load import load_study  # noqa: E402
from daug.runs import tables  # noqa: E402


def main() -> int:
    params = resolve("cpu")
    params["train"].update(seeds=[0, 1], seeds_by_dataset=None)  # what that run trained: 2 seeds, 9 methods
    params["studies"]["paper"]["methods"] = ["none", "rd", "ri", "rs", "sr", "bt", "pg", "refine", "expand"]
    params["evaluate"]["loss_examples_by_dataset"] = None
    params.update(tables(params, "paper"))
    params["report"]["strict"] = False  # the report's own inputs (prepare manifests) are not needed here
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(REPO / "reports/cpu", Path(tmp) / "results/cpu")  # the published copy, as stage outputs
        study = load_study(params, tmp)
        cfg = config(params)["claims"]
        claims, evidence, _, comparer = C.judge(study, cfg, 0)
        forest = pd.concat([C.versus_reference(comparer, ds, cfg) for ds in study.datasets])
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 120)
    print(claims[["#", "verdict", "at half the margin"]].to_string(index=False))
    columns = ["dataset", "comparison", "diff", "ci_low", "ci_high", "se", "df", "p_holm", "verdict", "verdict_half"]
    print(evidence.drop_duplicates(["dataset", "comparison"])[columns].round(4).to_string(index=False))
    print(forest[["dataset", "method", "diff", "ci95_low", "ci95_high", "half_width95", "df", "ci_low", "ci_high",
                  "verdict"]].round(4).to_string(index=False))
    for ds in study.datasets:
        d = comparer.difference(C.PRIMARY, ds, "bt", "none")
        print(f"{ds}: pooled seed variance of a difference {d.seed_var:.3g} (SD {d.seed_var ** 0.5:.4f}, "
              f"{d.df_seed} df); bt - none example variance {d.example_var:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
