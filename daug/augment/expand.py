"""`expand`: prompt expansion (seed 001). For each record, the model writes a NEW instruction of the
same kind with different content, then answers it in the character's voice: the dataset's system
prompt sets the role and the source dialogue turn is the demonstration of the voice.

Sampling (`temperature`, `top_p`) gives variety; each stage is seeded per job. If either stage
comes back empty, as a copy or degenerate, the record is kept unchanged (flagged by daug.augment.apply).
"""
from __future__ import annotations

from daug.augment import register
from daug.augment._llm import LLMMethod, clean, item_seed, shot_texts
from daug.backends.base import Task

NEW_LABELS = ("例句", "同类新句")
NEW_INSTRUCTION = "仿照例句，写一句同一类型、同样语气，但内容不同的新句子。"
NEW_EXAMPLES = (
    ("你今天怎么这么早就来了？", "你昨晚为什么那么晚才回来？"),
    ("我们先去城里看看吧。", "咱们还是先去河边找找吧。"),
)
ASKER = "对方"


@register
class Expand(LLMMethod):
    name = "expand"

    def augment(self, jobs):
        backend = self.require_backend()
        out = self.copies(jobs)
        items = self.items(jobs, fields=("instruction",))
        p = self.params
        sources = [text for _, _, text in items]
        new = backend.complete([Task(NEW_INSTRUCTION, t, NEW_EXAMPLES, NEW_LABELS) for t in sources],
                               [item_seed(jobs[n], "expand", 1) for n, _, _ in items],
                               temperature=p["temperature"], top_p=p["top_p"],
                               max_new_tokens=backend.reply_budget(sources))
        echoes = shot_texts(NEW_EXAMPLES)
        asked = [(n, q) for (n, _, text), reply in zip(items, new) if (q := clean(reply, text, NEW_LABELS, echoes))]
        ds = self.dataset or {}
        voice = (ASKER, ds.get("character") or "回答")
        system = ds.get("system_prompt") or ""
        tasks = [Task(system, q, self.demo(jobs[n].record), voice) for n, q in asked]
        answers = backend.complete(tasks, [item_seed(jobs[n], "expand", 2) for n, _ in asked],
                                   temperature=p["temperature"], top_p=p["top_p"],
                                   max_new_tokens=backend.reply_budget([jobs[n].record.get("output") or q
                                                                        for n, q in asked]))
        for (n, question), reply in zip(asked, answers):
            demo = jobs[n].record.get("output") or ""
            answer = clean(reply, "", voice, {question, demo}, like=demo + question)  # not a copied demo
            if answer:
                out[n] = {"instruction": question, "input": "", "output": answer}
        return out

    @staticmethod
    def demo(record: dict) -> tuple:
        """The source turn, shown as an example of the character's voice (when it has a reply)."""
        if (record.get("output") or "").strip():
            return ((record["instruction"], record["output"]),)
        return ()
