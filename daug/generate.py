"""Batched generation: THE text generation function of the project (augmentation and evaluation).

`generate(model, tokenizer, prompts, max_new_tokens)` returns one reply per prompt, in input order:
- prompts are sorted by token length (longest first) and generated `batch_size` at a time with left
  padding and the KV cache, so a batch wastes little compute on padding;
- decoding stops at `stop_ids` (default: `daug.chat.stop_token_ids`: EOS and the end-of-turn
  marker); the reply excludes the prompt and the stop marker;
- greedy by default. With `do_sample=True` every prompt samples from its own `torch.Generator`
  seeded by `seeds[i]` (default: a hash of the prompt text), drawing one uniform number per step
  and inverting the (temperature-scaled, top-p-truncated) CDF. A reply therefore depends only on
  its prompt and seed, not on the batch size, the batch it lands in or the order of the prompts
  (up to floating-point differences between batch shapes, which can flip a near-tie).

How the per-row sampling plugs into Hugging Face `generate`: `_RowSampler` is a logits processor
that draws each row's token itself and masks every other token, and `generate` runs in greedy mode,
which then picks exactly that token. Everything else (cache types, sliding windows, position ids
from the attention mask) stays the model's own generation code.
"""
from __future__ import annotations

from typing import Sequence

from daug import DaugError
from daug.io import stable_hash


def _row_sampler_class():
    import torch
    from transformers import LogitsProcessor

    class _RowSampler(LogitsProcessor):
        """Samples row r's next token from generators[r]; returns scores that are -inf elsewhere."""

        def __init__(self, generators: list, temperature: float, top_p: float):
            self.generators, self.temperature, self.top_p = generators, temperature, top_p

        def __call__(self, input_ids, scores):
            probs = torch.softmax(scores.float() / self.temperature, dim=-1)
            if self.top_p < 1.0:
                probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
                before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above
                probs = probs.masked_fill(before >= self.top_p, 0.0)  # the top token always stays
            cdf = torch.cumsum(probs, dim=-1)
            u = torch.stack([torch.rand((), generator=g) for g in self.generators]).unsqueeze(1)
            pick = torch.searchsorted(cdf, (u * cdf[:, -1:]).contiguous(), right=True)
            pick = pick.clamp_(max=cdf.shape[-1] - 1)
            if self.top_p < 1.0:
                pick = order.gather(1, pick)
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, pick, 0.0)

    return _RowSampler


def _check(prompts, max_new_tokens, batch_size, do_sample, temperature, top_p, seeds) -> None:
    if isinstance(prompts, str):
        raise DaugError("generate: prompts must be a list of strings, not one string")
    if max_new_tokens < 1:
        raise DaugError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise DaugError(f"generate: batch_size must be >= 1, got {batch_size}")
    if do_sample and not temperature > 0:
        raise DaugError(f"generate: temperature must be > 0 when sampling, got {temperature}")
    if do_sample and not 0 < top_p <= 1:
        raise DaugError(f"generate: top_p must be in (0, 1], got {top_p}")
    if seeds is not None and len(seeds) != len(prompts):
        raise DaugError(f"generate: {len(seeds)} seeds for {len(prompts)} prompts")


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 16,
             stop_ids: Sequence[int] | None = None, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, seeds: list[int] | None = None, progress: bool = True,
             max_prompt_tokens: int | None = None) -> list[str]:
    """One generated reply per prompt, same order as `prompts` (see the module docstring).

    Prompts are tokenised with the tokenizer's special tokens (BOS), as `daug.chat.prompt_text`
    expects. `max_prompt_tokens` keeps only the last N prompt tokens (the end holds the generation
    cue), so one 10,000-character record cannot blow up a batch.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig, LogitsProcessorList

    from daug.chat import stop_token_ids

    _check(prompts, max_new_tokens, batch_size, do_sample, temperature, top_p, seeds)
    if not prompts:
        return []
    stop = sorted(set(stop_token_ids(tokenizer) if stop_ids is None else stop_ids))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    if do_sample and seeds is None:
        seeds = [stable_hash("generate", p) for p in prompts]
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    if max_prompt_tokens:
        encoded = [ids[-max_prompt_tokens:] for ids in encoded]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # stable: ties keep input order
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=stop, pad_token_id=pad_id, use_cache=True)
    sampler = _row_sampler_class() if do_sample else None
    device = next(model.parameters()).device
    replies: list[str | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):  # left padding: every prompt ends where generation starts
                ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]):] = 1
            processors = LogitsProcessorList()
            if sampler:
                gens = [torch.Generator().manual_seed(seeds[i] % 2**64) for i in rows]
                processors.append(sampler(gens, temperature, top_p))
            with torch.inference_mode():
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     generation_config=config, logits_processor=processors)
            for r, i in enumerate(rows):
                new = out[r, width:].tolist()
                cut = next((k for k, t in enumerate(new) if t in stop), len(new))
                replies[i] = tokenizer.decode(new[:cut], skip_special_tokens=True)
            bar.update(len(rows))
    finally:
        bar.close()
        model.train(was_training)
    return replies  # type: ignore[return-value]
