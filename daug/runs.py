"""The experiment grid: runs named by all their axes, and studies as declared sets of runs.

A run is one cell of the grid: a dataset, an augmentation method, a fine-tuning approach (an entry of
params `approaches`, daug/approaches/), a training-set size (the first N training originals) and a
schedule (an entry of params `schedules`: overrides of `train`). Its augmentation, what the augment
stage makes, depends on (dataset, method, size) only, so runs that differ in approach or schedule
share it. A run's name leaves out every axis at the grid's default (params `grid`), so today's
runs keep today's names, files and DVC stages:

    zhenhuan-rd                 dataset zhenhuan, method rd, the default approach, size and schedule
    zhenhuan-rd-ia3             ... approach ia3
    zhenhuan-rd-n20             ... trained on the first 20 originals
    zhenhuan-rd-ia3-n20-long    ... and the schedule `long`

A study (params `studies.<name>`) crosses the axis values it lists (an axis it leaves out takes the
grid's default; `datasets` left out = every dataset). `python -m daug profile P --study S` writes
the runs of the chosen studies (`S` a name, a comma-separated list or `all`) into params.yaml
(`runs`, `augmentations`), where dvc.yaml's stages iterate over them; a run that two studies share
(the `none` cell) is one run, trained once.

    grid = Grid.of(params)
    run = grid.run("zhenhuan", "rd", approach="ia3")   # a Run; run.name == "zhenhuan-rd-ia3"
    grid.study_runs("paper")                           # the runs of one study, in order
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from daug import DaugError

BASE = "base"  # the untuned base model, evaluated like a method (never an augmentation method)
ALL = "all"    # the study selector for every study
STUDY_KEYS = ("description", "datasets", "methods", "approaches", "sizes", "schedules", "claims")
REPORT_CLAIMS = "paper"  # the claims the report judges (daug/report/claims.py); other studies get a runs table
# Claim sets a study may declare (`claims:`), each the numbers of the claims it judges
# (daug/report/claims.py:CLAIMS). The report judges the first selected study that declares one,
# `paper` first; a selection without the paper's study (the overfitting study on its own) reports
# into reports/<profile>-<study>/. `gain` judges none of the paper's claims: it is issue 25's study
# of augmentation's gain against training-set size, mixes and the filter (daug/report/gain.py);
# `approaches` neither: issue 24's comparison of fine-tuning approaches, judged on the curation
# notes' own claims (daug/report/approaches.py).
CLAIM_SETS = {"paper": (1, 2, 3, 4, 5), "overfitting": (4,), "gain": (), "approaches": ()}


@dataclass(frozen=True)
class Augmentation:
    """What the augment stage makes: a dataset's first `size` training originals (None: the
    profile's `augment.max_records`) augmented with `method`. `name`: the file stem."""
    dataset: str
    method: str
    size: int | None
    name: str

    @property
    def file_name(self) -> str:
        """The augmented file's name within its dataset's folder."""
        return self.name.removeprefix(f"{self.dataset}-")


@dataclass(frozen=True)
class Run:
    """One cell of the grid. Made by `Grid.run`, which names it (`name`: the file stem and the
    DVC stage key; `folder`: where its adapters and checkpoints live, below the dataset)."""
    dataset: str
    method: str
    approach: str
    size: int | None
    schedule: str
    name: str
    augmentation: Augmentation | None  # None for the untuned base model (method BASE)

    @property
    def folder(self) -> Path:
        return Path(self.dataset) / self.name.removeprefix(f"{self.dataset}-")

    @property
    def is_base(self) -> bool:
        return self.method == BASE

    def axes(self) -> dict:
        """The run's entry in params.yaml `runs` (what dvc.yaml's stages read as ${item.*})."""
        aug = self.augmentation
        return {"dataset": self.dataset, "method": self.method, "approach": self.approach, "size": self.size,
                "schedule": self.schedule, "augmentation": aug.name if aug else None,
                "augmented": aug.file_name if aug else None, "folder": self.folder.as_posix()}


def _size_ok(size) -> bool:
    return size is None or (isinstance(size, int) and not isinstance(size, bool) and size >= 1)


