"""Learning rates per fine-tuning approach, chosen on the validation split by one rule (issue 24).

Approaches need different learning rates (peft's own method comparison tuned them per method:
full fine-tuning 1e-5, LoRA/DoRA 1e-4, IA3 1e-3, prompt tuning 1e-3, prefix tuning up to 5e-3).
The grid: each approach's reference rate (params `tuning.reference`) times each of
`tuning.factors`, one training seed (`tuning.seed`) of one run per approach (`tuning.dataset`,
`tuning.method`, the profile's size and schedule), trained exactly as the train stage trains it.
The rule, the same for every approach: the rate with the lowest best validation loss (the train
stage's, on `train.val_examples` validation records). A rate at the edge of the grid may hide a
better one beyond it: the grid then grows one factor further on that side (the grid's own step),
up to `tuning.extend` times, and a choice still at an edge is flagged. The test split is never read.

    python -m daug.tuning [--params params.yaml] [--approaches lora-qv,full]   (default: the `approaches` study's)

trains every (approach, rate) in this one process (checkpoints under runs/<profile>/tuning/),
writes `learning_rates_file` (params/tuning/<profile>.json: every row, the chosen rate per
approach, the rule) and prints the `approaches:` lines for the profile's params file, where the
study reads them (`approaches.<name>.learning_rate`); the approaches report prints each approach's rate and this rule (daug/report/approaches.py). A row
already in that file for the same approach and rate (and dataset, method and seed) is kept, not
trained again, so a killed grid resumes and a wider grid trains only its new rates; delete the
file, or the approach's rows, to train them again.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

from daug import DaugError

STUDY = "approaches"  # the study whose approaches the grid tunes by default
RULE = ("the rate with the lowest best validation loss (one seed, the run's full schedule); a choice at "
        "an edge of the grid extends it one factor further on that side (up to tuning.extend times), and "
        "one still at an edge is flagged")


def config(params: dict) -> dict:
    """params `tuning`, checked: a reference rate for each approach named, factors > 0."""
    from daug.params import section

    cfg = dict(section(params, "tuning"))
    reference = cfg.get("reference") or {}
    approaches = section(params, "approaches")
    unknown = sorted(set(reference) - set(approaches))
    if unknown:
        raise DaugError(f"params tuning.reference.{unknown[0]}: not an approach of params `approaches` "
                        f"({', '.join(approaches)})")
    for name, rate in reference.items():
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not rate > 0:
            raise DaugError(f"params tuning.reference.{name}: {rate!r}; expected a learning rate > 0")
    factors = cfg.get("factors")
    if not isinstance(factors, list) or len(factors) < 2 or not all(
            isinstance(f, (int, float)) and f > 0 for f in factors) or sorted(factors) != factors:
        raise DaugError(f"params tuning.factors: {factors!r}; expected at least 2 increasing numbers > 0")
    extend = cfg.get("extend", 0)
    if not isinstance(extend, int) or isinstance(extend, bool) or extend < 0:
        raise DaugError(f"params tuning.extend: {extend!r}; expected an integer >= 0")
    return cfg


def learning_rates_file(params: dict, params_dir: Path | None = None) -> Path:
    """params/tuning/<profile>.json: the evidence for the profile's `approaches.<name>.learning_rate`,
    versioned beside the params it justifies (the report stage declares the folder)."""
    from daug.params import profile_name
    from daug.paths import TUNING

    folder = Path(params_dir) / TUNING.name if params_dir else TUNING
    return folder / f"{profile_name(params)}.json"


def study_approaches(params: dict, study: str = STUDY) -> list[str]:
    """The approaches the study `study` trains (none when params define no such study)."""
    from daug.runs import Grid

    grid = Grid.of(params)
    return list(dict.fromkeys(r.approach for r in grid.study_runs(study))) if study in grid.studies else []


def rate(reference: float, factor: float) -> float:
    return float(f"{reference * factor:.3g}")  # 3.33e-4, not 0.00033333333333333332


def choose(rows: list[dict]) -> dict:
    """{approach: {"learning_rate", "factor", "val_loss", "at_edge"}}: the rule above, per approach;
    `at_edge`: the smallest or largest factor that approach tried. A row without a finite loss (a
    run that diverged) is never chosen."""
    chosen = {}
    for approach in dict.fromkeys(r["approach"] for r in rows):
        tried = [r["factor"] for r in rows if r["approach"] == approach]
        mine = [r for r in rows if r["approach"] == approach and r["val_loss"] is not None
                and math.isfinite(r["val_loss"])]
        if not mine:
            chosen[approach] = {"learning_rate": None, "factor": None, "val_loss": None, "at_edge": None}
            continue
        best = min(mine, key=lambda r: (r["val_loss"], r["factor"]))  # a tie: the smaller rate
        chosen[approach] = {"learning_rate": best["learning_rate"], "factor": best["factor"],
                            "val_loss": best["val_loss"], "at_edge": best["factor"] in (min(tried), max(tried))}
    return chosen


def beyond(factors: list[float], low: bool) -> float:
    """The next factor past the grid's low (or high) edge, one of the grid's own steps further."""
    f = sorted(factors)
    return float(f"{f[0] * f[0] / f[1]:.3g}") if low else float(f"{f[-1] * f[-1] / f[-2]:.3g}")


def grid(params: dict, approaches: list[str] | None = None, scratch: Path | None = None,
         inputs: dict | None = None, out: Path | None = None) -> dict:
    """Train the grid (see the module's doc); returns the document `learning_rates_file` holds,
    written to `out` after every row (a killed grid keeps what it measured). `inputs`: the train
    stage's `data`, `val` and `base` paths when not the profile's (daug/paths.py)."""
    from daug import train
    from daug.io import write_json
    from daug.paths import CHECKPOINTS, Paths
    from daug.runs import Grid

    cfg = config(params)
    names = approaches or study_approaches(params) or list(cfg["reference"])
    missing = [a for a in names if a not in cfg["reference"]]
    if missing:
        raise DaugError(f"approach {missing[0]!r}: no reference rate in params tuning.reference "
                        f"({', '.join(cfg['reference'])})")
    from daug.approaches import from_params as approach_of

    rows_trained = list(params["train"].get("trainable_tokens") or [])
    for name in names:  # an approach that cannot train the end-of-turn row fails before any work
        approach_of(params, name).check_token_rows(rows_trained)
    paths = Paths.of(params)
    scratch = scratch or paths.root / CHECKPOINTS / paths.profile / "tuning"
    earlier = json.loads(out.read_text(encoding="utf-8")) if out is not None and out.exists() else {"rows": []}
    # another approach's rows of an earlier grid stay (`--approaches` re-runs some); a rate an earlier
    # grid of the same data and seed trained is not trained again (a killed or widened grid resumes)
    rows = [r for r in earlier["rows"] if r["approach"] not in names]
    done = {(r["approach"], r["learning_rate"]): r for r in earlier["rows"]} if _same_grid(earlier, cfg) else {}

    def trained(approach: str, factor: float) -> dict:
        lr = rate(cfg["reference"][approach], factor)
        if (approach, lr) in done:
            print(f"tuning {approach}: learning rate {lr:g} already in {out}", flush=True)
            return done[(approach, lr)]
        p = copy.deepcopy(params)
        p["approaches"][approach] = {**(p["approaches"][approach] or {}), "learning_rate": lr}
        p["train"] = {**p["train"], "seeds": [cfg["seed"]], "seeds_by_dataset": None, "learning_rate_scale": 1.0}
        run = Grid.of(p).run(cfg["dataset"], cfg["method"], approach)
        folder = scratch / f"{approach}-lr{lr:g}"
        print(f"tuning {approach}: learning rate {lr:g} ({factor:g} x {cfg['reference'][approach]:g})", flush=True)
        start = time.perf_counter()
        result = train.stage(p, run, out=folder / "weights", runs=folder / "checkpoints",
                             report_csv=folder / "loss.csv", report_json=folder / "summary.json",
                             report_val=folder / "val.jsonl", report_timings=folder / "timings.json",
                             **(inputs or {}))
        summary = result[f"seed-{cfg['seed']}"]
        return {"approach": approach, "reference": cfg["reference"][approach], "factor": factor,
                "learning_rate": lr, "val_loss": summary["val_loss_best"],
                "val_loss_initial": summary["val_loss_initial"], "best_step": summary["best_step"],
                "seconds": round(time.perf_counter() - start, 1)}

    def record(approach: str, factor: float) -> None:
        rows.append(trained(approach, factor))
        if out is not None:
            write_json(out, document(cfg, rows))

    for approach in names:
        factors = list(cfg["factors"])
        for factor in factors:
            record(approach, factor)
        for _ in range(cfg.get("extend", 0)):
            choice = choose([r for r in rows if r["approach"] == approach])[approach]
            if not choice["at_edge"]:
                break
            factors.append(beyond(factors, low=choice["factor"] == min(factors)))
            record(approach, factors[-1])
    return document(cfg, rows)


def _same_grid(doc: dict, cfg: dict) -> bool:
    """Whether an earlier grid's rows were trained on the same data and seed (their rates are reusable)."""
    return (doc.get("dataset"), doc.get("method"), doc.get("seed")) == (cfg["dataset"], cfg["method"], cfg["seed"])


def document(cfg: dict, rows: list[dict]) -> dict:
    return {"rule": RULE, "dataset": cfg["dataset"], "method": cfg["method"], "seed": cfg["seed"],
            "factors": cfg["factors"], "extend": cfg.get("extend", 0), "rows": rows, "chosen": choose(rows)}


def params_lines(doc: dict) -> str:
    """The `approaches.<name>.learning_rate` values to put in the profile's params file."""
    return "\n".join(f"  {name}: {{learning_rate: {c['learning_rate']:g}}}  # tuning: x{c['factor']:g}"
                     f"{' (edge of the grid)' if c['at_edge'] else ''}, best val {c['val_loss']:.4f}"
                     for name, c in doc["chosen"].items() if c["learning_rate"] is not None)


def main(argv: list[str] | None = None) -> int:
    from daug.io import write_json
    from daug.params import load

    parser = argparse.ArgumentParser(prog="python -m daug.tuning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--approaches", help=f"comma-separated (default: those of the study {STUDY!r}, else every "
                                             "approach of tuning.reference)")
    args = parser.parse_args(argv)
    try:
        params = load(args.params)
        out = learning_rates_file(params)
        doc = grid(params, args.approaches.split(",") if args.approaches else None, out=out)
    except DaugError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_json(out, doc)
    for r in doc["rows"]:
        print(f"{r['approach']:<12} lr {r['learning_rate']:<8g} best val {r['val_loss']:.4f} (step {r['best_step']}), "
              f"{r['seconds']} s")
    print(f"wrote {out}; for the params file (approaches):\n{params_lines(doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
