"""Greedy decoding with a repetition penalty (HF generate) at a saved trial checkpoint (best.pt).
Usage: python research/rep_penalty.py OUT_NAME DATASET PENALTY"""
import json, re, statistics, sys, torch
from daug.basemodel import load_tokenizer
from daug.evaluate import _contiguous_input, prompts as eval_prompts
from daug.io import read_records
from daug.params import load as load_params
from daug.training.loop import lora_model
torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "2")))
name, ds, pen = sys.argv[1], sys.argv[2], float(sys.argv[3])
tok = load_tokenizer("models/base"); sp = load_params("params.yaml")["datasets"][ds]["system_prompt"]
lora = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "trainable_tokens": ["<end_of_turn>", "<start_of_turn>"]}
model = lora_model("models/base", {"dtype": "float32"}, lora, 0, "bf16", torch.device("cpu"))
named = dict(model.named_parameters())
with torch.no_grad():
    for k, v in torch.load(f"research/out/{name}/best.pt").items(): named[k].copy_(v)
m = model.merge_and_unload().to(torch.bfloat16).eval()
m.get_output_embeddings().register_forward_pre_hook(_contiguous_input)
test = read_records(f"data/prepared/{ds}/test.jsonl")[:48]
tok.padding_side = "left"
enc = tok(eval_prompts(tok, test, sp), return_tensors="pt", padding=True)
from daug.chat import stop_token_ids
with torch.inference_mode():
    out = m.generate(**enc, max_new_tokens=64, do_sample=False, repetition_penalty=pen, eos_token_id=stop_token_ids(tok), pad_token_id=tok.pad_token_id)
gen = out[:, enc.input_ids.shape[1]:]
stops = set(stop_token_ids(tok))
replies, limit = [], []
for row in gen.tolist():
    body = []
    for t in row:
        if t in stops or t == tok.pad_token_id: break
        body.append(t)
    limit.append(len(body) >= 64); replies.append(tok.decode(body, skip_special_tokens=True))
refs = [r["output"] for r in test]
loops = [any(r.count(r[i:i + 4]) >= 3 for i in range(len(r) - 3)) for r in replies]
print(json.dumps({"name": name, "penalty": pen, "at_limit": round(sum(limit) / 48, 3), "loop_4x3": round(sum(loops) / 48, 3),
                  "len_ratio_sum": round(sum(map(len, replies)) / sum(map(len, refs)), 3),
                  "samples": replies[:6]}, ensure_ascii=False))
