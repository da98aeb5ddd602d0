"""`bt`: back translation, Chinese -> pivot language -> Chinese, through a translation backend
(`marian` natively; `local` and `openai` through a few-shot translation prompt).

Greedy by default; `temperature` > 0 samples both legs (Edunov et al. 2018's noisy back
translation), seeded per job and field. A leg that comes back empty, or a round trip that returns
the source, leaves the field unchanged.
"""
from __future__ import annotations

from daug import DaugError
from daug.augment import register
from daug.augment._llm import LLMMethod, clean, item_seed, shot_texts
from daug.backends.base import LANGUAGES, TRANSLATION_EXAMPLES


@register
class BackTranslation(LLMMethod):
    name = "bt"
    needs_chat = False

    def __init__(self, params=None, backend=None, dataset=None):
        super().__init__(params, backend, dataset)
        supports = getattr(backend, "supports", None)
        if supports and not (supports("zh", self.params["pivot"]) and supports(self.params["pivot"], "zh")):
            raise DaugError(f"method 'bt': backend {backend.name!r} cannot translate zh <-> {self.params['pivot']}")

    @classmethod
    def check(cls, params):
        super().check(params)
        pivots = [lang for lang in LANGUAGES if lang != "zh"]
        if params["pivot"] not in pivots:
            raise DaugError(f"method 'bt': unknown pivot {params['pivot']!r}; choose one of: {', '.join(pivots)}")

    def augment(self, jobs):
        backend = self.require_backend()
        out = self.copies(jobs)
        items = self.items(jobs)
        pivot, temperature = self.params["pivot"], self.params["temperature"]
        there = backend.translate([text for _, _, text in items], "zh", pivot,
                                  seeds=[item_seed(jobs[n], "bt", f, 1) for n, f, _ in items], temperature=temperature)
        echoes = shot_texts([tuple(e.values()) for e in TRANSLATION_EXAMPLES])
        pivots = [clean(p, "", (LANGUAGES[pivot],), echoes, same_scripts=False) for p in there]
        ok = [(item, p) for item, p in zip(items, pivots) if p]
        back = backend.translate([p for _, p in ok], pivot, "zh",
                                 seeds=[item_seed(jobs[n], "bt", f, 2) for (n, f, _), _ in ok], temperature=temperature)
        for ((n, field, text), _), reply in zip(ok, back):
            out[n][field] = clean(reply, text, (LANGUAGES["zh"],), echoes) or text
        return out
