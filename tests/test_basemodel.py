import json

import pytest

from daug import DaugError
from daug.basemodel import load_model, load_tokenizer
from daug.chat import messages, prompt_text, stop_token_ids


def test_tiny_model_is_a_plain_safetensors_gemma3(tiny_model_dir):
    files = {p.name for p in tiny_model_dir.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".gguf")) for f in files)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"]
    assert "quantization_config" not in config
    model = load_model(tiny_model_dir)
    assert model.config.vocab_size == len(load_tokenizer(tiny_model_dir))


def test_gemma_turn_format_when_tokenizer_has_no_chat_template(tokenizer):
    assert not tokenizer.chat_template
    text = prompt_text(tokenizer, messages({"instruction": "你好", "input": ""}, "现在你要扮演甄嬛"))
    assert text == "<start_of_turn>user\n现在你要扮演甄嬛\n\n你好<end_of_turn>\n<start_of_turn>model\n"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and 105 in ids and 106 in ids  # markers are single tokens
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in stop_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<start_of_turn>") in stop_token_ids(tokenizer)


def test_4bit_needs_cuda(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: 4-bit loading is exercised on GPU machines")
    with pytest.raises(DaugError, match="CUDA"):
        load_model(tiny_model_dir, load_in_4bit=True)
