"""daug.approaches: the fine-tuning approaches a run can train with (one file each).

Adding an approach is adding a file here (an `Approach` subclass decorated with `@register`) and its
params block under `approaches` in params/base.yaml. A run names its approach (daug/runs.py).

    from daug.approaches import get_approach
    approach = get_approach("lora-qv", params["approaches"]["lora-qv"])
"""
from __future__ import annotations

from daug.approaches.base import Approach
from daug.registry import Registry

_REGISTRY: Registry[type[Approach]] = Registry("fine-tuning approach", Approach)
APPROACHES: dict[str, type[Approach]] = _REGISTRY.classes
register = _REGISTRY.register


def get_approach(name: str, params: dict | None = None) -> Approach:
    """An approach built from its params block (params.yaml `approaches.<name>`), checked up front."""
    return _REGISTRY.get(name)(params)


def from_params(params: dict, name: str) -> Approach:
    """The approach `name` with its block of `params` (params/base.yaml's defaults filled in)."""
    return get_approach(name, (params.get("approaches") or {}).get(name))


_REGISTRY.discover(__name__, __path__, infra={"base", "bottleneck_layer", "checkpoint", "token_rows"})

__all__ = ["APPROACHES", "Approach", "from_params", "get_approach", "register"]
