"""Every DVC stage depends on every daug module its code can import (daug/deps.py), so editing a
module re-runs exactly the stages whose results it can change; the training fingerprint covers the
same modules."""
from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
import yaml

from daug import deps
from daug.paths import STAGES, notebook_source
from tests.conftest import REPO

DVC_STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def code_deps(stage: str) -> list[str]:
    body = DVC_STAGES[stage].get("do", DVC_STAGES[stage])
    return [d for d in body["deps"] if isinstance(d, str) and d.startswith("daug")]


def test_every_pipeline_stage_is_analysed():
    assert set(DVC_STAGES) == set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_declares_every_module_it_can_import(stage):
    missing = deps.missing_deps(deps.stage_closure(stage), code_deps(stage))
    assert not missing, f"dvc.yaml stage {stage} does not depend on {', '.join(missing)} (`python -m daug.deps` lists them)"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_declares_no_module_it_cannot_import(stage):
    """A stale entry (a renamed module, one no longer imported) re-runs the stage for nothing, or fails."""
    reachable = {p.relative_to(REPO) for p in deps.files(deps.stage_closure(stage))}
    for dep in code_deps(stage):
        covered = [p for p in reachable if p.as_posix() == dep or p.as_posix().startswith(dep.rstrip("/") + "/")]
        assert covered, f"dvc.yaml stage {stage} depends on {dep}, which its code does not import"


@pytest.mark.parametrize("stage", STAGES)
def test_static_closure_holds_every_module_a_real_import_loads(stage):
    """What Python really loads (registries discover their modules at import time) is in the closure."""
    entries = [*deps.COMMAND_PATH[1:], *sorted(deps.notebook_imports(REPO / notebook_source(stage)))]
    code = ("import importlib, json, sys\n"
            f"for m in {entries!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m == 'daug' or m.startswith('daug.'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert loaded - deps.stage_closure(stage) == set()


def test_imports_inside_functions_and_submodules_named_in_from_imports_count():
    direct = deps.direct_imports("daug.train")
    assert {"daug.basemodel", "daug.params", "daug.training.loop", "daug.training", "daug"} <= direct
    assert "daug.params" in deps.direct_imports("daug.evaluate")  # `from daug import params as P`, in a function


def test_relative_imports_resolve_against_the_module():
    tree = ast.parse("from . import tables\nfrom ..io import read_json\nimport daug.records")
    names = deps._imported_names("daug.report.load", tree)
    assert {"daug.report", "daug.report.tables", "daug.io", "daug.io.read_json", "daug.records"} <= names


def test_a_discovering_package_imports_all_its_modules():
    methods = {f"daug.augment.{p.stem}" for p in (REPO / "daug/augment").glob("*.py") if p.stem != "__init__"}
    assert methods <= deps.closure(["daug.augment"])


def test_training_fingerprint_covers_the_train_stage_closure():
    from daug import train

    files = set(train.code())
    assert files == set(deps.files(deps.stage_closure("train")))
    assert {REPO / "daug/basemodel.py", REPO / "daug/io.py", REPO / "daug/chat.py"} <= files


def test_missing_deps_names_the_module():
    assert deps.missing_deps({"daug.io", "daug.training.loop"}, ["daug/training"]) == ["daug/io.py"]
    assert deps.missing_deps({"daug.io"}, ["daug/io.py"]) == []
