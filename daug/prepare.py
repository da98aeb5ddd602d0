"""Prepare: validate, clean, deduplicate and split one raw dataset (the curation steps of seed 002).

Every input record ends in exactly one place, and the manifest says which:
  kept (then train/val/test) | exact_duplicate | near_duplicate | rejected (with a reason).
`in = kept + exact_duplicate + near_duplicate + rejected` always holds; `check_manifest` asserts it.
"""
from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from daug import DaugError
from daug.io import read_records, write_json, write_jsonl

FIELDS = ("instruction", "input", "output")
REQUIRED = ("instruction", "output")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class NearDupConfig:
    enabled: bool = True
    threshold: float = 0.9  # estimated Jaccard similarity of character shingles
    shingle: int = 3
    num_perm: int = 128


@dataclass(frozen=True)
class PrepareConfig:
    seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    t2s: bool = False
    min_chars: int = 1
    max_chars: int = 512
    near_dup: NearDupConfig = field(default_factory=NearDupConfig)

    @classmethod
    def from_params(cls, section: dict | None) -> "PrepareConfig":
        section = dict(section or {})
        near = NearDupConfig(**section.pop("near_dup", {}) or {})
        if "fractions" in section:
            section["fractions"] = tuple(section["fractions"])
        try:
            cfg = cls(near_dup=near, **section)
        except TypeError as e:
            raise DaugError(f"prepare params: {e}") from None
        if len(cfg.fractions) != 3 or any(f < 0 for f in cfg.fractions) or abs(sum(cfg.fractions) - 1) > 1e-6:
            raise DaugError(f"prepare params: fractions must be three non-negative numbers summing to 1, got {list(cfg.fractions)}")
        if not 0 < cfg.near_dup.threshold <= 1:
            raise DaugError(f"prepare params: near_dup.threshold must be in (0, 1], got {cfg.near_dup.threshold}")
        return cfg


# --- validation and cleaning -------------------------------------------------------------------

def validate_record(record: object) -> str | None:
    """None when the record has the study schema, else the reason it is rejected."""
    if not isinstance(record, dict):
        return f"not an object ({type(record).__name__})"
    for key in REQUIRED:
        if key not in record:
            return f"missing field {key!r}"
    for key in FIELDS:
        if key in record and not isinstance(record[key], str):
            return f"field {key!r} is {type(record[key]).__name__}, not a string"
    return None


_SPACE_RUN = re.compile(r"[ \t\u00a0]+")  # ASCII/no-break space runs; full-width space U+3000 is kept


@lru_cache(maxsize=1)
def _t2s():
    from opencc import OpenCC  # opencc-python-reimplemented: pure Python tables

    return OpenCC("t2s")


def clean_text(text: str, t2s: bool = False) -> str:
    """Conservative cleaning: drop control and format characters (but keep line breaks), fold runs
    of spaces, strip the ends. No NFKC: it would turn full-width ，into , and change the style."""
    kept = []
    for ch in text.replace("\r\n", "\n").replace("\r", "\n"):
        if ch == "\n":
            kept.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf"):  # controls, zero-width spaces, BOM
            if ch == "\t":
                kept.append(" ")
        else:
            kept.append(ch)
    cleaned = _SPACE_RUN.sub(" ", "".join(kept))
    cleaned = "\n".join(line.strip() for line in cleaned.split("\n")).strip()
    if t2s:
        cleaned = _t2s().convert(cleaned)
    return cleaned


def clean_record(record: dict, cfg: PrepareConfig) -> dict:
    return {key: clean_text(record.get(key, ""), cfg.t2s) for key in FIELDS}


def length_reason(record: dict, cfg: PrepareConfig) -> str | None:
    for key in REQUIRED:
        n = len(record[key])
        if n < cfg.min_chars:
            return f"length outlier: {key} has {n} characters after cleaning (min {cfg.min_chars})"
        if n > cfg.max_chars:
            return f"length outlier: {key} has {n} characters (max {cfg.max_chars})"
    return None


# --- deduplication -----------------------------------------------------------------------------

