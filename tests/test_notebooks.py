"""Committed notebooks stay thin and output-free (DVC hashes them; stray outputs would re-run stages)."""
import ast
import json

import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_stage_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"prepare", "base_model"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_no_outputs_and_a_parameters_cell(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0], "the first code cell must be the one tagged `parameters`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_thin(path):
    """Logic lives in daug/: notebooks call it and display; they define no functions or classes."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
        assert not defs, f"{path.name}: move {defs[0].name} into daug/"
        assert len("".join(cell["source"]).splitlines()) <= 25, f"{path.name}: cell too long; move logic into daug/"


def test_every_dvc_stage_notebook_exists():
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        nb = body["cmd"].split()[4]
        assert (REPO / nb).exists(), f"stage {name} runs missing {nb}"


def test_the_html_rendering_carries_no_copy_of_jupyterlab_s_stylesheet(tmp_path):
    """A committed run writes ~60 HTML renderings: each would inline JupyterLab's ~250 KB stylesheet."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    from daug.notebook import html_exporter

    nb = new_notebook(cells=[new_markdown_cell("# Title"), new_code_cell(
        "print('你好')", outputs=[new_output("stream", name="stdout", text="你好\n")], execution_count=1)])
    html, _ = html_exporter().from_notebook_node(nbformat.from_dict(nb))
    assert len(html.encode("utf-8")) < 20_000, len(html)  # JupyterLab's stylesheet alone is ~250 KB
    assert "--jp-layout-color0" not in html and "require.js" not in html and "mathjax" not in html.lower()
    assert "你好" in html and "<style" in html and 'class="highlight' in html  # readable, code still coloured


def test_every_parameter_is_stated_and_an_unknown_one_is_refused_before_running():
    from daug import DaugError
    from daug.notebook import all_parameters

    nb = REPO / "notebooks/train.ipynb"
    assert all_parameters(nb, {"run": "paimon-sr"}) == {"run": "paimon-sr", "params_file": "params.yaml"}
    with pytest.raises(DaugError, match=r"train.ipynb: no parameter named dataset"):
        all_parameters(nb, {"dataset": "paimon"})
