"""One document, two renderings: a self-contained HTML page (figures embedded as base64 PNG, inline
CSS, no scripts, nothing fetched) and Markdown with relative links to the PNG files, for code hosts.

A `Doc` is a list of blocks built in reading order; `to_html` and `to_markdown` walk the same list,
so the two formats cannot drift apart.
"""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

VERDICTS = ("supported", "contradicted", "inconclusive", "equivalent", "NO")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK SC","PingFang SC",
"Microsoft YaHei",sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;text-align:left}
th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}
figcaption,caption{font-size:.9em;color:#555;text-align:left;padding:.2em 0}.note{color:#555;font-size:.92em}
td.supported{background:#d9f2d9}td.contradicted{background:#f7d4d4}td.inconclusive{background:#f4f0d0}
td.equivalent{background:#dce8f7}td.NO{background:#f7d4d4}
table.kv th{width:16em}
"""


@dataclass(frozen=True)
class Link:
    """A table cell or paragraph part linking to a file beside the report (HTML and Markdown may
    point at different renderings, e.g. a notebook's .html and its .ipynb)."""

    text: str
    html_href: str
    md_href: str


@dataclass
class Doc:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str, note: bool = False) -> None:
        self.blocks.append(("paragraph", text, note))

    def table(self, frame: pd.DataFrame, caption: str | None = None, kv: bool = False) -> None:
        self.blocks.append(("table", frame.reset_index(drop=True), caption, kv))

    def keyvalue(self, items: dict[str, str]) -> None:
        self.table(pd.DataFrame({"": list(items), "value": list(items.values())}), kv=True)

    def figure(self, files: dict[str, Path], caption: str) -> None:
        self.blocks.append(("figure", files, caption))

    # --- HTML ----------------------------------------------------------------------------------

    def to_html(self) -> str:
        parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                 f"<title>{_h(self.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
                 f"<h1>{_h(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                parts.append(f"<h{block[1]}>{_h(block[2])}</h{block[1]}>")
            elif kind == "paragraph":
                parts.append(f'<p{" class=note" if block[2] else ""}>{_h(block[1])}</p>')
            elif kind == "table":
                parts.append(_html_table(*block[1:]))
            elif kind == "figure":
                data = base64.b64encode(Path(block[1]["png"]).read_bytes()).decode("ascii")
                parts.append(f'<figure><img alt="{_h(block[2])}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{_h(block[2])}</figcaption></figure>")
        parts += ["</body>", "</html>", ""]
        return "\n".join(parts)

    # --- Markdown ------------------------------------------------------------------------------

    def to_markdown(self, base: Path) -> str:
        """Markdown whose links are relative to `base` (the folder study.md is written to)."""
        parts = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                parts += ["#" * block[1] + " " + block[2], ""]
            elif kind == "paragraph":
                parts += [("> " if block[2] else "") + _md(block[1]), ""]
            elif kind == "table":
                parts += [_md_table(*block[1:]), ""]
            elif kind == "figure":
                files, caption = block[1], block[2]
                rel = {fmt: Path(os.path.relpath(p, base)).as_posix() for fmt, p in files.items()}
                line = f"![{_md(caption)}]({rel['png']})"
                parts += [line, "", f"*{_md(caption)}*" + (f" ([SVG]({rel['svg']}))" if "svg" in rel else ""), ""]
        return "\n".join(parts).rstrip("\n") + "\n"


def _h(value) -> str:
    if isinstance(value, Link):
        return f'<a href="{html.escape(value.html_href)}">{html.escape(value.text)}</a>'
    return html.escape("" if value is None else str(value)).replace("\n", "<br>")


def _md(value) -> str:
    if isinstance(value, Link):
        return f"[{_md(value.text)}]({value.md_href})"
    text = "" if value is None else str(value)
    for char in "\\`*_[]|<>":
        text = text.replace(char, "\\" + char)
    return text.replace("\r", "").replace("\n", "<br>")


def _cell_class(value) -> str:
    return f' class="{value}"' if isinstance(value, str) and value in VERDICTS else ""


def _html_table(frame: pd.DataFrame, caption: str | None, kv: bool) -> str:
    rows = [f'<table{" class=kv" if kv else ""}>']
    if caption:
        rows.append(f"<caption>{_h(caption)}</caption>")
    if not kv:
        rows.append("<tr>" + "".join(f"<th>{_h(c)}</th>" for c in frame.columns) + "</tr>")
    for record in frame.itertuples(index=False):
        cells = list(record)
        if kv:
            rows.append(f"<tr><th>{_h(cells[0])}</th>" + "".join(f"<td>{_h(v)}</td>" for v in cells[1:]) + "</tr>")
        else:
            rows.append("<tr>" + "".join(f"<td{_cell_class(v)}>{_h(v)}</td>" for v in cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _md_table(frame: pd.DataFrame, caption: str | None, kv: bool) -> str:
    header = ["", ""] if kv else [_md(c) for c in frame.columns]
    lines = ([f"*{_md(caption)}*", ""] if caption else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in frame.itertuples(index=False):
        cells = [_md(v) for v in record]
        if kv:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
