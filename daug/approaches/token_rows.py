"""Trained token rows (`train.trainable_tokens`: the `<end_of_turn>` a pretrained model never
learned) for the approaches that have no peft TrainableTokens of their own: IA3, prompt and prefix
tuning, bottleneck adapters, the last layers (infra: no approach registered here).

LoRA and DoRA train the rows with peft's `trainable_token_indices` (daug/approaches/lora.py); full
fine-tuning trains every row anyway. For the others, `add` puts a k x d matrix of rows, initialised
from the embedding, beside the model and swaps them in where the tied embedding and LM head use
them: in the embedding's output at the rows' tokens, and in the head's logits for the rows' columns
(forward hooks, so the model's own forward, generation and daug's fast loss all see them; the fast
loss reads them through `daug.training.loss.trained_rows`). The big matrix stays frozen, as with
peft. They are saved beside the approach's weights (`token_rows.safetensors`: the token ids and
their rows), loaded back by `load`, and folded into the embedding matrix for inference (`fold`), as
peft's merge does. A tied embedding and head is required (Gemma's, the smoke model's): the paper
profile trains no rows.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from daug import DaugError
from daug.training.loss import OWN_ROWS, swap_rows, unwrap

FILE = "token_rows.safetensors"


class TokenRows(nn.Module):
    """The trained rows: `rows[j]` replaces row `index[j]` of the tied embedding/head weight."""

    def __init__(self, weight: torch.Tensor, token_ids: list[int]):
        super().__init__()
        self.register_buffer("index", torch.tensor(list(token_ids), dtype=torch.long, device=weight.device))
        self.rows = nn.Parameter(weight[self.index].detach().clone())
        self.handles: list = []


def of_model(model) -> TokenRows | None:
    return getattr(unwrap(model), OWN_ROWS, None)


def _embedding_hook(rows: TokenRows):
    def hook(module, args, output):
        return swap_rows(output, args[0], rows.index, rows.rows, getattr(module, "embed_scale", None))
    return hook


def _head_hook(rows: TokenRows):
    def hook(module, args, output):
        columns = args[0].to(rows.rows.dtype) @ rows.rows.T  # the rows' logits (before any soft-capping)
        return output.index_copy(-1, rows.index, columns.to(output.dtype))
    return hook


def _tied_layers(model) -> tuple:
    lm = unwrap(model)
    embed, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    embed = getattr(embed, "get_base_layer", lambda: embed)()
    if head is None or getattr(head, "weight", None) is not embed.weight:
        raise DaugError("train.trainable_tokens: this approach trains token rows only on a model whose embedding "
                        "and LM head are tied (Gemma's are); set train.trainable_tokens: []")
    return lm, embed, head


def add(model, token_ids: list[int]):
    """`model` (plain or peft-wrapped) with trainable rows for `token_ids` (none: unchanged). Add them
    after the approach has frozen what it does not train: their parameter is the only new one."""
    if not token_ids:
        return model
    lm, embed, head = _tied_layers(model)
    if of_model(model) is not None:
        raise DaugError("token rows are already on this model")
    rows = TokenRows(embed.weight, token_ids)
    setattr(lm, OWN_ROWS, rows)  # a submodule of the model: its parameter is the model's
    for layer, hook in ((embed, _embedding_hook(rows)), (head, _head_hook(rows))):
        layer.__dict__[OWN_ROWS] = rows  # what daug.training.loss.trained_rows reads
        rows.handles.append(layer.register_forward_hook(hook))
    return model


def save(model, folder: Path) -> None:
    """Write the rows beside the approach's weights (nothing when the model has none)."""
    from safetensors.torch import save_file

    rows = of_model(model)
    if rows is not None:
        save_file({"index": rows.index.cpu().contiguous(), "rows": rows.rows.detach().cpu().contiguous()},
                  str(Path(folder) / FILE))


def load(model, folder: Path):
    """`model` with the rows saved in `folder` (none saved: unchanged)."""
    from safetensors.torch import load_file

    path = Path(folder) / FILE
    if not path.exists():
        return model
    saved = load_file(str(path))
    add(model, saved["index"].tolist())
    with torch.no_grad():
        of_model(model).rows.copy_(saved["rows"])
    return model


def fold(model):
    """Write the rows into the tied embedding/head weight and remove them: the same function, as a
    plain model (what peft's merge does with its own rows). Returns the model."""
    rows = of_model(model)
    if rows is None:
        return model
    lm, embed, head = _tied_layers(model)
    with torch.no_grad():
        embed.weight[rows.index] = rows.rows.to(embed.weight.dtype)
    for handle in rows.handles:
        handle.remove()
    for layer in (embed, head):
        layer.__dict__.pop(OWN_ROWS, None)
    delattr(lm, OWN_ROWS)
    return model
