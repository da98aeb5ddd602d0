"""daug.generate: batched == one at a time, order kept, seeded sampling independent of batching,
per-prompt token limits, stop tokens. Runs on the tiny random Gemma 3 with the real tokenizer."""
from __future__ import annotations

import pytest

from daug import DaugError
from daug.generate import generate, newline_token_ids, penalize_repeats

PROMPTS = ["你好", "<start_of_turn>user\n今天天气怎么样？<end_of_turn>\n<start_of_turn>model\n",
           "原句：我们先去城里看看吧。\n改写：", "一", "派蒙：旅行者，我们接下来去哪里？\n旅行者：", "Hello there"]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from daug.basemodel import load_model

    return load_model(tiny_model_dir)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_batched_equals_one_at_a_time_and_keeps_order(model, tokenizer):
    alone = [generate(model, tokenizer, [p], 8, batch_size=1, progress=False)[0] for p in PROMPTS]
    for batch_size in (2, 4, 16):
        assert generate(model, tokenizer, PROMPTS, 8, batch_size=batch_size, progress=False) == alone
    assert generate(model, tokenizer, PROMPTS[::-1], 8, batch_size=4, progress=False) == alone[::-1]
    assert all(alone) and len(set(alone)) > 1  # the tiny model does produce (distinct) text


def test_sampling_depends_only_on_prompt_and_seed(model, tokenizer):
    seeds = [11, 12, 13, 14, 15, 16]
    kw = dict(do_sample=True, temperature=1.0, progress=False)
    base = generate(model, tokenizer, PROMPTS, 5, batch_size=16, seeds=seeds, **kw)
    assert generate(model, tokenizer, PROMPTS, 5, batch_size=1, seeds=seeds, **kw) == base
    assert generate(model, tokenizer, PROMPTS[::-1], 5, batch_size=4, seeds=seeds[::-1], **kw) == base[::-1]
    other = generate(model, tokenizer, PROMPTS, 5, batch_size=16, seeds=[s + 100 for s in seeds], **kw)
    assert other != base  # the seed matters
    greedy = generate(model, tokenizer, PROMPTS, 5, batch_size=16, progress=False)
    assert greedy != base
    nucleus = dict(kw, top_p=0.5)
    assert (generate(model, tokenizer, PROMPTS[:3], 3, batch_size=3, seeds=seeds[:3], **nucleus)
            == [generate(model, tokenizer, [p], 3, seeds=[s], **nucleus)[0] for p, s in zip(PROMPTS[:3], seeds)])
    # without seeds, a prompt's own text seeds it: still reproducible, still batch independent
    assert (generate(model, tokenizer, PROMPTS, 4, batch_size=2, do_sample=True, progress=False)
            == generate(model, tokenizer, PROMPTS, 4, batch_size=5, do_sample=True, progress=False))


def test_per_prompt_token_limits(model, tokenizer):
    limits = [1, 3, 8, 2, 5, 4]
    out = generate(model, tokenizer, PROMPTS, limits, batch_size=6, progress=False, stop_ids=[])
    full = generate(model, tokenizer, PROMPTS, 8, batch_size=6, progress=False, stop_ids=[])
    for prompt, text, whole, limit in zip(PROMPTS, out, full, limits):
        assert whole.startswith(text)  # a limit cuts the same reply, it does not change it
        assert text == generate(model, tokenizer, [prompt], limit, progress=False, stop_ids=[])[0]
    assert len(out[0]) < len(full[0])


def test_rows_joining_a_running_batch_get_the_same_replies(model, tokenizer):
    """Rows with different limits finish at different steps; waiting prompts join mid-batch."""
    limits = [1, 7, 3, 2, 6, 4]
    for kw in ({}, {"do_sample": True, "seeds": [5, 4, 3, 2, 1, 0]}):
        alone = [generate(model, tokenizer, [p], [n], progress=False, stop_ids=[],
                          **({**kw, "seeds": [kw["seeds"][k]]} if kw else {}))[0]
                 for k, (p, n) in enumerate(zip(PROMPTS, limits))]
        for batch_size in (2, 3):
            assert generate(model, tokenizer, PROMPTS, limits, batch_size=batch_size, stop_ids=[], progress=False,
                            **kw) == alone


