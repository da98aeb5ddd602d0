"""Named plug-ins: one registry class for augmentation methods and backends, and their params check.

A `Registry` maps names to subclasses of one base class. `discover` imports every module of a
package (sorted, skipping infrastructure modules and `_private` ones), so adding a plug-in is
adding a file whose class is decorated with the registry's `register`. `resolve_params` is the
one check of a plug-in's params against its `defaults`: unknown keys and wrong types fail with a
DaugError naming the plug-in and the valid keys, before any work is done.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, Iterable, TypeVar

from daug import DaugError
from daug.params import type_ok

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes by name. `kind` names them in errors ("augmentation method", "backend")."""

    def __init__(self, kind: str, base: type):
        self.kind, self.base = kind, base
        self.classes: dict[str, T] = {}  # name -> class, in registration order

    def register(self, cls: T) -> T:
        """Class decorator: add `cls` under `cls.name` (a subclass of the base, a name, once)."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise DaugError(f"cannot register {cls!r} as a {self.kind}: not a subclass of {self.base.__name__}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise DaugError(f"cannot register {cls.__module__}.{cls.__name__} as a {self.kind}: it sets no `name`")
        known = self.classes.get(name)
        if known is not None and known is not cls:
            raise DaugError(f"{self.kind} {name!r} is registered twice ({known.__module__}, {cls.__module__})")
        self.classes[name] = cls
        return cls

    def get(self, name: str) -> T:
        if name not in self.classes:
            raise DaugError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self.classes))}")
        return self.classes[name]

    def discover(self, package: str, path: Iterable[str], infra: Iterable[str] = ()) -> None:
        """Import the plug-in modules of `package` (its `__name__`, `__path__`); they register."""
        skip = set(infra)
        for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
            if info.name not in skip and not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")


def plugin_defaults(section: str, cls: type) -> dict:
    """A plug-in's params and their defaults: its block in params/base.yaml (`augment.<name>`,
    `backends.<name>`), the one home of defaults. A plug-in that base.yaml does not know (one a
    user registers in a notebook or a test) may declare its own `defaults` instead."""
    from daug.params import defaults

    block = (defaults().get(section) or {}).get(cls.name)
    if isinstance(block, dict):
        return block
    return dict(getattr(cls, "defaults", None) or {})


def resolve_params(label: str, defaults: dict, params: dict | None) -> dict:
    """`defaults` merged with `params`, checked; `label` names the owner in errors ("method 'rd'").

    An int given for a float default becomes a float: p=1 and p=1.0 are one setting (one seed).
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        valid = f"valid parameters: {', '.join(sorted(defaults))}" if defaults else "it takes no parameters"
        raise DaugError(f"{label}: unknown parameter {unknown[0]!r}; {valid}")
    merged = {**defaults, **params}
    for key, value in merged.items():
        default = defaults[key]
        if not type_ok(value, default):
            raise DaugError(f"{label}: parameter {key!r} must be {type(default).__name__}, got {value!r}")
        if isinstance(default, float) and isinstance(value, int):
            merged[key] = float(value)
    return merged
