"""daug/paths.py and dvc.yaml name the same stage inputs and outputs, for every profile.

dvc.yaml is resolved by DVC itself (its `${...}` templating against a params.yaml written for the
profile), so the comparison is with what `dvc repro` would really read and write.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daug.params import profiles, write_profile
from daug.paths import BASE, STAGES, Paths, notebook_source, run_name, stage_run
from tests.conftest import REPO


def resolved_stages(profile: str, tmp: Path) -> tuple[dict, dict]:
    """({stage name: DVC stage}, params) of dvc.yaml resolved for `profile`, in a scratch DVC repo."""
    from dvc.repo import Repo

    shutil.copy(REPO / "dvc.yaml", tmp / "dvc.yaml")
    params = write_profile(profile, REPO / "params", tmp / "params.yaml")
    Repo.init(str(tmp), no_scm=True)
    with Repo(str(tmp)) as repo:
        return {s.name: s for s in repo.index.stages}, params


def runs(stage: str, params: dict) -> list[tuple[str, str | None, str | None]]:
    """(dvc stage name, dataset, method) of every run of `stage`."""
    datasets, methods = list(params["datasets"]), params["augment"]["methods"]
    if stage in ("base_model", "report"):
        return [(stage, None, None)]
    if stage in ("prepare", "evaluate_base"):
        return [(f"{stage}@{d}", d, None) for d in datasets]
    return [(f"{stage}@{d}-{m}", d, m) for d in datasets for m in methods]


def declared(stage) -> dict[str, list[Path]]:
    """A resolved DVC stage's data deps, outs, metrics and plots (code and params deps left out)."""
    from dvc.dependency.param import ParamsDependency

    outs = stage.outs
    return {
        "inputs": [Path(d.def_path) for d in stage.deps if not isinstance(d, ParamsDependency)
                   and not d.def_path.startswith(("daug/", "notebooks/"))],
        "outs": [Path(o.def_path) for o in outs if not o.metric and not o.plot],
        "metrics": [Path(o.def_path) for o in outs if o.metric],
        "plots": [Path(o.def_path) for o in outs if o.plot],
    }


@pytest.mark.parametrize("profile", profiles(REPO / "params"))
def test_dvc_yaml_declares_exactly_the_paths_of_daug_paths(profile, tmp_path):
    stages, params = resolved_stages(profile, tmp_path)
    paths = Paths.of(params)
    expected_names = set()
    for stage in STAGES:
        for name, ds, method in runs(stage, params):
            expected_names.add(name)
            assert name in stages, f"dvc.yaml ({profile}) has no stage {name}"
            want = paths.stage_io(stage, ds, method)
            got = declared(stages[name])
            for kind in want:
                assert sorted(got[kind]) == sorted(want[kind]), (
                    f"{profile} {name} {kind}: dvc.yaml has {sorted(map(str, got[kind]))}, "
                    f"daug/paths.py says {sorted(map(str, want[kind]))}")
            body = stages[name].cmd.split()
            assert body[:4] == ["python", "-m", "daug", "notebook"]
            assert body[4] == notebook_source(stage).as_posix()
            nb_stage, nb_method = stage_run(stage, method)  # evaluate_base runs evaluate on BASE
            assert body[5] == paths.notebook(nb_stage, ds, nb_method).as_posix()
    assert set(stages) == expected_names


def test_timings_are_outs_never_metrics(tmp_path):
    stages, params = resolved_stages("smoke", tmp_path)
    for stage in stages.values():
        for out in stage.outs:
            if "/timings/" in out.def_path:
                assert not out.metric and not out.plot and not out.use_cache, out.def_path


def test_a_run_is_named_once():
    p = Paths("smoke")
    assert run_name("augment", "zhenhuan", "rd") == "augment-zhenhuan-rd"
    assert p.notebook("augment", "zhenhuan", "rd", ".html") == Path("reports/smoke/notebooks/augment-zhenhuan-rd.html")
    assert p.adapters("zhenhuan", "rd") == Path("models/adapters/zhenhuan/rd")
    assert p.adapter("zhenhuan", "rd", 1) == Path("models/adapters/zhenhuan/rd/seed-1")
    assert p.runs("zhenhuan", "rd", 0) == Path("runs/smoke/zhenhuan/rd/seed-0")
    assert Paths("cpu", Path("/x")).eval_metrics("paimon", "bt") == Path("/x/reports/cpu/eval/paimon-bt.json")


def test_the_base_model_is_evaluated_like_a_method_without_an_adapter():
    p = Paths("cpu")
    base, method = p.stage_io("evaluate_base", "paimon"), p.stage_io("evaluate", "paimon", "rd")
    assert notebook_source("evaluate_base") == notebook_source("evaluate") == Path("notebooks/evaluate.ipynb")
    assert base["inputs"] == [i for i in method["inputs"] if i != p.adapters("paimon", "rd")]
    assert base["outs"] == [p.test_losses("paimon", BASE), p.predictions("paimon", BASE),
                            Path("reports/cpu/notebooks/evaluate-paimon-base.ipynb"),
                            Path("reports/cpu/notebooks/evaluate-paimon-base.html"),
                            Path("reports/cpu/timings/evaluate-paimon-base.json")]
    assert base["metrics"] == [Path("reports/cpu/eval/paimon-base.json")]
    assert p.test_losses("paimon", "rd") == Path("reports/cpu/eval/paimon-rd.losses.jsonl")


def test_one_fallback_profile():
    from daug.params import DEFAULT_PROFILE

    assert Paths.of({}).profile == DEFAULT_PROFILE
    assert Paths.of({"profile": "paper"}).profile == "paper"
