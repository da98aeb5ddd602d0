"""Write a thin stage notebook: a `parameters` cell plus code cells, no outputs.

Usage (from the repo root): python tools/new_notebook.py notebooks/NAME.ipynb < SPEC.py
The spec holds cells separated by lines `# %%`; the first cell becomes the `parameters` cell and a
line `# %% [markdown]` starts a markdown cell. Notebooks may equally be edited in JupyterLab;
tests/test_notebooks.py checks they stay thin and output-free.
"""
import sys

import nbformat


def build(spec: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    chunks = spec.split("# %%")
    first_code = True
    for chunk in chunks[1:]:
        header, _, body = chunk.partition("\n")
        body = body.strip("\n")
        if header.strip() == "[markdown]":
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            nb.cells.append(nbformat.v4.new_markdown_cell(text))
            continue
        cell = nbformat.v4.new_code_cell(body)
        if first_code:
            cell.metadata["tags"] = ["parameters"]
            first_code = False
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: same spec, same bytes
    return nb


if __name__ == "__main__":
    nbformat.write(build(sys.stdin.read()), sys.argv[1])
