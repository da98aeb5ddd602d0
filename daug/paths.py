"""Where every stage reads and writes: the one home of the repository layout.

dvc.yaml spells the same paths with ${...} templates (DVC reads YAML, not Python);
tests/test_paths.py resolves dvc.yaml for each profile and fails when the two disagree.

One run of a per-run stage (augment, train, evaluate) is identified by (dataset, method); `_run_dir`
and `_run_stem` are the only places that turn that key into a folder or a file-name stem. A train or
evaluate run covers every training seed of params `train.seeds`: each seed's adapter and checkpoints
live in a `seed-<k>` folder below the run's (`seed_dir`); the run's reports hold one row per seed.
`BASE` names the untuned base model where a method would stand (its evaluation is the step-0 row).

    p = Paths.of(params)             # the profile named by params (params.DEFAULT_PROFILE if none)
    p.adapter("zhenhuan", "rd", 0)   # models/adapters/zhenhuan/rd/seed-0
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daug.params import profile_name

# The pipeline's stages in data-flow order; each runs notebooks/<stage>.ipynb.
STAGES = ("prepare", "base_model", "augment", "train", "evaluate", "evaluate_base", "report")
NOTEBOOKS = Path("notebooks")
RAW = Path("data/raw")
PREPARED = Path("data/prepared")
AUGMENTED = Path("data/augmented")


def notebook_source(stage: str) -> Path:
    """The committed notebook a stage runs (relative to the repository root)."""
    return NOTEBOOKS / f"{stage_run(stage)[0]}.ipynb"


def run_name(stage: str, dataset: str | None = None, method: str | None = None) -> str:
    """The name of one stage run: `stage`, `stage-<dataset>` or `stage-<dataset>-<method>`."""
    return "-".join(part for part in (stage, dataset, method) if part)


BASE = "base"  # the untuned base model, evaluated like a method (never an augmentation method)

# Stages that are another stage's notebook run on a fixed method: `evaluate_base@<ds>` is the evaluate
# notebook with `-p method base`, writing evaluate's files for method BASE (no adapter to read).
RUNS_AS = {"evaluate_base": ("evaluate", BASE)}


def stage_run(stage: str, method: str | None = None) -> tuple[str, str | None]:
    """(the stage whose notebook and file names a run of `stage` uses, the run's method)."""
    return RUNS_AS.get(stage, (stage, method))


def seed_dir(seed: int) -> str:
    """The folder of one training seed's adapter or checkpoints, below its run's folder."""
    return f"seed-{int(seed)}"


def _run_dir(dataset: str, method: str) -> Path:
    return Path(dataset) / method


def _run_stem(dataset: str, method: str) -> str:
    return f"{dataset}-{method}"


@dataclass(frozen=True)
class Paths:
    """Every stage input and output of one profile, relative to `root` (the repository)."""

    profile: str
    root: Path = Path(".")

    @classmethod
    def of(cls, params: dict, root: str | Path = ".") -> "Paths":
        return cls(profile_name(params), Path(root))

    # --- shared by every profile (DVC tracks them; switching profile re-runs the stages) ---------

    def base_model(self) -> Path:
        return self.root / "models" / "base"

    def prepared_dir(self, ds: str) -> Path:
        return self.root / PREPARED / ds

    def prepared(self, ds: str, split: str) -> Path:
        """One split (train, val, test) of a prepared dataset."""
        return self.prepared_dir(ds) / f"{split}.jsonl"

    def manifest(self, ds: str) -> Path:
        return self.prepared_dir(ds) / "manifest.json"

    def augmented(self, ds: str, method: str) -> Path:
        return self.root / AUGMENTED / ds / f"{method}.jsonl"

    def adapters(self, ds: str, method: str) -> Path:
        """The train run's output folder: one adapter per training seed below it."""
        return self.root / "models" / "adapters" / _run_dir(ds, method)

    def adapter(self, ds: str, method: str, seed: int) -> Path:
        """One seed's LoRA adapter (standard PEFT layout: PeftModel.from_pretrained loads it)."""
        return self.adapters(ds, method) / seed_dir(seed)

    # --- per profile -----------------------------------------------------------------------------

    def runs(self, ds: str, method: str, seed: int) -> Path:
        """One seed's training checkpoints (outside DVC's outputs: a killed run resumes from here)."""
        return self.root / "runs" / self.profile / _run_dir(ds, method) / seed_dir(seed)

    def reports(self, *parts: str) -> Path:
        return self.root / "reports" / self.profile / Path(*parts)

    def augment_metrics(self, ds: str, method: str) -> Path:
        return self.reports("augment", f"{_run_stem(ds, method)}.json")

    def train_curve(self, ds: str, method: str) -> Path:
        return self.reports("train", f"{_run_stem(ds, method)}.csv")

    def train_metrics(self, ds: str, method: str) -> Path:
        return self.reports("train", f"{_run_stem(ds, method)}.json")

    def val_losses(self, ds: str, method: str) -> Path:
        """Per-example validation loss of every seed at its best and at its last evaluation."""
        return self.reports("train", f"{_run_stem(ds, method)}.val.jsonl")

    def eval_metrics(self, ds: str, method: str) -> Path:
        return self.reports("eval", f"{_run_stem(ds, method)}.json")

    def predictions(self, ds: str, method: str) -> Path:
        """Generated replies with their scores and degeneration flags, one line per seed x prompt."""
        return self.reports("eval", f"{_run_stem(ds, method)}.predictions.jsonl")

    def test_losses(self, ds: str, method: str) -> Path:
        """The primary endpoint: per-example test loss, one line per seed x test example."""
        return self.reports("eval", f"{_run_stem(ds, method)}.losses.jsonl")

    def timings(self, stage: str, ds: str, method: str) -> Path:
        """A stage run's wall times: not a DVC metric, so `dvc metrics diff` shows results only."""
        return self.reports("timings", f"{stage}-{_run_stem(ds, method)}.json")

    def notebook(self, stage: str, ds: str | None = None, method: str | None = None,
                 suffix: str = ".ipynb") -> Path:
        """The executed copy of a stage's notebook (suffix .ipynb) or its HTML rendering (.html)."""
        return self.reports("notebooks", run_name(stage, ds, method) + suffix)

    def study_html(self) -> Path:
        return self.reports("study.html")

    def study_md(self) -> Path:
        return self.reports("study.md")

    def figures(self) -> Path:
        return self.reports("figures")

    # --- the stage table (dvc.yaml declares the same; tests/test_paths.py compares) ---------------

    def stage_io(self, stage: str, ds: str | None = None, method: str | None = None) -> dict[str, list[Path]]:
        """A stage run's data inputs, outputs, metrics and plots (code deps: daug/deps.py)."""
        stage, method = stage_run(stage, method)
        notebooks = [self.notebook(stage, ds, method, s) for s in (".ipynb", ".html")]
        io: dict[str, list[Path]] = {"inputs": [], "outs": [], "metrics": [], "plots": []}
        if stage == "prepare":
            # the whole raw folder: a `file:` entry's file or a `save_to_disk` dataset lives there
            io["inputs"] = [self.root / RAW]
            io["outs"] = [self.prepared_dir(ds), *notebooks]
        elif stage == "base_model":
            io["outs"] = [self.base_model(), *notebooks]
        elif stage == "augment":
            io["inputs"] = [self.prepared(ds, "train"), self.base_model()]
            io["outs"] = [self.augmented(ds, method), *notebooks, self.timings(stage, ds, method)]
            io["metrics"] = [self.augment_metrics(ds, method)]
        elif stage == "train":
            io["inputs"] = [self.augmented(ds, method), self.prepared(ds, "val"), self.base_model()]
            io["outs"] = [self.adapters(ds, method), self.val_losses(ds, method), *notebooks,
                          self.timings(stage, ds, method)]
            io["metrics"] = [self.train_metrics(ds, method)]
            io["plots"] = [self.train_curve(ds, method)]
        elif stage == "evaluate":
            adapters = [] if method == BASE else [self.adapters(ds, method)]  # BASE: evaluate_base@<ds>
            io["inputs"] = [*adapters, self.base_model(), self.prepared(ds, "test"), self.prepared(ds, "val")]
            io["outs"] = [self.test_losses(ds, method), self.predictions(ds, method), *notebooks,
                          self.timings(stage, ds, method)]
            io["metrics"] = [self.eval_metrics(ds, method)]
        elif stage == "report":
            # whole folders: DVC then orders the report after every run that writes into them
            io["inputs"] = [self.root / PREPARED, self.root / AUGMENTED,
                            *(self.reports(folder) for folder in ("augment", "train", "eval"))]
            io["outs"] = [self.study_html(), self.study_md(), self.figures(), *notebooks]
        else:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        return io
