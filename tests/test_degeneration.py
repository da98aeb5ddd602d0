"""The degeneration definitions (daug.degeneration), pinned on hand-made replies: each flag's
positives, negatives and edge cases, the loop shortcut against brute force, and summary arithmetic."""
from __future__ import annotations

import random
import sys
import time

import pytest

from daug import DaugError
from daug.degeneration import (FLAGS, LINE_BREAKS, at_limit, empty, flags, foreign_scripts, leaks, loops, marker,
                               newline, repeated_substring, scripts, summary, top_opening)

REF = "皇上，臣妾做不到啊！"


# --- at_limit --------------------------------------------------------------------------------------

def test_at_limit_is_reaching_the_budget():
    assert at_limit(48, 48) and at_limit(49, 48)  # re-encoding may count one more
    assert not at_limit(47, 48) and not at_limit(0, 48)
    assert at_limit(1, 1)


@pytest.mark.parametrize("tokens, limit", [(None, 48), (-1, 48), (3.0, 48), (True, 48), (3, 0), (3, None)])
def test_at_limit_rejects_bad_counts(tokens, limit):
    with pytest.raises(DaugError, match="at_limit"):
        at_limit(tokens, limit)


# --- loops -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "我娘娘，我娘娘，我娘娘，",            # a 4-character phrase, exactly 3 times
    "皇上，" * 6,                         # a 3-character phrase: window "皇上，皇" at 0, 6, 12
    "哈" * 12,                            # a run of one character: "哈哈哈哈" x 3
    "你真好！厉害！厉害！厉害！厉害！厉害！厉害！",
    "那我先去吧。model\n那我先去吧。model\n那我先去吧。model\n",
    "ab  ab  ab  ",                       # whitespace counts as characters: "ab  " x 3
    "前言。我知道了！我知道了！我知道了！后记。",  # the loop may sit in the middle
])
def test_loops(text):
    assert loops(text)


@pytest.mark.parametrize("text", [
    "",
    "皇上，臣妾做不到啊！",
    "我娘娘，我娘娘，",                   # exactly 2 repeats: below the threshold
    "皇上，皇上，皇上，",                  # 3 x a 3-character phrase: "皇上，皇" occurs twice, overlapping
    "皇上，" * 5,                         # 15 characters: windows at 0 and 6 only (12 would need 16)
    "哈哈哈哈哈哈",                        # 6 characters: "哈哈哈哈" once without overlap
    "哈" * 11,                            # one short of 3 x 4
    "去吧！去吧！去吧！去吧！",              # 4 x a 3-character phrase: "去吧！去" at 0 and 6 only
    "abababab",                           # "abab" occurs 3 times only with overlap (0, 2, 4)
    "我娘娘，我娘娘，我娘娘",               # third "我娘娘，" lost its comma: "我娘娘，" x 2, "娘娘，我" x 2
])
def test_does_not_loop(text):
    assert not loops(text)


def test_overlap_is_not_counted_but_non_overlap_is():
    assert not loops("aaaaaaaaaaa")  # 11 a's: "aaaa" at 0, 4, then 8 needs 12 characters
    assert loops("aaaaaaaaaaaa")
    assert repeated_substring("xyzw" * 3) == "xyzw"
    assert repeated_substring("abababab") is None


def test_loop_thresholds_are_parameters():
    assert loops("皇上，皇上，皇上，", min_chars=3)
    assert loops("我娘娘，我娘娘，", min_repeats=2)
    assert not loops("我娘娘，我娘娘，我娘娘，", min_chars=5)  # 5-character windows recur only twice
    with pytest.raises(DaugError, match="min_chars"):
        loops("abc", min_chars=0)
    with pytest.raises(DaugError, match="min_repeats"):
        loops("abc", min_repeats=1)


def _brute_force_loops(text: str, min_chars: int, min_repeats: int) -> bool:
    """The definition as written: any substring of length >= min_chars, non-overlapping count."""
    for length in range(min_chars, len(text) + 1):
        for i in range(len(text) - length + 1):
            if text.count(text[i:i + length]) >= min_repeats:  # str.count: non-overlapping
                return True
    return False


def test_fixed_length_shortcut_equals_the_definition():
    rng = random.Random(0)
    for _ in range(1500):
        text = "".join(rng.choice("ab，") for _ in range(rng.randint(0, 22)))
        m, r = rng.randint(1, 5), rng.randint(2, 4)
        assert loops(text, m, r) == _brute_force_loops(text, m, r), (text, m, r)


def test_loops_is_fast_on_long_replies():
    rng = random.Random(1)
    text = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(500))  # no loop: a full scan
    assert not loops(text)
    start = time.perf_counter()
    for _ in range(200):
        loops(text)
    assert (time.perf_counter() - start) / 200 < 0.005


