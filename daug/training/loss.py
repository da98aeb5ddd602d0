"""Reply-only language-model loss, computed the fast way.

Gemma 3's 262k-token vocabulary makes the LM head bigger than the transformer body, and most
positions of a chat example are prompt or padding, whose logits the loss ignores. So we run the
body for hidden states and apply the head only at positions that predict a reply token. The head is
frozen under LoRA, so its cross-entropy and the gradient for the hidden states are computed
together, chunk by chunk: the (tokens x 262k) logits never exist whole, and no softmax backward
runs. The result equals the usual causal-LM loss with -100 labels (tests check value and gradient).

A few token rows may train (peft TrainableTokens, `lora.trainable_tokens`: the end-of-turn marker a
pretrained model never learned). On a tied embedding they are rows of the head too: their logits
come from the trained rows (one tokens x k matmul) and their gradient is returned with the hidden
states'; in the input embeddings they are swapped in at their tokens. The big matrix stays frozen.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from daug import DaugError
from daug.training.data import IGNORE, Example, collate, encode_records
from daug.vocabulary import of_model

CHUNK = 256  # reply tokens per head chunk: 256 x 262k fp32 logits = 268 MB
# Where daug's own trained rows (daug/approaches/token_rows.py) sit on the embedding and head they
# act on: a plain attribute, not a submodule, so the layer's state dict does not hold them twice.
OWN_ROWS = "daug_token_rows"


def unwrap(model):
    """The transformers model inside peft/DDP wrappers."""
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass(frozen=True)
class TrainedRows:
    """peft TrainableTokens on a layer: the frozen `weight`, the token ids `index` whose rows train,
    and those rows (k x d). The layer's effective weight is `weight` with rows `index` replaced."""
    weight: torch.Tensor
    index: torch.Tensor
    rows: torch.Tensor


def trained_rows(layer) -> TrainedRows | None:
    """The trained rows acting on an embedding or head layer: peft's active TrainableTokens, or
    daug's (daug/approaches/token_rows.py: approaches without peft's), else None."""
    adapter = getattr(layer, "token_adapter", None)
    if adapter is None:
        own = layer.__dict__.get(OWN_ROWS)
        return TrainedRows(layer.weight, own.index, own.rows) if own is not None else None
    if adapter.disable_adapters or not adapter.active_adapters:
        return None
    name = adapter.active_adapters[0]
    rows = adapter.trainable_tokens_delta[name]
    index = torch.tensor(adapter.token_indices[name], device=rows.device)
    return TrainedRows(adapter.get_base_layer().weight, index, rows)


def swap_rows(x, input_ids, index, rows, scale=None):
    """Embeddings `x` of `input_ids` with row `rows[j]` (times the embedding's `scale`, Gemma's
    sqrt(hidden size), if any) at the positions of token `index[j]`: what a trained row puts in."""
    for j in range(len(index)):
        row = rows[j] * scale.to(rows.dtype) if scale is not None else rows[j]
        x = torch.where((input_ids == index[j])[..., None], row.to(x.dtype), x)
    return x


def head_log_probs(hidden, weight, softcap, rows=None, index=None, extra=None, outside=None):
    """(log-softmax of the capped logits hidden @ W.T in float32, tanh of the cap or None), where W
    is `weight` with its rows `index` replaced by `rows` (when given). With `extra` (n x d: each
    position's target row) one more column holds each position's own target logit where `outside`
    (its target is not a row of `weight`: the study vocabulary, daug/vocabulary.py) and -inf elsewhere."""
    logits = (hidden @ weight.T).float()
    if rows is not None:
        logits[:, index] = (hidden @ rows.to(weight.dtype).T).float()
    if extra is not None:
        own = torch.einsum("nd,nd->n", hidden.float(), extra.float())
        logits = torch.cat([logits, own[:, None]], dim=1)
    capped = None
    if softcap:
        capped = torch.tanh(logits / softcap)
        logits = capped * softcap
    if extra is not None:
        logits[:, -1] = logits[:, -1].masked_fill(~outside, float("-inf"))
    return torch.log_softmax(logits, dim=-1), capped


