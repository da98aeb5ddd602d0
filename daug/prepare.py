"""Prepare: validate, clean, deduplicate and split one raw dataset (the curation steps of seed 002).

The raw records come from a local JSON/JSONL file or a Hugging Face dataset (`load_raw`, from a
params `datasets.<name>` entry). Every input record ends in exactly one place, and the manifest says which:
  kept (then train/val/test) | exact_duplicate | near_duplicate | rejected (with a reason).
`in = kept + exact_duplicate + near_duplicate + rejected` always holds; `check_manifest` asserts it.
A split that would be empty is a DaugError (`check_splits`): the stages after prepare need all three.
"""
from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from daug import DaugError
from daug.io import read_records, write_json, write_jsonl
from daug.records import FIELDS, REQUIRED, validate_record

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class NearDupConfig:
    enabled: bool
    threshold: float  # estimated Jaccard similarity of character shingles
    shingle: int
    num_perm: int


@dataclass(frozen=True)
class PrepareConfig:
    """params `prepare`; the defaults live in params/base.yaml only (`from_params` fills them in)."""
    seed: int
    fractions: tuple[float, float, float]
    t2s: bool
    min_chars: int
    max_chars: int
    near_dup: NearDupConfig

    @classmethod
    def from_params(cls, given: dict | None = None) -> "PrepareConfig":
        from daug.params import section

        merged = section({"prepare": given or {}}, "prepare")
        near = NearDupConfig(**merged.pop("near_dup"))
        merged["fractions"] = tuple(merged["fractions"])
        cfg = cls(near_dup=near, **merged)
        if len(cfg.fractions) != 3 or any(f < 0 for f in cfg.fractions) or abs(sum(cfg.fractions) - 1) > 1e-6:
            raise DaugError(f"prepare params: fractions must be three non-negative numbers summing to 1, got {list(cfg.fractions)}")
        if not 0 < cfg.near_dup.threshold <= 1:
            raise DaugError(f"prepare params: near_dup.threshold must be in (0, 1], got {cfg.near_dup.threshold}")
        return cfg


# --- cleaning (validation: daug.records.validate_record) ----------------------------------------

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


def dedup_text(record: dict) -> str:
    """A cleaned record's three fields joined by newlines, empty `input` included: the text whose
    shingles near-duplicate detection compares (not daug.records.record_text, which skips empty fields)."""
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
        index.add(record["id"], index.minhash(dedup_text(record)))
    pairs = []
    for name in ("val", "test"):
        for record in splits[name]:
            match = index.best_match(index.minhash(dedup_text(record)))
            if match:
                pairs.append({"split": name, "id": record["id"], "train_id": match[0], "similarity": round(match[1], 4)})
    return pairs


# --- the stage -----------------------------------------------------------------------------------

def prepare_records(raw: list, name: str, cfg: PrepareConfig, source: str = "<records>", strict: bool = False) -> dict:
    """Curate records in memory. Returns {"splits": {...}, "rejects": [...], "manifest": {...}}.

    Any input is accounted for, even one that leaves a split empty (write_prepared refuses those)."""
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
            m = near.minhash(dedup_text(record))
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


def check_splits(manifest: dict) -> None:
    """A DaugError naming the source and the first empty split: the stages after prepare need all
    three (train to fine-tune on, val for its loss, test to evaluate)."""
    c = manifest["counts"]
    empty = [s for s in SPLITS if c[s] == 0]
    if not empty:
        return
    reasons = ", ".join(f"{reason} x{n}" for reason, n in manifest["reject_reasons"].items())
    kept = (f"{c['kept']} of {c['input']} records kept ({c['rejected']} rejected{': ' + reasons if reasons else ''}; "
            f"{c['exact_duplicate'] + c['near_duplicate']} duplicates)")
    fractions = "/".join(f"{f:g}" for f in manifest["config"]["fractions"])
    raise DaugError(f"{manifest['source']}: the {empty[0]} split would be empty: {kept}, split "
                    f"{c['train']}/{c['val']}/{c['test']} by fractions {fractions} (train/val/test); "
                    "give more valid records or change prepare.fractions")


