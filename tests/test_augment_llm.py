"""Model-based methods (bt, pg, refine, expand): determinism across batch sizes on the tiny local
model, accounting on bad input, bad params, and what each method sends and keeps (through the
openai backend against a local test server, whose replies the tests control)."""
from __future__ import annotations

import pytest

from daug import DaugError
from daug.augment._llm import clean, degenerate
from daug.augment.apply import augment_records, make_method
from daug.io import dumps
from tests.chat_server import ChatServer

LLM_METHODS = ["bt", "pg", "refine", "expand"]
DATASET = {"name": "paimon", "character": "派蒙", "system_prompt": "现在你要扮演派蒙"}
RECORDS = [
    {"id": "r1", "instruction": "我们接下来去哪里？", "input": "", "output": "去蒙德城吧！"},
    {"id": "r2", "instruction": "你饿了吗？", "input": "", "output": "派蒙想吃甜甜花酿鸡！"},
    {"id": "r3", "instruction": "这是什么地方", "input": "", "output": "好像是一座遗迹…"},
]
BAD = [
    {"id": "empty", "instruction": "", "input": "", "output": ""},
    {"id": "blank", "instruction": "   ", "input": "", "output": "\t"},
    {"id": "emoji", "instruction": "😀😀？", "input": "", "output": "🎉"},
    {"id": "english", "instruction": "Where are we going?", "input": "", "output": "To Mondstadt!"},
    {"id": "long", "instruction": "长" * 10_000, "input": "", "output": "好。"},
]


def local(tiny_model_dir, batch_size=4):
    return {"local": {"model": str(tiny_model_dir), "batch_size": batch_size, "max_new_tokens": 6}}


def run(method, records=RECORDS, params=None, **kw):
    kw.setdefault("dataset", DATASET)
    return augment_records(records, method, params or {}, n_aug=kw.pop("n_aug", 1), seed=0, **kw)


# --- the tiny local model ------------------------------------------------------------------------------

# the tiny random model's next-token distribution is nearly flat over 262k tokens: top_p < 1 would
# only test the slow path of the nucleus search (covered in test_generate), so sample from it all
FULL = {"pg": {"top_p": 1.0}, "expand": {"top_p": 1.0}}


@pytest.mark.parametrize("method", LLM_METHODS)
def test_output_does_not_depend_on_batch_sizes(tiny_model_dir, method):
    a, stats = run(method, params=FULL.get(method), backends=local(tiny_model_dir, 1), batch_size=1, n_aug=2)
    b, _ = run(method, params=FULL.get(method), backends=local(tiny_model_dir, 5), batch_size=4, n_aug=2)
    assert dumps(a) == dumps(b)
    assert stats["n_output"] == len(RECORDS) * 3
    backend = a[1]["backend"]
    assert backend["name"] == "local" and backend["architecture"] == "Gemma3ForCausalLM"


@pytest.mark.parametrize("method", LLM_METHODS)
def test_bad_input_is_kept_and_counted(tiny_model_dir, method):
    out, stats = run(method, BAD, params=FULL.get(method), backends=local(tiny_model_dir))
    assert stats["n_output"] == 2 * len(BAD)
    by_id = {r["id"]: r for r in out}
    for rid in ("empty", "blank"):  # nothing to rewrite: the copy is flagged, not retried
        assert by_id[f"{rid}/{method}/0"]["unchanged"]
    assert all(isinstance(r[f], str) for r in out for f in ("instruction", "input", "output"))


# --- params -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, params, message", [
    ("pg", {"intensity": 1.5}, r"intensity must be in \[0, 1\]"),
    ("pg", {"intensty": 0.5}, "unknown parameter 'intensty'; valid parameters: backend, intensity, top_p"),
    ("bt", {"pivot": "xx"}, "unknown pivot 'xx'; choose one of: en, ja"),
    ("expand", {"temperature": -1.0}, "temperature"),
    ("refine", {"backend": "gpt"}, "unknown backend 'gpt'; choose one of: local, marian, openai"),
])
def test_bad_params_fail_before_any_work(method, params, message):
    with pytest.raises(DaugError, match=message):
        run(method, params=params, backends={})


@pytest.mark.parametrize("method", ["pg", "refine", "expand"])
def test_translation_only_backend_is_refused_for_prompting_methods(method):
    with pytest.raises(DaugError, match="only translates"):
        make_method(method, {"backend": "marian"}, backends={"marian": {}})


def test_marian_accepts_bt_but_only_an_english_pivot():
    assert make_method("bt", {"backend": "marian"}).backend.name == "marian"
    with pytest.raises(DaugError, match="cannot translate zh <-> ja"):
        make_method("bt", {"backend": "marian", "pivot": "ja"})


# --- what the methods send and keep (openai backend, scripted local server) ------------------------------

