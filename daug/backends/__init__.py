"""daug.backends: the language models behind model-based augmentation (bt, pg, refine, expand).

Adding a backend is adding a file here: a module defining a `Backend` subclass decorated with
`@register`, imported (in sorted order) when this package is. Backend modules import torch,
transformers or network code inside functions, so listing backends stays cheap.

    from daug.backends import get_backend
    backend = get_backend("local", {"model": "models/base"})
    backend.translate(["你好"], "zh", "en")
"""
from __future__ import annotations

from daug.backends.base import Backend, Task
from daug.registry import Registry

_REGISTRY: Registry[type[Backend]] = Registry("backend", Backend)
BACKENDS: dict[str, type[Backend]] = _REGISTRY.classes
register = _REGISTRY.register


def get_backend(name: str, params: dict | None = None) -> Backend:
    """A backend built from its params entry (params.yaml `backends.<name>`), validated up front."""
    return _REGISTRY.get(name)(params)


_REGISTRY.discover(__name__, __path__, infra={"base"})  # modules that hold machinery, not backends

__all__ = ["BACKENDS", "Backend", "Task", "get_backend", "register"]
