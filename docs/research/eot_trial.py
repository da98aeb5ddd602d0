"""One end-of-turn trial: train a LoRA (+ optional trainable token rows) on the first N training records,
val loss every --eval-every steps, greedy generation on the first 48 test prompts every --gen-every steps,
degeneration measured. Usage:
  python research/eot_trial.py NAME --dataset zhenhuan --n-train 80 --steps 100 [--tokens '<end_of_turn>' ...]
      [--suffix eot|eos|nl] [--init none|mean|nl] [--targets qv|all] [--lr 1e-3]
Writes research/out/NAME/{result.json,replies-STEP.jsonl}."""
import argparse, copy, json, math, re, statistics, sys, time
from pathlib import Path
import torch

import daug.chat as chat
import daug.training.data as tdata
from daug.basemodel import load_tokenizer
from daug.evaluate import _contiguous_input, prompts as eval_prompts
from daug.generate import generate, newline_token_ids
from daug.io import read_records
from daug.params import load as load_params
from daug.training.data import batch_schedule, collate, encode_records
from daug.training.loop import TrainConfig, evaluate as val_eval, lora_model, seed_everything
from daug.training.loss import ReplyLoss, autocast

ap = argparse.ArgumentParser()
ap.add_argument("name"); ap.add_argument("--dataset", default="zhenhuan"); ap.add_argument("--n-train", type=int, default=80)
ap.add_argument("--steps", type=int, default=100); ap.add_argument("--eval-every", type=int, default=10)
ap.add_argument("--gen-every", type=int, default=20); ap.add_argument("--gen-steps", default="")
ap.add_argument("--tokens", nargs="*", default=[]); ap.add_argument("--suffix", default="eot", choices=["eot", "eos", "nl"])
ap.add_argument("--init", default="none", choices=["none", "mean", "nl"]); ap.add_argument("--targets", default="qv")
ap.add_argument("--lr", type=float, default=1e-3); ap.add_argument("--n-val", type=int, default=48)
ap.add_argument("--n-test", type=int, default=48); ap.add_argument("--max-new", type=int, default=64)
ap.add_argument("--seed", type=int, default=0); ap.add_argument("--decay", default="linear", choices=["linear", "constant"])
a = ap.parse_args()
out = Path("research/out") / a.name; out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "2")))

