"""Does a reply sound like its character? An offline persona classifier and out-of-character checks,
computed by the report from the per-sample replies (`<run>.predictions.jsonl`), so every number
can be audited reply by reply.

Persona score. For each dataset (a character) a classifier: TF-IDF over character 1-3-grams (Chinese
has no word boundaries; speaking style lives in characters like 臣妾, 本宫, 嘛, 呢) and logistic
regression. Positives: the character's training-split replies (`output`). Negatives, named in the
report: the other datasets' training-split replies (other characters) and the untuned base model's
replies to one third of the test prompts (generic text that is nobody's character). Calibrated by
Platt scaling on data the classifier did not see: the character's validation-split replies against
the other characters' validation replies and a second third of the base replies. The persona score
of a reply is the calibrated probability that it is its character's. Validated on what it never
saw: the character's test references (real lines) against the other characters' test references,
the last third of the base replies and hand-written generic replies (params
`report.persona.generic_replies`), as AUC with a bootstrap interval.

Checks (pinned definitions, shares of a run's replies per seed):
  out_of_character  mentions a term of params `report.persona.out_of_character` (the dataset's own
                    list: its source work; `all`: being a model or an AI) that the reference lacks;
  markup            HTML/XML tags, code fences or Markdown emphasis/headings (MARKUP) where the
                    reference has none;
  duplicate         the reply is exactly (stripped) the same as another reply of the same run and
                    seed;
  distinct_1/2      distinct character 1-/2-grams over all the run's replies of the seed (daug.augment.quality).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from daug.io import stable_hash

ENDPOINT = "persona"
LABEL = "persona score (0-1)"
CHECKS = ("out_of_character", "markup", "duplicate", "distinct_1", "distinct_2")
MARKUP = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>|```|\*\*[^*\n]+\*\*|^#{1,6}\s", re.M)
BASE_PARTS = ("train", "calibrate", "validate")  # the base replies' thirds, by a seeded hash of their ids


def out_of_character(reply: str, reference: str, terms: list[str]) -> bool:
    """The reply names one of `terms` (the source work, being a model) that the reference does not."""
    return any(t and t in reply and t not in reference for t in terms)


def markup(reply: str, reference: str) -> bool:
    """Markup or code in the reply where the reference has none."""
    return bool(MARKUP.search(reply)) and not MARKUP.search(reference)


def duplicate_flags(replies: list[str]) -> list[bool]:
    """Per reply: is it exactly (stripped) the same as another reply of the list?"""
    counts = Counter(r.strip() for r in replies)
    return [counts[r.strip()] > 1 for r in replies]


def checks(rows: list[dict], terms: list[str]) -> dict[str, float | None]:
    """The checks over one run's replies of one seed (rows of a predictions file)."""
    from daug.augment.quality import distinct_n

    if not rows:
        return {c: None for c in CHECKS}
    replies = [r.get("prediction", "") for r in rows]
    refs = [r.get("reference", "") for r in rows]
    return {"out_of_character": float(np.mean([out_of_character(p, q, terms) for p, q in zip(replies, refs)])),
            "markup": float(np.mean([markup(p, q) for p, q in zip(replies, refs)])),
            "duplicate": float(np.mean(duplicate_flags(replies))),
            "distinct_1": distinct_n(replies, 1), "distinct_2": distinct_n(replies, 2)}


def base_part(record_id: str, seed: int) -> str:
    return BASE_PARTS[stable_hash("persona-base", seed, record_id) % len(BASE_PARTS)]


@dataclass
class Persona:
    """One character's calibrated classifier and its validation."""

    dataset: str
    model: object
    platt: object
    negatives: str
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per negative group

    def score(self, texts: list[str]) -> np.ndarray:
        """Calibrated probability that each text is this character's."""
        if not texts:
            return np.zeros(0)
        raw = self.model.decision_function(list(texts)).reshape(-1, 1)
        return self.platt.predict_proba(raw)[:, 1]


def _classifier(cfg: dict, seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
        LogisticRegression(C=cfg["C"], class_weight="balanced", max_iter=5000, random_state=seed))


def auc_interval(pos: np.ndarray, neg: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float, float]:
    """AUC of `pos` against `neg` (the probability that a positive outranks a negative, ties half) and
    its 95% percentile interval, resampling each group with replacement."""
    def auc(p, n):
        diff = p[:, None] - n[None, :]
        return float(((diff > 0) + 0.5 * (diff == 0)).mean())

    rng = np.random.default_rng(seed)
    boots = [auc(rng.choice(pos, len(pos)), rng.choice(neg, len(neg))) for _ in range(n_resamples)]
    low, high = np.percentile(boots, [2.5, 97.5])
    return auc(pos, neg), float(low), float(high)


def fit(splits: dict[str, dict[str, list[str]]], base: dict[str, list[dict]], cfg: dict, seed: int) -> dict[str, Persona]:
    """A calibrated Persona per dataset. `splits`: {dataset: {"train", "val", "test": replies}};
    `base`: {dataset: the base model's prediction rows}; `cfg`: params `report.persona`."""
    from sklearn.linear_model import LogisticRegression

    base_text = {part: [r["prediction"] for rows in base.values() for r in rows if base_part(r["id"], seed) == part]
                 for part in BASE_PARTS}
    out = {}
    for ds, own in splits.items():
        others = [o for o in splits if o != ds]
        neg = {s: [t for o in others for t in splits[o][s]] for s in ("train", "val", "test")}
        texts = own["train"] + neg["train"] + base_text["train"]
        labels = [1] * len(own["train"]) + [0] * (len(texts) - len(own["train"]))
        model = _classifier(cfg, seed).fit(texts, labels)
        cal = own["val"] + neg["val"] + base_text["calibrate"]
        cal_labels = [1] * len(own["val"]) + [0] * (len(cal) - len(own["val"]))
        platt = LogisticRegression(C=1e4, max_iter=5000).fit(model.decision_function(cal).reshape(-1, 1), cal_labels)
        named = (["other characters' lines (" + ", ".join(others) + ")"] if others else []) + ["base-model replies"]
        persona = Persona(ds, model, platt, " and ".join(named))
        positives = persona.score(own["test"])
        groups = {**({"other characters' test references": neg["test"]} if others else {}),
                  "base model's replies (held-out third)": base_text["validate"],
                  "hand-written generic replies": list(cfg["generic_replies"])}
        rows = []
        for name, group in groups.items():
            if not group:
                continue
            scores = persona.score(group)
            auc, low, high = auc_interval(positives, scores, cfg["bootstrap"], seed)
            rows.append({"dataset": ds, "negatives": name, "n positives": len(positives), "n negatives": len(group),
                         "AUC": auc, "low": low, "high": high, "mean score, character": float(positives.mean()),
                         "mean score, negatives": float(scores.mean())})
        persona.validation = pd.DataFrame(rows)
        out[ds] = persona
    return out


def score_predictions(personas: dict[str, Persona], predictions: dict[tuple, list[dict]]) -> None:
    """Add each reply's persona score (`persona`) to its prediction row, in place: the per-example
    values the seed-paired comparisons read."""
    for (ds, _), rows in predictions.items():
        if ds in personas and rows:
            for r, s in zip(rows, personas[ds].score([r.get("prediction", "") for r in rows])):
                r[ENDPOINT] = round(float(s), 6)  # rounded: the same bytes on every CPU