def exact_key(record: dict) -> tuple[str, ...]:
    return tuple(record[key] for key in FIELDS)


def _shingles(text: str, k: int) -> set[bytes]:
    if len(text) <= k:
        return {text.encode("utf-8")}
    return {text[i : i + k].encode("utf-8") for i in range(len(text) - k + 1)}


class NearDuplicateIndex:
    """MinHash + LSH over character shingles of a record's text (datasketch; fixed seed)."""

    def __init__(self, cfg: NearDupConfig):
        from datasketch import MinHashLSH

        self.cfg = cfg
        # LSH only proposes candidates (its banding cannot express thresholds near 1); every
        # candidate is then checked against the real threshold in best_match.
        self.lsh = MinHashLSH(threshold=min(cfg.threshold, 0.9), num_perm=cfg.num_perm)
        self.hashes: dict[str, object] = {}

    def minhash(self, text: str):
        from datasketch import MinHash

        m = MinHash(num_perm=self.cfg.num_perm, seed=1)
        m.update_batch(sorted(_shingles(text, self.cfg.shingle)))
        return m

    def best_match(self, m) -> tuple[str, float] | None:
        """The most similar indexed key at or above the threshold (ties: the earliest key)."""
        best = None
        for key in sorted(self.lsh.query(m)):
            sim = m.jaccard(self.hashes[key])
            if sim >= self.cfg.threshold and (best is None or sim > best[1]):
                best = (key, sim)
        return best

    def add(self, key: str, m) -> None:
        self.lsh.insert(key, m)
        self.hashes[key] = m


def record_text(record: dict) -> str:
    return "\n".join(record[key] for key in FIELDS)


# --- splitting -----------------------------------------------------------------------------------

def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    return n - n_val - n_test, n_val, n_test


def split(records: list[dict], cfg: PrepareConfig) -> dict[str, list[dict]]:
    """Deterministic shuffle by seed, then train/val/test by the configured fractions."""
    order = list(records)
    random.Random(cfg.seed).shuffle(order)
    n_train, n_val, _ = split_counts(len(order), cfg.fractions)
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }


def cross_split_near_duplicates(splits: dict[str, list[dict]], cfg: NearDupConfig) -> list[dict]:
    """Test (and val) records with a train record at or above the near-duplicate threshold."""
    index = NearDuplicateIndex(cfg)
    for record in splits["train"]:
        index.add(record["id"], index.minhash(record_text(record)))
    pairs = []
    for name in ("val", "test"):
        for record in splits[name]:
            match = index.best_match(index.minhash(record_text(record)))
            if match:
                pairs.append({"split": name, "id": record["id"], "train_id": match[0], "similarity": round(match[1], 4)})
    return pairs


# --- the stage -----------------------------------------------------------------------------------