def write_prepared(result: dict, out_dir: str | Path) -> dict:
    """Write a prepare_records result as OUT/{train,val,test}.jsonl, rejects.jsonl, manifest.json.

    Nothing is written when a split would be empty (check_splits), so no stage reads a half dataset."""
    check_splits(result["manifest"])
    out_dir = Path(out_dir)
    for split_name in SPLITS:
        write_jsonl(out_dir / f"{split_name}.jsonl", result["splits"][split_name])
    write_jsonl(out_dir / "rejects.jsonl", result["rejects"])
    write_json(out_dir / "manifest.json", result["manifest"])
    return result["manifest"]


def prepare_file(raw_path: str | Path, out_dir: str | Path, name: str | None = None,
                 cfg: PrepareConfig | None = None, strict: bool = False) -> dict:
    """Run prepare on a raw JSON/JSONL file and write OUT/{train,val,test}.jsonl, rejects.jsonl, manifest.json."""
    raw_path = Path(raw_path)
    raw = read_records(raw_path)
    result = prepare_records(raw, name or raw_path.stem, cfg or PrepareConfig.from_params(), source=str(raw_path), strict=strict)
    return write_prepared(result, out_dir)


def prepare_dataset(entry: dict, out_dir: str | Path, name: str, cfg: PrepareConfig | None = None,
                    strict: bool = False, cache_dir: str | Path | None = None) -> dict:
    """Run prepare on a params `datasets.<name>` entry (a file or a Hugging Face dataset, see load_raw)."""
    raw, source = load_raw(entry, cache_dir)
    return write_prepared(prepare_records(raw, name, cfg or PrepareConfig.from_params(), source=source, strict=strict), out_dir)


# --- raw records: a local file or a Hugging Face dataset -----------------------------------------

HF_KEYS = ("path", "name", "split", "revision", "columns")  # keys of an `hf:` entry (params/base.yaml)


def load_raw(entry: dict, cache_dir: str | Path | None = None) -> tuple[list, str]:
    """(raw records, source name) for a params `datasets.<name>` entry with `file:` or `hf:`.

    Records come back as read: validation, cleaning, dedup and split are prepare_records', the same
    for both kinds. The source name labels the manifest and every error. `cache_dir` is where
    `datasets` caches what it loads (default: its own, outside the repo)."""
    label = f"dataset {entry['name']!r}" if isinstance(entry.get("name"), str) else "dataset entry"
    if (entry.get("file") is None) == (entry.get("hf") is None):
        raise DaugError(f"{label}: give exactly one of 'file' (a JSON/JSONL file) or 'hf' "
                        f"(a Hugging Face dataset), got keys {', '.join(sorted(entry)) or 'none'}")
    if entry.get("file") is not None:
        return read_records(entry["file"]), str(entry["file"])
    return load_hf(entry["hf"], cache_dir, label)


def load_hf(spec: dict, cache_dir: str | Path | None = None, label: str = "dataset entry") -> tuple[list, str]:
    """Records of a Hugging Face dataset: a hub id (datasets.load_dataset) or a directory written by
    `save_to_disk` (datasets.load_from_disk), its columns mapped to instruction/input/output."""
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or not spec["path"]:
        raise DaugError(f"{label}: 'hf' needs a 'path' (a hub id or a local directory), got {spec!r}")
    unknown = sorted(set(spec) - set(HF_KEYS))
    if unknown:
        raise DaugError(f"{label}: unknown 'hf' key(s) {', '.join(unknown)}; known: {', '.join(HF_KEYS)}")
    path, config, split = spec["path"], spec.get("name"), spec.get("split") or "train"
    source = f"hf:{path}" + (f":{config}" if config else "") + f"[{split}]"
    columns = _column_map(spec.get("columns"), source)
    table = _load_split(path, config, split, spec.get("revision"), cache_dir, source)
    missing = [f"{col!r} (for {field})" for field, col in columns.items()
               if col not in table.column_names and (field in REQUIRED or field in (spec.get("columns") or {}))]
    if missing:
        raise DaugError(f"{source}: no column {', '.join(missing)}; it has {', '.join(table.column_names)}")
    present = {field: col for field, col in columns.items() if col in table.column_names}
    rows = table.select_columns(list(dict.fromkeys(present.values()))).to_list()
    return [{field: row[col] for field, col in present.items()} for row in rows], source


