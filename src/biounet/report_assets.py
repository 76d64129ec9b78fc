"""The report page's fixed parts: HTML skeleton, CSS and the table-sorting script (all inline, so the
page opens without network access). ``string.Template`` placeholders: $title, $meta, $nav, $body;
the script and CSS therefore use no ``$``."""

from __future__ import annotations

from string import Template

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 16px 24px 48px; color: #1d232a; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 2px; } h2 { font-size: 17px; margin: 28px 0 8px;
     border-bottom: 1px solid #d8dde3; padding-bottom: 4px; }
.meta, .note { color: #5a6570; font-size: 12.5px; } nav { margin: 8px 0 4px; }
nav a { color: #1f5fa8; text-decoration: none; } nav a:hover { text-decoration: underline; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e4e8ec; padding: 4px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f4f7; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th:hover { background: #e3e8ef; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; font-size: 10px; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; font-size: 10px; }
table.sortable tbody tr:hover { background: #f7f9fb; }
.cases { display: flex; gap: 18px; flex-wrap: wrap; }
figure { margin: 0; } figure img { display: block; border: 1px solid #ccd3da; image-rendering: auto; }
figcaption { font-size: 12.5px; margin-top: 4px; max-width: 256px; }
.legend { margin: 0 0 10px; font-size: 12.5px; }
.sw { display: inline-block; width: 22px; height: 4px; vertical-align: middle; margin: 0 5px 0 12px; }
.sw.gt { background: repeating-linear-gradient(90deg, #fff 0 3px, #000 3px 6px, transparent 6px 9px);
         height: 4px; outline: 1px solid #999; }
img.curves { max-width: 100%; border: 1px solid #e4e8ec; }
table.config td:first-child { font-family: ui-monospace, monospace; color: #37414b; }
"""

SCRIPT = """
"use strict";
function cellValue(row, i) {
  const v = row.cells[i].dataset.v;
  return v === undefined ? row.cells[i].textContent : Number(v);
}
function compare(a, b, dir) {
  if (typeof a === "number" && typeof b === "number") {
    if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) - Number.isNaN(b);
    return dir * (a < b ? -1 : a > b ? 1 : 0);
  }
  return dir * String(a).localeCompare(String(b));
}
function sortBy(th) {
  const body = th.closest("table").tBodies[0];
  const i = th.cellIndex;
  const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
  const rows = Array.from(body.rows);
  rows.sort((a, b) => compare(cellValue(a, i), cellValue(b, i), dir));
  for (const h of th.parentNode.cells) h.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
  body.append(...rows);
}
for (const th of document.querySelectorAll("table.sortable thead th")) {
  th.addEventListener("click", () => sortBy(th));
}
// Opened as report.html#selftest (the browser test does this): sort by mean Dice both ways, check
// the order and that every embedded image decoded, and write the verdict into the title.
function selfTest() {
  const table = document.getElementById("per-image");
  if (!table) { document.title = "selftest FAILED: no per-image table"; return; }
  const th = table.querySelector("th[data-key=dice_mean]");
  const column = () => Array.from(table.tBodies[0].rows, (r) => cellValue(r, th.cellIndex));
  const ordered = (a, dir) => a.every((v, k) => k === 0 || dir * (v - a[k - 1]) >= 0);
  th.click();
  const up = column();
  th.click();
  const down = column();
  const sorted = ordered(up, 1) && ordered(down, -1);
  const images = Array.from(document.images);
  const decoded = images.filter((im) => im.complete && im.naturalWidth > 0).length;
  const ok = sorted && decoded === images.length && images.length > 0;
  document.title = "selftest " + (ok ? "ok" : "FAILED") + " rows=" + up.length +
    " sorted=" + sorted + " images=" + decoded + "/" + images.length;
}
if (location.hash === "#selftest") window.addEventListener("load", selfTest);
"""

PAGE = Template(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>"""
    + CSS
    + """</style>
</head>
<body>
<h1>$title</h1>
<p class="meta">$meta</p>
<nav>$nav</nav>
$body
<script>"""
    + SCRIPT
    + """</script>
</body>
</html>
"""
)

LEGEND = Template(
    '<p class="legend">Outlines: <span class="sw gt"></span>ground truth (dashed) $swatches'
    "· zoomed on the structures when they are small in the image</p>"
)
