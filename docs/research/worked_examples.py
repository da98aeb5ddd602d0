"""Issue 21: the numbers behind docs/report.md's worked examples, from the committed default run
(reports/cpu, the published copy of its stage outputs) judged with today's params (params/cpu.yaml):
the claims, every distinct comparison, each method minus none, the pooled seed variances and the
decomposition of one seed-paired interval.

Run: python docs/research/worked_examples.py [FOLDER]   (FOLDER: reports/cpu, or results/cpu before the
report stage publishes it; reads FOLDER/{train,eval}; writes nothing)
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from daug import stats  # noqa: E402
from daug.params import resolve  # noqa: E402
from daug.report import claims as C  # noqa: E402
from daug.report import config  # noqa: E402
from daug.report.load import load_study  # noqa: E402
from daug.runs import tables  # noqa: E402


def main(folder: Path) -> int:
    params = resolve("cpu")
    params.update(tables(params, "paper"))
    params["report"]["strict"] = False  # the prepare manifests are not needed here
    with tempfile.TemporaryDirectory() as tmp:
        for sub in ("train", "eval"):
            shutil.copytree(folder / sub, Path(tmp) / "results/cpu" / sub)
        study = load_study(params, tmp)
        cfg = config(params)["claims"]
        claims, evidence, _, comparer = C.judge(study, cfg, 0)
        forest = pd.concat([C.versus_reference(comparer, ds, cfg) for ds in study.datasets])
    pd.set_option("display.width", 220)
    pd.set_option("display.max_colwidth", 200)
    print(claims[["#", "verdict", "at half the margin", "numbers"]].to_string(index=False))
    columns = ["dataset", "comparison", "diff", "ci_low", "ci_high", "level", "se", "df", "p", "p_holm", "verdict",
               "verdict_half", "note"]
    shown = evidence.drop_duplicates(["dataset", "comparison"])[columns].round(4)
    for col in ("p", "p_holm"):  # small p-values keep 3 significant digits (Holm's worked example needs them)
        shown[col] = evidence.drop_duplicates(["dataset", "comparison"])[col].map(lambda v: f"{v:.3g}")
    print(shown.to_string(index=False))
    print(forest[["dataset", "method", "diff", "ci95_low", "ci95_high", "half_width95", "df", "ci_low", "ci_high",
                  "level", "mde", "verdict", "verdict_half"]].round(4).to_string(index=False))
    for ds in study.datasets:
        values = comparer._values(C.PRIMARY, ds)
        var, df = stats.interaction_variance(values)
        d = comparer.difference(C.PRIMARY, ds, "bt", "none")
        seeds = next(iter(values.values())).shape[0]
        print(f"{ds}: {len(values)} methods x {seeds} seeds; method x seed interaction variance of one seed's mean "
              f"{var:.3g} on {df} df, seed variance of a difference {d.seed_var:.3g} (SD {d.seed_var ** 0.5:.4f}); "
              f"bt - none: diff {d.diff:+.4f}, example variance {d.example_var:.4g} over n {d.n}, SE {d.se:.4f}, "
              f"df {d.df:.1f}, 95% {d.interval(0.05)[0]:+.4f} .. {d.interval(0.05)[1]:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "reports/cpu"))
