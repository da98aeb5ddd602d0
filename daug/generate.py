"""Batched generation: THE text generation function of the project (augmentation and evaluation).

`generate(model, tokenizer, prompts, max_new_tokens)` returns one reply per prompt, in input order:
- prompts are tokenised (with BOS), sorted by length (longest first) and decoded up to
  `batch_size` rows at a time with left padding and a KV cache;
- continuous batching: a row leaves the batch as soon as it stops (a stop token or its own token
  limit) and, once a quarter of the batch is free, waiting prompts are prefilled and join it. A
  batch therefore never runs at the pace of its longest reply, which with short one-line replies
  (most stop after a few tokens, a few loop to their limit) is where naive batching loses;
- the prompts' common beginning (a task's few-shot header) is prefilled once per batch and shared
  by its rows, instead of once per row;
- decoding stops at `stop_ids` (default: `daug.chat.stop_token_ids`: EOS and the end-of-turn
  marker); the reply excludes the prompt and the stop token;
- `repetition_penalty` p > 1 (an evaluation choice, the same for every method): before each token
  is picked, the logits of tokens the row's REPLY already holds are divided by p where positive and
  multiplied by p where negative (the CTRL / Hugging Face rule, but prompt tokens are not counted:
  a character's reply may reuse the prompt's words freely);
- greedy by default. With `do_sample=True` every prompt samples from its own random stream seeded
  by `seeds[i]` (default: a hash of the prompt text), by an exponential race over the
  temperature-scaled, top-p-truncated distribution (see `sample_rows`). A reply therefore depends
  only on its prompt and seed, not on the batch size, the batch it lands in or the order of the
  prompts (up to floating-point differences between batch shapes, which can flip a near-exact tie).

Row positions come from each row's own token count (as Hugging Face `generate` derives them from
the attention mask), so padding never shifts a prompt.
"""
from __future__ import annotations

from typing import Sequence

from daug import DaugError
from daug.io import stable_hash


def _nucleus(probs, top_p: float):
    """probs with everything outside each row's top-p nucleus set to 0.

    A peaked distribution's nucleus lies in its top 256 tokens: one cheap top-k. Otherwise (a flat
    distribution) the nucleus is {p >= t} for the largest t whose mass reaches top_p, found by
    bisection; a full sort of 262k probabilities per step would cost more than the forward pass.
    """
    import torch

    k = min(probs.shape[-1], 256)
    vals, idx = torch.topk(probs, k, dim=-1)  # sorted, largest first
    if bool((vals.sum(-1) >= top_p).all()):
        keep = (torch.cumsum(vals, dim=-1) - vals) < top_p  # the mass ranked above stays under top_p
        return torch.zeros_like(probs).scatter_(1, idx, vals * keep)
    lo, hi = torch.zeros_like(vals[:, :1]), vals[:, :1].clone()  # mass(p >= lo) >= top_p always
    for _ in range(24):  # t to 2^-24 of the top probability
        mid = (lo + hi) / 2
        ok = (probs * (probs >= mid)).sum(-1, keepdim=True) >= top_p
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return probs * (probs >= lo)


def sample_rows(logits, rngs: list, temperature: float, top_p: float):
    """One token per row, row r drawn with rngs[r] (a numpy Generator): an exponential race,
    argmax(p_i / E_i) with E_i ~ Exp(1), is a sample of p. A tiny change of p (another batch
    shape) moves the argmax only when two ratios are within that change of each other."""
    import numpy as np
    import torch

    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        probs = _nucleus(probs, top_p)
    race = np.stack([rng.standard_exponential(probs.shape[-1], dtype=np.float32) for rng in rngs])
    return torch.argmax(probs / torch.from_numpy(race).to(probs.device), dim=-1)


def row_rng(seed: int):
    import numpy as np

    return np.random.default_rng(seed % 2**64)


def row_sampler_class():
    """`sample_rows` as a Hugging Face logits processor (for `model.generate`, e.g. MarianMT):
    returns -inf everywhere but at the drawn token, so greedy decoding picks exactly that token."""
    import torch
    from transformers import LogitsProcessor

    class _RowSampler(LogitsProcessor):
        def __init__(self, seeds: list[int], temperature: float, top_p: float):
            self.rngs, self.temperature, self.top_p = [row_rng(s) for s in seeds], temperature, top_p

        def __call__(self, input_ids, scores):
            pick = sample_rows(scores, self.rngs, self.temperature, self.top_p).unsqueeze(1)
            return torch.full_like(scores, float("-inf")).scatter_(1, pick, 0.0)

    return _RowSampler


