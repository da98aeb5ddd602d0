"""The study's record: its fields, its validation and its text. One home for each.

A record is a dict with string `instruction` and `output` and an optional string `input` (the
Alpaca-style schema of both datasets). Prepared splits add a string `id`; augmented files add
provenance (`source_id`, `method`, ...), where `method == ORIGINAL` marks an original record.
"""
from __future__ import annotations

from daug import DaugError

FIELDS = ("instruction", "input", "output")  # the text fields, in reading order
REQUIRED = ("instruction", "output")          # `input` may be absent
ORIGINAL = "none"                             # the `method` of an original (not augmented) record


def validate_record(record: object) -> str | None:
    """None when `record` has the study schema, else the reason it does not (one line)."""
    if not isinstance(record, dict):
        return f"not an object ({type(record).__name__})"
    for key in REQUIRED:
        if key not in record:
            return f"missing field {key!r}"
    for key in FIELDS:
        if key in record and not isinstance(record[key], str):
            return f"field {key!r} is {type(record[key]).__name__}, not a string"
    return None


def check_records(records: list, source: str, require_id: bool = False) -> list:
    """`records` unchanged, or a DaugError naming `source` and the (1-based) record that is bad.

    With `require_id`, every record needs a unique non-empty string `id` (prepared splits have one).
    """
    seen: set[str] = set()
    for i, record in enumerate(records, 1):
        rid = record.get("id") if isinstance(record, dict) else None
        where = f"{source}: record {i}" + (f" (id {rid!r})" if isinstance(rid, str) and rid else "")
        reason = validate_record(record)
        if reason is None and require_id:
            if not isinstance(rid, str) or not rid:
                reason = "no string 'id' (stages read prepared splits: run `python -m daug prepare`)"
            elif rid in seen:
                reason = f"duplicate id {rid!r}"
            seen.add(rid)
        if reason is not None:
            raise DaugError(f"{where}: {reason}")
    return records


def record_text(record: dict) -> str:
    """The record's non-empty text fields joined by newlines: what is embedded and compared."""
    return "\n".join(t for t in (record.get(f) or "" for f in FIELDS) if t)
