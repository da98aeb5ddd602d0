"""Training cost of every fine-tuning approach (issue 24), side by side in one run: real tokens per
second, peak memory, and trainable parameters, on the real base model and the same batches.

Each approach trains in its own fresh process (so its peak memory is its own): the base model
loaded as the train stage loads it (`daug.training.loop.trainable_model`, params/base.yaml's
`approaches.<name>`, the trainable `<end_of_turn>` row where the approach can train it, bf16 frozen
weights), one untimed warm-up step, then `--steps` timed optimizer steps of `--batch-size` Zhen Huan
training examples in daug's length-grouped batches, the same batches for every approach. Reported:
  tokens/s      real (non-padding) tokens per second of forward + backward + AdamW step
  peak MiB      the peak resident memory of training (Linux VmHWM, reset once the model is loaded:
                loading the GGUF peaks higher than any approach's training), and its growth over
                the loaded model's resident memory
  trainable     trainable parameters and their share of the model's
The approaches run one after another in registry order, so a shared machine's load can bias a
ratio: compare ratios from one run on an idle machine. There is no target: this measures.

Run: python benchmarks/bench_approaches.py [--steps 4] [--base models/base] [--approaches lora-qv,full]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(name: str, base: str, data: str, steps: int, batch_size: int) -> dict:
    """Measure one approach in this process; returns the row."""
    import resource
    import time

    import torch

    from daug.approaches import get_approach
    from daug.basemodel import load_tokenizer
    from daug.io import read_records
    from daug.params import defaults
    from daug.training.data import batch_schedule, collate, encode_records
    from daug.training.loop import trainable_model
    from daug.training.loss import ReplyLoss, autocast

    params = defaults()
    approach = get_approach(name, (params.get("approaches") or {}).get(name))
    tokenizer = load_tokenizer(base)
    system = params["datasets"]["zhenhuan"].get("system_prompt")
    examples = encode_records(tokenizer, read_records(data), system, params["train"]["max_length"]).examples
    batches = batch_schedule([len(e.input_ids) for e in examples], batch_size, steps + 1, seed=0)
    tokens = [t for t in params["train"]["trainable_tokens"]] if approach.trains_token_rows else []
    model = trainable_model(base, params["model"], approach, tokens, 0, "bfloat16", torch.device("cpu"),
                            tokenizer=tokenizer).train()
    load_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loaded_kib = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the peak from here on is training's
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-5)
    loss_fn = ReplyLoss(model, approach)
    seconds, real = 0.0, 0
    for i, batch in enumerate(batches):
        chosen = [examples[j] for j in batch]
        ids, mask, labels = collate(chosen, tokenizer.pad_token_id)
        start = time.perf_counter()
        with autocast("bfloat16"):
            loss, n = loss_fn(ids, mask, labels)
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad()
        if i:  # the first step warms up
            seconds += time.perf_counter() - start
            real += sum(len(e.input_ids) for e in chosen)
    peak_kib = _status_kib("VmHWM")
    n_trained = sum(p.numel() for p in trained)
    n_all = sum(p.numel() for p in model.parameters())
    return {"approach": name, "tokens_per_s": real / seconds, "peak_mib": peak_kib / 1024,
            "growth_mib": (peak_kib - loaded_kib) / 1024, "load_peak_mib": load_peak_kib / 1024,
            "trainable": n_trained, "share": n_trained / n_all}


def _status_kib(field: str) -> int:
    """A memory figure of /proc/self/status in KiB (Linux): VmRSS now, VmHWM the peak since reset."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(REPO / "models/base"))
    parser.add_argument("--data", default=str(REPO / "data/prepared/zhenhuan/train.jsonl"))
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per approach")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--approaches", default=None, help="comma-separated (default: every registered one)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.base, args.data, args.steps, args.batch_size)))
        return 0
    from daug.approaches import APPROACHES

    names = args.approaches.split(",") if args.approaches else list(APPROACHES)
    rows = []
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--base", args.base, "--data", args.data,
                               "--steps", str(args.steps), "--batch-size", str(args.batch_size)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}")
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name:12s} {r['tokens_per_s']:8.1f} real tokens/s  training peak {r['peak_mib']:7.0f} MiB "
              f"(+{r['growth_mib']:6.0f} over the loaded model; load peak {r['load_peak_mib']:.0f})  "
              f"trainable {r['trainable']:>11,d} "
              f"({r['share']:.3%})", flush=True)
    reference = next((r for r in rows if r["approach"] == "lora-qv"), rows[0])
    print("relative to " + reference["approach"] + ": " + ", ".join(
        f"{r['approach']} {r['tokens_per_s'] / reference['tokens_per_s']:.2f}x speed, "
        f"{r['peak_mib'] / reference['peak_mib']:.2f}x memory" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