# --- leaks: markers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "此刻，我先去吧。model",
    "此刻，我先去吧。model\n好的",
    "你真好！xcuser\n你真好！",            # glued to junk, still at the line end
    "практикаuser",
    "model\n我来了",
    "  user: 你好",
    "好的 assistant  ",
    "system\n",
    "好的<end_of_turn>",
    "<start_of_turn>model\n好的",
    "好的<eos>", "<bos>好的", "好<pad><pad>", "好的</s>", "<unused42>",
    "好的<|im_end|>", "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>好",
    "[INST] 你好 [/INST]", "<<SYS>>",
])
def test_marker_text_is_detected(text):
    assert marker(text)
    assert leaks(text, REF)


@pytest.mark.parametrize("text", [
    "",
    "皇上，臣妾做不到啊！",
    "the model is good",                  # role word mid-line
    "models\nusers",                      # line start: followed by a letter; line end: "users"
    "Model\nUser",                        # markers are lower case
    "a < b > c",                          # angle brackets alone are not a token
    "<start>", "<unused>", "<||>",
])
def test_no_marker(text):
    assert not marker(text)


def test_marker_does_not_depend_on_the_reference():
    assert leaks("好的。model", "我是model。")  # Latin is allowed by the reference, the marker is not


# --- leaks: scripts ------------------------------------------------------------------------------------

def test_scripts_of_letters():
    assert scripts("皇上，臣妾") == {"Han"}
    assert scripts("iatrics") == {"Latin"}
    assert scripts("ＡＢＣ") == {"Latin"}  # full-width, through NFKC
    assert scripts("практика") == {"Cyrillic"}
    assert scripts("αβγ") == {"Greek"}
    assert scripts("안녕") == {"Hangul"}
    assert scripts("ありがとう、カタカナー") == {"Kana"}
    assert scripts("مرحبا") == {"Arabic"} and scripts("שלום") == {"Hebrew"}
    assert scripts("สวัสดี") == {"Thai"} and scripts("नमस्ते") == {"Devanagari"}
    assert scripts("𒌒") == {"Cuneiform"}
    assert scripts("𠀀々") == {"Han"}  # CJK extension B, ideographic iteration mark
    assert scripts("µª") == {"Greek", "Latin"}  # micro sign = mu, feminine ordinal = a (NFKC)


def test_digits_punctuation_symbols_whitespace_are_common():
    common = "0123456789０１２①Ⅻ，。？！…—「」《》~!?.,;:()[]+-*/%$¥€@#&\"' \t\u3000😀🎉♥→ʼˇ"
    assert scripts(common) == set()
    assert not leaks(common, "皇上。")
    assert not leaks("皇上，123！😀", "臣妾做不到。")


@pytest.mark.parametrize("prediction", ["呢？ iatrics", "你真好！xc", "好的 практика", "好。안녕", "好ありがとう", "好𒌒"])
def test_foreign_script_leaks(prediction):
    assert foreign_scripts(prediction, REF)
    assert leaks(prediction, REF)


def test_script_of_the_reference_is_allowed():
    assert not leaks("我爱打DOTA，好玩！", "来一局LOL吗？")  # Latin in the reference => Latin allowed
    assert foreign_scripts("我爱打DOTA，好玩！", "来一局LOL吗？") == set()
    assert foreign_scripts("Ok, 好的 спасибо", "来一局LOL吗？") == {"Cyrillic"}
    # a reference without letters (Paimon's "……") is no evidence of a script: nothing is foreign to it
    assert foreign_scripts("好的", "") == set() and foreign_scripts("好的 ok", "……！") == set()
    assert not leaks("好的", "……") and leaks("好的<end_of_turn>", "……")
    assert not leaks("", REF) and not leaks("……！", REF)


# --- empty, newline ------------------------------------------------------------------------------

def test_empty():
    assert empty("") and empty(" ") and empty("\n\t ") and empty("\u3000")
    assert not empty("。") and not empty(" 好 ") and not empty("\u200b")  # zero-width space is not whitespace


def test_newline():
    assert newline("好的。\n好的。", REF) and newline("好的。\r", REF) and newline("好\u2028的", REF)
    assert not newline("好的。好的。", REF)
    assert not newline("好的。\n好的。", "第一行\n第二行")  # the reference has one too
    assert not newline("", "")


def test_line_breaks_are_exactly_splitlines_boundaries():
    found = {chr(c) for c in range(sys.maxunicode + 1) if len(f"a{chr(c)}b".splitlines()) == 2}
    assert found == LINE_BREAKS


# --- flags, summary ------------------------------------------------------------------------------