def served(script, method, params=None, records=RECORDS, tmp_path=None, **kw):
    with ChatServer(lambda n, body: script(body)) as server:
        backends = {"openai": {"base_url": server.url, "model": "m", "backoff": 0.01, "concurrency": 2,
                               "cache_dir": str(tmp_path / "cache")}}
        out, stats = run(method, records, {"backend": "openai", **(params or {})}, backends=backends, **kw)
    return out, stats, server.requests


def query(body):
    return [m["content"] for m in body["messages"] if m["role"] == "user"][-1]


def system(body):
    return body["messages"][0]["content"]


def test_copies_empty_and_looping_replies_fall_back_to_unchanged(tmp_path):
    replies = {"我们接下来去哪里？": "我们接下来去哪里？", "你饿了吗？": "", "这是什么地方": "地方地方地方" * 5}
    out, stats, _ = served(lambda b: replies.get(query(b), query(b)), "refine", tmp_path=tmp_path)
    assert stats["n_unchanged"] == 3
    assert [r["unchanged"] for r in out if r["method"] == "refine"] == [True, True, True]


def test_pg_strips_label_echoes_and_extra_lines(tmp_path):
    out, stats, requests = served(lambda b: f"改写：「{query(b)}呢」\n原句：下一句", "pg", {"intensity": 0.2},
                                  tmp_path=tmp_path)
    first = next(r for r in out if r["method"] == "pg")
    assert first["instruction"] == "我们接下来去哪里？呢" and first["output"] == "去蒙德城吧！呢"
    assert {r["body"]["temperature"] for r in requests} == {0.2}  # intensity sets the temperature
    assert stats["n_unchanged"] == 0


def test_pg_intensity_changes_the_prompt(tmp_path):
    prompts = set()
    for intensity in (0.0, 0.5, 1.0):
        _, _, requests = served(query, "pg", {"intensity": intensity}, tmp_path=tmp_path / str(intensity))
        prompts.add(system(requests[0]["body"]))
    assert len(prompts) == 3


def test_bt_goes_through_the_pivot_and_back(tmp_path):
    def translate(body):
        return "Where do we go next?" if "翻译成英文" in system(body) else "下一步我们去哪儿？"

    out, _, requests = served(translate, "bt", records=RECORDS[:1], tmp_path=tmp_path)
    assert [system(r["body"]) for r in requests].count("把中文翻译成英文。") == 2  # instruction and output
    aug = out[1]
    assert aug["instruction"] == aug["output"] == "下一步我们去哪儿？" and not aug["unchanged"]
    assert any(query(r["body"]) == "Where do we go next?" for r in requests)


def test_refine_rewrites_only_the_instruction(tmp_path):
    out, _, _ = served(lambda b: "请具体说说：" + query(b), "refine", tmp_path=tmp_path)
    for src, aug in zip(RECORDS, [r for r in out if r["method"] == "refine"]):
        assert aug["instruction"] == "请具体说说：" + src["instruction"] and aug["output"] == src["output"]


def test_expand_asks_a_new_question_and_answers_in_character(tmp_path):
    def script(body):
        return "同类新句：今天吃什么？" if "仿照例句" in system(body) else "当然是甜甜花酿鸡！"

    out, _, requests = served(script, "expand", records=RECORDS[:1], tmp_path=tmp_path)
    assert out[1]["instruction"] == "今天吃什么？"  # the echoed label is stripped
    assert out[1]["output"] == "当然是甜甜花酿鸡！" and out[1]["input"] == ""
    answer = next(r["body"] for r in requests if "仿照例句" not in system(r["body"]))
    assert system(answer) == DATASET["system_prompt"]
    assert answer["messages"][1:3] == [{"role": "user", "content": RECORDS[0]["instruction"]},
                                       {"role": "assistant", "content": RECORDS[0]["output"]}]


def test_a_failing_endpoint_fails_the_run_with_a_clear_error(tmp_path):
    with pytest.raises(DaugError, match="gave up after"):
        served(lambda b: 503, "pg", {}, tmp_path=tmp_path)


# --- cleaning ----------------------------------------------------------------------------------------

def test_clean():
    assert clean("改写：你好呀", "你好", ("原句", "改写")) == "你好呀"
    assert clean("“你好呀”", "你好", ()) == "你好呀"
    assert clean("  你好 ", "你好", ()) is None  # a copy
    assert clean("", "你好", ()) is None and clean(None, "你好", ()) is None
    assert degenerate("甄嬛的姐姐，" * 6) and not degenerate("甄嬛今天去御花园散步，看见了一树梅花开得正好。")
    assert clean("您好。", "你好", (), {"您好。"}) is None  # a copied few-shot example is an echo, not a rewrite
    # letters of a script the source does not use are the small model drifting, not a rewrite
    assert clean("我忍着你，你还想干嘛？納得user", "朕忍到这一刻", ()) is None
    assert clean("我们去 Mondstadt 吧", "我们去 Mondstadt", ()) == "我们去 Mondstadt 吧"
    assert clean("Hello", "", (), same_scripts=False) == "Hello"
