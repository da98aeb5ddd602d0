"""Evaluation generation: batched (the evaluate stage's path) against one prompt at a time.

Target (issue 4), measured side by side in one run on the real base model (models/base) with a
LoRA adapter, loaded exactly as the evaluate stage loads it (merged, cast to `evaluate.dtype`):
  - `generate()` over N test prompts in batches of `evaluate.batch_size` is at least 4x faster than
    calling `generate()` once per prompt. Judged on process CPU time (user + sys, all BLAS threads),
    which bounds wall time on an idle machine; wall time is printed too. By default torch runs on
    one thread: on a shared machine, OpenMP threads spin-wait for each other at every small op and
    inflate the one-at-a-time run's CPU time many times over (unfair to it); one thread measures
    the algorithmic gain. Pass --threads 2 on an idle machine;
  - the two produce the same replies. In float32 they must agree (>= 90% identical replies, checked
    on a smaller run: a padding or position bug garbles nearly every row). In the stage's bfloat16,
    batching changes matmul shapes and so the rounding of near-ties in greedy decoding: measured,
    about a third of rambling 64-token replies diverge somewhere; at least 50% must be identical.
Also printed, for information: the same batched run with the adapter left unmerged (the LoRA detour
at every q/v projection: what merging saves), and batched bfloat16 against float32.

The adapter is models/adapters/zhenhuan/none when the train stage has made it; otherwise a fresh
LoRA adapter (peft's default initialisation) is created in a temporary directory.

Run: python benchmarks/bench_evaluate.py [--prompts 32] [--max-new-tokens N] [--batch-size N] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEEDUP, AGREEMENT, AGREEMENT_FP32 = 4.0, 0.5, 0.9
DATASET = "zhenhuan"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def test_records(n: int) -> list[dict]:
    from daug.io import read_records

    prepared = REPO / "data/prepared" / DATASET / "test.jsonl"
    if prepared.exists():
        return read_records(prepared)[:n]
    return read_records(REPO / "data/raw/zhenhuan/huanhuan.json")[-n:]  # before `dvc repro` has prepared data


def adapter_dir(params: dict, tmp: Path) -> tuple[Path, str]:
    trained = REPO / "models/adapters" / DATASET / "none"
    if (trained / "adapter_config.json").exists():
        return trained, f"trained adapter {trained.relative_to(REPO)}"
    from daug.approaches import from_params
    from daug.basemodel import load_model

    from_params(params, "lora-qv").wrap(load_model(REPO / "models/base"), []).save_pretrained(tmp / "adapter")
    return tmp / "adapter", "fresh LoRA adapter (no trained one in models/adapters yet)"


def main() -> int:
    from daug.params import resolve

    params = resolve("cpu", REPO / "params")
    ev = params["evaluate"]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=ev["max_new_tokens"])
    ap.add_argument("--batch-size", type=int, default=ev["batch_size"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see the docstring)")
    ap.add_argument("--fp32-prompts", type=int, default=16, help="prompts for the float32 agreement check")
    ap.add_argument("--fp32-new-tokens", type=int, default=24, help="max_new_tokens of the float32 agreement check")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from daug.approaches import from_params
    from daug.evaluate import load, predict

    system = params["datasets"][DATASET]["system_prompt"]
    records = test_records(args.prompts)
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        adapter, what = adapter_dir(params, Path(tmp))
        approach = from_params(params, "lora-qv")
        model, tok = load(REPO / "models/base", adapter, params["model"], dtype=ev["dtype"], approach=approach)
        print(f"{len(records)} {DATASET} test prompts, max_new_tokens {args.max_new_tokens}, dtype {ev['dtype']}, "
              f"{torch.get_num_threads()} threads; {what}", flush=True)

        def run(m, batch_size, recs=records, max_new_tokens=args.max_new_tokens):
            return predict(m, tok, recs, system, max_new_tokens, batch_size, progress=False)

        def one_at_a_time(m, recs=records, max_new_tokens=args.max_new_tokens):
            return [predict(m, tok, [r], system, max_new_tokens, 1, progress=False)[0] for r in recs]

        run(model, args.batch_size, records[:2], 2)  # warm-up: first-call allocations and kernel selection
        batched, b_wall, b_cpu = timed(lambda: run(model, args.batch_size))
        print(f"batched (batch {args.batch_size}):  wall {b_wall:7.1f} s  cpu {b_cpu:7.1f} s", flush=True)
        single, s_wall, s_cpu = timed(lambda: one_at_a_time(model))
        print(f"one at a time:       wall {s_wall:7.1f} s  cpu {s_cpu:7.1f} s", flush=True)
        small = records[:args.fp32_prompts]
        _, _, small_cpu = timed(lambda: run(model, args.batch_size, small, args.fp32_new_tokens))
        del model

        peft_model, _ = load(REPO / "models/base", adapter, params["model"], merge=False, dtype=ev["dtype"],
                             approach=approach)
        _, u_wall, u_cpu = timed(lambda: run(peft_model, args.batch_size))
        print(f"batched, unmerged:   wall {u_wall:7.1f} s  cpu {u_cpu:7.1f} s", flush=True)
        del peft_model

        fp32, _ = load(REPO / "models/base", adapter, params["model"], dtype="float32", approach=approach)
        batched32, _, small32_cpu = timed(lambda: run(fp32, args.batch_size, small, args.fp32_new_tokens))
        same32 = sum(a == b for a, b in zip(batched32, one_at_a_time(fp32, small, args.fp32_new_tokens))) / len(small)

    speedup, wall_speedup = s_cpu / b_cpu, s_wall / b_wall
    same = sum(a == b for a, b in zip(batched, single)) / len(records)
    print(f"batched vs one at a time: {speedup:.1f}x cpu time ({wall_speedup:.1f}x wall)  [target >= {SPEEDUP:g}x]")
    print(f"identical replies, batched vs one at a time: {same:.0%} in {ev['dtype']}  [target >= {AGREEMENT:.0%}]; "
          f"{same32:.0%} in float32 ({len(small)} prompts, {args.fp32_new_tokens} tokens)  [target >= {AGREEMENT_FP32:.0%}]")
    print(f"merged vs unmerged adapter (batched): {u_cpu / b_cpu:.2f}x cpu time ({u_wall / b_wall:.2f}x wall)")
    print(f"{ev['dtype']} vs float32 (batched, {len(small)} prompts): {small32_cpu / small_cpu:.2f}x cpu time")
    ok = speedup >= SPEEDUP and same >= AGREEMENT and same32 >= AGREEMENT_FP32
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