def prepare_records(raw: list, name: str, cfg: PrepareConfig, source: str = "<records>", strict: bool = False) -> dict:
    """Curate records in memory. Returns {"splits": {...}, "rejects": [...], "manifest": {...}}."""
    dispositions: list[dict] = []  # one per input record, in input order
    kept: list[dict] = []
    seen: dict[tuple[str, ...], str] = {}
    near = NearDuplicateIndex(cfg.near_dup) if cfg.near_dup.enabled else None
    rejects = []
    cleaned_count = 0
    width = max(5, len(str(len(raw))))

    for index, raw_record in enumerate(raw):
        rid = f"{name}-{index:0{width}d}"
        reason = validate_record(raw_record)
        record = None
        if reason is None:
            record = clean_record(raw_record, cfg)
            cleaned_count += any(record[k] != raw_record.get(k, "") for k in FIELDS)
            reason = length_reason(record, cfg)
        if reason is not None:
            if strict:
                raise DaugError(f"{source}: record {index}: {reason}")
            dispositions.append({"index": index, "id": rid, "status": "rejected", "reason": reason})
            rejects.append({"index": index, "reason": reason, "record": raw_record})
            continue
        key = exact_key(record)
        if key in seen:
            dispositions.append({"index": index, "id": rid, "status": "exact_duplicate", "duplicate_of": seen[key]})
            continue
        seen[key] = rid
        if near is not None:
            m = near.minhash(record_text(record))
            match = near.best_match(m)
            if match:
                dispositions.append({"index": index, "id": rid, "status": "near_duplicate",
                                     "duplicate_of": match[0], "similarity": round(match[1], 4)})
                continue
            near.add(rid, m)
        dispositions.append({"index": index, "id": rid, "status": "kept"})
        kept.append({"id": rid, **record})

    splits = split(kept, cfg)
    leaks = cross_split_near_duplicates(splits, cfg.near_dup)
    counts = {status: 0 for status in ("kept", "exact_duplicate", "near_duplicate", "rejected")}
    for d in dispositions:
        counts[d["status"]] += 1
    manifest = {
        "dataset": name,
        "source": source,
        "config": asdict(cfg),
        "counts": {"input": len(raw), **counts, "cleaned": cleaned_count,
                   **{name_: len(recs) for name_, recs in splits.items()}},
        "reject_reasons": _tally(d["reason"].split(":")[0] for d in dispositions if d["status"] == "rejected"),
        "cross_split_near_duplicates": {"threshold": cfg.near_dup.threshold, "count": len(leaks), "pairs": leaks},
        "removed": [d for d in dispositions if d["status"] != "kept"],
    }
    check_manifest(manifest)
    return {"splits": splits, "rejects": rejects, "manifest": manifest}


def _tally(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items()))


def check_manifest(manifest: dict) -> None:
    """Every input record is accounted for, once."""
    c = manifest["counts"]
    parts = c["kept"] + c["exact_duplicate"] + c["near_duplicate"] + c["rejected"]
    if parts != c["input"] or c["train"] + c["val"] + c["test"] != c["kept"]:
        raise AssertionError(f"manifest does not balance: {c}")
    if len(manifest["removed"]) != c["input"] - c["kept"]:
        raise AssertionError("manifest 'removed' list does not match its counts")


def prepare_file(raw_path: str | Path, out_dir: str | Path, name: str | None = None,
                 cfg: PrepareConfig | None = None, strict: bool = False) -> dict:
    """Run prepare on a raw JSON/JSONL file and write OUT/{train,val,test}.jsonl, rejects.jsonl, manifest.json."""
    raw_path, out_dir = Path(raw_path), Path(out_dir)
    cfg = cfg or PrepareConfig()
    raw = read_records(raw_path)
    result = prepare_records(raw, name or raw_path.stem, cfg, source=str(raw_path), strict=strict)
    for split_name in SPLITS:
        write_jsonl(out_dir / f"{split_name}.jsonl", result["splits"][split_name])
    write_jsonl(out_dir / "rejects.jsonl", result["rejects"])
    write_json(out_dir / "manifest.json", result["manifest"])
    return result["manifest"]


# --- CLI -------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("raw", help="raw dataset: a JSON array (or JSONL) of instruction/input/output records")
    parser.add_argument("out_dir", help="directory for train/val/test.jsonl, rejects.jsonl and manifest.json")
    parser.add_argument("--name", help="dataset name used in record ids (default: the raw file's stem)")
    parser.add_argument("--seed", type=int, help="split seed (default: params.yaml prepare.seed, else 0)")
    parser.add_argument("--strict", action="store_true", help="fail on the first bad record instead of quarantining it")


def run(args) -> int:
    from daug.params import PARAMS_FILE, load

    section = dict(load()["prepare"]) if PARAMS_FILE.exists() else {}
    if args.seed is not None:
        section["seed"] = args.seed
    manifest = prepare_file(args.raw, args.out_dir, args.name, PrepareConfig.from_params(section), args.strict)
    c = manifest["counts"]
    print(f"{args.raw}: {c['input']} in = {c['kept']} kept + {c['exact_duplicate']} exact duplicates + "
          f"{c['near_duplicate']} near duplicates + {c['rejected']} rejected; "
          f"split {c['train']}/{c['val']}/{c['test']} -> {args.out_dir}")
    return 0
