"""The grid on many machines, through DVC's own mechanisms (README, "Many machines"): two workers,
each a clone, reproduce their share of the stages (`python -m daug stages --shard K/N`) and push
outputs and run-cache to one shared DVC remote; a third clone assembles the report with `dvc repro
--pull`, every stage but the report restored from the run-cache, none run again."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_pipeline import checkout_copy, ran_stages, run

pytestmark = pytest.mark.slow


def restored_stages(output: str) -> set[str]:
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", output))


def clone(origin: Path, dest: Path, remote: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(dest)], origin.parent)
    run(["dvc", "remote", "add", "--local", "-d", "shared", str(remote)], dest)
    return dest


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """The repository on the smoke profile, with a small study: one dataset, two methods."""
    repo = checkout_copy(tmp_path_factory.mktemp("origin") / "repo")
    smoke = repo / "params/smoke.yaml"
    data = yaml.safe_load(smoke.read_text(encoding="utf-8"))
    data["studies"]["paper"] = {"datasets": ["zhenhuan"], "methods": ["none", "rd"]}
    smoke.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    run([sys.executable, "-m", "daug", "profile", "smoke"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke study"], repo)
    return repo


def test_two_workers_share_the_grid_and_a_third_clone_assembles_without_running_a_stage(origin, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    shares = []
    for k in range(2):
        worker = clone(origin, tmp_path / f"worker{k}", remote)
        share = run([sys.executable, "-m", "daug", "stages", "--shard", f"{k}/2"], worker).stdout.split()
        out = run(["dvc", "repro", "--pull", *share], worker).stdout
        assert set(share) <= ran_stages(out) | restored_stages(out)
        run(["dvc", "push", "--run-cache"], worker)
        shares.append((worker, set(share), ran_stages(out), restored_stages(out)))
    (w0, share0, ran0, _), (w1, share1, ran1, restored1) = shares
    assert share0 and share1 and not share0 & share1  # disjoint shares of the grid
    assert "train@zhenhuan-none" in share0 and "train@zhenhuan-rd" in share1
    assert {"prepare@zhenhuan", "base_model"} <= restored1 and not ran1 & ran0  # the second worker reused the first's

    assembler = clone(origin, tmp_path / "assembler", remote)
    out = run(["dvc", "repro", "--pull"], assembler).stdout
    every = set(run(["dvc", "stage", "list", "--name-only"], assembler).stdout.split())
    assert ran_stages(out) == {"report"}, out[-3000:]  # the assembly step, and nothing else
    assert restored_stages(out) == every - {"report"}
    html = (assembler / "reports/smoke/study.html").read_text(encoding="utf-8")
    assert "zhenhuan" in html
    for worker, name in ((w0, "zhenhuan-none"), (w1, "zhenhuan-rd")):
        produced = worker / f"results/smoke/eval/{name}.losses.jsonl"
        assert (assembler / f"reports/smoke/eval/{name}.losses.jsonl").read_bytes() == produced.read_bytes()
        assert (assembler / f"reports/smoke/notebooks/train-{name}.html").exists()  # published for git
    assert run(["dvc", "status"], assembler).stdout.strip().endswith("up to date.")