def test_flags_of_one_example():
    f = flags("我娘娘，我娘娘，我娘娘，model\n", REF, reply_tokens=48, max_new_tokens=48)
    assert list(f) == list(FLAGS)
    assert f == {"at_limit": True, "loops": True, "marker": True, "foreign_script": True, "leaks": True,
                 "empty": False, "newline": True}
    assert not any(flags("皇上恕罪。", REF, 5, 48).values())
    assert flags("  ", REF, 1, 48) == {**dict.fromkeys(FLAGS, False), "empty": True}


ROWS = [
    {"reference": "好的。", "prediction": "好的。", "reply_tokens": 3},                       # clean
    {"reference": "去蒙德城吧！", "prediction": "出发吧！出发吧！出发吧！", "reply_tokens": 8},   # loops, at limit
    {"reference": "嗯。", "prediction": "", "reply_tokens": 0},                              # empty
    {"reference": "派蒙饿了。", "prediction": "吃饭吧。model\n走", "reply_tokens": 6},          # marker+latin, newline
]


def test_summary_arithmetic():
    s = summary(ROWS, max_new_tokens=8)
    assert s["n"] == 4
    assert s["count"] == {"at_limit": 1, "loops": 1, "marker": 1, "foreign_script": 1, "leaks": 1,
                          "empty": 1, "newline": 1}
    assert s["share"] == dict.fromkeys(FLAGS, 0.25)
    # replies 3 + 12 + 0 + 11 = 26 characters (the line break is one), references 3 + 6 + 2 + 5 = 16
    assert s["length_ratio"] == round(26 / 16, 6) == 1.625
    assert s["mean_reply_chars"] == 6.5 and s["mean_reference_chars"] == 4.0
    assert s["length_ratio"] == round(s["mean_reply_chars"] / s["mean_reference_chars"], 6)
    assert (s["loop_min_chars"], s["loop_min_repeats"]) == (4, 3)


def test_summary_rounds_shares_to_six_decimals():
    rows = [ROWS[1]] + [ROWS[0]] * 2
    s = summary(rows, max_new_tokens=8)
    assert s["share"]["loops"] == 0.333333 and s["count"]["loops"] == 1
    assert s["length_ratio"] == round(18 / 12, 6)
    assert all(0 <= v <= 1 for v in s["share"].values())


def test_summary_guards_zero():
    s = summary([], max_new_tokens=8)
    assert s["n"] == 0 and s["length_ratio"] is None and s["mean_reply_chars"] is None
    assert s["share"] == dict.fromkeys(FLAGS, None) and s["count"] == dict.fromkeys(FLAGS, 0)
    s = summary([{"reference": "", "prediction": "好", "reply_tokens": 1}], max_new_tokens=8)
    assert s["length_ratio"] is None and s["mean_reference_chars"] == 0.0 and s["mean_reply_chars"] == 1.0


@pytest.mark.parametrize("row, message", [
    ({"reference": "好", "prediction": None, "reply_tokens": 1}, "record 2: needs string prediction"),
    ({"reference": "好", "prediction": "好"}, "record 2: at_limit: reply_tokens"),
    ("好", "record 2: needs string"),
])
def test_summary_names_the_bad_record(row, message):
    with pytest.raises(DaugError, match=f"^eval/x.predictions.jsonl: {message}"):
        summary([ROWS[0], row], max_new_tokens=8, source="eval/x.predictions.jsonl")


# --- top opening (a stock phrase) -----------------------------------------------------------------

def test_top_opening_counts_the_most_common_first_five_characters():
    replies = ["你说的没错，我就是想知道。", "你说的没错，我只是想问。", " 你说的没错！", "嗯，我之前也想过。", "好的。"]
    assert top_opening(replies) == ("你说的没错", 3)  # whitespace stripped; "好的。" is too short to count
    assert top_opening(["好的。", "嗯"]) == (None, 0)
    assert top_opening(["甲乙丙丁戊一", "子丑寅卯辰二"]) == ("甲乙丙丁戊", 1)  # a tie: the first one


def test_summary_reports_the_share_of_the_top_opening_over_all_replies():
    rows = [{"reference": "派蒙饿了。", "prediction": p, "reply_tokens": 5}
            for p in ("你说的没错，吃饭吧。", "你说的没错，走吧。", "出发吧！", "蒙德城好美啊。")]
    s = summary(rows, max_new_tokens=64)
    assert (s["top_opening"], s["top_opening_share"]) == ("你说的没错", 0.5)  # 2 of 4, the short one counted in n
    assert (summary([], max_new_tokens=8)["top_opening"], summary([], max_new_tokens=8)["top_opening_share"]) == (None, None)
