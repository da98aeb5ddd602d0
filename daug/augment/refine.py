"""`refine`: prompt refinement (seed 001). The instruction is rewritten so it asks more explicitly
and specifically, keeping its meaning; input and output are kept as they are."""
from __future__ import annotations

from daug.augment import register
from daug.augment._llm import LLMMethod, clean, item_seed, shot_texts
from daug.backends.base import Task

LABELS = ("原话", "更明确的说法")
INSTRUCTION = "把原话改写得更明确、更具体，让听的人清楚知道要回答什么；意思不变。"
EXAMPLES = (
    ("可是想通了吗？", "你是不是已经把这件事想明白了？"),
    ("为什么？", "你为什么要这样做，原因是什么？"),
)


@register
class Refine(LLMMethod):
    name = "refine"

    def augment(self, jobs):
        backend = self.require_backend()
        out = self.copies(jobs)
        items = self.items(jobs, fields=("instruction",))
        texts = [text for _, _, text in items]
        # a refined question is longer than the original: budget as for a restatement plus slack
        replies = backend.complete([Task(INSTRUCTION, t, EXAMPLES, LABELS) for t in texts],
                                   [item_seed(jobs[n], "refine") for n, _, _ in items],
                                   temperature=self.params["temperature"],
                                   max_new_tokens=[min(backend.max_new_tokens, b + 16)
                                                   for b in backend.reply_budget(texts)])
        echoes = shot_texts(EXAMPLES)
        for (n, field, text), reply in zip(items, replies):
            out[n][field] = clean(reply, text, LABELS, echoes) or text
        return out
