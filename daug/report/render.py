"""One document, two renderings: a self-contained HTML page (figures embedded as base64 PNG, inline
CSS, no scripts, nothing fetched) and Markdown with relative links to the PNG files, for code hosts.

A `Doc` is a list of blocks built in reading order; `to_html` and `to_markdown` walk the same list,
so the two formats cannot drift apart. Every heading gets an anchor (`slug`) and `contents()` a
table of contents of the level-2 headings; `details(summary)` ... `end_details()` fold detail
tables behind one click (<details>, which GitHub renders too). Tables fit the text column: columns
that are the same in every row, or empty in every row, are dropped and stated once in the caption
(`fold`), intervals never wrap, long text does.
"""
from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

VERDICTS = ("supported", "contradicted", "inconclusive", "equivalent", "not testable", "NO")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK SC","PingFang SC",
"Microsoft YaHei",sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h2 .top{float:right;font-size:.6em;font-weight:normal}a.anchor{color:#bbb;text-decoration:none;margin-left:.3em}
table{border-collapse:collapse;margin:.8em 0;font-size:.82em;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .45em;vertical-align:top;text-align:left}
td.long{overflow-wrap:anywhere;min-width:12em}td.ci{white-space:nowrap}
th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}
figcaption,caption{font-size:.9em;color:#555;text-align:left;padding:.2em 0}.note{color:#555;font-size:.92em}
td.supported{background:#d9f2d9}td.contradicted{background:#f7d4d4}td.inconclusive{background:#f4f0d0}
td.equivalent{background:#dce8f7}td.NO{background:#f7d4d4}td.not-testable{background:#ececec}
table.kv th{width:16em}details{margin:.8em 0}summary{cursor:pointer;font-weight:600}
nav.toc ol{columns:2;font-size:.92em}.summary li{margin:.25em 0}
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
        self.blocks.append(("heading", level, text, self._unique(slug(text))))

    def _unique(self, anchor: str) -> str:
        taken = {b[3] for b in self.blocks if b[0] == "heading"}
        base, n = anchor, 2
        while anchor in taken:
            anchor, n = f"{base}-{n}", n + 1
        return anchor

    def contents(self) -> None:
        """A table of contents of every level-2 heading (those added after this call too)."""
        self.blocks.append(("contents",))

    def details(self, summary: str) -> None:
        """Blocks from here to `end_details()` are folded behind `summary` (one click)."""
        self.blocks.append(("details", summary))

    def end_details(self) -> None:
        self.blocks.append(("end_details",))

    def bullets(self, items: list, css: str = "") -> None:
        """A list; an item may be a string or a list of strings and Links (shown joined)."""
        self.blocks.append(("bullets", items, css))

    def paragraph(self, text: str, note: bool = False) -> None:
        self.blocks.append(("paragraph", text, note))

    def table(self, frame: pd.DataFrame, caption: str | None = None, kv: bool = False, fold: bool = True) -> None:
        frame = frame.reset_index(drop=True)
        if fold and not kv:
            frame, stated = folded(frame)
            caption = " ".join(filter(None, [caption and caption.rstrip(".") + ".", stated])) or None
        self.blocks.append(("table", frame, caption, kv))

    def keyvalue(self, items: dict[str, str]) -> None:
        self.table(pd.DataFrame({"": list(items), "value": list(items.values())}), kv=True)

    def figure(self, files: dict[str, Path], caption: str) -> None:
        self.blocks.append(("figure", files, caption))

    # --- HTML ----------------------------------------------------------------------------------

    def to_html(self) -> str:
        parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                 '<meta name="viewport" content="width=device-width, initial-scale=1">',
                 f"<title>{_h(self.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
                 f'<h1 id="top">{_h(self.title)}</h1>']
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                level, text, anchor = block[1:]
                top = '<a class="top" href="#top">back to top</a>' if level == 2 else ""
                parts.append(f'<h{level} id="{anchor}">{_h(text)}<a class="anchor" href="#{anchor}">#</a>{top}'
                             f"</h{level}>")
            elif kind == "contents":
                items = "".join(f'<li><a href="#{a}">{_h(t)}</a></li>' for _, t, a in self._toc())
                parts.append(f'<nav class="toc"><strong>Contents</strong><ol>{items}</ol></nav>')
            elif kind == "details":
                parts.append(f"<details><summary>{_h(block[1])}</summary>")
            elif kind == "end_details":
                parts.append("</details>")
            elif kind == "bullets":
                css = f' class="{block[2]}"' if block[2] else ""
                parts.append(f"<ul{css}>" + "".join(f"<li>{_h_item(i)}</li>" for i in block[1]) + "</ul>")
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
            elif kind == "contents":
                parts += ["**Contents**", ""] + [f"{i}. [{_md(t)}](#{a})" for i, (_, t, a) in
                                                  enumerate(self._toc(), 1)] + [""]
            elif kind == "details":
                parts += ["<details>", f"<summary>{html.escape(block[1])}</summary>", ""]
            elif kind == "end_details":
                parts += ["</details>", ""]
            elif kind == "bullets":
                parts += [f"- {_md_item(i)}" for i in block[1]] + [""]
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

    def _toc(self) -> list[tuple[int, str, str]]:
        return [b[1:] for b in self.blocks if b[0] == "heading" and b[1] == 2]


def slug(text: str) -> str:
    """A heading's anchor, as GitHub makes it for ASCII headings: lower case, punctuation dropped,
    spaces to hyphens (so the Markdown's contents links work on code hosts too)."""
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return re.sub(r" ", "-", text) or "section"


def folded(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """`frame` without the columns that are empty in every row, or (with 3 rows or more) the same in
    every row, and a sentence stating them once."""
    empty, same = [], []
    for col in frame.columns:
        values = [("" if v is None else str(v)) for v in frame[col]]
        if len(values) and all(v.strip() in ("", "–") for v in values):
            empty.append(col)
        elif len(values) >= 3 and len(set(values)) == 1 and not isinstance(frame[col].iloc[0], Link):
            same.append((col, values[0]))
    if len(empty) + len(same) >= len(frame.columns):  # keep a table, however uniform
        return frame, ""
    stated = (["Every row: " + "; ".join(f"{c} = {v}" for c, v in same) + "."] if same else []) + \
             ([f"Empty in every row (not shown): {', '.join(map(str, empty))}."] if empty else [])
    return frame.drop(columns=[*empty, *(c for c, _ in same)]), " ".join(stated)


def _h_item(item) -> str:
    return "".join(_h(part) for part in item) if isinstance(item, (list, tuple)) else _h(item)


def _md_item(item) -> str:
    return "".join(_md(part) for part in item) if isinstance(item, (list, tuple)) else _md(item)


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


INTERVAL = re.compile(r"^[^\s\[\]]*\s?\[[^\]]{1,40}\]$")  # "-0.0123 [-0.03, +0.01]", "[a, b]"


def _cell_class(value) -> str:
    if not isinstance(value, str):
        return ""
    if value in VERDICTS:
        return f' class="{value.replace(" ", "-")}"'
    if INTERVAL.match(value):
        return ' class="ci"'  # an interval on one line
    if len(value) > 60:
        return ' class="long"'  # long text wraps, anywhere if it must, so the table fits
    return ""


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
