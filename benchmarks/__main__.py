"""`python -m benchmarks` (or `make bench`): run every benchmarks/bench_*.py in turn.

Each benchmark measures its targets as ratios side by side in one run, prints them, and exits
non-zero when a target is missed. This runner reports which ones did.
"""
import subprocess
import sys
from pathlib import Path

failed = []
for script in sorted(Path(__file__).parent.glob("bench_*.py")):
    print(f"== {script.name}", flush=True)
    if subprocess.run([sys.executable, str(script)]).returncode != 0:
        failed.append(script.name)
print("all benchmark targets met" if not failed else f"targets missed in: {', '.join(failed)}")
sys.exit(1 if failed else 0)
