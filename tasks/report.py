"""Self-contained HTML reports: inline CSS, no scripts, no network — readable offline."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pandas as pd
from jinja2 import Environment, select_autoescape
from markupsafe import Markup

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:72rem;
color:#1f2933;padding:0 1rem;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d9e2ec}
.sub{color:#627d98;margin-top:0}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #d9e2ec;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f4f8}tr:nth-child(even) td{background:#fafbfc}
.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.6rem;font-size:.8rem;font-weight:600}
.validated{background:#e3f9e5;color:#05400a}.partial{background:#fffbea;color:#8d2b0b}
.rejected{background:#ffe3e3;color:#610404}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #d9e2ec;border-radius:.5rem;
padding:.6rem 1rem;min-width:9rem}.card b{display:block;font-size:1.4rem}
.scroll{overflow-x:auto}
code{background:#f0f4f8;padding:0 .25rem;border-radius:.2rem}
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{{ css }}</style></head>
<body><h1>{{ title }}</h1>{% if subtitle %}<p class="sub">{{ subtitle }}</p>{% endif %}
{{ body | safe }}
</body></html>
"""

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def page(title: str, body: str, subtitle: str = "") -> str:
    """Wrap trusted body and subtitle HTML in the shared, offline-safe page layout."""
    return _env.from_string(_PAGE).render(
        title=title, subtitle=Markup(subtitle), body=body, css=_CSS
    )


def badge(status: str) -> str:
    return f'<span class="badge {html.escape(status)}">{html.escape(status)}</span>'


def cards(items: Sequence[tuple[str, Any]]) -> str:
    inner = "".join(
        f'<div class="card"><b>{html.escape(str(v))}</b>{html.escape(label)}</div>'
        for label, v in items
    )
    return f'<div class="cards">{inner}</div>'


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    raw_html: Sequence[str] = (),
) -> str:
    """An HTML table; cells are escaped except in ``raw_html`` columns."""
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c, "")
            num = isinstance(v, int | float) and not isinstance(v, bool)
            text = str(v) if c in raw_html else html.escape("" if v is None else str(v))
            cells.append(f'<td class="num">{text}</td>' if num else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def frame_table(df: pd.DataFrame, limit: int = 25) -> str:
    shown = df.head(limit).astype("object").where(df.head(limit).notna(), None)
    rows = [{str(k): v for k, v in r.items()} for r in shown.to_dict(orient="records")]
    more = f"<p class='sub'>showing {limit} of {len(df)} rows</p>" if len(df) > limit else ""
    return table(rows, [str(c) for c in df.columns]) + more


# ---- validation ---------------------------------------------------------------------------------


def validation_page(record: dict[str, Any], quarantine_sample: pd.DataFrame | None) -> str:
    """The report of one landed object version."""
    parts = [
        cards(
            [
                ("status", record["status"]),
                ("rows read", record["rows_total"]),
                ("rows validated", record["rows_valid"]),
                ("rows quarantined", record["rows_quarantined"]),
            ]
        ),
        "<h2>Object</h2>",
        table(
            [
                {"field": "landing key", "value": record["key"]},
                {"field": "dataset", "value": record["dataset"] or "(none)"},
                {"field": "sha256", "value": record["sha256"]},
                {"field": "size (bytes)", "value": record["size"]},
                {"field": "processed at", "value": record["processed_at"]},
                {"field": "partitions written", "value": ", ".join(record["partitions"]) or "-"},
            ]
        ),
    ]
    if record["reasons"]:
        parts += [
            "<h2>Why the file was rejected</h2>",
            table([{"reason": r} for r in record["reasons"]]),
        ]
    if record["reason_counts"]:
        parts += [
            "<h2>Rules broken (rows)</h2>",
            table([{"rule": k, "rows": v} for k, v in record["reason_counts"].items()]),
        ]
    if quarantine_sample is not None and not quarantine_sample.empty:
        parts += ["<h2>Quarantined rows (sample)</h2>", frame_table(quarantine_sample)]
    parts += ["<h2>Outputs</h2>", table([{"key": o} for o in record["outputs"]])]
    return page(f"Validation — {record['key']}", "".join(parts), badge(record["status"]))


def validation_index_page(records: Sequence[dict[str, Any]], link_for: dict[str, str]) -> str:
    """One line per landed object version, newest first, linking to its report."""
    rows = []
    for r in sorted(records, key=lambda r: r["processed_at"], reverse=True):
        link = link_for.get(r["key"])
        key_html = (
            f'<a href="{html.escape(link)}">{html.escape(r["key"])}</a>'
            if link
            else html.escape(r["key"])
        )
        rows.append(
            {
                "object": key_html,
                "status": badge(r["status"]),
                "rows": r["rows_total"],
                "validated": r["rows_valid"],
                "quarantined": r["rows_quarantined"],
                "reasons": "; ".join(r["reasons"])
                or ", ".join(f"{k}: {v} rows" for k, v in r["reason_counts"].items()),
                "processed": r["processed_at"][:19],
            }
        )
    totals = [
        ("objects", len(records)),
        ("rows validated", sum(r["rows_valid"] for r in records)),
        ("rows quarantined", sum(r["rows_quarantined"] for r in records)),
        ("files rejected", sum(r["status"] == "rejected" for r in records)),
    ]
    body = cards(totals) + "<h2>Landed objects</h2>" + table(rows, raw_html=("object", "status"))
    return page("Validation — all landed objects", body)


# ---- plots (matplotlib's Agg canvas, embedded as PNG data URIs) ---------------------------------


def figure(width: float = 5.5, height: float = 4.2) -> Any:
    """A matplotlib Figure that does not touch pyplot's global state."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def png_data_uri(fig: Any) -> str:
    """A matplotlib Figure as a base64 PNG data URI (rendered with Agg, no pyplot state)."""
    import base64
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img(data_uri: str, alt: str) -> str:
    return f'<img src="{data_uri}" alt="{html.escape(alt)}" style="max-width:100%">'
