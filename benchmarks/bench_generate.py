"""Batched generation vs one `generate()` call per record, on the real base model (models/base).

Target (issue 3): batched generation at least 4x the throughput of one call per record, same
model, same outputs. `generate` batches continuously (a finished row leaves, a waiting prompt
joins), so a batch does not run at the pace of its longest reply. Both runs generate replies to
the same prompts: the `pg` paraphrase prompts the local backend builds for the first N Zhen Huan
training records, with the backend's stops (end of turn, line break) and per-record token
budgets, greedy. Throughput is judged on process
CPU time (user + sys), which unlike wall time does not grow when other jobs share the two cores;
wall time is printed too. The fraction of identical outputs is printed: batched and one-at-a-time
decoding differ only where two tokens' logits tie within rounding, which bfloat16 makes common.

With --methods K it also measures records/second of bt, pg, refine and expand through the local
backend on K records of each dataset (n_aug 1, fields instruction and output): the numbers that
size the cpu profile. Not a target.

The default dtype is bfloat16, the local backend's dtype in the cpu profile (the path the pipeline
runs). Measured 2026-11-22 on the idle 2-core machine: bfloat16 5.50x CPU (91% identical),
float32 3.65x CPU / 4.30x wall (100% identical): in float32 the batched forward is compute-bound
on this CPU, so the target holds for the dtype the pipeline uses, not for float32.

Run: python benchmarks/bench_generate.py [--n 32] [--batch-size 16] [--dtype bfloat16] [--methods 0]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGET = 4.0


def clocks():
    return time.perf_counter(), time.process_time()


def since(start):
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def prompts_and_budgets(backend, n: int):
    from daug.augment.pg import LABELS, level
    from daug.backends.base import Task
    from daug.io import read_records

    records = read_records(REPO / "data/prepared/zhenhuan/train.jsonl")[:n]
    instruction, shots = level(0.5)
    texts = [r["instruction"] for r in records]
    return [backend.prompt(Task(instruction, t, shots, LABELS)) for t in texts], backend.reply_budget(texts)


def bench_generate(args) -> bool:
    from daug.backends import get_backend
    from daug.chat import stop_token_ids
    from daug.generate import generate, newline_token_ids

    backend = get_backend("local", {"model": str(REPO / "models/base"), "dtype": args.dtype,
                                    "batch_size": args.batch_size})
    model, tok = backend.load()
    prompts, budgets = prompts_and_budgets(backend, args.n)
    stops = stop_token_ids(tok) + newline_token_ids(tok)
    generate(model, tok, prompts[:2], 2, batch_size=2, stop_ids=stops, progress=False)  # warm-up

    start = clocks()
    batched = generate(model, tok, prompts, budgets, batch_size=args.batch_size, stop_ids=stops, progress=False)
    b_wall, b_cpu = since(start)
    start = clocks()
    single = [generate(model, tok, [p], [b], batch_size=1, stop_ids=stops, progress=False)[0]
              for p, b in zip(prompts, budgets)]
    s_wall, s_cpu = since(start)

    same = sum(a == b for a, b in zip(batched, single)) / len(prompts)
    ratio = s_cpu / b_cpu
    print(f"{args.n} prompts, batch {args.batch_size}, {args.dtype}, budgets {min(budgets)}-{max(budgets)} tokens")
    print(f"  batched:        {b_cpu:7.1f} s CPU  {b_wall:7.1f} s wall  {args.n / b_wall:.2f} prompts/s")
    print(f"  one at a time:  {s_cpu:7.1f} s CPU  {s_wall:7.1f} s wall  {args.n / s_wall:.2f} prompts/s")
    print(f"  throughput ratio (CPU) {ratio:.2f}x  (wall {s_wall / b_wall:.2f}x)  target >= {TARGET}x")
    print(f"  identical outputs: {same:.0%}")
    for a, b in zip(batched, single):
        if a != b:
            print(f"    differs: {a!r} vs {b!r}")
    return ratio >= TARGET


def bench_methods(args) -> None:
    from daug.augment.apply import augment_records
    from daug.io import read_records
    from daug.params import dataset, resolve

    params = resolve("cpu", REPO / "params")
    backends = {"local": {**params["backends"]["local"], "model": str(REPO / "models/base"),
                          "dtype": args.dtype, "batch_size": args.batch_size}}
    for name in params["datasets"]:
        records = read_records(REPO / f"data/prepared/{name}/train.jsonl")[:args.methods]
        for method in ("bt", "pg", "refine", "expand"):
            start = clocks()
            _, stats = augment_records(records, method, params["augment"][method], n_aug=1, seed=0,
                                       dataset=dataset(params, name), fields=("instruction", "output"),
                                       backends=backends)
            wall, cpu = since(start)
            print(f"  {name:9s} {method:7s} {len(records) / wall:6.3f} records/s wall  "
                  f"{len(records) / cpu:6.3f} records/s CPU  unchanged {stats['n_unchanged']}/{len(records)}",
                  flush=True)


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they are measured
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="prompts to generate both ways (0: skip)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="bfloat16", help="bfloat16 (the cpu profile) or float32")
    parser.add_argument("--methods", type=int, default=0, help="records per dataset for the per-method rates")
    args = parser.parse_args()
    if not (REPO / "models/base/config.json").exists():
        print("models/base is missing: run `python -m daug profile cpu && python -m daug base-model`")
        return 1
    ok = bench_generate(args) if args.n else True  # --n 0: only the per-method rates
    if args.methods:
        bench_methods(args)
    print("target met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
