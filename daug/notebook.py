"""`python -m daug notebook IN.ipynb OUT.ipynb -p name value ...`: run a stage notebook.

Executes IN with papermill (values go into the cell tagged `parameters`), writes the executed copy
to OUT and an HTML rendering beside it (OUT with .html), creating the folder first (DVC deletes a
stage's outputs before it runs). A failing cell fails the command, and the executed notebook
still shows where.
"""
from __future__ import annotations

from pathlib import Path

from daug import DaugError


def _value(text: str):
    """papermill -p semantics: numbers, booleans and None are parsed, everything else is a string."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, type(None), list, dict)) else text


def run_notebook(src: str | Path, out: str | Path, parameters: dict | None = None) -> Path:
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(src), str(out), parameters=parameters or {}, kernel_name="python3",
                            progress_bar=False, log_output=True, cwd=".")
    except pm.PapermillExecutionError as e:
        raise DaugError(f"{src}: cell {e.exec_count} raised {e.ename}: {e.evalue} (executed copy: {out})") from None
    finally:
        if out.exists():
            html, _ = HTMLExporter().from_notebook_node(nbformat.read(out, as_version=4))
            out.with_suffix(".html").write_text(html, encoding="utf-8")
    return out


def add_arguments(parser) -> None:
    parser.add_argument("src", help="notebook to run (notebooks/NAME.ipynb)")
    parser.add_argument("out", help="executed copy (reports/<profile>/notebooks/NAME.ipynb); an .html is written beside it")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a value for the notebook's parameters cell (repeatable)")


def run(args) -> int:
    run_notebook(args.src, args.out, {name: _value(value) for name, value in args.parameter})
    return 0
