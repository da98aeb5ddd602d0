"""End to end: `dvc repro` on the smoke profile in a temporary copy of the repository."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def run(cmd, cwd, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def checkout_copy(dest: Path) -> Path:
    """The files a clean checkout of the current work tree would have (tracked + new, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    run(["git", "init", "-q"], dest)
    return dest


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    repo = checkout_copy(tmp_path_factory.mktemp("repo"))
    run([sys.executable, "-m", "daug", "profile", "smoke"], repo)
    first = run(["dvc", "repro"], repo)
    return repo, first.stdout


def stage_names(repo: Path) -> set[str]:
    out = run(["dvc", "stage", "list", "--name-only"], repo).stdout
    return set(out.split())


def test_repro_runs_every_stage_and_writes_outputs(smoke_repo):
    repo, output = smoke_repo
    assert ran_stages(output) == stage_names(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    for name in params["datasets"]:
        manifest = repo / "data/prepared" / name / "manifest.json"
        assert manifest.exists()
        assert (repo / f"reports/smoke/notebooks/prepare-{name}.html").exists()
    assert (repo / "models/base/model.safetensors").exists()


def test_second_repro_does_nothing(smoke_repo):
    repo, _ = smoke_repo
    again = run(["dvc", "repro"], repo)
    assert ran_stages(again.stdout) == set(), again.stdout


@pytest.mark.skipif(not __import__("tests.browser", fromlist=["chromium"]).chromium(),
                    reason="no Chromium on PATH (.ci/run installs Debian's chromium)")
def test_the_smoke_report_reads_in_a_real_browser(smoke_repo, tmp_path):
    from tests.test_report import report_fits_in_chromium

    repo, _ = smoke_repo
    report_fits_in_chromium(repo / "reports/smoke/study.html", tmp_path / "smoke-report.png")


def test_executed_notebooks_read_cleanly(smoke_repo):
    """What a newcomer opens from the report: no warning that is not one, no progress bar frozen at
    0 %, one visible parameters cell, and no absolute path of the machine that ran them."""
    import json

    repo, _ = smoke_repo
    machine_paths = [str(repo), str(REPO), sys.prefix]
    notebooks = sorted((repo / "reports/smoke/notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 6
    for path in notebooks:
        nb = json.loads(path.read_text(encoding="utf-8"))
        text = path.read_text(encoding="utf-8")
        assert not [p for p in machine_paths if p in text], f"{path.name} prints a machine path"
        for cell in nb["cells"]:
            for out in cell.get("outputs", []):
                shown = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
                assert "Warning" not in shown, (path.name, shown[:300])
                assert "kernels-community" not in shown, (path.name, shown[:300])
                assert not (out["output_type"] == "display_data" and "0%|" in shown), (path.name, shown[:200])
        tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
        if any("injected-parameters" in t for t in tags):
            defaults = next(c for c, t in zip(nb["cells"], tags) if "parameters" in t)
            assert defaults["metadata"]["jupyter"]["source_hidden"]
            html = path.with_suffix(".html").read_text(encoding="utf-8")
            assert "celltag_injected-parameters" in html and "celltag_parameters" not in html, path.name
        bars = re.findall(r"(?m)(?:^|<pre>)\w[\w ]*:\s+\d+%\|", path.with_suffix(".html").read_text(encoding="utf-8"))
        assert len(bars) <= 12, (path.name, len(bars))  # a progress bar shows its last state, not every refresh


def test_the_gain_study_runs_its_sizes_mix_and_filter_into_its_own_report(smoke_repo):
    """`STUDY=gain` (issue 25): the size axis, the mix and the filtered variant end to end; the runs
    it shares with the paper study (the profile's size) are not run again."""
    import json

    repo, _ = smoke_repo
    run([sys.executable, "-m", "daug", "profile", "smoke", "--study", "gain"], repo)
    out = run(["dvc", "repro"], repo).stdout
    ran = ran_stages(out)
    assert "train@zhenhuan-none-n4" in ran and "train@zhenhuan-bt_kept" in ran
    assert not {"train@zhenhuan-none", "train@zhenhuan-sr", "train@zhenhuan-bt"} & ran, sorted(ran)
    html = (repo / "reports/smoke-gain/study.html").read_text(encoding="utf-8")
    assert "Gain against training-set size" in html and "The filter against its unfiltered twin" in html
    rows = [json.loads(line) for line in (repo / "data/augmented/zhenhuan/sr_bt-n4.jsonl").open(encoding="utf-8")]
    originals = [r["id"] for r in rows if r["method"] == "none"]
    assert len(originals) == 4 and {r["source_id"] for r in rows} == set(originals)  # the first 4 originals
    assert {r["made_by"]["method"] for r in rows if r["method"] == "sr_bt"} <= {"sr", "bt"}
    metrics = json.loads((repo / "reports/smoke-gain/augment/zhenhuan-bt_kept.json").read_text(encoding="utf-8"))
    counts = metrics["counts"]
    assert counts["n_output"] + counts["n_filtered"] == 2 * counts["n_source"] == 16
    assert len(metrics["filtered"]) == counts["n_filtered"]
    from tests.browser import chromium
    if chromium():  # the gain report reads in a real browser too (issue 22's check)
        from tests.test_report import report_fits_in_chromium

        report_fits_in_chromium(repo / "reports/smoke-gain/study.html", repo / "gain-report.png")


def test_the_approaches_study_trains_each_approach_into_its_own_report(smoke_repo):
    """`STUDY=approaches,approaches-small` (issue 24): full fine-tuning beside LoRA at two sizes, the
    small-data cells judged with the rest, end to end; the LoRA runs it shares with the paper and
    gain studies are not run again."""
    import json

    repo, _ = smoke_repo
    run([sys.executable, "-m", "daug", "profile", "smoke", "--study", "approaches,approaches-small"], repo)
    out = run(["dvc", "repro"], repo).stdout
    ran = ran_stages(out)
    assert {"train@zhenhuan-none-full-n4", "train@zhenhuan-none-full", "evaluate@zhenhuan-none-full"} <= ran
    assert "train@zhenhuan-none" not in ran, sorted(ran)
    html = (repo / "reports/smoke-approaches/study.html").read_text(encoding="utf-8")
    for heading in ("Approaches side by side", "Claims and their comparisons", "Learning rates chosen on validation data"):
        assert heading in html
    md = (repo / "reports/smoke-approaches/study.md").read_text(encoding="utf-8")
    assert "| full\\_small\\_data | zhenhuan | none | 4 | lora-qv \\> full |" in md  # read at approaches-small's 4
    full = repo / "models/adapters/zhenhuan/none-full/seed-0"
    assert (full / "model.safetensors").exists() or any(full.glob("*.safetensors"))  # a plain checkpoint
    metrics = json.loads((repo / "reports/smoke-approaches/eval/zhenhuan-none-full-n4.json").read_text(encoding="utf-8"))
    assert {"seed-0", "seed-1"} <= set(metrics)
    from tests.browser import chromium
    if chromium():
        from tests.test_report import report_fits_in_chromium

        report_fits_in_chromium(repo / "reports/smoke-approaches/study.html", repo / "approaches-report.png")


def test_changing_a_prepare_param_reruns_prepare_and_dependents_only(smoke_repo):
    repo, _ = smoke_repo
    smoke = repo / "params/smoke.yaml"
    data = yaml.safe_load(smoke.read_text(encoding="utf-8")) or {}
    data.setdefault("prepare", {})["seed"] = 1
    smoke.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    run([sys.executable, "-m", "daug", "profile", "smoke"], repo)
    status = run(["dvc", "status"], repo).stdout
    assert "base_model" not in status
    # --dry: what DVC decides to re-run, without paying for the runs
    rerun = ran_stages(run(["dvc", "repro", "--dry"], repo).stdout)
    assert {s for s in rerun if s.startswith("prepare@")} == {s for s in stage_names(repo) if s.startswith("prepare@")}
    assert "base_model" not in rerun
    assert all(s.split("@")[0] in {"prepare", "augment", "train", "evaluate", "report"} for s in rerun)
