"""`pg`: paraphrasing with a language model, at a controllable intensity in [0, 1].

Intensity sets both the wording of the prompt (light: change a few words; medium: say it another
way; strong: rebuild the sentence) and the sampling temperature (= intensity; 0 is greedy), with
nucleus sampling (top_p). Each field in `fields` is paraphrased on its own.
"""
from __future__ import annotations

from daug.augment import register
from daug.augment._llm import LLMMethod, clean, item_seed, shot_texts
from daug.backends.base import Task

LABELS = ("原句", "改写")
LEVELS = [  # (upper bound of intensity, instruction, examples)
    (1 / 3, "把原句稍微改写一下：只换几个词，意思和语气不变。",
     (("你今天怎么这么早就来了？", "你今天怎么这么早就到了？"),
      ("我们先去城里看看吧。", "咱们先去城里瞧瞧吧。"))),
    (2 / 3, "把原句换一种说法：意思和语气不变，用词不同。",
     (("你今天怎么这么早就来了？", "今天你怎么来得这么早？"),
      ("我们先去城里看看吧。", "不如我们先到城里转一转。"))),
    (1.01, "把原句彻底改写：意思不变，但句式和用词都要换掉。",
     (("你今天怎么这么早就来了？", "天还没亮透，你就已经到了，怎么回事？"),
      ("我们先去城里看看吧。", "城里是什么情况，咱们去瞧一眼再说。"))),
]


def level(intensity: float) -> tuple[str, tuple]:
    return next((text, shots) for bound, text, shots in LEVELS if intensity < bound)


@register
class Paraphrase(LLMMethod):
    name = "pg"

    def augment(self, jobs):
        backend = self.require_backend()
        out = self.copies(jobs)
        items = self.items(jobs)
        instruction, shots = level(self.params["intensity"])
        texts = [text for _, _, text in items]
        replies = backend.complete(
            [Task(instruction, text, shots, LABELS) for text in texts],
            [item_seed(jobs[n], "pg", field) for n, field, _ in items],
            temperature=self.params["intensity"], top_p=self.params["top_p"],
            max_new_tokens=backend.reply_budget(texts))
        echoes = shot_texts(shots)
        for (n, field, text), reply in zip(items, replies):
            out[n][field] = clean(reply, text, LABELS, echoes) or text
        return out
