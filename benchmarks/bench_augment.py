"""Rule-based augmentation at scale: rd, ri, rs, sr on the 35,405-record Paimon file.

Targets (issue 3), measured side by side in one run:
  - all four methods, each a cold process (imports, jieba, word vectors, read, augment, write),
    together in under 2 minutes. Judged on each process's CPU time (user + sys, BLAS threads
    included), which bounds its wall time on an idle machine and, unlike wall time, does not grow
    when other jobs share the two cores; wall time is printed too;
  - `sr` at least 5x the per-record throughput of a naive reference that segments each text and
    looks up each candidate word's nearest neighbours on every call, with no cache and no batching
    (the EDA_NLP_for_Chinese approach), run on a subset; both must produce the same records;
  - peak RSS of every method's process under 4 GiB.

Run: python benchmarks/bench_augment.py [--naive-records 400]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data/raw/paimon/paimon_all_quests.json"
METHODS = ["rd", "ri", "rs", "sr"]
PARAMS = {"p": 0.1}
TOTAL_SECONDS, SR_SPEEDUP, PEAK_GIB = 120.0, 5.0, 4.0


def load_records(limit: int | None = None) -> list[dict]:
    from daug.io import read_records

    raw = read_records(DATA)[:limit]
    return [{"id": f"paimon_all-{i:05d}", **r} for i, r in enumerate(raw)]


def worker(method: str, out: str) -> None:
    """One cold run of one method over the whole file; prints seconds and peak RSS as JSON."""
    start = time.perf_counter()
    from daug.augment.apply import augment_records
    from daug.io import write_jsonl

    records = load_records()
    rows, stats = augment_records(records, method, PARAMS, seed=0, dataset="paimon_all")
    write_jsonl(out, rows)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"method": method, "records": len(records), "wall": time.perf_counter() - start,
                      "seconds": usage.ru_utime + usage.ru_stime,
                      "augment_seconds": stats["seconds"], "unchanged": stats["n_unchanged"],
                      "peak_gib": usage.ru_maxrss / 2**20}))


def naive_sr(records: list[dict]):
    """The reference: same selection rule and seeds, but per text and per word on every call."""
    import jieba.posseg

    from daug.augment.base import TextMethod
    from daug.augment.words import _jieba
    from daug.augment.sr import SynonymReplacement

    class NaiveSynonymReplacement(SynonymReplacement):  # not registered: a benchmark reference only
        def augment(self, jobs):
            return TextMethod.augment(self, jobs)  # no batch-wide neighbour search

        def synonyms(self, word):
            self._synonyms.clear()  # no cache: one brute-force nearest-neighbour search per lookup
            self.prefetch([word])
            return self._synonyms[word]

        def transform(self, text, rng):
            return "".join(self.replace([(p.word, p.flag) for p in jieba.posseg.cut(text)], rng))

    from daug.augment.apply import augment_records

    _jieba()  # quiet initialisation, as the fast path does
    method = NaiveSynonymReplacement(PARAMS)
    method.transform("我们明天一起离开这座城市", __import__("random").Random(0))  # loads vectors and tagger
    start = time.process_time()
    rows, _ = augment_records(records, method, seed=0, dataset="paimon_all")
    return rows, time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-records", type=int, default=400, help="subset size for the naive sr reference")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.out)
        return 0

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-augment-") as tmp:
        for method in METHODS:
            out = Path(tmp) / f"{method}.jsonl"
            proc = subprocess.run([sys.executable, __file__, "--worker", method, "--out", str(out)],
                                  capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = results[method]
            print(f"{method}: {r['records']} records in {r['seconds']:.1f} s CPU, {r['wall']:.1f} s wall, cold "
                  f"({r['augment_seconds']:.1f} s augmenting; {r['unchanged']} unchanged), peak RSS {r['peak_gib']:.2f} GiB",
                  flush=True)
        from daug.io import read_records

        fast_rows = read_records(Path(tmp) / "sr.jsonl")

    subset = load_records(args.naive_records)
    naive_rows, naive_seconds = naive_sr(subset)
    same = naive_rows == fast_rows[:len(naive_rows)]
    fast_rate = results["sr"]["records"] / results["sr"]["seconds"]
    naive_rate = len(subset) / naive_seconds
    total = sum(r["seconds"] for r in results.values())
    peak = max(r["peak_gib"] for r in results.values())

    checks = [
        (f"all four methods, cold, on {results['sr']['records']} records: {total:.1f} s CPU "
         f"= {total / TOTAL_SECONDS:.2f} x the {TOTAL_SECONDS:.0f} s budget", total < TOTAL_SECONDS),
        (f"sr throughput {fast_rate:.0f} rec/CPU-s (cold, whole file) vs naive {naive_rate:.1f} rec/CPU-s "
         f"({len(subset)} records): {fast_rate / naive_rate:.1f}x (target >= {SR_SPEEDUP:.0f}x)",
         fast_rate / naive_rate >= SR_SPEEDUP),
        (f"naive and fast sr produce the same records on the subset: {same}", same),
        (f"peak RSS {peak:.2f} GiB = {peak / PEAK_GIB:.2f} x the {PEAK_GIB:.0f} GiB limit", peak < PEAK_GIB),
    ]
    for text, ok in checks:
        print(f"{'ok  ' if ok else 'MISS'} {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
