"""One stage contract: every stage module has `stage(params[, key]) -> dict` (key: the dataset, the
augmentation or the run of daug/runs.py, by object or name), every per-run stage command takes a run
by name (--run) or by its axes, notebooks call `<module>.stage`, and the file-to-file forms users
rely on still work."""
from __future__ import annotations

import ast
import contextlib
import copy
import importlib
import inspect
import io
import json

import pytest
import yaml

from daug.cli import COMMANDS, build_parser, main, stage_runs
from daug.paths import STAGES, notebook_source
from tests.conftest import REPO

# stage -> (CLI command, module holding `stage`, the name of stage()'s key argument, the key's flags)
CONTRACT = {
    "prepare": ("prepare", "daug.prepare", "dataset", ["--dataset", "d"]),
    "base_model": ("base-model", "daug.basemodel", None, []),
    "augment": ("augment", "daug.augment.apply", "augmentation", ["--run", "d-m", "--dataset", "d", "--method", "m"]),
    "train": ("train", "daug.train", "run", ["--run", "d-m", "--dataset", "d", "--method", "m", "--approach", "a",
                                             "--size", "3", "--schedule", "s"]),
    "evaluate": ("evaluate", "daug.evaluate", "run", ["--run", "d-m", "--dataset", "d", "--method", "m"]),
    "evaluate_base": ("evaluate", "daug.evaluate", "run", ["--run", "d-base"]),  # the evaluate notebook, run <ds>-base
    "report": ("report", "daug.report", None, []),
}


def test_the_contract_covers_every_stage():
    assert set(CONTRACT) == set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_function_has_the_same_shape(stage):
    fn = importlib.import_module(CONTRACT[stage][1]).stage
    params = list(inspect.signature(fn).parameters.values())
    key = CONTRACT[stage][2]
    assert [p.name for p in params[:2]] == ["params", key] if key else params[0].name == "params"
    rest = params[2:] if key else params[1:]
    assert all(p.default is not inspect.Parameter.empty or p.kind is p.VAR_KEYWORD for p in rest), \
        "extra arguments need defaults"


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_command_takes_the_same_flags(stage):
    command, _, _, flags = CONTRACT[stage]
    args = build_parser(command).parse_args([command, "--params", "p.yaml", *flags])
    assert args.params == "p.yaml"
    for flag, value in zip(flags[::2], flags[1::2]):
        assert str(getattr(args, flag[2:])) == value
    assert build_parser(command).parse_args([command]).params == "params.yaml"


@pytest.mark.parametrize("stage", STAGES)
def test_the_stage_notebook_calls_the_stage_function(stage):
    nb = json.loads((REPO / notebook_source(stage)).read_text(encoding="utf-8"))
    module = CONTRACT[stage][1].rsplit(".", 1)[1]
    calls = [node for cell in nb["cells"] if cell["cell_type"] == "code"
             for node in ast.walk(ast.parse("".join(cell["source"])))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "stage"]
    assert [c.func.value.id for c in calls] == [module]
    assert [a.id for a in calls[0].args][:1] == ["params"]


def test_help_documents_the_stage_shape_and_the_file_forms(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "python -m daug <stage> [--run NAME | --dataset D --method M ...] [--params FILE]" in text
    for form in ("prepare RAW OUT_DIR", "augment IN OUT --method M", "score PREDICTIONS.jsonl"):
        assert form in text
    assert set(COMMANDS) >= {"prepare", "base-model", "augment", "train", "evaluate", "score", "report"}


def test_a_left_out_axis_means_every_one(smoke_params):
    def args(**given):
        return build_parser("train").parse_args(["train", *[x for k, v in given.items() for x in (f"--{k}", str(v))]])

    names = [r.name for r in stage_runs(smoke_params, args())]
    assert names == [f"{d}-{m}" for d in ("zhenhuan", "paimon") for m in ("none", "rd", "sr", "bt", "pg")]
    assert [r.name for r in stage_runs(smoke_params, args(dataset="paimon", method="rd"))] == ["paimon-rd"]
    assert [r.name for r in stage_runs(smoke_params, args(run="zhenhuan-sr"))] == ["zhenhuan-sr"]
    # a run outside the studies, by its axes alone: named by every axis off the grid's defaults
    assert [r.name for r in stage_runs(smoke_params, args(dataset="paimon", method="ri", size=4))] == ["paimon-ri-n4"]


def test_prepare_stage_form_writes_the_prepared_split(tmp_path, monkeypatch, smoke_params, capsys):
    params = copy.deepcopy(smoke_params)
    params["datasets"] = {"zhenhuan": {**params["datasets"]["zhenhuan"],
                                       "file": str(REPO / params["datasets"]["zhenhuan"]["file"])}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "--params", "p.yaml"]) == 0
    assert "-> data/prepared/zhenhuan" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "data/prepared/zhenhuan/manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["train"] > 0 and (tmp_path / "data/prepared/zhenhuan/train.jsonl").exists()


@pytest.mark.parametrize("argv, message", [
    (["augment", "--method", "rd", "--n-aug", "2"], "--n-aug: only for the file form"),
    (["augment", "in.jsonl", "--method", "rd"], "the file form needs INPUT OUTPUT --method M"),
    (["prepare", "--seed", "3"], "--seed: only for the file form"),
    (["prepare", "raw.json"], "the file form needs RAW OUT_DIR"),
    (["train", "--out", "x"], "--out: a path names one run's files; choose one run"),
    (["evaluate", "--dataset", "zhenhuan", "--adapter", "x"], "--adapter: a path names one run's files"),
    (["train", "--run", "zhenhuan-xx"], "no run 'zhenhuan-xx' in params"),
])
def test_misused_forms_are_one_line_errors(argv, message, tmp_path, smoke_params, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(smoke_params, allow_unicode=True), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == 1
    assert message in err.getvalue() and err.getvalue().count("\n") == 1
