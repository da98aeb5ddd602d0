"""daug/paths.py and dvc.yaml name the same stage inputs and outputs, for every profile.

dvc.yaml is resolved by DVC itself (its `${...}` templating against a params.yaml written for the
profile), so the comparison is with what `dvc repro` would really read and write.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daug.params import profiles, write_profile
from daug.paths import BASE, STAGES, Paths, notebook_source, run_name
from daug.runs import Grid, active_runs
from tests.conftest import REPO


def resolved_stages(profile: str, tmp: Path, study: str | None = None, params_dir: Path = REPO / "params") -> tuple[dict, dict]:
    """({stage name: DVC stage}, params) of dvc.yaml resolved for `profile`, in a scratch DVC repo."""
    from dvc.repo import Repo

    shutil.copy(REPO / "dvc.yaml", tmp / "dvc.yaml")
    params = write_profile(profile, params_dir, tmp / "params.yaml", study=study)
    Repo.init(str(tmp), no_scm=True)
    with Repo(str(tmp)) as repo:
        return {s.name: s for s in repo.index.stages}, params


def runs(stage: str, params: dict) -> list[tuple[str, object]]:
    """(dvc stage name, the key daug/paths.py takes) of every run of `stage`."""
    grid = Grid.of(params)
    if stage in ("base_model", "report"):
        return [(stage, None)]
    if stage == "prepare":
        return [(f"{stage}@{d}", d) for d in params["datasets"]]
    if stage == "evaluate_base":
        return [(f"{stage}@{d}", grid.base(d)) for d in params["datasets"]]
    if stage == "augment":
        augs = {r.augmentation.name: r.augmentation for r in active_runs(params)}
        return [(f"{stage}@{name}", aug) for name, aug in augs.items()]
    return [(f"{stage}@{r.name}", r) for r in active_runs(params)]


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


def check_stages(stages: dict, params: dict, label: str) -> None:
    paths = Paths.of(params)
    expected_names = set()
    for stage in STAGES:
        for name, key in runs(stage, params):
            expected_names.add(name)
            assert name in stages, f"dvc.yaml ({label}) has no stage {name}"
            want = paths.stage_io(stage, key)
            got = declared(stages[name])
            for kind in want:
                assert sorted(got[kind]) == sorted(want[kind]), (
                    f"{label} {name} {kind}: dvc.yaml has {sorted(map(str, got[kind]))}, "
                    f"daug/paths.py says {sorted(map(str, want[kind]))}")
            body = stages[name].cmd.split()
            assert body[:4] == ["python", "-m", "daug", "notebook"]
            assert body[4] == notebook_source(stage).as_posix()
            key_name = key if isinstance(key, str) or key is None else key.name
            assert body[5] == paths.notebook(stage, key_name).as_posix()
            if stage not in ("prepare", "base_model", "report"):
                assert body[6:] == ["-p", "run", key_name]  # the notebook looks its run up by name
    assert set(stages) == expected_names


@pytest.mark.parametrize("profile", profiles(REPO / "params"))
def test_dvc_yaml_declares_exactly_the_paths_of_daug_paths(profile, tmp_path):
    stages, params = resolved_stages(profile, tmp_path)
    check_stages(stages, params, profile)


def test_a_run_off_the_default_axes_has_its_own_paths_and_stages(tmp_path):
    """A study with another approach and size: its runs resolve (through DVC's own API) to stages and
    paths of their own, named by every axis; the shared `none` cell of the default grid is one run."""
    import yaml

    params_dir = tmp_path / "params"
    shutil.copytree(REPO / "params", params_dir)
    smoke = yaml.safe_load((params_dir / "smoke.yaml").read_text(encoding="utf-8"))
    smoke["approaches"] = {"lora-all": {"r": 4, "alpha": 8, "dropout": 0.0,
                                        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}}
    smoke["schedules"] = {"long": {"steps": 12}}
    smoke["studies"]["wide"] = {"datasets": ["zhenhuan"], "methods": ["none", "rd"], "approaches": ["lora-qv", "lora-all"],
                                "sizes": [None, 4], "schedules": ["default", "long"]}
    (params_dir / "smoke.yaml").write_text(yaml.safe_dump(smoke, allow_unicode=True), encoding="utf-8")
    (tmp_path / "dvc").mkdir()
    stages, params = resolved_stages("smoke", tmp_path / "dvc", study="paper,wide", params_dir=params_dir)
    check_stages(stages, params, "smoke, studies paper + wide")
    names = {r.name for r in active_runs(params)}
    assert "zhenhuan-none" in names and "zhenhuan-rd-lora-all-n4-long" in names
    assert len(names) == 10 + 2 * 2 * 2 * 2 - 2  # paper's 10, wide's 16, the two default cells shared
    run = Grid.of(params).run("zhenhuan", "rd", "lora-all", 4, "long")
    p = Paths.of(params)
    assert p.adapters(run) == Path("models/adapters/zhenhuan/rd-lora-all-n4-long")
    assert p.augmented(run.augmentation) == Path("data/augmented/zhenhuan/rd-n4.jsonl")  # approach, schedule: no new data
    assert stages["train@zhenhuan-rd-lora-all-n4-long"].deps[0].def_path == "notebooks/train.ipynb"
    assert "augment@zhenhuan-rd-n4" in stages and "augment@zhenhuan-rd-lora-all-n4" not in stages


def test_timings_are_outs_never_metrics(tmp_path):
    stages, params = resolved_stages("smoke", tmp_path)
    for stage in stages.values():
        for out in stage.outs:
            if "/timings/" in out.def_path and out.def_path.startswith("results/"):
                assert not out.metric and not out.plot and out.use_cache, out.def_path


def test_every_stage_but_the_report_can_be_restored_from_the_run_cache(tmp_path):
    """DVC's run-cache skips a stage with any `cache: false` out: every out before the report is
    cached (results/), and the report publishes them to reports/ for git."""
    stages, _ = resolved_stages("smoke", tmp_path)
    for name, stage in stages.items():
        cached = {o.def_path: o.use_cache for o in stage.outs}
        if name == "report":
            assert not any(cached.values()) and "reports/smoke/eval" in cached, cached
        else:
            assert all(cached.values()) and not any(p.startswith("reports/") for p in cached), (name, cached)


def test_a_run_is_named_once(smoke_params):
    p = Paths("smoke")
    run = Grid.of(smoke_params).run("zhenhuan", "rd")
    assert run.name == "zhenhuan-rd" and run_name("augment", run.augmentation.name) == "augment-zhenhuan-rd"
    assert p.notebook("augment", run.augmentation.name, ".html") == Path("results/smoke/notebooks/augment-zhenhuan-rd.html")
    assert p.published(p.notebook("augment", run.augmentation.name)) == Path("reports/smoke/notebooks/augment-zhenhuan-rd.ipynb")
    assert p.notebook("report") == Path("reports/smoke/report.ipynb")  # the report's own, beside the study
    assert p.adapters(run) == Path("models/adapters/zhenhuan/rd")
    assert p.adapter(run, 1) == Path("models/adapters/zhenhuan/rd/seed-1")
    assert p.runs(run, 0) == Path("runs/smoke/zhenhuan/rd/seed-0")
    assert Paths("cpu", Path("/x")).eval_metrics(Grid.of(smoke_params).run("paimon", "bt")) == Path("/x/results/cpu/eval/paimon-bt.json")


def test_the_base_model_is_evaluated_like_a_method_without_an_adapter(smoke_params):
    p, grid = Paths("cpu"), Grid.of(smoke_params)
    base, method = p.stage_io("evaluate_base", grid.base("paimon")), p.stage_io("evaluate", grid.run("paimon", "rd"))
    assert notebook_source("evaluate_base") == notebook_source("evaluate") == Path("notebooks/evaluate.ipynb")
    trained = grid.run("paimon", "rd")  # the base model has no weights and no training-stage validation losses
    assert base["inputs"] == [i for i in method["inputs"] if i not in (p.adapters(trained), p.val_losses(trained))]
    assert base["outs"] == [p.test_losses(grid.base("paimon")), p.predictions(grid.base("paimon")),
                            Path("results/cpu/notebooks/evaluate-paimon-base.ipynb"),
                            Path("results/cpu/notebooks/evaluate-paimon-base.html"),
                            Path("results/cpu/timings/evaluate-paimon-base.json")]
    assert base["metrics"] == [Path("results/cpu/eval/paimon-base.json")]
    assert p.test_losses(grid.run("paimon", "rd")) == Path("results/cpu/eval/paimon-rd.losses.jsonl")
    assert grid.base("paimon").name == f"paimon-{BASE}"


def test_one_fallback_profile():
    from daug.params import DEFAULT_PROFILE

    assert Paths.of({}).profile == DEFAULT_PROFILE
    assert Paths.of({"profile": "paper"}).profile == "paper"
