"""LLM backends: the registry, the local backend on the tiny model, and the openai backend against a
local test server (retries, backoff, timeouts, resume from its checkpoint, the key never written)."""
from __future__ import annotations

import logging

import pytest

from daug import DaugError
from daug.backends import BACKENDS, Task, get_backend
from daug.backends.base import translation_task
from tests.chat_server import ChatServer

KEY = "sk-test-DO-NOT-WRITE-4f1c9e"


def tasks(n: int) -> list[Task]:
    return [Task("把原句换一种说法。", f"第{i}句：今天天气很好。", (("你好。", "您好。"),), ("原句", "改写")) for i in range(n)]


def openai(server, tmp_path, **extra):
    return get_backend("openai", {"base_url": server.url, "model": "test-model", "api_key_env": "DAUG_TEST_KEY",
                                  "cache_dir": str(tmp_path / "cache"), "backoff": 0.01, "concurrency": 1, **extra})


# --- registry ----------------------------------------------------------------------------------------

def test_registry_has_the_three_backends():
    assert {"local", "marian", "openai"} <= set(BACKENDS)


def test_unknown_backend_lists_valid_names():
    with pytest.raises(DaugError, match=r"unknown backend 'gpt'.*local, marian, openai"):
        get_backend("gpt", {})


def test_registry_accepts_only_subclasses_of_its_base():
    from daug.backends import register
    from daug.augment import register as register_method
    from daug.backends.base import Backend

    class NotABackend:
        name = "stray"

    with pytest.raises(DaugError, match=r"cannot register .*NotABackend.* as a backend: not a subclass of Backend"):
        register(NotABackend)

    class Nameless(Backend):
        pass

    with pytest.raises(DaugError, match=r"Nameless as a backend: it sets no `name`"):
        register(Nameless)
    with pytest.raises(DaugError, match=r"as a augmentation method: not a subclass of Method"):
        register_method(type("local", (Backend,), {"name": "local2"}))
    assert "stray" not in BACKENDS and "local2" not in BACKENDS


def test_backend_params_keep_their_types():
    with pytest.raises(DaugError, match=r"backend 'local': parameter 'batch_size' must be int, got True"):
        get_backend("local", {"batch_size": True})
    assert get_backend("openai", {"timeout": 30}).params["timeout"] == 30.0  # an int is a float setting


def test_bad_backend_params_fail_before_any_work():
    with pytest.raises(DaugError, match=r"unknown parameter 'modle'.*valid parameters: .*model"):
        get_backend("local", {"modle": "x"})
    with pytest.raises(DaugError, match="prompt_style"):
        get_backend("local", {"prompt_style": "chat"})
    with pytest.raises(DaugError, match="base_url"):
        get_backend("openai", {"base_url": "localhost:8000"})
    with pytest.raises(DaugError, match="only translates"):
        get_backend("marian", {}).complete(tasks(1), [0])


def test_task_renders_as_plain_text_and_as_chat_messages():
    task = translation_task("你好。", "zh", "en")
    assert task.plain().endswith("中文：你好。\n英文：")
    msgs = task.messages()
    assert msgs[0]["role"] == "system" and msgs[-1] == {"role": "user", "content": "你好。"}
    assert [m["role"] for m in msgs[1:-1]] == ["user", "assistant"] * len(task.examples)
    with pytest.raises(DaugError, match="choose from: zh, en, ja"):
        translation_task("x", "zh", "de")


# --- local -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", ["plain", "turns"])
def test_local_backend_is_batch_independent_and_one_line(tiny_model_dir, style):
    ts = tasks(5)
    seeds = list(range(5))
    runs = []
    for batch_size in (1, 3):
        backend = get_backend("local", {"model": str(tiny_model_dir), "batch_size": batch_size, "max_new_tokens": 6,
                                        "prompt_style": style})
        runs.append(backend.complete(ts, seeds, temperature=0.8))
        assert backend.describe() == {"name": "local", "model": str(tiny_model_dir), "prompt_style": style,
                                      "architecture": "Gemma3ForCausalLM"}
    assert runs[0] == runs[1]
    assert len(runs[0]) == 5 and all("\n" not in r for r in runs[0])
    assert backend.reply_budget([]) == [] and backend.complete([], []) == []
    assert backend.reply_budget(["今天天气很好。", "好" * 200]) == [min(6, 2 * backend.token_counts(["今天天气很好。"])[0] + 8), 6]


