"""`marian`: MarianMT translation models (Helsinki-NLP/opus-mt-*), a translation-only backend for
`bt`. `zh_en` and `en_zh` name the two models (hub ids or local paths; the hub needs network).
Only safetensors weights are loaded and remote code is never run. Greedy by default; with a
temperature each text samples from its own seeded generator (as in `daug.generate`), so results
do not depend on the batch.
"""
from __future__ import annotations

from daug import DaugError
from daug.backends import register
from daug.backends.base import Backend, one_line, positive


@register
class MarianBackend(Backend):
    name = "marian"
    can_chat = False

    def __init__(self, params: dict | None = None):
        super().__init__(params)
        self._loaded: dict[str, tuple] = {}

    def check(self, params):
        positive(self.name, params, "batch_size", "max_new_tokens")

    def describe(self) -> dict:
        return {"name": self.name, "model": f"{self.params['zh_en']} + {self.params['en_zh']}"}

    def supports(self, src: str, tgt: str) -> bool:
        return f"{src}_{tgt}" in ("zh_en", "en_zh")

    def complete(self, tasks, seeds, temperature=0.0, top_p=1.0, max_new_tokens=None):
        raise DaugError("backend 'marian' only translates; methods pg, refine and expand need local or openai")

    def load(self, pair: str):
        if pair not in self._loaded:
            from transformers import AutoTokenizer, MarianMTModel

            name = self.params[pair]
            try:
                tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
                model = MarianMTModel.from_pretrained(name, use_safetensors=True, trust_remote_code=False)
            except (OSError, ValueError) as e:
                raise DaugError(f"backend 'marian': cannot load {name!r}: {str(e).splitlines()[0]} (hub models "
                                "need network access; only safetensors weights are accepted)") from None
            self._loaded[pair] = (model.eval(), tok)
        return self._loaded[pair]

    def translate(self, texts, src, tgt, seeds=None, temperature=0.0):
        import torch
        from tqdm import tqdm  # text on stderr: a widget would stay at "0%" in the executed notebook
        from transformers import GenerationConfig, LogitsProcessorList

        from daug.generate import row_sampler_class

        if not self.supports(src, tgt):
            raise DaugError(f"backend 'marian' translates zh->en and en->zh only, not {src}->{tgt}")
        if not texts:
            return []
        model, tok = self.load(f"{src}_{tgt}")
        seeds = list(seeds) if seeds is not None else [0] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        config = GenerationConfig(max_new_tokens=self.params["max_new_tokens"], do_sample=False, num_beams=1,
                                  decoder_start_token_id=model.config.decoder_start_token_id,
                                  eos_token_id=model.config.eos_token_id, pad_token_id=model.config.pad_token_id)
        out: list[str] = [""] * len(texts)
        size = self.params["batch_size"]
        for start in tqdm(range(0, len(order), size), desc=f"marian {src}->{tgt}", unit="batch"):
            rows = order[start:start + size]
            enc = tok([texts[i] for i in rows], return_tensors="pt", padding=True, truncation=True)
            processors = LogitsProcessorList()
            if temperature > 0:
                processors.append(row_sampler_class()([seeds[i] for i in rows], temperature, 1.0))
            with torch.inference_mode():
                ids = model.generate(**enc, generation_config=config, logits_processor=processors)
            for r, i in enumerate(rows):
                out[i] = one_line(tok.decode(ids[r], skip_special_tokens=True))
        return out
