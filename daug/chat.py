"""Chat formatting shared by training, evaluation and the local LLM backend.

The model's own chat template is used when its tokenizer has one (Llama 3 Instruct does). The
offline Gemma 3 270M is the pretrained model and ships none, so we fall back to Gemma's turn
format, whose `<start_of_turn>`/`<end_of_turn>` markers are in its vocabulary. Gemma has no
system role: the system prompt opens the first user turn, as Gemma's own template does.
"""
from __future__ import annotations

GEMMA_TURN = "<start_of_turn>{role}\n{content}<end_of_turn>\n"
GEMMA_GENERATION_PROMPT = "<start_of_turn>model\n"
GEMMA_END = "<end_of_turn>"


def user_text(record: dict) -> str:
    """What the character is told: the instruction, then the optional input on its own line."""
    extra = record.get("input") or ""
    return f"{record['instruction']}\n{extra}" if extra else record["instruction"]


def messages(record: dict, system_prompt: str | None = None) -> list[dict]:
    out = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return out + [{"role": "user", "content": user_text(record)}]


def _gemma_render(msgs: list[dict]) -> str:
    system = [m["content"] for m in msgs if m["role"] == "system"]
    text = ""
    for i, m in enumerate(m for m in msgs if m["role"] != "system"):
        content = m["content"]
        if i == 0 and system:
            content = "\n\n".join(system + [content])
        role = "model" if m["role"] == "assistant" else m["role"]
        text += GEMMA_TURN.format(role=role, content=content)
    return text


def prompt_text(tokenizer, msgs: list[dict]) -> str:
    """The prompt string up to where the model's reply starts (no BOS: the tokenizer adds it)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        bos = tokenizer.bos_token
        return text[len(bos):] if bos and text.startswith(bos) else text
    return _gemma_render(msgs) + GEMMA_GENERATION_PROMPT


def reply_suffix(tokenizer) -> str:
    """What closes a reply in this format (appended to training targets)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.eos_token or ""
    return GEMMA_END


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end generation: EOS, the end-of-turn marker, and the start of a new turn
    (a reply never contains one; a briefly tuned model sometimes opens the next turn instead of
    closing its own), for whichever of these markers the vocabulary has."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for marker in (GEMMA_END, "<start_of_turn>", "<|eot_id|>", "<|start_header_id|>", "<|im_end|>", "<|im_start|>"):
        tid = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(ids)