# --- openai ------------------------------------------------------------------------------------------

def test_openai_sends_chat_requests_and_keeps_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DAUG_TEST_KEY", KEY)
    with ChatServer() as server:
        replies = openai(server, tmp_path).complete(tasks(3), [1, 2, 3], temperature=0.5, max_new_tokens=[10, 20, 30])
    assert replies == [f"第{i}句：今天天气很好。呀" for i in range(3)]
    first = next(r for r in server.requests if r["body"]["messages"][-1]["content"].startswith("第0句"))
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["Authorization"] == f"Bearer {KEY}"
    body = first["body"]
    assert body["model"] == "test-model" and body["temperature"] == 0.5 and body["max_tokens"] == 10
    assert body["messages"][0] == {"role": "system", "content": "把原句换一种说法。"}


def test_openai_without_key_sends_no_authorization(tmp_path, monkeypatch):
    monkeypatch.delenv("DAUG_TEST_KEY", raising=False)
    with ChatServer() as server:
        openai(server, tmp_path).complete(tasks(1), [0])
    assert "Authorization" not in server.requests[0]["headers"]


def test_openai_retries_500_and_timeouts_with_backoff(tmp_path):
    script = {1: 500, 2: ("sleep", 1.0, "太晚了"), 3: 503}
    with ChatServer(lambda n, body: script.get(n, "好的")) as server:
        assert openai(server, tmp_path, timeout=0.3, max_retries=3).complete(tasks(1), [0]) == ["好的"]
    assert len(server.requests) == 4


def test_openai_gives_up_with_a_clear_error(tmp_path):
    with ChatServer(lambda n, body: 500) as server:
        with pytest.raises(DaugError, match=r"gave up after 3 attempts \(HTTP 500"):
            openai(server, tmp_path, max_retries=2).complete(tasks(1), [0])
    assert len(server.requests) == 3  # bounded: no retry loop


def test_openai_auth_failure_is_not_retried_and_names_the_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("DAUG_TEST_KEY", KEY)
    with ChatServer(lambda n, body: 401) as server:
        with pytest.raises(DaugError, match="DAUG_TEST_KEY") as err:
            openai(server, tmp_path).complete(tasks(1), [0])
    assert len(server.requests) == 1 and KEY not in str(err.value)


def test_openai_resumes_from_its_checkpoint(tmp_path):
    ts, seeds = tasks(8), list(range(8))
    # first run: the endpoint dies after 3 answers; the run fails after its retries
    with ChatServer(lambda n, body: echo(body) if n <= 3 else 500) as server:
        with pytest.raises(DaugError, match="gave up"):
            openai(server, tmp_path, max_retries=1).complete(ts, seeds)
    # second run: only the 5 missing requests are sent, and the result equals an uninterrupted run
    with ChatServer(lambda n, body: echo(body)) as server:
        resumed = openai(server, tmp_path).complete(ts, seeds)
    assert len(server.requests) == 5
    with ChatServer(lambda n, body: echo(body)) as server:
        fresh = openai(server, tmp_path / "fresh").complete(ts, seeds)
    assert resumed == fresh and len(set(fresh)) == 8
    # a third run pays nothing
    with ChatServer(lambda n, body: 500) as server:
        assert openai(server, tmp_path).complete(ts, seeds) == fresh
    assert server.requests == []


def echo(body):
    return [m["content"] for m in body["messages"] if m["role"] == "user"][-1] + "呀"


