"""The executed notebooks as the report publishes them: each notebook's HTML rendered again from its
executed .ipynb with one more step than the stage's export (daug.notebook.html_exporter), so a
progress bar shows its last state only.

The stage's export merges consecutive stream outputs and lets each `\\r` refresh overwrite the last,
which collapses a single bar. Nested bars (an augmentation's `generate` bar inside its `augment`
bar) are written one refresh per line, and a model-based augmentation printed 80-170 bar lines.
Here, within each run of consecutive bar lines of a stream output, a bar line is kept when it
shows a finished bar (100%: e.g. each seed's test-loss bar) or is the last line of its label (a
bar that never finished); the refreshes in between go, and so do empty lines between bar lines (a
nested bar closing); every other line stays as it is."""
from __future__ import annotations

import re
from pathlib import Path

BAR = re.compile(r"^(?P<label>[^\r\n:|]{1,80}):\s+\d+%\|")
DONE = re.compile(r"^[^\r\n:|]{1,80}:\s+100%\|")


def last_bar_states(text: str) -> str:
    """`text` with each run of consecutive progress-bar lines reduced to the finished bars (100%)
    and each bar's last line: the refreshes before them go."""
    out, run = [], []

    def flush():
        last = {}
        for i, line in enumerate(run):
            last[BAR.match(line)["label"]] = i
        out.extend(line for i, line in enumerate(run) if i in last.values() or DONE.match(line))
        run.clear()

    blanks = []  # empty lines inside a run (a nested bar closing) belong to it: they go with it
    for line in text.split("\n"):
        if BAR.match(line):
            run.append(line)
            blanks.clear()
        elif not line and run:
            blanks.append(line)
        else:
            flush()
            out.extend(blanks)
            blanks.clear()
            out.append(line)
    flush()
    out.extend(blanks)
    return "\n".join(out)


def _preprocessor():
    from nbconvert.preprocessors import Preprocessor

    class LastBarState(Preprocessor):
        def preprocess_cell(self, cell, resources, index):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    text = output["text"] if isinstance(output["text"], str) else "".join(output["text"])
                    output["text"] = last_bar_states(text)
            return cell, resources

    return LastBarState()


def render_html(notebook: Path, html: Path) -> bool:
    """Write `html` from the executed `notebook` (the stage's exporter, then the bars' last states);
    False, writing nothing, when `notebook` is not a notebook nbformat can read."""
    import nbformat

    from daug.io import atomic_write_text
    from daug.notebook import html_exporter

    try:
        node = nbformat.read(str(notebook), as_version=4)
    except (ValueError, nbformat.ValidationError):  # not JSON, or not a notebook
        return False
    exporter = html_exporter()
    exporter.register_preprocessor(_preprocessor(), enabled=True)  # after the stage's own merging
    body, _ = exporter.from_notebook_node(node)
    atomic_write_text(html, body)
    return True