@dataclass(frozen=True)
class Grid:
    """The axes' defaults (params `grid`) and the values params define; names and checks runs."""
    approach: str
    size: int | None
    schedule: str
    datasets: tuple[str, ...]
    approaches: tuple[str, ...]
    schedules: tuple[str, ...]
    studies: dict

    @classmethod
    def of(cls, params: dict) -> "Grid":
        from daug.params import section

        grid = section(params, "grid")
        return cls(grid["approach"], grid["size"], grid["schedule"], tuple(params.get("datasets") or {}),
                   tuple(section(params, "approaches")), tuple(params.get("schedules") or {}),
                   dict(params.get("studies") or {}))

    def _suffix(self, approach: str, size: int | None, schedule: str) -> list[str]:
        """The name parts of the axes that differ from the grid's defaults."""
        parts = [approach] if approach != self.approach else []
        parts += [f"n{size}"] if size != self.size and size is not None else []
        return parts + ([schedule] if schedule != self.schedule else [])

    def augmentation(self, dataset: str, method: str, size: int | None = None) -> Augmentation:
        """The augment stage's key: named like a run of the default approach and schedule (its data
        depend on dataset, method and size only)."""
        size = self.size if size is None else size
        suffix = self._suffix(self.approach, size, self.schedule)
        return Augmentation(dataset, method, size, "-".join([dataset, method, *suffix]))

    def run(self, dataset: str, method: str, approach: str | None = None, size: int | None = None,
            schedule: str | None = None) -> Run:
        """The run of these axes (None: the grid's default); a DaugError names an unknown value."""
        approach = approach or self.approach
        size = self.size if size is None else size
        schedule = schedule or self.schedule
        if self.datasets and dataset not in self.datasets:
            raise DaugError(f"unknown dataset {dataset!r}; params define: {', '.join(self.datasets)}")
        if approach not in self.approaches:
            raise DaugError(f"unknown approach {approach!r}; params `approaches` define: {', '.join(self.approaches)}")
        if schedule not in self.schedules:
            raise DaugError(f"unknown schedule {schedule!r}; params `schedules` define: {', '.join(self.schedules)}")
        if not _size_ok(size):
            raise DaugError(f"training-set size {size!r}: expected an integer >= 1 or null (the profile's)")
        base = method == BASE
        # The base model has no approach, size or schedule: one evaluation per dataset
        name = "-".join([dataset, method, *([] if base else self._suffix(approach, size, schedule))])
        return Run(dataset, method, approach, size, schedule, name,
                   None if base else self.augmentation(dataset, method, size))

    def base(self, dataset: str) -> Run:
        """The untuned base model's evaluation of `dataset` (the step-0 row)."""
        return self.run(dataset, BASE)

    def study_runs(self, name: str) -> list[Run]:
        """The runs study `name` declares: datasets x methods x approaches x sizes x schedules."""
        if name not in self.studies:
            raise DaugError(f"unknown study {name!r}; params `studies` define: {', '.join(self.studies) or 'none'}")
        study = self.studies[name] or {}
        unknown = sorted(set(study) - set(STUDY_KEYS))
        if unknown:
            raise DaugError(f"params studies.{name}.{unknown[0]}: unknown key; known: {', '.join(STUDY_KEYS)}")
        axes = []
        for key, default in (("datasets", list(self.datasets)), ("methods", None), ("approaches", [self.approach]),
                             ("sizes", [self.size]), ("schedules", [self.schedule])):
            values = study.get(key)
            if values is None:
                values = default
            if not isinstance(values, list) or not values or len(set(map(str, values))) != len(values):
                raise DaugError(f"params studies.{name}.{key}: {values!r}; expected a non-empty list of distinct values")
            if key == "methods" and BASE in values:
                raise DaugError(f"params studies.{name}.methods: {BASE!r} is the untuned base model, evaluated "
                                "beside every study; it is not a method")
            axes.append(values)
        return [self.run(d, m, a, n, s) for d, m, a, n, s in itertools.product(*axes)]

    def selected(self, selector: str) -> list[str]:
        """Study names of a selector: one name, a comma-separated list, or `all`."""
        names = list(self.studies) if selector == ALL else [s.strip() for s in str(selector).split(",") if s.strip()]
        for name in names:
            if name not in self.studies:
                raise DaugError(f"unknown study {name!r}; params `studies` define: {', '.join(self.studies)} "
                                f"(or {ALL!r})")
        if not names:
            raise DaugError("no study selected; name one of: " + ", ".join(self.studies))
        return names

    def runs(self, selector: str) -> list[Run]:
        """Every run of the selected studies, each once, in study order."""
        seen: dict[str, Run] = {}
        for name in self.selected(selector):
            for run in self.study_runs(name):
                seen.setdefault(run.name, run)
        return list(seen.values())