def penalize_repeats(logits, replies: list[list[int]], penalty: float):
    """`logits` (rows x vocab) with each row's already generated tokens penalised (see the module
    docstring); unchanged when penalty is 1."""
    import torch

    if penalty == 1.0 or not any(replies):
        return logits
    logits = logits.clone()
    for row, reply in enumerate(replies):
        if reply:
            idx = torch.tensor(sorted(set(reply)), device=logits.device)
            seen = logits[row, idx]
            logits[row, idx] = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def newline_token_ids(tokenizer) -> list[int]:
    """Tokens that are nothing but line breaks: pass them as extra `stop_ids` for one-line replies.
    (Tokens that mix text and a newline are not included, so cutting at a stop never drops text.)"""
    cached = getattr(tokenizer, "_daug_newline_ids", None)
    if cached is None:
        candidates = [i for t, i in tokenizer.get_vocab().items() if "\n" in t or "Ċ" in t or t == "<0x0A>"]
        cached = sorted(i for i in candidates if (s := tokenizer.decode([i])) and not s.strip() and "\n" in s)
        tokenizer._daug_newline_ids = cached
    return cached


def _check(prompts, budgets, batch_size, do_sample, temperature, top_p, seeds, repetition_penalty=1.0) -> None:
    if isinstance(prompts, str):
        raise DaugError("generate: prompts must be a list of strings, not one string")
    if len(budgets) != len(prompts):
        raise DaugError(f"generate: {len(budgets)} max_new_tokens values for {len(prompts)} prompts")
    if budgets and min(budgets) < 1:
        raise DaugError(f"generate: max_new_tokens must be >= 1, got {min(budgets)}")
    if batch_size < 1:
        raise DaugError(f"generate: batch_size must be >= 1, got {batch_size}")
    if do_sample and not temperature > 0:
        raise DaugError(f"generate: temperature must be > 0 when sampling, got {temperature}")
    if do_sample and not 0 < top_p <= 1:
        raise DaugError(f"generate: top_p must be in (0, 1], got {top_p}")
    if not repetition_penalty >= 1.0:
        raise DaugError(f"generate: repetition_penalty must be >= 1 (1 = none), got {repetition_penalty}")
    if seeds is not None and len(seeds) != len(prompts):
        raise DaugError(f"generate: {len(seeds)} seeds for {len(prompts)} prompts")


def _left_pad(x, width: int, dim: int):
    import torch.nn.functional as F

    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim) + [missing, 0]
    return F.pad(x, pad)


def _common_prefix(encoded: list[list[int]], minimum: int = 8) -> int:
    """Length of the token prefix all prompts share, leaving each at least one token; 0 if short."""
    first, n = encoded[0], min(len(e) for e in encoded) - 1
    for e in encoded[1:]:
        n = next((k for k in range(n) if e[k] != first[k]), n)
    return n if n >= minimum else 0


