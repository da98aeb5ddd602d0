"""Bottleneck adapter layers (Houlsby et al. 2019): after the attention block and after the MLP of
every decoder layer, h -> h + W_up f(W_down h + b_down) + b_up with a `size`-dimensional bottleneck
and f = `nonlinearity`; W_up and b_up start at 0, so the model starts as the base model. Inserted by
forward hooks on each layer's `self_attn` and `mlp` (the attention output projection's and the MLP's
outputs, before the residual, as in the paper's Figure 2); everything else is frozen. A small
implementation of the published definition (AdapterHub's `adapters` pins transformers 4.x).
Saved as `bottleneck.safetensors` with `bottleneck_config.json`; nothing merges (f is nonlinear). The
trained token rows are daug's (daug/approaches/token_rows.py)."""
from __future__ import annotations

import json
from pathlib import Path

from daug import DaugError
from daug.approaches import register
from daug.approaches.base import Approach

NONLINEARITIES = ("gelu", "relu", "tanh")
ATTRIBUTE = "daug_bottleneck"  # where the adapters live on the model: its parameters are the model's


@register
class BottleneckAdapter(Approach):
    name = "adapter"
    starts_as_base = True
    merges = False
    library = "daug"
    saved_file = "bottleneck_config.json"

    def __init__(self, params: dict | None = None):
        super().__init__(params)
        if self.params["nonlinearity"] not in NONLINEARITIES or self.params["size"] < 1:
            raise DaugError(f"approach 'adapter': size >= 1 and nonlinearity one of {', '.join(NONLINEARITIES)}; "
                            f"got {self.params['size']!r}, {self.params['nonlinearity']!r}")

    def wrap(self, model, token_ids: list[int]):
        from torch import nn

        from daug.approaches import token_rows
        from daug.approaches.bottleneck_layer import Bottleneck, after

        for p in model.parameters():
            p.requires_grad = False
        layers = model.model.layers
        hidden = model.config.hidden_size
        device = next(model.parameters()).device
        adapters = nn.ModuleList(Bottleneck(hidden, self.params["size"], self.params["nonlinearity"])
                                 for _ in range(2 * len(layers))).to(device)
        setattr(model, ATTRIBUTE, adapters)
        for i, layer in enumerate(layers):
            layer.self_attn.register_forward_hook(after(adapters[2 * i]))
            layer.mlp.register_forward_hook(after(adapters[2 * i + 1]))
        return token_rows.add(model, token_ids)

    def save(self, model, folder: Path) -> None:
        from safetensors.torch import save_file

        from daug.approaches import token_rows

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in getattr(model, ATTRIBUTE).state_dict().items()}
        save_file(state, str(folder / "bottleneck.safetensors"))
        (folder / self.saved_file).write_text(json.dumps(self.params, indent=2, sort_keys=True), encoding="utf-8")
        token_rows.save(model, folder)

    def load(self, base_model, folder: Path):
        from safetensors.torch import load_file

        from daug.approaches import token_rows

        model = self.wrap(base_model, [])
        getattr(model, ATTRIBUTE).load_state_dict(load_file(str(Path(folder) / "bottleneck.safetensors")))
        return token_rows.load(model, folder)

    def for_inference(self, model, four_bit: bool):
        from daug.approaches import token_rows

        return token_rows.fold(model)