def test_a_shared_few_shot_header_is_computed_once_with_the_same_replies(model, tokenizer):
    import torch

    header = "把原句换一种说法。\n\n原句：你今天怎么这么早就来了？\n改写：今天你怎么来得这么早？\n\n原句："
    prompts = [header + q + "\n改写：" for q in ("我们先去城里看看吧。", "你饿了吗？", "这是什么地方", "派蒙想吃甜甜花酿鸡！")]
    limits = [6, 2, 5, 3]
    reference = []
    for p, n in zip(prompts, limits):  # Hugging Face generate: the whole prompt in one forward pass
        enc = tokenizer([p], return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=n, do_sample=False, eos_token_id=None)[0]
        reference.append(tokenizer.decode(out[enc["input_ids"].shape[1]:]))
    for batch_size in (1, 2, 4):
        assert generate(model, tokenizer, prompts, limits, batch_size=batch_size, stop_ids=[],
                        progress=False) == reference


def test_stops_at_stop_tokens_and_strips_them(model, tokenizer):
    import torch

    prompt = tokenizer([PROMPTS[2]], return_tensors="pt")
    with torch.inference_mode():  # the reference: Hugging Face greedy decoding, no stop token
        full = model.generate(**prompt, max_new_tokens=8, do_sample=False, eos_token_id=None)[0]
    full = full[prompt["input_ids"].shape[1]:].tolist()
    stop = full[3]
    out = generate(model, tokenizer, [PROMPTS[2]], 8, stop_ids=[stop], progress=False)[0]
    assert out == tokenizer.decode(full[:full.index(stop)])
    assert generate(model, tokenizer, [PROMPTS[2]], 8, stop_ids=[], progress=False)[0] == tokenizer.decode(full)


def test_long_prompts_are_cut_from_the_left(model, tokenizer):
    long = "很长的记录。" * 2000 + PROMPTS[2]
    out = generate(model, tokenizer, [long], 4, max_prompt_tokens=64, progress=False)
    assert isinstance(out[0], str)


def test_newline_tokens_are_pure_line_breaks(tokenizer):
    nl = newline_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("\n") in nl
    assert all(tokenizer.decode([i]).strip() == "" for i in nl)


def test_repetition_penalty_counts_the_reply_only():
    import torch

    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [2.0, -1.0, 0.5, 3.0]])
    out = penalize_repeats(logits, [[0, 1, 0], []], 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0], [2.0, -1.0, 0.5, 3.0]]  # positive / p, negative * p
    assert logits[0, 0] == 2.0  # the caller's logits are not modified
    assert penalize_repeats(logits, [[0], [1]], 1.0) is logits


def test_repetition_penalty_breaks_greedy_loops(model, tokenizer):
    """The tiny random model repeats tokens under greedy decoding; a strong penalty forbids reusing a
    reply token, while prompt tokens stay free (the replies still differ from the unpenalised ones)."""
    plain = generate(model, tokenizer, PROMPTS, 24, batch_size=4, progress=False, stop_ids=[])
    strong = generate(model, tokenizer, PROMPTS, 24, batch_size=4, progress=False, stop_ids=[], repetition_penalty=1e6)
    repeats = lambda replies: sum(len(t) - len(set(t)) for t in (ids(tokenizer, r) for r in replies))
    assert repeats(plain) > 0 and repeats(strong) < repeats(plain)
    alone = [generate(model, tokenizer, [p], 24, batch_size=1, progress=False, stop_ids=[], repetition_penalty=1e6)[0]
             for p in PROMPTS]
    assert strong == alone  # per-row reply history: batching does not mix rows


def test_bad_arguments(model, tokenizer):
    assert generate(model, tokenizer, [], 4) == []
    with pytest.raises(DaugError, match="list of strings"):
        generate(model, tokenizer, "你好", 4)
    with pytest.raises(DaugError, match="2 seeds for 1 prompts"):
        generate(model, tokenizer, ["你好"], 4, do_sample=True, seeds=[1, 2])
    with pytest.raises(DaugError, match="max_new_tokens"):
        generate(model, tokenizer, ["你好"], 0)
    with pytest.raises(DaugError, match="temperature"):
        generate(model, tokenizer, ["你好"], 4, do_sample=True, temperature=0)
    with pytest.raises(DaugError, match="repetition_penalty"):
        generate(model, tokenizer, ["你好"], 4, repetition_penalty=0.5)
