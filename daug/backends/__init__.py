"""daug.backends: the language models behind model-based augmentation (bt, pg, refine, expand).

Adding a backend is adding a file here: a module defining a `Backend` subclass decorated with
`@register`, imported (in sorted order) when this package is. Backend modules import torch,
transformers or network code inside functions, so listing backends stays cheap.

    from daug.backends import get_backend
    backend = get_backend("local", {"model": "models/base"})
    backend.translate(["你好"], "zh", "en")
"""
from __future__ import annotations

import importlib
import pkgutil

from daug import DaugError
from daug.backends.base import Backend, Task

BACKENDS: dict[str, type[Backend]] = {}
_INFRA = {"base"}  # modules that hold machinery, not backends


def register(cls: type[Backend]) -> type[Backend]:
    if cls.name in BACKENDS and BACKENDS[cls.name] is not cls:
        raise DaugError(f"backend {cls.name!r} is registered twice")
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str, params: dict | None = None) -> Backend:
    """A backend built from its params entry (params.yaml `backends.<name>`), validated up front."""
    if name not in BACKENDS:
        raise DaugError(f"unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](params)


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name not in _INFRA and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()

__all__ = ["BACKENDS", "Backend", "Task", "get_backend", "register"]
