"""A small static data-quality page per date, from the scrubbed GX reports.

GX 1.24's Data Docs render from validation results kept in a context's store,
with the values inside; ours are stored scrubbed. So the page is ours: one
``reports/data_docs/<D>/index.html`` listing every body and category validated
on D with its verdict and each rule's counts. Counts only, like the reports.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

from osms.files import write_bytes_atomic

__all__ = ["render_day"]

_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}"
    ".held_back{color:#a00}.published{color:#070}.fail{background:#fee}"
)


def render_day(data_dir: Path, as_of: dt.date) -> Path:
    """Render ``reports/data_docs/<D>/index.html`` from every report of the date."""
    day = as_of.isoformat()
    out = [f"<!doctype html><meta charset=utf-8><title>OSMS data quality {day}</title><style>{_STYLE}</style>",
           f"<h1>Data quality, {day}</h1>"]
    for path in sorted((data_dir / "reports" / "gx" / day).glob("*/*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        o = report["outcome"]
        e = html.escape
        out.append(
            f"<h2>{e(o['body'])} / {e(o['category'])}: <span class={e(o['verdict'])}>{e(o['verdict'])}</span></h2>"
            f"<p>rows in {o['rows_in']:,}, published {o['rows_published']:,}, quarantined {o['rows_quarantined']:,}"
            + (f"<br>reason: {e(o['reason'])}" if o.get("reason") else "") + "</p>"
        )
        out.append("<table><tr><th>rule</th><th>severity</th><th>rows</th><th>checked</th><th>failed</th><th>%</th>"
                   "<th>threshold %</th><th>within threshold</th></tr>")
        for r in report["results"]:
            cls = "" if r["within_threshold"] else " class=fail"
            out.append(
                f"<tr{cls}><td>{e(r['rule'])}</td><td>{e(r['severity'])}</td>"
                f"<td>{r['rows']:,}</td><td>{r['element_count']:,}</td><td>{r['unexpected_count']:,}</td>"
                f"<td>{r['unexpected_percent']:.2f}</td><td>{100 * (1 - r['mostly']):g}</td>"
                f"<td>{'yes' if r['within_threshold'] else 'no'}</td></tr>"
            )
        out.append("</table>")
    return write_bytes_atomic("\n".join(out).encode(), data_dir / "reports" / "data_docs" / day / "index.html")
