"""Follow-up trial (notes/eot_followup.md): LoRA + trainable turn-marker rows, val loss every --eval-every steps,
early stopping after --patience evaluations without a new minimum, then decoding of the first 48 test prompts at
the val-minimum checkpoint: greedy (daug.generate) and HF generate with a repetition penalty.
Penalty spec "1.1" = reply tokens only (RepetitionPenaltyLogitsProcessor(prompt_ignore_length=padded prompt length));
"1.2p" = HF's generate(repetition_penalty=1.2), which also counts the prompt tokens (only left padding is ignored).
Degeneration flags: daug/degeneration.py (copied from /work/main).
Usage: python research/eot_followup.py NAME --dataset paimon [--targets qv|all] [--lr 1e-3] [--n-train 80]
       [--steps 48] [--decay linear|constant] [--penalties 1.1,1.2,1.2p]"""
import argparse, copy, json, math, os, time
from pathlib import Path
import torch

import daug.chat as chat
import daug.training.data as tdata
from daug import degeneration
from daug.basemodel import load_tokenizer
from daug.evaluate import _contiguous_input, prompts as eval_prompts
from daug.generate import generate
from daug.io import read_records
from daug.params import load as load_params
from daug.training.data import batch_schedule, collate, encode_records
from daug.training.loop import TrainConfig, evaluate as val_eval, lora_model
from daug.training.loss import ReplyLoss, autocast

ap = argparse.ArgumentParser()
ap.add_argument("name"); ap.add_argument("--dataset", default="paimon"); ap.add_argument("--n-train", type=int, default=80)
ap.add_argument("--steps", type=int, default=48); ap.add_argument("--eval-every", type=int, default=6)
ap.add_argument("--patience", type=int, default=2); ap.add_argument("--targets", default="qv")
ap.add_argument("--lr", type=float, default=1e-3); ap.add_argument("--decay", default="linear", choices=["linear", "constant"])
ap.add_argument("--n-val", type=int, default=48); ap.add_argument("--n-test", type=int, default=48)
ap.add_argument("--max-new", type=int, default=64); ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--penalties", default="1.1,1.2")
a = ap.parse_args()
out = Path("research/out") / a.name; out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
TOKENS = ["<end_of_turn>", "<start_of_turn>"]

tdata.reply_suffix = lambda tok: "<end_of_turn>"  # as eot_trial.py --suffix eot
sp = load_params("params.yaml")["datasets"][a.dataset]["system_prompt"]
tok = load_tokenizer("models/base")
train = encode_records(tok, read_records(f"data/prepared/{a.dataset}/train.jsonl")[:a.n_train], sp, 256)
val = encode_records(tok, read_records(f"data/prepared/{a.dataset}/val.jsonl")[:a.n_val], sp, 256)
test = read_records(f"data/prepared/{a.dataset}/test.jsonl")[:a.n_test]
refs = [r["output"] for r in test]
targets = {"qv": ["q_proj", "v_proj"], "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}[a.targets]
lora = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": targets, "trainable_tokens": TOKENS}
cfg = TrainConfig(steps=a.steps, batch_size=8, learning_rate=a.lr, precision="bf16", max_length=256)
model = lora_model("models/base", {"dtype": "float32"}, lora, a.seed, "bf16", torch.device("cpu"))
stops = chat.stop_token_ids(tok)


def degen(replies, gen_tokens=None):
    rows = []
    for i, (p, f) in enumerate(zip(replies, refs)):
        n = len(tok(p, add_special_tokens=False).input_ids)
        if gen_tokens is not None: n = max(n, gen_tokens[i])
        rows.append({"prediction": p, "reference": f, "reply_tokens": n})
    s = degeneration.summary(rows, a.max_new)
    return {**{k: s["share"][k] for k in ("at_limit", "loops", "leaks", "marker", "newline", "empty")},
            "length_ratio": s["length_ratio"], "n": s["n"]}


def hf_penalty(m, ptexts, spec):
    from transformers import LogitsProcessorList
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor
    with_prompt = spec.endswith("p"); pen = float(spec.rstrip("p"))
    tok.padding_side = "left"
    enc = tok(ptexts, return_tensors="pt", padding=True, add_special_tokens=True)
    kw = {"repetition_penalty": pen} if with_prompt else {
        "logits_processor": LogitsProcessorList([RepetitionPenaltyLogitsProcessor(pen, prompt_ignore_length=enc.input_ids.shape[1])])}
    replies, ntok = [], []
    for s in range(0, len(ptexts), 16):  # 16 rows at a time: bounded memory
        ids, mask = enc.input_ids[s:s + 16], enc.attention_mask[s:s + 16]
        if not with_prompt:
            kw["logits_processor"][0].prompt_ignore_length = ids.shape[1]
        with torch.inference_mode():
            o = m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=a.max_new, do_sample=False, eos_token_id=stops,
                           pad_token_id=tok.pad_token_id, **kw)
        for row in o[:, ids.shape[1]:].tolist():
            body = []
            for t in row:
                if t in stops or t == tok.pad_token_id: break
                body.append(t)
            ntok.append(len(body)); replies.append(tok.decode(body, skip_special_tokens=True))
    return replies, ntok


