"""daug.augment: augmentation methods behind one registry.

Adding a method is adding a file here: a module that defines a `Method` subclass decorated with
`@register`. Every module of this package that is not infrastructure (`infra` below) is imported, in
sorted order, when the package is imported, so registration needs no other edit. Method modules
must import heavy dependencies (torch, transformers) inside functions, not at module level.

    from daug.augment import get_method
    method = get_method("rd")({"p": 0.1})
"""
from __future__ import annotations

from daug.augment.base import FIELDS, Job, Method, TextMethod
from daug.registry import Registry

_REGISTRY: Registry[type[Method]] = Registry("augmentation method", Method)
METHODS: dict[str, type[Method]] = _REGISTRY.classes
register = _REGISTRY.register
get_method = _REGISTRY.get

# `infra`: the modules of this package that hold machinery, not methods.
_REGISTRY.discover(__name__, __path__, infra={"apply", "base", "cli", "quality", "synvec", "words"})

__all__ = ["FIELDS", "METHODS", "Job", "Method", "TextMethod", "get_method", "register"]
