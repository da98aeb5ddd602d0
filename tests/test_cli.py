"""One stage contract: every stage module has `stage(params, dataset=None, method=None) -> dict`, every
stage command takes [--dataset D] [--method M] [--params FILE], notebooks call `<module>.stage`, and
the file-to-file forms users rely on still work."""
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

# stage -> (CLI command, module holding `stage`, takes --dataset, takes --method)
CONTRACT = {
    "prepare": ("prepare", "daug.prepare", True, False),
    "base_model": ("base-model", "daug.basemodel", False, False),
    "augment": ("augment", "daug.augment.apply", True, True),
    "train": ("train", "daug.train", True, True),
    "evaluate": ("evaluate", "daug.evaluate", True, True),
    "evaluate_base": ("evaluate", "daug.evaluate", True, True),  # the evaluate notebook with method `base`
    "report": ("report", "daug.report", False, False),
}


def test_the_contract_covers_every_stage():
    assert set(CONTRACT) == set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_function_has_the_same_shape(stage):
    fn = importlib.import_module(CONTRACT[stage][1]).stage
    params = list(inspect.signature(fn).parameters.values())
    assert [p.name for p in params[:3]] == ["params", "dataset", "method"]
    assert params[1].default is None and params[2].default is None
    assert all(p.default is not inspect.Parameter.empty for p in params[1:]), "extra arguments need defaults"


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_command_takes_the_same_flags(stage):
    command, _, dataset, method = CONTRACT[stage]
    argv = [command, "--params", "p.yaml"] + (["--dataset", "d"] if dataset else []) + (["--method", "m"] if method else [])
    args = build_parser(command).parse_args(argv)
    assert args.params == "p.yaml"
    assert getattr(args, "dataset", "d") == "d" and getattr(args, "method", "m") == "m"
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
    assert "python -m daug <stage> [--dataset D] [--method M] [--params FILE]" in text
    for form in ("prepare RAW OUT_DIR", "augment IN OUT --method M", "score PREDICTIONS.jsonl"):
        assert form in text
    assert set(COMMANDS) >= {"prepare", "base-model", "augment", "train", "evaluate", "score", "report"}


def test_a_left_out_dataset_or_method_means_every_one():
    params = {"datasets": {"a": {}, "b": {}}, "augment": {"methods": ["none", "rd"]}}
    assert stage_runs(params, None, None) == [("a", "none"), ("a", "rd"), ("b", "none"), ("b", "rd")]
    assert stage_runs(params, "b", None) == [("b", "none"), ("b", "rd")]
    assert stage_runs(params, None, None, per_method=False) == [("a", None), ("b", None)]


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
    (["train", "--out", "x"], "give --dataset and --method"),
    (["evaluate", "--dataset", "zhenhuan", "--adapter", "x"], "give --dataset and --method"),
])
def test_misused_forms_are_one_line_errors(argv, message, tmp_path, smoke_params, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(smoke_params, allow_unicode=True), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == 1
    assert message in err.getvalue() and err.getvalue().count("\n") == 1
