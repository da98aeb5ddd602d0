"""Where every stage reads and writes: the one home of the repository layout.

dvc.yaml spells the same paths with ${...} templates (DVC reads YAML, not Python);
tests/test_paths.py resolves dvc.yaml for each profile and fails when the two disagree.

Two trees per profile. `results/<profile>/` holds what the stages write (per-run metrics, losses,
predictions, curves, timings, executed notebooks): DVC-cached outputs, so a stage whose params,
code and inputs are unchanged is restored from DVC's run-cache instead of re-run, also on another
machine through a shared DVC remote (README, "Many machines"). `reports/<profile>/` is what git
versions: the report stage writes the study there and publishes a copy of `results/<profile>/`
beside it (`PUBLISHED`), so the committed run can be read and audited without DVC.

A per-run stage writes the files of one key of daug/runs.py: augment those of an `Augmentation`
(dataset, method, size), train and evaluate those of a `Run` (all the axes). The key's `name` is
the file stem and its `folder` the adapters' folder, so runs of today's grid keep today's paths.
A train or evaluate run covers every training seed of params `train.seeds`: each seed's adapter and
checkpoints live in a `seed-<k>` folder below the run's (`seed_dir`); its reports hold one row per
seed. The untuned base model's evaluation is the run of method `BASE` (its evaluation is the step-0 row).

    p = Paths.of(params)                         # the profile named by params (params.DEFAULT_PROFILE if none)
    run = Grid.of(params).run("zhenhuan", "rd")
    p.adapter(run, 0)                            # models/adapters/zhenhuan/rd/seed-0
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daug.params import PARAMS_DIR, profile_name
from daug.runs import BASE, Augmentation, Run  # noqa: F401  (BASE: re-exported for the stages and report)

# The pipeline's stages in data-flow order; each runs notebooks/<stage>.ipynb.
STAGES = ("prepare", "base_model", "augment", "train", "evaluate", "evaluate_base", "report")
NOTEBOOKS = Path("notebooks")
RAW = Path("data/raw")
PREPARED = Path("data/prepared")
AUGMENTED = Path("data/augmented")
ADAPTERS = Path("models/adapters")
RESULTS = Path("results")
CHECKPOINTS = Path("runs")  # training checkpoints, outside DVC's outputs
REPORTS = Path("reports")
# The folders of results/<profile>/ that the report stage copies into reports/<profile>/ (git).
PUBLISHED = ("augment", "train", "eval", "timings", "notebooks")
BASE_MODEL = Path("models/base")
PARAMS = Path("params.yaml")
TUNING = PARAMS_DIR / "tuning"  # the learning-rate grids (daug/tuning.py) the approaches report prints

# Stages that are another stage's notebook: `evaluate_base@<ds>` is the evaluate notebook run on the
# base model's run (method BASE: no adapter to read).
RUNS_AS = {"evaluate_base": "evaluate"}


def notebook_source(stage: str) -> Path:
    """The committed notebook a stage runs (relative to the repository root)."""
    return NOTEBOOKS / f"{RUNS_AS.get(stage, stage)}.ipynb"


def run_name(stage: str, key: str | None = None) -> str:
    """The name of one stage run: `stage` or `stage-<key>` (key: a dataset, or a run's name)."""
    return "-".join(part for part in (RUNS_AS.get(stage, stage), key) if part)


def seed_dir(seed: int) -> str:
    """The folder of one training seed's adapter or checkpoints, below its run's folder."""
    return f"seed-{int(seed)}"


@dataclass(frozen=True)
class Paths:
    """Every stage input and output of one profile, relative to `root` (the repository)."""

    profile: str
    root: Path = Path(".")
    report_folder: str | None = None  # reports/<this>: the profile's name, or <profile>-<study> (daug.runs.tables)

    @classmethod
    def of(cls, params: dict, root: str | Path = ".") -> "Paths":
        return cls(profile_name(params), Path(root), params.get("report_folder"))

    # --- shared by every profile (DVC tracks them; switching profile re-runs the stages) ---------

    def base_model(self) -> Path:
        return self.root / BASE_MODEL

    def prepared_dir(self, ds: str) -> Path:
        return self.root / PREPARED / ds

    def prepared(self, ds: str, split: str) -> Path:
        """One split (train, val, test) of a prepared dataset."""
        return self.prepared_dir(ds) / f"{split}.jsonl"

    def manifest(self, ds: str) -> Path:
        return self.prepared_dir(ds) / "manifest.json"

    def augmented(self, aug: Augmentation) -> Path:
        return self.root / AUGMENTED / aug.dataset / f"{aug.file_name}.jsonl"

    def adapters(self, run: Run) -> Path:
        """The train run's output folder: one adapter per training seed below it."""
        return self.root / ADAPTERS / run.folder

    def adapter(self, run: Run, seed: int) -> Path:
        """One seed's trained weights (for peft approaches the standard PEFT layout)."""
        return self.adapters(run) / seed_dir(seed)

    # --- per profile -----------------------------------------------------------------------------

    def runs(self, run: Run, seed: int) -> Path:
        """One seed's training checkpoints (outside DVC's outputs: a killed run resumes from here)."""
        return self.root / CHECKPOINTS / self.profile / run.folder / seed_dir(seed)

    def reports(self, *parts: str) -> Path:
        """The git-versioned tree: the study, and the published copy of `results` (PUBLISHED).
        reports/<profile>/ for a selection that holds the paper's study; a study judged on its own
        (the overfitting study) reports into reports/<profile>-<study>/."""
        return self.root / REPORTS / (self.report_folder or self.profile) / Path(*parts)

    def results(self, *parts: str) -> Path:
        """The stages' own outputs (DVC-cached, restorable from the run-cache)."""
        return self.root / RESULTS / self.profile / Path(*parts)

    def published(self, path: Path) -> Path:
        """Where the report stage publishes a file of `results` (its copy in `reports`)."""
        return self.reports(Path(path).relative_to(self.results()))

    def augment_metrics(self, aug: Augmentation) -> Path:
        return self.results("augment", f"{aug.name}.json")

    def train_curve(self, run: Run) -> Path:
        return self.results("train", f"{run.name}.csv")

    def train_metrics(self, run: Run) -> Path:
        return self.results("train", f"{run.name}.json")

    def val_losses(self, run: Run) -> Path:
        """Per-example validation loss of every seed at its best and at its last evaluation."""
        return self.results("train", f"{run.name}.val.jsonl")

    def eval_metrics(self, run: Run) -> Path:
        return self.results("eval", f"{run.name}.json")

    def predictions(self, run: Run) -> Path:
        """Generated replies with their scores and degeneration flags, one line per seed x prompt."""
        return self.results("eval", f"{run.name}.predictions.jsonl")

    def test_losses(self, run: Run) -> Path:
        """The primary endpoint: per-example test loss, one line per seed x test example."""
        return self.results("eval", f"{run.name}.losses.jsonl")

    def timings(self, stage: str, key: Run | Augmentation) -> Path:
        """A stage run's wall times: not a DVC metric, so `dvc metrics diff` shows results only."""
        return self.results("timings", f"{run_name(stage, key.name)}.json")

    def notebook(self, stage: str, key: str | None = None, suffix: str = ".ipynb") -> Path:
        """The executed copy of a stage's notebook (suffix .ipynb) or its HTML rendering (.html);
        `key`: the dataset (prepare) or the run's name (augment, train, evaluate). The report's own
        lives beside the study; every other stage's in `results` (published to `reports`)."""
        if stage == "report":
            return self.reports(f"report{suffix}")
        return self.results("notebooks", run_name(stage, key) + suffix)

    def study_html(self) -> Path:
        return self.reports("study.html")

    def study_md(self) -> Path:
        return self.reports("study.md")

    def figures(self) -> Path:
        return self.reports("figures")

    # --- the stage table (dvc.yaml declares the same; tests/test_paths.py compares) ---------------

    def stage_io(self, stage: str, key: str | Run | Augmentation | None = None) -> dict[str, list[Path]]:
        """A stage run's data inputs, outputs, metrics and plots (code deps: daug/deps.py). `key`:
        the dataset (prepare), the Augmentation (augment) or the Run (train, evaluate, evaluate_base)."""
        name = key if isinstance(key, str) or key is None else key.name
        notebooks = [self.notebook(stage, name, s) for s in (".ipynb", ".html")]
        io: dict[str, list[Path]] = {"inputs": [], "outs": [], "metrics": [], "plots": []}
        if stage == "prepare":
            # the whole raw folder: a `file:` entry's file or a `save_to_disk` dataset lives there
            io["inputs"] = [self.root / RAW]
            io["outs"] = [self.prepared_dir(key), *notebooks]
        elif stage == "base_model":
            io["inputs"] = [self.root / PREPARED]  # the study vocabulary: the training replies (daug/vocabulary.py)
            io["outs"] = [self.base_model(), *notebooks]
        elif stage == "augment":
            io["inputs"] = [self.prepared(key.dataset, "train"), self.base_model()]
            io["outs"] = [self.augmented(key), *notebooks, self.timings(stage, key)]
            io["metrics"] = [self.augment_metrics(key)]
        elif stage == "train":
            io["inputs"] = [self.augmented(key.augmentation), self.prepared(key.dataset, "val"), self.base_model()]
            io["outs"] = [self.adapters(key), self.val_losses(key), *notebooks, self.timings(stage, key)]
            io["metrics"] = [self.train_metrics(key)]
            io["plots"] = [self.train_curve(key)]
        elif stage in ("evaluate", "evaluate_base"):
            # the base model (evaluate_base@<ds>) has no adapters, and no training-stage validation losses
            trained = [] if key.is_base else [self.adapters(key), self.val_losses(key)]
            io["inputs"] = [*trained, self.base_model(), self.prepared(key.dataset, "test"),
                            self.prepared(key.dataset, "val")]
            io["outs"] = [self.test_losses(key), self.predictions(key), *notebooks, self.timings("evaluate", key)]
            io["metrics"] = [self.eval_metrics(key)]
        elif stage == "report":
            # whole folders: DVC then orders the report after every run that writes into them
            io["inputs"] = [self.root / PREPARED, self.root / AUGMENTED, self.results(), self.root / TUNING]
            io["outs"] = [self.study_html(), self.study_md(), self.figures(), *notebooks,
                          *(self.reports(folder) for folder in PUBLISHED)]
        else:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        return io
