"""Which daug modules a stage's code can import: static analysis of daug/, so dependencies cannot go stale.

A stage runs `python -m daug notebook notebooks/<stage>.ipynb ...`: its entry modules are that
command path (daug/__main__.py, daug/cli.py, daug/notebook.py) and the daug modules the notebook
imports. `closure` follows every import statement from there, transitively, including imports
inside functions (a stage may call them), `from daug.x import y` where y is a submodule, and
relative imports. Importing a module runs its package's __init__.py, so parents count too. A
package whose __init__.py discovers its own modules (passes `__path__` on, as the method and
backend registries do) imports every module in it.

Two users: tests/test_deps.py checks that each stage in dvc.yaml declares its closure (so an edit
re-runs the stages it can change), and daug/train.py fingerprints the train stage's closure (so a
checkpoint made by other code is never resumed).
"""
from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent   # daug/
REPO = PACKAGE_DIR.parent
COMMAND_PATH = ("daug.__main__", "daug.cli", "daug.notebook")  # `python -m daug notebook ...`


def module_file(module: str) -> Path | None:
    """daug/x/y.py or daug/x/y/__init__.py for `daug.x.y`; None if it is not a daug module."""
    parts = module.split(".")
    if parts[0] != "daug":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_package(module: str) -> bool:
    path = module_file(module)
    return path is not None and path.name == "__init__.py"


def _resolve_relative(module: str, level: int, name: str | None) -> str:
    package = module if _is_package(module) else module.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{name}" if name else package


def _imported_names(module: str, tree: ast.AST) -> set[str]:
    """Module names an AST can import (anywhere in it), daug or not."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, node.level, node.module) if node.level else node.module
            names.add(base)
            # `from daug.x import y`: y may be a submodule; a name that is not one is dropped later
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _discovers_submodules(tree: ast.AST) -> bool:
    return any(isinstance(node, ast.Name) and node.id == "__path__" for node in ast.walk(tree))


@lru_cache(maxsize=None)
def direct_imports(module: str) -> frozenset[str]:
    """The daug modules `module` imports directly (parent packages included)."""
    path = module_file(module)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = {m for m in _imported_names(module, tree) if module_file(m) is not None}
    if path.name == "__init__.py" and _discovers_submodules(tree):
        found.update(f"{module}.{p.stem}" for p in path.parent.glob("*.py") if p.stem != "__init__")
        found.update(f"{module}.{p.parent.name}" for p in path.parent.glob("*/__init__.py"))
    found |= {parent for m in found for parent in _parents(m)}
    found.discard(module)
    return frozenset(found)


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(entries) -> set[str]:
    """Every daug module reachable from `entries` (module names), the entries and their parents included."""
    todo = [m for e in entries for m in (*_parents(e), e) if module_file(m) is not None]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(direct_imports(module) - seen)
    return seen


def notebook_imports(notebook: str | Path) -> set[str]:
    """The daug modules a notebook's code cells import."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    names: set[str] = set()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            # IPython magics and shell escapes are not Python: leave them out of the parse
            source = "\n".join(line for line in "".join(cell["source"]).splitlines()
                               if not line.lstrip().startswith(("%", "!")))
            names |= _imported_names("__main__", ast.parse(source, filename=str(notebook)))
    return {m for m in names if module_file(m) is not None}


def stage_closure(stage: str, root: str | Path = REPO) -> set[str]:
    """Every daug module the DVC stage `stage` can import: its notebook and the command that runs it."""
    from daug.paths import notebook_source

    return closure([*COMMAND_PATH, *sorted(notebook_imports(Path(root) / notebook_source(stage)))])


def files(modules) -> list[Path]:
    """The source files of `modules`, sorted (a stable order for fingerprints)."""
    return sorted(module_file(m) for m in modules)


def missing_deps(modules, declared) -> list[str]:
    """The modules (as repository paths) that no declared dependency covers; a folder covers its files."""
    declared = [Path(d) for d in declared]
    missing = []
    for path in files(modules):
        rel = path.relative_to(REPO)
        if not any(rel == d or d in rel.parents for d in declared):
            missing.append(rel.as_posix())
    return missing


def dvc_deps(modules) -> list[str]:
    """`modules` as dvc.yaml deps: a subpackage folder where every file of it is in, else its files."""
    paths = {p.relative_to(REPO) for p in files(modules)}
    out = set()
    for path in paths:
        folder = path.parent
        whole = folder != Path("daug") and all(f.relative_to(REPO) in paths for f in (REPO / folder).rglob("*.py"))
        out.add((folder if whole else path).as_posix())
    return sorted(out)


if __name__ == "__main__":  # `python -m daug.deps`: the deps each stage must declare, for dvc.yaml
    from daug.paths import STAGES

    for name in STAGES:
        print(f"{name}:", *(f"  - {d}" for d in dvc_deps(stage_closure(name))), sep="\n")