def decode_all(step):
    m = copy.deepcopy(model).merge_and_unload().to(torch.bfloat16).eval()
    m.get_output_embeddings().register_forward_pre_hook(_contiguous_input)
    ptexts = eval_prompts(tok, test, sp)
    res = {}
    for spec in ["greedy"] + [p for p in a.penalties.split(",") if p]:
        t = time.perf_counter()
        if spec == "greedy":
            replies, nt = generate(m, tok, ptexts, a.max_new, batch_size=48, stop_ids=stops, progress=False), None
        else:
            replies, nt = hf_penalty(m, ptexts, spec)
        res[spec] = degen(replies, nt); res[spec]["seconds"] = round(time.perf_counter() - t, 1)
        with open(out / f"replies-{step:03d}-{spec}.jsonl", "w") as f:
            for r, p in zip(refs, replies): f.write(json.dumps({"ref": r, "pred": p}, ensure_ascii=False) + "\n")
        print(step, spec, res[spec], flush=True)
        log["decode"] = res; (out / "result.json").write_text(json.dumps(log, indent=1, ensure_ascii=False))
    return res


loss_fn = ReplyLoss(model)
params_t = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params_t, lr=a.lr, weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if a.decay == "constant" else max(0.0, (a.steps - s) / a.steps))
schedule = batch_schedule([len(e.input_ids) for e in train.examples], 8, a.steps, a.seed)
log = {"args": vars(a), "train_examples": len(train.examples), "val": [], "train_loss": []}
v0 = val_eval(model, loss_fn, val, tok.pad_token_id, torch.device("cpu"), cfg, 0, 1)
log["val"].append((0, round(v0, 4))); print("step 0 val", v0, flush=True)
best, since = (math.inf, 0), 0
model.train()
for step in range(1, a.steps + 1):
    batch = [train.examples[i] for i in schedule[step - 1]]
    ids, mask, labels = collate(batch, tok.pad_token_id)
    with autocast("bf16"):
        loss, n = loss_fn(ids, mask, labels)
        (loss / n).backward()
    torch.nn.utils.clip_grad_norm_(params_t, 1.0); opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
    log["train_loss"].append(round(loss.item() / int(n), 4))
    if step % a.eval_every == 0 or step == a.steps:
        v = val_eval(model, loss_fn, val, tok.pad_token_id, torch.device("cpu"), cfg, 0, 1)
        log["val"].append((step, round(v, 4)))
        if v < best[0]:
            best, since = (v, step), 0
            torch.save({k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}, out / "best.pt")
        else:
            since += 1
        print(f"step {step} val {v:.4f} train {sum(log['train_loss'][-6:]) / 6:.3f} best {best[1]}", flush=True)
        model.train()
        if since >= a.patience:
            log["early_stop"] = step; print("early stop at", step, flush=True); break
    log["best"] = best; (out / "result.json").write_text(json.dumps(log, indent=1, ensure_ascii=False))
log["best"] = best; log["last_step"] = step
named = dict(model.named_parameters())
with torch.no_grad():
    for k, v in torch.load(out / "best.pt").items(): named[k].copy_(v)
model.eval()
decode_all(best[1])
(out / "result.json").write_text(json.dumps(log, indent=1, ensure_ascii=False))
print("done", best)