class _Batch:
    """The rows being decoded: their prompt numbers, replies so far, KV cache, mask and positions."""

    def __init__(self, model, encoded: list[list[int]], rows: list[int], pad_id: int, shared: int = 0):
        """Prefill `rows`. Their first `shared` tokens (a common few-shot header) are computed once
        and copied to every row; the rest is left-padded after them: [header][pads][own tokens]."""
        import torch
        from transformers import DynamicCache

        device = next(model.parameters()).device
        self.model, self.rows, self.replies = model, list(rows), [[] for _ in rows]
        self.cache = DynamicCache(config=model.config)
        n = len(rows)
        if shared:
            model(input_ids=torch.tensor([encoded[rows[0]][:shared]], device=device),
                  position_ids=torch.arange(shared, device=device)[None], past_key_values=self.cache, use_cache=True,
                  logits_to_keep=1)
            for layer in self.cache.layers:
                layer.keys = layer.keys.expand(n, -1, -1, -1).contiguous()
                layer.values = layer.values.expand(n, -1, -1, -1).contiguous()
        width = max(len(encoded[i]) for i in rows) - shared
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for r, i in enumerate(rows):  # left padding: every prompt ends where generation starts
            own = encoded[i][shared:]
            ids[r, width - len(own):] = torch.tensor(own)
            mask[r, width - len(own):] = 1
        ids, mask = ids.to(device), mask.to(device)
        self.mask = torch.cat([mask.new_ones((n, shared)), mask], dim=1)
        out = model(input_ids=ids, attention_mask=self.mask, position_ids=shared + (mask.cumsum(-1) - 1).clamp(min=0),
                    past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.pos = self.mask.sum(-1)  # the position of each row's next token
        self.logits = out.logits[:, -1, :]

    def __len__(self):
        return len(self.rows)

    def join(self, other: "_Batch") -> None:
        """Append other's rows; both caches are left-padded to one width."""
        import torch

        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, width, 2), _left_pad(theirs.keys, width, 2)])
            mine.values = torch.cat([_left_pad(mine.values, width, 2), _left_pad(theirs.values, width, 2)])
            if hasattr(mine, "cumulative_length"):  # sliding-window layers count what they have seen
                mine.cumulative_length = width
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(other.mask, width, 1)])
        self.pos = torch.cat([self.pos, other.pos])
        self.logits = torch.cat([self.logits, other.logits])
        self.rows += other.rows
        self.replies += other.replies

    def keep(self, keep: list[int], compact: bool) -> None:
        """Only rows `keep` stay; with `compact`, columns that are padding in every row go."""
        import torch

        idx = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(idx)
        self.mask, self.pos, self.logits = self.mask[idx], self.pos[idx], self.logits[idx]
        self.rows = [self.rows[r] for r in keep]
        self.replies = [self.replies[r] for r in keep]
        first = int(self.mask.any(0).int().argmax())
        if compact and first > 0:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
                if hasattr(layer, "cumulative_length"):
                    layer.cumulative_length = self.mask.shape[1] - first
            self.mask = self.mask[:, first:]

    def step(self, tokens) -> None:
        """Feed each row its next token."""
        import torch

        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        out = self.model(input_ids=tokens.view(-1, 1), attention_mask=self.mask, position_ids=self.pos.view(-1, 1),
                         past_key_values=self.cache, use_cache=True)
        self.pos = self.pos + 1
        self.logits = out.logits[:, -1, :]


def generate_through_forward(model, tokenizer, encoded: list[list[int]], budgets: list[int], stop: set[int],
                             repetition_penalty: float = 1.0, progress: bool = True, vocab=None) -> list[str]:
    """Greedy replies through the model's own forward pass, one prompt at a time and without a KV
    cache: for approaches whose virtual tokens enter in that forward (`approach.changes_forward`,
    prompt or prefix tuning), which a prefill of the plain model's cache would leave out. Every step
    scores the whole sequence again, so it costs O(length^2): a reference path, not a fast one."""
    import torch
    from tqdm import tqdm  # text on stderr: a widget would stay at "0%" in the executed notebook

    device = next(model.parameters()).device
    replies = []
    for ids, budget in tqdm(list(zip(encoded, budgets)), desc="generate", unit="prompt", disable=not progress):
        reply: list[int] = []
        while len(reply) < budget:
            seq = torch.tensor([ids + reply], device=device)
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False).logits[:, -1, :]
            seen = reply if vocab is None else vocab.pos[reply].tolist() if reply else reply
            token = int(penalize_repeats(logits.float(), [seen], repetition_penalty).argmax(dim=-1))
            token = token if vocab is None else int(vocab.keep[token])
            if token in stop:
                break
            reply.append(token)
        replies.append(tokenizer.decode(reply, skip_special_tokens=True))
    return replies


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int | list[int], batch_size: int = 16,
             stop_ids: Sequence[int] | None = None, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, seeds: list[int] | None = None, progress: bool = True,
             max_prompt_tokens: int | None = None, repetition_penalty: float = 1.0,
             approach=None) -> list[str]:
    """One generated reply per prompt, same order as `prompts` (see the module docstring).

    Prompts are tokenised with the tokenizer's special tokens (BOS), as `daug.chat.prompt_text`
    expects. `max_new_tokens` is one limit for all prompts or one per prompt (a row stops at its own
    limit). `max_prompt_tokens` keeps only the last N prompt tokens (the end holds the
    generation cue), so one 10,000-character record cannot blow up a batch. `approach`: the
    fine-tuning approach that made `model` (daug/approaches/); one that changes the forward pass
    decodes greedily through it (`generate_through_forward`).
    """
    import torch
    from tqdm import tqdm  # text on stderr: a widget would stay at "0%" in the executed notebook

    from daug.chat import stop_token_ids
    from daug.vocabulary import restricted_head

    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    _check(prompts, budgets, batch_size, do_sample, temperature, top_p, seeds, repetition_penalty)
    if not prompts:
        return []
    stop = set(stop_token_ids(tokenizer) if stop_ids is None else stop_ids)
    rngs = None
    if do_sample:
        rngs = [row_rng(s) for s in (seeds if seeds is not None else [stable_hash("generate", p) for p in prompts])]
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    if max_prompt_tokens:
        encoded = [ids[-max_prompt_tokens:] for ids in encoded]
    with restricted_head(model) as vocab:  # the study vocabulary (daug/vocabulary.py): logits over its K tokens
        if approach is not None and approach.changes_forward:
            if do_sample:
                raise DaugError(f"generate: approach {approach.name!r} changes the forward pass; only greedy "
                                "decoding runs through it")
            was_training = model.training
            model.eval()
            try:
                with torch.inference_mode():
                    return generate_through_forward(model, tokenizer, encoded, budgets, stop, repetition_penalty,
                                                    progress, vocab)
            finally:
                model.train(was_training)
        decoder = _Decoder(model, tokenizer, encoded, budgets, stop, batch_size)

        def pick(batch):
            replies = batch.replies if vocab is None else [vocab.pos[r].tolist() if r else r for r in batch.replies]
            logits = penalize_repeats(batch.logits, replies, repetition_penalty)
            if do_sample:
                columns = sample_rows(logits, [rngs[i] for i in batch.rows], temperature, top_p)
            else:
                columns = logits.argmax(dim=-1)
            return columns if vocab is None else vocab.keep[columns]

        was_training = model.training
        model.eval()
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress)
        try:
            with torch.inference_mode():
                while decoder.running():
                    decoder.admit()
                    bar.update(decoder.advance(pick(decoder.batch)))
        finally:
            bar.close()
            model.train(was_training)
        return decoder.replies  # type: ignore[return-value]


