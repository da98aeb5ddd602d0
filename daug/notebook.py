"""`python -m daug notebook IN.ipynb OUT.ipynb -p name value ...`: run a stage notebook.

Executes IN with papermill (values go into the cell tagged `parameters`), writes the executed copy
to OUT and an HTML rendering beside it (OUT with .html), creating the folder first (DVC deletes a
stage's outputs before it runs). A failing cell fails the command, and the executed notebook
still shows where.

The HTML is nbconvert's lab rendering with a small stylesheet of its own (`HTML_TEMPLATE`) instead
of JupyterLab's ~250 KB one, which nbconvert inlines into every file (15 of the 20 MB of HTML of a
full run were that one stylesheet, repeated), and without the require.js / MathJax / Mermaid
script tags, which point at CDNs that an offline reader cannot reach and no stage output uses.
Code keeps its syntax colours (the Pygments rules nbconvert inlines, ~5 KB).

One visible parameters cell: papermill keeps the notebook's defaults cell (tag `parameters`) and adds
its own (`injected-parameters`) below it. The injected cell is given every parameter, defaults
included, so it alone states what the run used; the defaults cell is then collapsed in the executed
copy (`jupyter.source_hidden`, still there for audit) and left out of the HTML. Tables wrap inside
the page width instead of scrolling sideways.
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


# The lab template, with the blocks that inline JupyterLab's stylesheet or load scripts replaced.
HTML_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block notebook_css -%}
<style type="text/css">
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", sans-serif; color: #1f2328;
       max-width: 1200px; margin: 0 auto; padding: 1em; }
.jp-Cell { margin: 0.6em 0; }
.jp-Collapser, a.anchor-link { display: none; }
.jp-InputPrompt, .jp-OutputPrompt { color: #6e7781; font: 12px monospace; margin-bottom: 2px; }
.jp-InputArea-editor { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 4px; padding: 4px 8px; }
pre { margin: 0; font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre-wrap;
      overflow-wrap: anywhere; }
.jp-OutputArea-output { overflow-x: auto; padding: 2px 8px; }
.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"] { background: #fff8e6; }
.jp-RenderedHTMLCommon table { border-collapse: collapse; font-size: 12.5px; }
.jp-RenderedHTMLCommon th, .jp-RenderedHTMLCommon td { border: 1px solid #d0d7de; padding: 2px 6px;
      max-width: 28em; overflow-wrap: anywhere; }
.jp-RenderedHTMLCommon thead, .jp-RenderedHTMLCommon tr:nth-child(even) { background: #f6f8fa; }
img { max-width: 100%; }
</style>
{%- endblock notebook_css -%}
"""


DEFAULTS_TAG, INJECTED_TAG = "parameters", "injected-parameters"  # papermill's cell tags


def html_exporter():
    """nbconvert's HTMLExporter with HTML_TEMPLATE (no per-file copy of JupyterLab's stylesheet);
    a cell tagged `hide-in-html` (the defaults cell of an executed notebook) is left out, and
    consecutive stream outputs are merged with each progress-bar refresh (`\r`) overwriting the
    last, as JupyterLab shows them (unmerged, a training notebook printed ~60 bar lines per seed)."""
    import jinja2
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor, TagRemovePreprocessor

    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({"daug-notebook.html.j2": HTML_TEMPLATE})],
                            template_file="daug-notebook.html.j2")
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={"hide-in-html"}), enabled=True)
    exporter.register_preprocessor(CoalesceStreamsPreprocessor(), enabled=True)
    return exporter


def all_parameters(src: str | Path, overrides: dict) -> dict:
    """The notebook's defaults (its `parameters` cell, literal values) updated with `overrides`."""
    import ast

    import papermill as pm

    defaults = {}
    for name, spec in pm.inspect_notebook(str(src)).items():
        try:
            defaults[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            raise DaugError(f"{src}: parameters cell: {name} = {spec['default']} is not a literal value") from None
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise DaugError(f"{src}: no parameter named {', '.join(unknown)} (the parameters cell has "
                        f"{', '.join(defaults)})")
    return {**defaults, **overrides}


def _one_parameters_cell(nb) -> None:
    """Collapse the defaults cell where papermill injected the complete set below it."""
    tags = [set(cell.metadata.get("tags", [])) for cell in nb.cells]
    if not any(INJECTED_TAG in t for t in tags):
        return
    for cell, t in zip(nb.cells, tags):
        if DEFAULTS_TAG in t:
            cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
            cell.metadata["tags"] = [*cell.metadata.get("tags", []), "hide-in-html"]


def run_notebook(src: str | Path, out: str | Path, parameters: dict | None = None) -> Path:
    import nbformat
    import papermill as pm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parameters = all_parameters(src, parameters or {})
    try:
        pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name="python3",
                            progress_bar=False, log_output=True, cwd=".")
    except pm.PapermillExecutionError as e:
        raise DaugError(f"{src}: cell {e.exec_count} raised {e.ename}: {e.evalue} (executed copy: {out})") from None
    finally:
        if out.exists():
            nb = nbformat.read(out, as_version=4)
            _one_parameters_cell(nb)
            nbformat.write(nb, out)
            html, _ = html_exporter().from_notebook_node(nb)
            out.with_suffix(".html").write_text(html, encoding="utf-8")
    return out


def add_arguments(parser) -> None:
    parser.add_argument("src", help="notebook to run (notebooks/NAME.ipynb)")
    parser.add_argument("out", help="executed copy (Paths.notebook: results/<profile>/notebooks/NAME.ipynb); an .html "
                                    "is written beside it")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a value for the notebook's parameters cell (repeatable)")


def run(args) -> int:
    run_notebook(args.src, args.out, {name: _value(value) for name, value in args.parameter})
    return 0
