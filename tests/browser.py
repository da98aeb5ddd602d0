"""The report as a reader sees it: rendered by headless Chromium at a given window width, measured by
a script run in the page (every <details> opened first, so folded tables are measured too).

    chromium() -> path or None
    measure(html_path, width) -> {"width", "page_width", "tables": [...], "headings": [...]}
    screenshot(html_path, png_path, width, height)

The report itself has no scripts; the measuring script goes into a temporary copy.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# As the machine notes say: without the background-networking flags Chromium keeps dialling out of a
# closed network; a fresh profile per call keeps runs independent.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1")

MEASURE = """
<script>
document.querySelectorAll("details").forEach(d => d.open = true);
const px = v => Math.round(v * 10) / 10;
const tables = [...document.querySelectorAll("table")].map((t, i) => {
  const parent = t.parentElement, style = getComputedStyle(parent);
  const box = parent.getBoundingClientRect();
  const right = box.right - parseFloat(style.paddingRight) - parseFloat(style.borderRightWidth);
  const inner = right - box.left - parseFloat(style.paddingLeft) - parseFloat(style.borderLeftWidth);
  const r = t.getBoundingClientRect();
  const cut = [...t.querySelectorAll("td,th")].filter(c => c.scrollWidth > c.clientWidth + 1).length;
  return {index: i, caption: (t.caption ? t.caption.textContent : t.rows[0].textContent).slice(0, 80),
          width: px(r.width), container: px(inner), overflow: px(r.right - right), cut_cells: cut};
});
const headings = [...document.querySelectorAll("h2,h3")].map(h => {
  const a = h.querySelector("a.anchor");
  return {text: h.firstChild ? h.firstChild.textContent : "", id: h.id,
          anchor: a ? a.getAttribute("href") : null};
});
const out = {width: window.innerWidth, page_width: document.documentElement.scrollWidth, tables, headings};
const pre = document.createElement("pre");
pre.id = "daug-measure";
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>
"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _run(args: list[str], timeout: int = 120) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def measure(html_path: Path, width: int = 1280) -> dict:
    """Render `html_path` at `width` px and return what the page measured of itself."""
    html = Path(html_path).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
        dom = _run([f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()])
    found = re.search(r'<pre id="daug-measure">(.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError("the measuring script did not run (no result in the dumped DOM)")
    import html as html_lib
    return json.loads(html_lib.unescape(found.group(1)))


def screenshot(html_path: Path, png_path: Path, width: int = 1280, height: int = 2400) -> Path:
    """A screenshot of the top `height` px of the page at `width` px (details as the reader finds them)."""
    _run([f"--window-size={width},{height}", f"--screenshot={Path(png_path).resolve()}",
          Path(html_path).resolve().as_uri()])
    return Path(png_path)