def _column_map(columns: object, source: str) -> dict[str, str]:
    """Study field -> dataset column; a field not named reads the column of its own name."""
    columns = {} if columns is None else columns
    if (not isinstance(columns, dict) or set(columns) - set(FIELDS)
            or not all(isinstance(c, str) and c for c in columns.values())):
        raise DaugError(f"{source}: 'columns' maps study fields ({', '.join(FIELDS)}) to column names, got {columns!r}")
    return {field: columns.get(field, field) for field in FIELDS}


def _load_split(path: str, config: str | None, split: str, revision: str | None,
                cache_dir: str | Path | None, source: str):
    import datasets  # imported here: it takes seconds, and file datasets do not need it

    local = Path(path)
    saved = local.is_dir() and ((local / "state.json").is_file() or (local / "dataset_dict.json").is_file())
    try:
        if not saved:
            return datasets.load_dataset(path, config, split=split, revision=revision,
                                         cache_dir=None if cache_dir is None else str(cache_dir))
        table = datasets.load_from_disk(path)
    except (OSError, ValueError) as e:  # hub unreachable (ConnectionError), no such files, unknown config/split
        message = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DaugError(f"{source}: cannot load the Hugging Face dataset: {message}") from None
    if isinstance(table, datasets.DatasetDict):
        if split not in table:
            raise DaugError(f"{source}: no split {split!r} in the saved dataset; it has {', '.join(table)}")
        table = table[split]
    return table


# --- stage and CLI --------------------------------------------------------------------------------

def stage(params: dict, dataset: str) -> dict:
    """The prepare stage for one dataset: its raw records (params `datasets.<dataset>`, see load_raw)
    -> the prepared folder of daug/paths.py, with params `prepare`. Returns the manifest."""
    from daug.params import dataset as dataset_entry
    from daug.paths import Paths

    return prepare_dataset(dataset_entry(params, dataset), Paths.of(params).prepared_dir(dataset), dataset,
                           PrepareConfig.from_params(params.get("prepare")))


def add_arguments(parser) -> None:
    from daug.cli import stage_arguments

    parser.add_argument("raw", nargs="?", help="file form: raw dataset, a JSON array (or JSONL) of "
                        "instruction/input/output records; leave out for the stage form")
    parser.add_argument("out_dir", nargs="?", help="file form: directory for train/val/test.jsonl, rejects.jsonl "
                        "and manifest.json")
    stage_arguments(parser, dataset=True)
    parser.add_argument("--name", help="file form: dataset name used in record ids (default: the raw file's stem)")
    parser.add_argument("--seed", type=int, help="file form: split seed (default: params prepare.seed, else 0)")
    parser.add_argument("--strict", action="store_true", help="file form: fail on the first bad record instead "
                        "of quarantining it")


def _print_manifest(raw, out_dir, manifest: dict) -> None:
    c = manifest["counts"]
    print(f"{raw}: {c['input']} in = {c['kept']} kept + {c['exact_duplicate']} exact duplicates + "
          f"{c['near_duplicate']} near duplicates + {c['rejected']} rejected; "
          f"split {c['train']}/{c['val']}/{c['test']} -> {out_dir}")


def run(args) -> int:
    from daug.params import load
    from daug.paths import Paths

    if args.raw is None:  # the stage form
        given = [flag for flag, value in (("--name", args.name), ("--seed", args.seed), ("--strict", args.strict or None))
                 if value is not None]
        if given:
            raise DaugError(f"{', '.join(given)}: only for the file form (prepare RAW OUT_DIR)")
        params = load(args.params)
        for dataset in [args.dataset] if args.dataset else list(params.get("datasets") or {}):
            _print_manifest(dataset, Paths.of(params).prepared_dir(dataset), stage(params, dataset))
        return 0
    if args.out_dir is None:
        raise DaugError("the file form needs RAW OUT_DIR")
    section = dict(load(args.params).get("prepare") or {}) if Path(args.params).exists() else {}
    if args.seed is not None:
        section["seed"] = args.seed
    manifest = prepare_file(args.raw, args.out_dir, args.name, PrepareConfig.from_params(section), args.strict)
    _print_manifest(args.raw, args.out_dir, manifest)
    return 0