@dataclass(frozen=True)
class Restricted:
    """A frozen head restricted to a study vocabulary: its rows `weight` (K x d), the targets as
    columns (`targets`; K = the extra column of a target outside the vocabulary, `outside`), and the
    trained rows' columns (`index`)."""
    weight: torch.Tensor
    targets: torch.Tensor
    outside: torch.Tensor
    index: torch.Tensor | None


def restrict(weight, targets, index, vocab) -> Restricted:
    """`weight` (the full frozen head), reply `targets` and trained-row ids `index` over `vocab`."""
    vocab = vocab.to(targets.device)
    cols = vocab.pos[targets]
    outside = cols < 0
    cols = torch.where(outside, torch.full_like(cols, len(vocab)), cols)
    index_cols = None
    if index is not None:
        index_cols = vocab.pos[index.to(targets.device)]
        if (index_cols < 0).any():
            raise DaugError("study vocabulary: a trained token row is not in it (daug/vocabulary.py adds them)")
    return Restricted(weight[vocab.keep.to(weight.device)], cols, outside, index_cols)


def restrict_logits(logits, targets, vocab):
    """Full-vocabulary `logits` (n x V, capped) and `targets` -> the study vocabulary's logits with the
    extra own-target column, and the targets as columns (the definition of daug/vocabulary.py)."""
    if vocab is None:
        return logits, targets
    vocab = vocab.to(targets.device)
    cols = vocab.pos[targets]
    outside = cols < 0
    own = logits.gather(1, targets[:, None])[:, 0].masked_fill(~outside, float("-inf"))
    cols = torch.where(outside, torch.full_like(cols, len(vocab)), cols)
    return torch.cat([logits[:, vocab.keep], own[:, None]], dim=1), cols


