"""Reading and writing records: JSON arrays, JSONL, and deterministic JSON documents.

Every writer here produces the same bytes for the same data (sorted keys where the order is not
meaningful, UTF-8, no ASCII escaping, trailing newline) so DVC hashes stay stable across runs.
DVC metrics files go through `write_metrics`, which rounds every float to METRIC_DECIMALS places:
a sum taken in another order differs in its 16th digit, and `dvc metrics diff` must show only real
changes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from daug import DaugError


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DaugError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DaugError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DaugError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def read_records(path: str | Path) -> list[dict]:
    """Records from a JSON array file (.json) or a JSON-lines file (.jsonl).

    Raises DaugError naming the file and line for unparsable input. Values are returned as parsed;
    schema checks belong to the caller (see daug.prepare.validate_record).
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        return list(iter_jsonl(path))
    data = read_json(path)
    if not isinstance(data, list):
        raise DaugError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    return data


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    for _, record in iter_jsonl_numbered(path):
        yield record


def iter_jsonl_numbered(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) pairs, so a caller's schema error can name the line (blank lines skipped)."""
    path = Path(path)
    try:
        f = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DaugError(f"{path}: file not found") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise DaugError(f"{path}: line {lineno}: invalid JSON: {e.msg}") from None
            except UnicodeDecodeError as e:
                raise DaugError(f"{path}: line {lineno}: not UTF-8 text (byte {e.start})") from None


def dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=indent is not None, indent=indent)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records one per line (keys in the order given). Returns the number written."""
    lines = [dumps(r) + "\n" for r in records]
    atomic_write_text(path, "".join(lines))
    return len(lines)


def write_json(path: str | Path, obj: Any) -> None:
    """Write a JSON document with sorted keys and two-space indent (metrics, manifests)."""
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


METRIC_DECIMALS = 6  # the stated precision of every DVC metric value (losses, scores on 0-100, rates)


def round_floats(obj: Any, decimals: int = METRIC_DECIMALS) -> Any:
    """`obj` with every float (in nested dicts and lists too) rounded to `decimals` places."""
    if isinstance(obj, float):
        return round(obj, decimals) if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: round_floats(v, decimals) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, decimals) for v in obj]
    return obj


def write_metrics(path: str | Path, metrics: dict) -> dict:
    """Write a DVC metrics file: results only (timings go to their own file), floats rounded to
    METRIC_DECIMALS places. Returns the document as written."""
    doc = round_floats(metrics)
    write_json(path, doc)
    return doc


def stable_hash(*parts: Any) -> int:
    """A 64-bit integer that depends only on the parts' JSON form: the basis of per-record seeds."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:8], "big")