def tables(params: dict, selector: str) -> dict:
    """The generated sections of params.yaml for `selector`: `runs` (name -> axes) and
    `augmentations` (name -> dataset, method, size), what dvc.yaml's per-run stages iterate over."""
    grid = Grid.of(params)
    runs = grid.runs(selector)
    judged = judged_study(params, selector)
    augmentations = {r.augmentation.name: {"dataset": r.dataset, "method": r.method, "size": r.size,
                                           "file": r.augmentation.file_name} for r in runs}
    from daug.params import profile_name

    profile = profile_name(params)
    paper = (grid.studies[judged] or {}).get("claims") == REPORT_CLAIMS
    return {"runs": {r.name: r.axes() for r in runs}, "augmentations": augmentations,
            "report_folder": profile if paper else f"{profile}-{judged}"}


def judged_study(params: dict, selector: str | None = None) -> str:
    """The selected study the report judges: the first that declares `claims: paper`, else the first
    that declares another claim set (CLAIM_SETS); the others get a section listing their runs."""
    grid = Grid.of(params)
    names = grid.selected(selector or params.get("study") or REPORT_CLAIMS)
    for name in names:
        claims = (grid.studies[name] or {}).get("claims")
        if claims is not None and claims not in CLAIM_SETS:
            raise DaugError(f"params studies.{name}.claims: {claims!r}; expected one of: {', '.join(CLAIM_SETS)}")
    for wanted in (REPORT_CLAIMS, *CLAIM_SETS):
        for name in names:
            if (grid.studies[name] or {}).get("claims") == wanted:
                return name
    raise DaugError(f"study {selector!r}: the report stage judges a study that declares `claims` ({', '.join(CLAIM_SETS)}) "
                    f"and lists the others beside it; select one too (e.g. --study paper,{selector})")


def active_runs(params: dict) -> list[Run]:
    """The runs params.yaml was written for (its `runs` table), as Run objects."""
    grid = Grid.of(params)
    table = params.get("runs")
    if table is None:  # params not written by `python -m daug profile` (a test's dict): the selected studies
        return grid.runs(params.get("study") or ALL)
    return [grid.run(a["dataset"], a["method"], a["approach"], a["size"], a["schedule"]) for a in table.values()]


def lookup(params: dict, name: str) -> Run:
    """The active run called `name` (a notebook's `run` parameter, a DVC stage key)."""
    for run in active_runs(params):
        if run.name == name:
            return run
    datasets = params.get("datasets") or {}
    for ds in datasets:  # the base model's evaluation is beside every study
        if name == f"{ds}-{BASE}":
            return Grid.of(params).base(ds)
    known = ", ".join(r.name for r in active_runs(params))
    raise DaugError(f"no run {name!r} in params (runs of study {params.get('study')!r}: {known})")


def lookup_augmentation(params: dict, name: str) -> Augmentation:
    """The augmentation called `name` among the active runs' (the augment notebook's `run`)."""
    for run in active_runs(params):
        if run.augmentation.name == name:
            return run.augmentation
    known = ", ".join(dict.fromkeys(r.augmentation.name for r in active_runs(params)))
    raise DaugError(f"no augmentation {name!r} in params (those of study {params.get('study')!r}: {known})")


