import json

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


def test_4bit_loads_nf4_double_quantised_on_cpu_computing_in_the_params_dtype(tiny_model_dir):
    import bitsandbytes as bnb
    import torch
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    full = load_model(tiny_model_dir)
    model = load_model(tiny_model_dir, "bfloat16", load_in_4bit=True)
    assert model.is_loaded_in_4bit and {p.device.type for p in model.parameters()} == {"cpu"}
    linears = {n for n, m in full.named_modules() if isinstance(m, torch.nn.Linear)}
    nf4 = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert set(nf4) == linears - {"lm_head"}  # every projection; the head (tied to the embeddings) stays
    for name, layer in nf4.items():
        state = layer.weight.quant_state
        assert state.quant_type == "nf4" and state.nested and layer.compute_dtype == torch.bfloat16, name
        # the codes of this layer's own weights: what bitsandbytes makes of them in the params dtype
        codes, expected = quantize_4bit(full.get_submodule(name).weight.detach().to(torch.bfloat16),
                                        quant_type="nf4", compress_statistics=True)
        torch.testing.assert_close(dequantize_4bit(layer.weight.data, state), dequantize_4bit(codes, expected),
                                   rtol=0, atol=0, msg=name)


def test_4bit_layers_keep_their_gradient_after_an_eval_pass(tiny_model_dir):
    """Validation (eval mode, no grad) runs before and between training steps; bitsandbytes must not
    switch the layers to its inference-only CPU kernel then (see basemodel._no_cpu_repacking)."""
    import torch
    from bitsandbytes.functional import dequantize_4bit

    model = load_model(tiny_model_dir, "bfloat16", load_in_4bit=True)
    layer = model.model.layers[0].self_attn.o_proj  # LoRA on q/v reaches the loss only through it
    x = torch.randn(3, layer.in_features, dtype=torch.bfloat16)
    model.eval()
    with torch.no_grad():
        before = layer(x)
    model.train()
    x.requires_grad_(True)
    out = layer(x)
    out.float().sum().backward()
    weight = dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    torch.testing.assert_close(out.detach(), before)
    torch.testing.assert_close(out.detach(), x.detach() @ weight.T, rtol=0.02, atol=0.02)
    assert x.grad is not None
    torch.testing.assert_close(x.grad, weight.sum(0).expand_as(x), rtol=0.02, atol=0.02)