def test_api_key_is_never_written_nor_logged(tmp_path, monkeypatch, capsys, caplog):
    """End to end through daug.augment.apply: output, metrics, cache and logs hold no key."""
    from daug.augment.apply import augment_file
    from daug.io import write_jsonl

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DAUG_TEST_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    write_jsonl("in.jsonl", [{"id": f"r{i}", "instruction": f"今天去哪里{i}？", "input": "", "output": "去城里。"}
                             for i in range(3)])
    with ChatServer() as server:
        backends = {"openai": {"base_url": server.url, "model": "m", "api_key_env": "DAUG_TEST_KEY", "backoff": 0.01}}
        doc = augment_file("in.jsonl", "out.jsonl", "pg", {"backend": "openai"}, backends=backends,
                           dataset={"name": "t", "character": "派蒙", "system_prompt": "扮演派蒙"},
                           metrics="metrics.json")
    assert server.requests and all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in server.requests)
    assert doc["counts"]["n_unchanged"] == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"out.jsonl", "metrics.json", "m.jsonl"} <= {p.name for p in written}
    for path in written:
        assert KEY not in path.read_text(encoding="utf-8", errors="replace"), path
    out = capsys.readouterr()
    assert KEY not in out.out + out.err + caplog.text


def test_openai_failure_stops_queued_requests(tmp_path):
    with ChatServer(lambda n, body: 500) as server:
        with pytest.raises(DaugError, match="gave up"):
            openai(server, tmp_path, max_retries=1, concurrency=2).complete(tasks(20), list(range(20)))
    assert len(server.requests) <= 2 * 2 * 2  # at most the requests in flight, with their retries


# --- marian ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    """A tiny random MarianMT model with a real SentencePiece tokenizer trained on a few lines."""
    import io
    import json

    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    out = tmp_path_factory.mktemp("marian")
    lines = ["你今天怎么这么早就来了？", "我们先去城里看看吧。", "Why did you come so early today?",
             "Let's go to the city first.", "派蒙想吃甜甜花酿鸡！", "Where are we going next, traveler?"] * 20
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=proto, vocab_size=80,
                                   character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    for name in ("source.spm", "target.spm"):
        (out / name).write_bytes(proto.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab["<pad>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    config = MarianConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=64, pad_token_id=vocab["<pad>"], eos_token_id=vocab["</s>"],
                          decoder_start_token_id=vocab["<pad>"])
    MarianMTModel(config).save_pretrained(out, safe_serialization=True)
    MarianTokenizer(str(out / "source.spm"), str(out / "target.spm"), str(out / "vocab.json")).save_pretrained(out)
    return out


def test_marian_translates_in_batches_independently(marian_dir):
    texts = ["你好", "我们先去城里看看吧。", "派蒙", "旅行者，我们接下来去哪里？"]
    runs = []
    for batch_size in (1, 3):
        backend = get_backend("marian", {"zh_en": str(marian_dir), "en_zh": str(marian_dir), "max_new_tokens": 5,
                                         "batch_size": batch_size})
        runs.append((backend.translate(texts, "zh", "en"),
                     backend.translate(texts, "zh", "en", seeds=[1, 2, 3, 4], temperature=1.0)))
    assert runs[0] == runs[1]
    greedy, sampled = runs[0]
    assert len(greedy) == len(sampled) == 4 and greedy != sampled
    assert backend.supports("zh", "en") and not backend.supports("zh", "ja")
    with pytest.raises(DaugError, match="zh->en and en->zh only"):
        backend.translate(texts, "zh", "ja")


def test_marian_refuses_pickle_only_checkpoints(marian_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(marian_dir, tmp_path / "m")
    import torch

    torch.save(load_file(tmp_path / "m" / "model.safetensors"), tmp_path / "m" / "pytorch_model.bin")
    (tmp_path / "m" / "model.safetensors").unlink()
    backend = get_backend("marian", {"zh_en": str(tmp_path / "m")})
    with pytest.raises(DaugError, match="only safetensors"):
        backend.translate(["你好"], "zh", "en")
