"""daug.augment: augmentation methods behind one registry.

Adding a method is adding a file here: a module that defines a `Method` subclass decorated with
`@register`. Every module of this package that is not infrastructure (`_INFRA`) is imported, in
sorted order, when the package is imported, so registration needs no other edit. Method modules
must import heavy dependencies (torch, transformers) inside functions, not at module level.

    from daug.augment import get_method
    method = get_method("rd")({"p": 0.1})
"""
from __future__ import annotations

import importlib
import pkgutil

from daug import DaugError
from daug.augment.base import FIELDS, Job, Method, TextMethod

METHODS: dict[str, type[Method]] = {}

# Modules of this package that hold machinery, not methods.
_INFRA = {"base", "cli", "driver", "quality", "synvec", "words"}


def register(cls: type[Method]) -> type[Method]:
    name = cls.name
    if name in METHODS and METHODS[name] is not cls:
        raise DaugError(f"augmentation method {name!r} is registered twice ({METHODS[name].__module__}, {cls.__module__})")
    METHODS[name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise DaugError(f"unknown augmentation method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name not in _INFRA and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()

__all__ = ["FIELDS", "METHODS", "Job", "Method", "TextMethod", "get_method", "register"]
