"""Shared fixtures. The tiny model is the smoke profile's: a random-initialised Gemma 3 with the
real Gemma tokenizer, built once per test session by the real base-model code path."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from daug.params import resolve

REPO = Path(__file__).resolve().parents[1]
# Tests never reach a model hub: a hub id must fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one thread is several times faster than two on a shared 2-core machine
    (a module that trains the tiny model uses it: `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_params() -> dict:
    return resolve("smoke", REPO / "params")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smoke_params) -> Path:
    """A saved tiny Gemma 3 model + tokenizer (what `base_model` writes on the smoke profile)."""
    from daug.basemodel import build

    out = tmp_path_factory.mktemp("tiny-model") / "base"
    build(smoke_params["model"], out, seed=0)
    return out


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from daug.basemodel import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def zhenhuan_train(tmp_path_factory) -> Path:
    """The real Zhen Huan training split, prepared from data/raw (a clean checkout has no data/prepared)."""
    from daug.prepare import prepare_file

    out = tmp_path_factory.mktemp("prepared") / "zhenhuan"
    prepare_file(REPO / "data/raw/zhenhuan/huanhuan.json", out, "zhenhuan")
    return out / "train.jsonl"
