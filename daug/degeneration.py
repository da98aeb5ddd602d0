"""Degeneration of generated replies: cut at the token limit, loops, leaks, empty, stray line breaks.

Definitions (per test example; a text is a Python str, a "character" is one Unicode code point):

- at_limit: the reply's token count (`reply_tokens`, the reply re-encoded without special tokens)
  is >= `max_new_tokens`: generation was cut by the limit, not ended by the model. (Re-encoding can
  count a few more tokens than were generated, so `>` counts as at the limit too.)
- loops: some substring of at least 4 characters occurs at least 3 times without overlap. Every
  character counts as it stands (whitespace, punctuation and line breaks included, no
  normalisation): "我娘娘，" x 3 loops. Checking substrings of exactly 4 characters is enough: if a
  longer substring occurs at positions p1 < p2 < p3 with p(k+1) - p(k) >= its length >= 4, its first
  4 characters occur at the same positions, also without overlap; and a 4-character substring is
  itself "at least 4". Occurrences are counted greedily from the left (as `str.count` does), which
  for equal-length strings gives the most non-overlapping ones. Consequences, pinned by the tests:
  a phrase shorter than 4 characters must repeat more often to count ("皇上，" x 3 = 9 characters
  does not loop, x 6 does: the 4-character window "皇上，皇" recurs every 6 characters without
  overlap); a run of one character loops from 12 characters on ("哈" x 6 does not, "哈" x 12 does).
- marker: the reply contains chat-template marker text: Gemma's `<start_of_turn>`, `<end_of_turn>`
  (any `<start_of_...>`/`<end_of_...>`), `<bos>`, `<eos>`, `<pad>`, `<unk>`, `<mask>`, `<s>`, `</s>`,
  `<unusedN>`; `<|...|>` tokens (ChatML `<|im_start|>`, Llama 3 `<|eot_id|>`, `<|start_header_id|>`);
  Llama 2's `[INST]`, `[/INST]`, `<<SYS>>`, `<</SYS>>`; or a bare role word `model`, `user`,
  `assistant` or `system` (lower case, as templates write them) that ends a line (only spaces may
  follow before the line break or the end; anything may precede it, so the glued "xcuser" counts)
  or starts one (only spaces before it, no ASCII letter after it). That is what is left of
  `<end_of_turn>\\n<start_of_turn>model\\n` once the special tokens are dropped ("那我先去吧。model").
  Markers are case-sensitive and do not depend on the reference.
- foreign_script: the reply has a letter of a writing system that the reference has no letter of.
  A reference with no letters at all (a silent "……") says nothing about its script: no reply is
  flagged against it (otherwise every Chinese reply to it would count as a leak).
  Only letters (Unicode category L*) have a script: the first word of the Unicode name of the
  letter's NFKC form (LATIN, CYRILLIC, GREEK, HANGUL, ARABIC, HEBREW, THAI, DEVANAGARI, ...; full-width
  ＡＢＣ is Latin), with CJK and IDEOGRAPHIC = Han, HIRAGANA, KATAKANA and KATAKANA-HIRAGANA = Kana;
  modifier letters (MODIFIER LETTER ..., CARON, VERTICAL ...) are common. Digits and numerals (①, Ⅻ),
  punctuation, symbols, emoji, combining marks and whitespace are common and never count. A Latin
  word in the reference allows Latin in the reply. (Historic scripts whose names share a first word,
  OLD ITALIC and OLD PERSIAN, are one script here.)
- leaks: marker or foreign_script.
- empty: the reply is nothing but whitespace (`str.isspace`, so the ideographic space counts), or "".
- newline: the reply has a line break (any boundary `str.splitlines` splits on: \\n, \\r, \\v, \\f,
  \\x1c-\\x1e, \\x85, U+2028, U+2029) and the reference has none.

Over a list of examples, `summary` gives for each flag the count and the share (count / n, rounded to
6 decimals), and length_ratio = total characters of the replies / total characters of the references
(= mean_reply_chars / mean_reference_chars; None when the references have no characters).

One measure is of the run, not of an example: top_opening is the most common opening (first
OPENING_CHARS characters, whitespace stripped; of the replies that have that many) and
top_opening_share the share of all n replies that open with it. A model that answers every prompt
with the same stock phrase ("你说的没错，…") ends its turn and never loops, yet has collapsed; this
is what shows it. Ties go to the opening that comes first.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from daug import DaugError

LOOP_MIN_CHARS = 4
LOOP_MIN_REPEATS = 3
OPENING_CHARS = 5
FLAGS = ("at_limit", "loops", "marker", "foreign_script", "leaks", "empty", "newline")
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")  # exactly str.splitlines' boundaries

_SPECIAL_TOKEN = re.compile(
    r"<(?:start|end)_of_[a-z_]+>|</?(?:bos|eos|pad|unk|mask|s)>|<unused\d+>"
    r"|<\|[^|<>\s]{1,40}\|>|\[/?INST\]|<</?SYS>>")
_ROLES = r"(?:model|user|assistant|system)"
_ROLE_AT_LINE_EDGE = re.compile(rf"^\s*{_ROLES}(?![A-Za-z])|{_ROLES}\s*$")
_SCRIPT_ALIASES = {"CJK": "Han", "IDEOGRAPHIC": "Han",
                   "HIRAGANA": "Kana", "KATAKANA": "Kana", "KATAKANA-HIRAGANA": "Kana"}
_COMMON_LETTERS = frozenset({"MODIFIER", "CARON", "VERTICAL"})


def at_limit(reply_tokens: int, max_new_tokens: int) -> bool:
    """True when the reply used its whole token budget (cut by the limit, not finished)."""
    for name, value, low in (("reply_tokens", reply_tokens, 0), ("max_new_tokens", max_new_tokens, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DaugError(f"at_limit: {name} must be an integer >= {low}, got {value!r}")
    return reply_tokens >= max_new_tokens


def repeated_substring(text: str, min_chars: int = LOOP_MIN_CHARS, min_repeats: int = LOOP_MIN_REPEATS) -> str | None:
    """The `min_chars`-character substring of `text` whose `min_repeats`-th non-overlapping occurrence
    comes first, or None when there is none (then `text` does not loop). O(len(text)) dict operations."""
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 1:
        raise DaugError(f"loops: min_chars must be an integer >= 1, got {min_chars!r}")
    if isinstance(min_repeats, bool) or not isinstance(min_repeats, int) or min_repeats < 2:
        raise DaugError(f"loops: min_repeats must be an integer >= 2, got {min_repeats!r}")
    if len(text) < min_chars * min_repeats:
        return None
    free_from: dict[str, int] = {}  # gram -> first position after its last counted occurrence
    counts: dict[str, int] = {}
    for i in range(len(text) - min_chars + 1):
        gram = text[i:i + min_chars]
        if i >= free_from.get(gram, 0):
            free_from[gram] = i + min_chars
            counts[gram] = counts.get(gram, 0) + 1
            if counts[gram] >= min_repeats:
                return gram
    return None


def loops(text: str, min_chars: int = LOOP_MIN_CHARS, min_repeats: int = LOOP_MIN_REPEATS) -> bool:
    """True when a substring of >= `min_chars` characters occurs >= `min_repeats` times without overlap."""
    return repeated_substring(text, min_chars, min_repeats) is not None


def marker(prediction: str) -> bool:
    """True when the text contains chat-template marker text or a bare role word at a line edge."""
    return bool(_SPECIAL_TOKEN.search(prediction)) or any(
        _ROLE_AT_LINE_EDGE.search(line) for line in prediction.splitlines())


@lru_cache(maxsize=None)
def _char_script(ch: str) -> str | None:
    if not unicodedata.category(ch).startswith("L"):
        return None  # before NFKC: the numeral Ⅻ would become the letters XII
    letter = next((c for c in unicodedata.normalize("NFKC", ch) if unicodedata.category(c).startswith("L")), ch)
    name = unicodedata.name(letter, "UNNAMED").split()[0]  # Python 3.11 leaves e.g. Tangut unnamed
    if name in _COMMON_LETTERS:
        return None
    return _SCRIPT_ALIASES.get(name, name.title())


def scripts(text: str) -> set[str]:
    """The writing systems of the letters of `text` ("Han", "Latin", "Kana", "Cyrillic", ...)."""
    return {s for ch in text if (s := _char_script(ch))}


def foreign_scripts(prediction: str, reference: str) -> set[str]:
    """The scripts the prediction writes letters in and the reference does not (none when the
    reference has no letters)."""
    allowed = scripts(reference)
    return scripts(prediction) - allowed if allowed else set()


def leaks(prediction: str, reference: str) -> bool:
    """True when the prediction has marker text or letters of a script the reference does not use."""
    return marker(prediction) or bool(foreign_scripts(prediction, reference))


def empty(prediction: str) -> bool:
    """True when the prediction is "" or only whitespace."""
    return not prediction or prediction.isspace()


def has_line_break(text: str) -> bool:
    return any(ch in LINE_BREAKS for ch in text)


def newline(prediction: str, reference: str) -> bool:
    """True when the prediction has a line break and the reference has none."""
    return has_line_break(prediction) and not has_line_break(reference)


def flags(prediction: str, reference: str, reply_tokens: int, max_new_tokens: int) -> dict[str, bool]:
    """Every degeneration flag of one example, keyed as in FLAGS."""
    is_marker, foreign = marker(prediction), bool(foreign_scripts(prediction, reference))
    return {"at_limit": at_limit(reply_tokens, max_new_tokens), "loops": loops(prediction),
            "marker": is_marker, "foreign_script": foreign, "leaks": is_marker or foreign,
            "empty": empty(prediction), "newline": newline(prediction, reference)}


def top_opening(predictions: list[str], chars: int = OPENING_CHARS) -> tuple[str | None, int]:
    """The most common first `chars` characters (whitespace stripped) among replies that long, and
    how many replies open with it; (None, 0) when no reply is that long."""
    counts: dict[str, int] = {}
    for text in predictions:
        text = text.strip()
        if len(text) >= chars:
            counts[text[:chars]] = counts.get(text[:chars], 0) + 1
    if not counts:
        return None, 0
    best = max(counts, key=counts.get)  # max keeps the first of equal counts: insertion order
    return best, counts[best]


def _share(count: int, n: int) -> float | None:
    return round(count / n, 6) if n else None


def summary(rows: list[dict], max_new_tokens: int, source: str = "predictions") -> dict:
    """Counts and shares of each flag over `rows` (dicts with string `prediction` and `reference` and
    integer `reply_tokens`, as in the evaluate stage's predictions file), and the length figures.
    `source` names the rows in error messages (the predictions file)."""
    counts = dict.fromkeys(FLAGS, 0)
    reply_chars = reference_chars = 0
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prediction", "reference")):
            raise DaugError(f"{source}: record {i}: needs string prediction and reference")
        try:
            example = flags(row["prediction"], row["reference"], row.get("reply_tokens"), max_new_tokens)
        except DaugError as e:
            raise DaugError(f"{source}: record {i}: {e}") from None
        for key, value in example.items():
            counts[key] += value
        reply_chars += len(row["prediction"])
        reference_chars += len(row["reference"])
    n = len(rows)
    opening, opening_count = top_opening([row["prediction"] for row in rows])
    return {"n": n, "share": {k: _share(c, n) for k, c in counts.items()}, "count": counts,
            "top_opening": opening, "top_opening_share": _share(opening_count, n),
            "length_ratio": round(reply_chars / reference_chars, 6) if reference_chars else None,
            "mean_reply_chars": round(reply_chars / n, 6) if n else None,
            "mean_reference_chars": round(reference_chars / n, 6) if n else None,
            "loop_min_chars": LOOP_MIN_CHARS, "loop_min_repeats": LOOP_MIN_REPEATS}
