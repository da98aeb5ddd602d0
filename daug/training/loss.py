"""Reply-only language-model loss, computed the fast way.

Gemma 3's 262k-token vocabulary makes the LM head bigger than the transformer body, and most
positions of a chat example are prompt or padding, whose logits the loss ignores. So we run the
body for hidden states and apply the head only at positions that predict a reply token. The result
equals the usual causal-LM loss with -100 labels (tests check it), at a fraction of the cost.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from daug.training.data import IGNORE, collate, encode_records


def unwrap(model):
    """The transformers model inside peft/DDP wrappers."""
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class ReplyLoss(nn.Module):
    """forward(input_ids, attention_mask, labels) -> (summed loss over reply tokens, reply token count).

    A module (not a function) so DistributedDataParallel can wrap it: DDP syncs gradients of what
    its own forward ran, and we bypass the model's forward to skip the head on prompt positions.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model  # the peft model: its parameters are the trainable ones
        lm = unwrap(model)
        self.body = lm.base_model  # the decoder stack (Gemma3TextModel, LlamaModel, ...)
        self.head = lm.get_output_embeddings()
        self.softcap = getattr(lm.config, "final_logit_softcapping", None)

    def forward(self, input_ids, attention_mask, labels):
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        logits = self.head(hidden[:, :-1][keep])
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
        return loss, keep.sum()


def autocast(precision: str):
    """bf16 autocast on CPU (or CUDA) when asked; fp32 otherwise."""
    if precision == "bf16":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def validation_loss(model, tokenizer, records: list[dict], system_prompt: str | None, max_length: int,
                    batch_size: int, *, precision: str = "fp32") -> float:
    """Mean loss per reply token over `records`, with the training stage's formatting and masking.

    Examples are encoded exactly as for training (truncated replies count their kept tokens; an
    example whose prompt fills max_length is skipped) and batched by length for speed; the result
    does not depend on batch_size beyond float rounding. NaN when no reply token remains.
    """
    encoded = encode_records(tokenizer, records, system_prompt, max_length, source="validation records")
    examples = sorted(encoded.examples, key=lambda e: len(e.input_ids))
    loss_fn = ReplyLoss(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for start in range(0, len(examples), batch_size):
            ids, mask, labels = (t.to(device) for t in collate(examples[start:start + batch_size], tokenizer.pad_token_id))
            with autocast(precision):
                loss, n = loss_fn(ids, mask, labels)
            total += loss.item()
            count += int(n)
    finally:
        model.train(was_training)
    return total / count if count else float("nan")