SUFFIX = {"eot": "<end_of_turn>", "eos": "<eos>", "nl": "\n"}[a.suffix]
tdata.reply_suffix = lambda tok: SUFFIX  # the trial's turn ending (training targets)
params = load_params("params.yaml")
sp = params["datasets"][a.dataset]["system_prompt"]
tok = load_tokenizer("models/base")
train = encode_records(tok, read_records(f"data/prepared/{a.dataset}/train.jsonl")[:a.n_train], sp, 256)
val = encode_records(tok, read_records(f"data/prepared/{a.dataset}/val.jsonl")[:a.n_val], sp, 256)
test = read_records(f"data/prepared/{a.dataset}/test.jsonl")[:a.n_test]
targets = {"qv": ["q_proj", "v_proj"], "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}[a.targets]
lora = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": targets, "trainable_tokens": a.tokens}
cfg = TrainConfig(steps=a.steps, batch_size=8, learning_rate=a.lr, precision="bf16", max_length=256)
model = lora_model("models/base", {"dtype": "float32"}, lora, a.seed, "bf16", torch.device("cpu"))
if a.init != "none" and a.tokens:
    with torch.no_grad():
        delta = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)
        W = model.get_input_embeddings().token_adapter.get_base_layer().weight
        src = W[: W.shape[0] // 2].float().mean(0) if a.init == "mean" else W[107].float()
        delta.copy_(src.expand_as(delta))
stops = chat.stop_token_ids(tok) + (newline_token_ids(tok) if a.suffix == "nl" else [])
stop_names = {i: tok.convert_ids_to_tokens(i) for i in stops}

def metrics(replies, refs, nexts):
    n = len(replies); lens = [len(tok(r, add_special_tokens=False).input_ids) for r in replies]
    at_limit = [l >= a.max_new for l in lens]
    consec = [bool(re.search(r"(.{4,}?)\1{2,}", r, re.S)) for r in replies]
    anyrep = [any(r.count(r[i:i + 4]) >= 3 for i in range(len(r) - 3)) for r in replies]
    marker = [bool(re.search(r"start_of_turn|end_of_turn|<eos>|<bos>|\bmodel\b|\buser\b", r)) for r in replies]
    latin = [bool(re.search(r"[A-Za-z]{2,}", r)) and not re.search(r"[A-Za-z]{2,}", f) for r, f in zip(replies, refs)]
    newline = [("\n" in r) and ("\n" not in f) for r, f in zip(replies, refs)]
    ratios = [len(r) / max(1, len(f)) for r, f in zip(replies, refs)]
    ended = {}
    for lim, nx in zip(at_limit, nexts):
        if not lim: ended[nx] = ended.get(nx, 0) + 1
    sh = lambda xs: round(sum(xs) / n, 3)
    return {"at_limit": sh(at_limit), "loop_consec": sh(consec), "loop_4x3": sh(anyrep), "marker_text": sh(marker),
            "latin_junk": sh(latin), "newline": sh(newline), "empty": sh([not r.strip() for r in replies]),
            "len_ratio_sum": round(sum(map(len, replies)) / sum(map(len, refs)), 3),
            "len_ratio_median": round(statistics.median(ratios), 3), "ended_by": ended}

def next_tokens(m, ptexts, replies):
    """The token greedy decoding emits after each reply (its stop token when it stopped)."""
    seqs = [tok(p).input_ids + tok(r, add_special_tokens=False).input_ids for p, r in zip(ptexts, replies)]
    res = []
    with torch.inference_mode():
        for s in range(0, len(seqs), 16):
            b = seqs[s:s + 16]; w = max(map(len, b))
            ids = torch.zeros(len(b), w, dtype=torch.long); mask = torch.zeros_like(ids)
            for i, q in enumerate(b): ids[i, :len(q)] = torch.tensor(q); mask[i, :len(q)] = 1
            h = m.model(input_ids=ids, attention_mask=mask).last_hidden_state
            last = h[torch.arange(len(b)), mask.sum(1) - 1]
            res += m.lm_head(last).argmax(-1).tolist()
    return [tok.convert_ids_to_tokens(i) for i in res]

def gen_eval(step):
    t = time.perf_counter()
    m = copy.deepcopy(model).merge_and_unload().to(torch.bfloat16).eval()
    m.get_output_embeddings().register_forward_pre_hook(_contiguous_input)  # as daug.evaluate.load: else a 48 x 262k x 640 bmm copy
    ptexts = eval_prompts(tok, test, sp)
    replies = generate(m, tok, ptexts, a.max_new, batch_size=48, stop_ids=stops, progress=False)
    nx = next_tokens(m, ptexts, replies)
    res = metrics(replies, [r["output"] for r in test], nx); res["seconds"] = round(time.perf_counter() - t, 1)
    with open(out / f"replies-{step:04d}.jsonl", "w") as f:
        for r, p in zip(test, replies): f.write(json.dumps({"ref": r["output"], "pred": p}, ensure_ascii=False) + "\n")
    del m
    return res

loss_fn = ReplyLoss(model)
params_t = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params_t, lr=a.lr, weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if a.decay == "constant" else max(0.0, (a.steps - s) / a.steps))
schedule = batch_schedule([len(e.input_ids) for e in train.examples], 8, a.steps, a.seed)
gen_steps = set(map(int, a.gen_steps.split(","))) if a.gen_steps else {s for s in range(a.gen_every, a.steps + 1, a.gen_every)}
log = {"args": vars(a), "train_examples": len(train.examples), "val": [], "gen": {}, "train_loss": []}
t = time.perf_counter(); log["val"].append((0, val_eval(model, loss_fn, val, tok.pad_token_id, torch.device("cpu"), cfg, 0, 1)))
print("step 0 val", log["val"][-1], f"{time.perf_counter() - t:.1f}s", flush=True)
if 0 in gen_steps: log["gen"][0] = gen_eval(0); print(0, log["gen"][0], flush=True)
step_secs = []; best = (math.inf, 0)
model.train()
for step in range(1, a.steps + 1):
    t = time.perf_counter()
    batch = [train.examples[i] for i in schedule[step - 1]]
    ids, mask, labels = collate(batch, tok.pad_token_id)
    with autocast("bf16"):
        loss, n = loss_fn(ids, mask, labels)
        (loss / n).backward()
    torch.nn.utils.clip_grad_norm_(params_t, 1.0); opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
    step_secs.append(time.perf_counter() - t); log["train_loss"].append(round(loss.item() / int(n), 4))
    if step % a.eval_every == 0 or step == a.steps:
        t = time.perf_counter(); v = val_eval(model, loss_fn, val, tok.pad_token_id, torch.device("cpu"), cfg, 0, 1)
        log["val"].append((step, v)); print(f"step {step} val {v:.4f} train {sum(log['train_loss'][-10:]) / 10:.3f} "
                                            f"({time.perf_counter() - t:.1f}s val, {statistics.median(step_secs):.2f}s/step)", flush=True)
        if v < best[0]:
            best = (v, step); torch.save({k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}, out / "best.pt")
    if step in gen_steps:
        log["gen"][step] = gen_eval(step); print(step, log["gen"][step], flush=True); model.train()
    log["step_seconds_median"] = round(statistics.median(step_secs), 3); log["best"] = best
    (out / "result.json").write_text(json.dumps(log, indent=1, ensure_ascii=False))
if best[1] not in log["gen"]:  # generation at the val-min checkpoint
    named = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in torch.load(out / "best.pt").items(): named[k].copy_(v)
    log["gen"][f"best{best[1]}"] = gen_eval(best[1]); print("best", best, log["gen"][f"best{best[1]}"], flush=True)
(out / "result.json").write_text(json.dumps(log, indent=1, ensure_ascii=False))
print("done", best, log["step_seconds_median"])
