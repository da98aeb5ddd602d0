"""Training examples: chat formatting, reply-only labels, truncation, and the batch schedule.

An example is the prompt (system prompt + user turn, in the model's chat format, as at inference)
followed by the reply and its end-of-turn suffix. Prompt and reply are tokenized separately,
exactly as generation sees them. Labels are -100 on prompt and padding tokens, so the loss covers
reply tokens only. Too long: the reply's tail is cut (counted as truncated); a prompt that leaves
no room for a single reply token drops the example (counted as dropped). Nothing is silent.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from daug import DaugError
from daug.chat import messages, prompt_text, reply_suffix
from daug.records import check_records

IGNORE = -100  # label of tokens the loss skips (torch cross_entropy's ignore_index)


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def reply_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


@dataclass
class Encoded:
    examples: list[Example]
    truncated: int = 0  # replies cut at max_length
    dropped: list[str] = field(default_factory=list)  # ids whose prompt alone fills max_length
    records: list[int] = field(default_factory=list)  # each example's index in the encoded records
    sources: list[str] = field(default_factory=list)  # each example's source dialogue (`source_id`, else its id)

    def stats(self) -> dict:
        return {"examples": len(self.examples), "truncated": self.truncated, "dropped": len(self.dropped),
                "reply_tokens": sum(e.reply_tokens for e in self.examples),
                "tokens": sum(len(e.input_ids) for e in self.examples)}


def encode_example(tokenizer, record: dict, system_prompt: str | None, max_length: int) -> Example | None:
    """One record as a training example, or None when its prompt alone leaves no room for a reply."""
    examples = encode_records(tokenizer, [record], system_prompt, max_length).examples
    return examples[0] if examples else None


def encode_records(tokenizer, records: list[dict], system_prompt: str | None, max_length: int,
                   source: str = "records") -> Encoded:
    """Encode every record; DaugError names `source` and the record for malformed input."""
    check_records(records, source)
    suffix = reply_suffix(tokenizer)
    prompts = tokenizer([prompt_text(tokenizer, messages(r, system_prompt)) for r in records]).input_ids
    replies = tokenizer([r["output"] + suffix for r in records], add_special_tokens=False).input_ids
    out = Encoded([])
    for i, (record, prompt, reply) in enumerate(zip(records, prompts, replies)):
        rid = str(record.get("id", f"{source}:{i + 1}"))
        room = max_length - len(prompt)
        if room < 1:
            out.dropped.append(rid)
            continue
        truncated = len(reply) > room
        reply = reply[:room]
        out.truncated += truncated
        out.examples.append(Example(rid, prompt + reply, [IGNORE] * len(prompt) + reply, truncated))
        out.records.append(i)
        out.sources.append(str(record.get("source_id") or rid))
    return out


def collate(examples: list[Example], pad_id: int):
    """Right-padded tensors (input_ids, attention_mask, labels): positions stay 0..n-1 per row."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return ids, mask, labels


def batch_schedule(lengths: list[int], batch_size: int, steps: int, seed: int, group: int = 32,
                   sources: list[str] | None = None) -> list[list[int]]:
    """Example indices for each optimizer step, fixed by the seed (a resumed run replays it exactly).

    The steps run in passes. Without `sources` a pass is an epoch: every example once. With
    `sources` (each example's source dialogue: an original and its augmentations share one) a pass
    holds one example of every source, each source cycling through its examples in an order drawn
    once per seed; so after k passes every source dialogue has been seen exactly k times, whichever
    method made the data. Each pass shuffles its examples, then sorts windows of `group` batches by
    length so a batch holds examples of similar length (little padding), and shuffles the batches'
    order again. Passes continue until `steps` batches exist; a batch never mixes two passes, and
    each pass leaves out its (shuffled, so each time different) remainder of fewer than batch_size.
    With every source its own (no augmentation) the two are the same schedule.
    """
    if not lengths:
        raise DaugError("no training examples (every record was dropped or the file is empty)")
    if sources is not None and len(sources) != len(lengths):
        raise ValueError(f"sources: {len(sources)} for {len(lengths)} examples")
    cycles: dict[str, list[int]] = {}
    for i, source in enumerate(sources if sources is not None else range(len(lengths))):
        cycles.setdefault(source, []).append(i)
    cycle_rng = random.Random(f"cycles:{seed}")  # a stream apart from the passes': singletons draw nothing
    for members in cycles.values():
        if len(members) > 1:
            cycle_rng.shuffle(members)
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < steps:
        rng = random.Random(seed * 1_000_003 + epoch)
        order = [members[epoch % len(members)] for members in cycles.values()]
        rng.shuffle(order)
        if len(order) >= batch_size:  # full batches only: every step sees batch_size examples
            order = order[:len(order) // batch_size * batch_size]
        window = batch_size * group
        epoch_batches = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start:start + window], key=lambda i: -lengths[i])
            epoch_batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
        rng.shuffle(epoch_batches)
        batches += epoch_batches
        epoch += 1
    return batches[:steps]


def micro_batches(batch: list[int], size: int) -> list[list[int]]:
    return [batch[i:i + size] for i in range(0, len(batch), size)]