class _Decoder:
    """Continuous batching over all prompts: admit waiting rows, take each row's token, retire rows."""

    def __init__(self, model, tokenizer, encoded: list[list[int]], budgets: list[int], stop: set[int],
                 batch_size: int):
        self.model, self.tokenizer, self.encoded = model, tokenizer, encoded
        self.budgets, self.stop, self.batch_size = budgets, stop, batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Rows join a running batch only while every cache fits the model's sliding window, where
        # sliding-window layers still hold every token and can be padded and joined like full ones.
        window = getattr(getattr(model, "config", None), "sliding_window", None)
        self.joinable = not window or max(map(len, encoded)) + max(budgets) < window - 1
        self.waiting = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # pop() takes the longest
        # The prompts' common beginning (the few-shot header of a task) is prefilled once per batch,
        # not once per row; every row keeps at least one token of its own to produce its first logits.
        self.shared = _common_prefix(encoded) if self.joinable else 0
        self.replies: list[str | None] = [None] * len(encoded)
        self.batch: _Batch | None = None

    def running(self) -> bool:
        return bool(self.waiting or self.batch)

    def admit(self) -> None:
        """Prefill waiting prompts into free rows: a new batch, or (once a quarter is free) a join."""
        batch, size = self.batch, self.batch_size
        free = size - (len(batch) if batch else 0)
        if self.waiting and (batch is None or (self.joinable and free >= max(1, size // 4))):
            rows = [self.waiting.pop() for _ in range(min(free, len(self.waiting)))]
            new = _Batch(self.model, self.encoded, rows, self.pad_id, self.shared)
            if batch is None:
                self.batch = new
            else:
                batch.join(new)

    def advance(self, tokens) -> int:
        """Append each row's token; rows that stop leave (their reply decoded). Returns how many left."""
        import torch

        batch, keep = self.batch, []
        for r, (i, token) in enumerate(zip(batch.rows, tokens.tolist())):
            reply = batch.replies[r]
            if token not in self.stop:
                reply.append(token)
            if token in self.stop or len(reply) >= self.budgets[i]:
                self.replies[i] = self.tokenizer.decode(reply, skip_special_tokens=True)
            else:
                keep.append(r)
        done = len(batch) - len(keep)
        if not keep:
            self.batch = None
            return done
        if done:
            batch.keep(keep, compact=self.joinable)
            tokens = tokens[torch.tensor(keep, device=tokens.device)]
        batch.step(tokens)
        return done
