"""Reply-only language-model loss, computed the fast way.

Gemma 3's 262k-token vocabulary makes the LM head bigger than the transformer body, and most
positions of a chat example are prompt or padding, whose logits the loss ignores. So we run the
body for hidden states and apply the head only at positions that predict a reply token. The head is
frozen under LoRA, so its cross-entropy and the gradient for the hidden states are computed
together, chunk by chunk: the (tokens x 262k) logits never exist whole, and no softmax backward
runs. The result equals the usual causal-LM loss with -100 labels (tests check value and gradient).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from daug.training.data import IGNORE, collate, encode_records

CHUNK = 256  # reply tokens per head chunk: 256 x 262k fp32 logits = 268 MB


def unwrap(model):
    """The transformers model inside peft/DDP wrappers."""
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class FrozenHeadCrossEntropy(torch.autograd.Function):
    """sum(cross_entropy(hidden @ weight.T, targets)) for a frozen `weight`; backward to hidden only."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap, chunk):
        h = hidden.to(weight.dtype)
        want_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(h) if want_grad else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, h.shape[0], chunk):
            t = targets[s:s + chunk]
            logits = (h[s:s + chunk] @ weight.T).float()
            if softcap:
                capped = torch.tanh(logits / softcap)
                logits = capped * softcap
            logp = torch.log_softmax(logits, dim=-1)
            total -= logp.gather(1, t[:, None]).sum()
            if want_grad:  # d loss / d logits = softmax - one_hot; then through the cap and the head
                probs = logp.exp_()
                probs[torch.arange(len(t), device=t.device), t] -= 1
                if softcap:
                    probs.mul_(1 - capped * capped)
                grad[s:s + chunk] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad if want_grad else h.new_empty(0))
        ctx.hidden_dtype = hidden.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad,) = ctx.saved_tensors
        return (grad * grad_total).to(ctx.hidden_dtype), None, None, None, None


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
        selected = hidden[:, :-1][keep]
        if not self.head.weight.requires_grad and getattr(self.head, "bias", None) is None:
            return FrozenHeadCrossEntropy.apply(selected, self.head.weight, targets[keep], self.softcap, CHUNK), keep.sum()
        logits = self.head(selected)  # a trainable head (e.g. peft modules_to_save): plain autograd
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
