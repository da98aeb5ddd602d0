"""t-SNE of sentence embeddings: original training records, each method's augmentations, validation.

As in seed 001's figures: do augmentations stay near the originals they came from, and do they
move toward (or away from) the validation data? One t-SNE per dataset over all methods together,
so the panels share coordinates. Records are subsampled (by a seeded hash of their id, so the same
records every run) to keep it fast: `n_train` originals and the augmentations made from exactly
those, `n_val` validation records. Embeddings: the multilingual Universal Sentence Encoder of the
augmentation-quality metrics (`daug.augment.quality.embed`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from daug.io import iter_jsonl, stable_hash
from daug.records import record_text
from daug.report.load import Paths, augmented_records, original_records



def sample(records: list[dict], n: int, seed: int) -> list[dict]:
    """`n` records chosen by a seeded hash of their ids: stable when other records come and go."""
    keyed = sorted(records, key=lambda r: stable_hash("tsne", seed, r.get("id")))
    return keyed[:n]


def default_embed(texts: list[str]) -> np.ndarray:
    from daug.augment.quality import embed

    return np.asarray(embed(texts), dtype=np.float32)


def embed_unique(texts: list[str], embed: Callable[[list[str]], np.ndarray], batch_size: int) -> np.ndarray:
    """Embeddings of `texts`, computing each distinct text once (unchanged augmentations repeat)."""
    from tqdm import tqdm  # plain text: no widget state in the versioned executed notebook

    unique = list(dict.fromkeys(texts))
    chunks = [unique[i:i + batch_size] for i in range(0, len(unique), batch_size)]
    vectors = [embed(chunk) for chunk in tqdm(chunks, desc="embedding for t-SNE", unit="batch")]
    table = dict(zip(unique, np.concatenate(vectors) if vectors else np.zeros((0, 1), np.float32)))
    return np.stack([table[t] for t in texts])


def points(paths: Paths, grid, ds: str, methods: list[str], cfg: dict, seed: int,
           embed: Callable[[list[str]], np.ndarray] | None = None) -> pd.DataFrame:
    """Rows kind (train | val | augmented), method, id, x, y for one dataset. `cfg` is the
    `report.tsne` params section with its defaults (`daug.report.config`)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    originals = sample(original_records(paths, grid, ds, methods), cfg["n_train"], seed)
    chosen = {r.get("id") for r in originals}
    rows = [("train", "", r) for r in originals]
    rows += [("val", "", r) for r in sample(list(iter_jsonl(paths.prepared(ds, "val"))), cfg["n_val"], seed)]
    for method in methods:
        rows += [("augmented", method, r) for r in augmented_records(paths, grid, ds, method) if r.get("source_id") in chosen]
    frame = pd.DataFrame({"kind": [k for k, _, _ in rows], "method": [m for _, m, _ in rows],
                          "id": [r.get("id") for _, _, r in rows]})
    if len(rows) < 5:  # t-SNE needs a handful of points; the figure then shows what there is
        return frame.assign(x=np.nan, y=np.nan)
    # what is embedded: the text the fidelity metric embeds (instruction, input, reply), cut short
    vectors = embed_unique([record_text(r)[:cfg["max_chars"]] for _, _, r in rows], embed or default_embed,
                           cfg["batch_size"])
    perplexity = min(float(cfg["perplexity"]), (len(rows) - 1) / 3)
    # One OpenMP thread: the map is identical either way, and when other processes share the cores
    # sklearn's threaded Barnes-Hut loop spins and runs ~5x slower (benchmarks/bench_report.py).
    with threadpool_limits(limits=1, user_api="openmp"):
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                  random_state=seed).fit_transform(vectors.astype(np.float64))
    return frame.assign(x=xy[:, 0], y=xy[:, 1])