class FrozenHeadCrossEntropy(torch.autograd.Function):
    """sum(cross_entropy(hidden @ W.T, targets)) for a frozen `weight`; backward to hidden only.

    With `rows` (k x d, trainable) and `index` (k token ids), W is `weight` with those rows replaced:
    the rows' gradient is returned too (d loss / d row_j = sum over positions of
    (softmax - one_hot)[:, index_j] * hidden), so a few trained rows need no trainable head.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap, chunk, rows=None, index=None, vocab=None):
        h = hidden.to(weight.dtype)
        want_grad = ctx.needs_input_grad[0]
        want_rows = rows is not None and ctx.needs_input_grad[5]
        full, full_targets = weight, targets
        if vocab is not None:  # the study vocabulary: its rows, and each target as a column of them
            r = restrict(weight, targets, index, vocab)
            weight, targets, outside, index = r.weight, r.targets, r.outside, r.index
        grad = torch.empty_like(h) if want_grad else None
        grad_rows = torch.zeros(rows.shape, dtype=torch.float32, device=h.device) if want_rows else None
        shift = rows.to(weight.dtype) - weight[index] if rows is not None else None  # W = weight + onehot.T @ shift
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, h.shape[0], chunk):
            t, hs = targets[s:s + chunk], h[s:s + chunk]
            extra = own = None
            if vocab is not None:  # each position's own target row, for a target outside the vocabulary
                own, extra = outside[s:s + chunk], full[full_targets[s:s + chunk]]
            logp, capped = head_log_probs(hs, weight, softcap, rows, index, extra, own)
            total -= logp.gather(1, t[:, None]).sum()
            if want_grad or want_rows:  # d loss / d logits = softmax - one_hot; then through the cap and the head
                probs = logp.exp_()
                probs[torch.arange(len(t), device=t.device), t] -= 1
                if softcap:
                    probs.mul_(1 - capped * capped)
                g = probs.to(weight.dtype)
                if want_grad:
                    k = weight.shape[0]
                    grad[s:s + chunk] = g[:, :k] @ weight
                    if rows is not None:
                        grad[s:s + chunk] += g[:, index] @ shift
                    if extra is not None:
                        grad[s:s + chunk] += g[:, k:] * extra
                if want_rows:
                    grad_rows += probs[:, index].T @ hs.float()
        ctx.save_for_backward(grad if want_grad else h.new_empty(0), grad_rows if want_rows else h.new_empty(0))
        ctx.hidden_dtype = hidden.dtype
        ctx.rows_dtype = rows.dtype if want_rows else None
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad, grad_rows = ctx.saved_tensors
        g_hidden = (grad * grad_total).to(ctx.hidden_dtype) if ctx.needs_input_grad[0] else None
        g_rows = (grad_rows * grad_total).to(ctx.rows_dtype) if ctx.rows_dtype is not None else None
        return g_hidden, None, None, None, None, g_rows, None, None


class _NoHead(nn.Module):
    """An LM head that computes nothing: logits with no vocabulary columns."""

    def forward(self, hidden):
        return hidden[..., :0]


@contextlib.contextmanager
def headless(lm):
    """`lm` (a transformers causal LM) with its LM head replaced by `_NoHead` for the block: for a
    forward whose logits are not used. In bfloat16 on CPU the head at even one position copied the
    tied 262k-row weight once per row of the batch (2.7 GB for 8 rows, ~85 % of a prompt-tuning
    step; benchmarks/bench_approaches.py)."""
    head = lm.get_output_embeddings()
    lm.set_output_embeddings(_NoHead())
    try:
        yield lm
    finally:
        lm.set_output_embeddings(head)


class ReplyLoss(nn.Module):
    """forward(input_ids, attention_mask, labels) -> (summed loss over reply tokens, reply token count).

    A module (not a function) so DistributedDataParallel can wrap it: DDP syncs gradients of what
    its own forward ran, and we bypass the model's forward to skip the head on prompt positions.
    An approach that changes the forward pass (`approach.changes_forward`: prompt or prefix tuning,
    whose virtual tokens enter in the peft model's own forward) runs that forward for the hidden
    states (`_forward_hidden`); the head and the loss are the same for every approach.
    """

    def __init__(self, model, approach=None):
        super().__init__()
        self.model = model  # the trained model (peft): its parameters are the trainable ones
        self.through_forward = bool(approach is not None and approach.changes_forward)
        lm = unwrap(model)
        self.body = lm.base_model  # the decoder stack (Gemma3TextModel, LlamaModel, ...)
        self.embed = lm.get_input_embeddings()
        self.head = lm.get_output_embeddings()
        self.softcap = getattr(lm.config, "final_logit_softcapping", None)

    def _embeddings(self, input_ids, trained: TrainedRows):
        """The input embeddings with the trained rows at their tokens' positions: what peft's
        TrainableTokens layer computes, without copying the whole vocabulary matrix every step."""
        base = self.embed.token_adapter.get_base_layer()
        # the frozen rows (and, on a tied model, the head's: the same tensor), then the trained ones
        return swap_rows(base(input_ids), input_ids, trained.index, trained.rows, getattr(base, "embed_scale", None))

    def _forward_hidden(self, input_ids, attention_mask, labels):
        """(hidden states that predict a reply token, those tokens, the reply-token mask) from the
        model's own forward (virtual tokens included): the decoder's final norm output is captured
        and the head applied to the last position only (`logits_to_keep=1`), so the reply-only
        head below scores the replies, as for every other approach (the full head at every
        position made prompt and prefix tuning ~3x slower, benchmarks/bench_approaches.py); the
        model's own head does not run at all (`headless`)."""
        captured = []
        hook = self.body.norm.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with headless(unwrap(self.model)):
                self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        finally:
            hook.remove()
        hidden = captured[-1][:, -input_ids.shape[1]:]  # prompt tuning prepends its virtual positions
        targets = labels[:, 1:]
        keep = targets != IGNORE
        return hidden[:, :-1][keep], targets[keep], keep

    def _reply_positions(self, input_ids, attention_mask, labels, prefix: int = 0):
        """(hidden states that predict a reply token, those tokens, the reply-token mask).

        `prefix` > 0: the rows' first `prefix` tokens are the same prompt tokens (the chat template
        and system prompt, `shared_prefix`); the body runs them once, for one row, and every row
        continues from that key/value cache. The same function of the weights, ~20-40 % fewer body
        tokens in training and in the validation and test losses (benchmarks/bench_seed_cost.py).
        In training, LoRA's dropout then draws one mask for the prefix positions of the batch
        instead of one per row."""
        # peft's rows are swapped in here, without its copy of the whole matrix; daug's own rows by
        # their hook on the embedding (daug/approaches/token_rows.py)
        trained = trained_rows(self.embed) if hasattr(self.embed, "token_adapter") else None

        def inputs(ids):
            return {"inputs_embeds": self._embeddings(ids, trained)} if trained is not None else {"input_ids": ids}

        if getattr(self.body, "gradient_checkpointing", False) and self.body.training:
            prefix = 0  # transformers keeps no key/value cache there (QLoRA's training): every row runs whole
        if prefix:
            cache = self.body(**inputs(input_ids[:1, :prefix]), attention_mask=attention_mask[:1, :prefix],
                              use_cache=True).past_key_values
            cache.batch_repeat_interleave(input_ids.shape[0])
            positions = torch.arange(prefix, input_ids.shape[1], device=input_ids.device)
            hidden = self.body(**inputs(input_ids[:, prefix:]), attention_mask=attention_mask, past_key_values=cache,
                               use_cache=True, cache_position=positions,
                               position_ids=positions[None].expand(input_ids.shape[0], -1)).last_hidden_state
        else:
            hidden = self.body(**inputs(input_ids), attention_mask=attention_mask, use_cache=False).last_hidden_state
        targets = labels[:, prefix + 1:]  # the prefix's own targets are prompt tokens (shared_prefix)
        keep = targets != IGNORE
        return hidden[:, :-1][keep], targets[keep], keep

    def _frozen_head(self) -> tuple | None:
        """(frozen head weight, trained rows, their ids) for the fused loss, or None (trainable head)."""
        trained = trained_rows(self.head)
        adapter = getattr(self.head, "token_adapter", None)
        layer = adapter.get_base_layer() if adapter is not None else self.head
        if layer.weight.requires_grad or getattr(layer, "bias", None) is not None:
            return None
        return (trained.weight, trained.rows, trained.index) if trained is not None else (layer.weight, None, None)

    def _trainable_head_logits(self, selected):
        logits = self.head(selected)  # a trainable head (e.g. peft modules_to_save): plain autograd
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.float()

    def _positions(self, input_ids, attention_mask, labels, prefix: int):
        """`_reply_positions`, or `_forward_hidden` for an approach whose virtual tokens enter the
        model's own forward (it runs every row whole: `prefix` does not apply)."""
        if self.through_forward:
            return self._forward_hidden(input_ids, attention_mask, labels)
        return self._reply_positions(input_ids, attention_mask, labels, prefix)

    def forward(self, input_ids, attention_mask, labels, prefix: int = 0):
        """`prefix`: the rows' shared prompt tokens, run once for the batch (`_reply_positions`;
        gradients from every row flow into that one computation)."""
        vocab = of_model(self.model)
        selected, targets, keep = self._positions(input_ids, attention_mask, labels, prefix)
        frozen = self._frozen_head()
        if frozen is not None:
            weight, rows, index = frozen
            return (FrozenHeadCrossEntropy.apply(selected, weight, targets, self.softcap, CHUNK, rows, index, vocab),
                    keep.sum())
        logits, targets = restrict_logits(self._trainable_head_logits(selected), targets, vocab)
        return F.cross_entropy(logits, targets, reduction="sum"), keep.sum()

    @torch.no_grad()
    def per_example(self, input_ids, attention_mask, labels, prefix: int = 0):
        """(summed reply-token loss per row as float64, reply tokens per row): no gradient.

        Token losses are float32 as in `forward`; each row sums its own in float64, so a row's
        value does not depend on which rows share its batch (up to the forward pass's rounding).
        `prefix`: the rows' shared prompt tokens, run once (`_reply_positions`); ignored by an
        approach whose virtual tokens enter the model's own forward.
        """
        vocab = of_model(self.model)
        selected, targets, keep = self._positions(input_ids, attention_mask, labels, prefix)
        rows = keep.nonzero()[:, 0]  # the row of each selected position, in `selected`'s order
        sums = torch.zeros(keep.shape[0], dtype=torch.float64, device=selected.device)
        frozen = self._frozen_head()
        full_targets = targets
        if frozen is not None:
            weight, trained, index = frozen
            full = weight
            if vocab is not None:
                r = restrict(weight, targets, index, vocab)
                weight, targets, outside, index = r.weight, r.targets, r.outside, r.index
        for s in range(0, selected.shape[0], CHUNK):
            hidden, t = selected[s:s + CHUNK], targets[s:s + CHUNK]
            if frozen is not None:
                extra = own = None
                if vocab is not None:  # each position's own target row, for a target outside the vocabulary
                    own, extra = outside[s:s + CHUNK], full[full_targets[s:s + CHUNK]]
                logp = head_log_probs(hidden.to(weight.dtype), weight, self.softcap, trained, index, extra, own)[0]
                nll = -logp.gather(1, t[:, None])[:, 0]
            else:
                logits, cols = restrict_logits(self._trainable_head_logits(hidden), full_targets[s:s + CHUNK], vocab)
                nll = F.cross_entropy(logits, cols, reduction="none")
            sums.index_add_(0, rows[s:s + CHUNK], nll.double())
        return sums, keep.sum(dim=1)


PRECISIONS = ("float32", "bfloat16")  # train.precision: the dtype vocabulary of model.dtype & co.


def autocast(precision: str):
    """bfloat16 autocast on CPU (or CUDA) when asked; float32 otherwise."""
    if precision not in PRECISIONS:  # e.g. the old "bf16", which would silently run in float32
        raise DaugError(f"precision {precision!r}: expected one of: {', '.join(PRECISIONS)}")
    if precision == "bfloat16":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class ExampleLoss:
    id: str
    loss: float   # the loss summed over the example's reply tokens
    tokens: int   # its reply tokens (those kept after truncation)


def shared_prefix(examples: list[Example]) -> int:
    """How many leading tokens every example shares and predicts no reply token from: the chat
    template and system prompt, which `example_losses` runs once per batch instead of once per row.
    Taken over all the examples, not per batch, so a row's positions never depend on its batch."""
    if len(examples) < 2:
        return 0
    first = examples[0].input_ids
    n = min(min(len(e.input_ids) for e in examples) - 1,  # at least one position after the prefix
            *(next((j for j, t in enumerate(e.labels) if t != IGNORE), len(e.labels)) - 1 for e in examples))
    for k in range(max(n, 0)):
        if any(e.input_ids[k] != first[k] for e in examples):
            return k
    return max(n, 0)


def example_losses(model, examples: list[Example], pad_id: int, batch_size: int, *, precision: str = "float32",
                   loss_fn: ReplyLoss | None = None, approach=None) -> list[ExampleLoss]:
    """THE validation loss: each example's summed reply-token loss and reply-token count, in input order.

    Examples run in batches of similar length (stable sort by token count: little padding); the
    model is in eval mode meanwhile. `loss_fn` reuses a ReplyLoss already built over `model`;
    `approach`: the one that made `model` (None: a plain or merged model).
    """
    loss_fn = loss_fn or ReplyLoss(model, approach)
    device = next(model.parameters()).device
    prefix = shared_prefix(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    out: list[ExampleLoss | None] = [None] * len(examples)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            ids, mask, labels = (t.to(device) for t in collate([examples[i] for i in rows], pad_id))
            with autocast(precision):
                sums, counts = loss_fn.per_example(ids, mask, labels, prefix)
            for i, total, n in zip(rows, sums.tolist(), counts.tolist()):
                out[i] = ExampleLoss(examples[i].id, total, int(n))
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def loss_sums(losses: list[ExampleLoss]) -> tuple[float, int]:
    """(total loss, total reply tokens): an exact sum, so independent of the examples' order."""
    return math.fsum(e.loss for e in losses), sum(e.tokens for e in losses)


def mean_loss(total: float, tokens: float) -> float:
    """Loss per reply token; NaN when no reply token remains."""
    return total / tokens if tokens else float("nan")


def validation_loss(model, tokenizer, records: list[dict], system_prompt: str | None, max_length: int,
                    batch_size: int, *, precision: str = "float32", approach=None) -> float:
    """Mean loss per reply token over `records`, with the training stage's formatting and masking.

    Examples are encoded exactly as for training (truncated replies count their kept tokens; an
    example whose prompt fills max_length is skipped) and scored by `example_losses`; the result
    does not depend on batch_size beyond float rounding. NaN when no reply token remains.
    """
    encoded = encode_records(tokenizer, records, system_prompt, max_length, source="validation records")
    losses = example_losses(model, encoded.examples, tokenizer.pad_token_id, batch_size, precision=precision,
                            approach=approach)
    return mean_loss(*loss_sums(losses))
