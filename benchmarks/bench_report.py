"""Why the report runs t-SNE on one OpenMP thread: measured side by side in one run.

sklearn's Barnes-Hut t-SNE parallelises its gradient with OpenMP. When other processes keep the
cores busy (several stages or engineers on a 2-core machine) its threads spin waiting for each
other and it runs several times slower than serial; on an idle machine threads help at most by the
core count. Both settings give identical maps (checked here), so `daug.report.tsne` uses one thread.

On embeddings of real Zhen Huan records (the cpu profile maps ~1,450 points per dataset):
  - busy: with one competing busy-loop process per core (started here, stopped after), threaded
    vs serial. Target: serial at least 1.2x faster (the choice must win where it is meant to).
  - as found: the same without the extra load (printed; on an idle machine threaded wins).

Measured: under a real load average of 5-9 (2026-11-21) serial was 5.07x faster; on an idle
machine with the two busy loops started here (2026-11-22) 1.41x, while idle threaded took 2.0 s
and serial 3.0 s. A second lost on an idle machine buys several under contention.

Run: python benchmarks/bench_report.py [--points 800]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MIN_BUSY_SPEEDUP = 1.2
BUSY_LOOP = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"


def tsne(x: np.ndarray, serial: bool) -> tuple[float, np.ndarray]:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    with threadpool_limits(limits=1 if serial else None, user_api="openmp"):
        y = TSNE(n_components=2, perplexity=30.0, init="pca", learning_rate="auto", random_state=0).fit_transform(x)
    return time.perf_counter() - start, y


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=800)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from daug.augment.quality import embed, record_text
    from daug.io import read_records

    texts = [record_text(r)[:256] for r in read_records(REPO / "data/raw/zhenhuan/huanhuan.json")[:args.points]]
    x = np.concatenate([embed(texts[i:i + 64]) for i in range(0, len(texts), 64)]).astype(np.float64)

    found_threaded, y_threaded = tsne(x, serial=False)
    found_serial, y_serial = tsne(x, serial=True)
    if not np.array_equal(y_threaded, y_serial):
        print("threaded and serial t-SNE maps differ")
        return 1
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=600)]) for _ in range(os.cpu_count() or 1)]
    try:
        busy_threaded, _ = tsne(x, serial=False)
        busy_serial, _ = tsne(x, serial=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    speedup = busy_threaded / busy_serial
    print(f"t-SNE of {len(x)} points, as found: threaded {found_threaded:.1f} s, serial {found_serial:.1f} s "
          f"(identical maps)")
    print(f"with {len(busy)} busy processes: threaded {busy_threaded:.1f} s, serial {busy_serial:.1f} s, "
          f"serial speedup {speedup:.2f}x (target >= {MIN_BUSY_SPEEDUP}x)")
    return 0 if speedup >= MIN_BUSY_SPEEDUP else 1


if __name__ == "__main__":
    sys.exit(main())
