"""The bottleneck adapter layer of Houlsby et al. (2019) and the hook that inserts it after a module
(infra of daug/approaches/bottleneck.py, imported only when a model is wrapped: torch is heavy)."""
from __future__ import annotations

import torch
from torch import nn

NONLINEARITIES = {"gelu": nn.functional.gelu, "relu": nn.functional.relu, "tanh": torch.tanh}


class Bottleneck(nn.Module):
    def __init__(self, hidden: int, size: int, nonlinearity: str):
        super().__init__()
        self.down, self.up = nn.Linear(hidden, size), nn.Linear(size, hidden)
        self.nonlinearity = nonlinearity
        nn.init.normal_(self.down.weight, std=0.01)  # near-identity start (Houlsby et al., section 2.1)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h):
        x = h.to(self.down.weight.dtype)
        return h + self.up(NONLINEARITIES[self.nonlinearity](self.down(x))).to(h.dtype)


def after(adapter: Bottleneck):
    """A forward hook that passes a module's output through `adapter`."""
    def hook(module, args, output):
        if isinstance(output, tuple):  # attention returns (output, weights)
            return (adapter(output[0]), *output[1:])
        return adapter(output)
    return hook