def select(params: dict, name: str | None = None, dataset: str | None = None, method: str | None = None,
           approach: str | None = None, size: int | None = None, schedule: str | None = None) -> list[Run]:
    """The active runs a stage command makes: the one named, or those matching every axis given
    (an axis left out matches any value; none given: every active run)."""
    if name:
        return [lookup(params, name)]
    if method == BASE:  # the untuned base model's evaluation of each dataset
        grid = Grid.of(params)
        return [grid.base(d) for d in ([dataset] if dataset else grid.datasets)]
    wanted = {"dataset": dataset, "method": method, "approach": approach, "size": size, "schedule": schedule}
    runs = [r for r in active_runs(params)
            if all(v is None or getattr(r, k) == v for k, v in wanted.items())]
    if not runs and method not in (None, BASE):  # a run outside the studies: named by its axes alone
        if not dataset:
            raise DaugError(f"no active run has these axes ({', '.join(f'{k} {v}' for k, v in wanted.items() if v is not None)}); give --dataset too")
        runs = [Grid.of(params).run(dataset, method, approach, size, schedule)]
    return runs


def train_params(params: dict, run: Run) -> dict:
    """The `train` section a run trains with: params `train` with its schedule's overrides, the
    seeds of its dataset (`daug.params.training_seeds`), and its learning rate: the schedule's if it
    sets one, else the approach's own (`approaches.<name>.learning_rate`), else train's, times
    `learning_rate_scale` (which is then 1: the rate is final)."""
    from daug.params import deep_merge, training_seeds

    schedules = params.get("schedules") or {}
    if run.schedule not in schedules:
        raise DaugError(f"unknown schedule {run.schedule!r}; params `schedules` define: {', '.join(schedules)}")
    schedule = schedules[run.schedule] or {}
    train = deep_merge(params.get("train") or {}, schedule)
    own = ((params.get("approaches") or {}).get(run.approach) or {}).get("learning_rate")
    rate = schedule.get("learning_rate", own if own is not None else train.get("learning_rate"))
    scale = train.get("learning_rate_scale", 1.0)
    if rate is not None:
        train["learning_rate"] = float(f"{rate * scale:.12g}")  # 3e-4, not 0.00030000000000000003
    train["learning_rate_scale"] = 1.0
    return {**train, "seeds": training_seeds({**params, "train": train}, run.dataset)}


def shard(params: dict, index: int, count: int) -> list[str]:
    """The DVC stages of worker `index` of `count` (0-based): every `count`-th active run's augment,
    train and evaluate stages, and every `count`-th dataset's base-model evaluation. Upstream
    stages (prepare, base_model) come with any target (`dvc repro` runs or restores them); the
    report is the assembly step, left to the machine that pulls everything back."""
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
        raise DaugError(f"--shard {index}/{count}: expected K/N with 0 <= K < N")
    grid, runs = Grid.of(params), active_runs(params)
    stages: list[str] = []
    for i, run in enumerate(runs):
        if i % count == index:
            stages += [f"augment@{run.augmentation.name}", f"train@{run.name}", f"evaluate@{run.name}"]
    stages += [f"evaluate_base@{ds}" for i, ds in enumerate(grid.datasets) if i % count == index]
    return list(dict.fromkeys(stages))  # an augmentation two runs share is one stage


# --- CLI: `python -m daug stages` ------------------------------------------------------------------

def add_arguments(parser) -> None:
    from daug.params import PARAMS_FILE

    parser.add_argument("--shard", metavar="K/N", help="only worker K's share of N (0 <= K < N), e.g. 0/2")
    parser.add_argument("--params", default=str(PARAMS_FILE), metavar="FILE", help=f"parameters file (default: {PARAMS_FILE})")


def run(args) -> int:
    from daug.params import load

    params = load(args.params)
    if args.shard:
        k, _, n = args.shard.partition("/")
        try:
            index, count = int(k), int(n)
        except ValueError:
            raise DaugError(f"--shard {args.shard!r}: expected K/N, e.g. 0/2") from None
        print(" ".join(shard(params, index, count)))
    else:
        print(" ".join(shard(params, 0, 1)))
    return 0
