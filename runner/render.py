"""Renderers of one summary (:meth:`runner.results.SweepOutput.analyse`): the terminal,
figures (PNG/SVG), and a self-contained HTML report. None of them reads the output: the
numbers are the summary's, so the terminal, ``--json``, the plots and the report agree.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STATS = ("count", "mean", "std", "min", "25%", "50%", "75%", "max")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:.4g}" if 1e-3 <= abs(v) < 1e6 else f"{v:.3g}"
    if v is None:
        return "-"
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


# --------------------------------------------------------------------------- the tables


@dataclass
class Block:
    """One table of the summary, as every renderer shows it."""

    key: str  # section: results, parameters, failures, top, bottom, time
    title: str
    headers: list[str]
    rows: list[list[Any]]


def blocks(s: dict[str, Any]) -> list[Block]:
    """The summary's tables, in reading order (the terminal and the report show these)."""
    out: list[Block] = []
    if s["describe"]:
        out.append(Block("results", "results", ["result", *STATS],
                         [[c, *[d.get(k) for k in STATS]] for c, d in s["describe"].items()]))  # fmt: skip
    if s.get("sensitivity"):
        results = list(s["sensitivity"])
        params = sorted(
            {p for per in s["sensitivity"].values() for p in per},
            key=lambda p: -max(s["sensitivity"][y].get(p, 0.0) for y in results),
        )
        out.append(
            Block(
                "parameters",
                "what the parameters do (share of each result's variance, first order)",
                ["parameter", *results],
                [[p, *[f"{s['sensitivity'][y].get(p, 0.0):.1%}" for y in results]] for p in params],
            )
        )
    if s["top_errors"]:
        out.append(
            Block(
                "failures",
                "commonest errors (messages alike but for their numbers count as one)",
                ["count", "error", "example item", "its parameters"],
                [
                    [
                        e["count"],
                        e["error"][:200],
                        e.get("example_item"),
                        _params_text(e.get("example_params")),
                    ]
                    for e in s["top_errors"]
                ],
            )
        )
    fails = failure_hotspots(s)
    if fails:
        out.append(
            Block(
                "failures",
                "where it fails (error rate by parameter)",
                ["parameter", "bin", "items", "errors", "rate"],
                [
                    [f["parameter"], f["bin"], f["items"], f["errors"], f"{f['rate']:.1%}"]
                    for f in fails
                ],
            )
        )
    kinds = s.get("failures") or {}
    lost = [
        [label, kinds[k]["count"], ", ".join(str(i["item"]) for i in kinds[k]["items"][:5])]
        for k, label in (("timed_out", "timed out"), ("killed_worker", "killed their worker"))
        if (kinds.get(k) or {}).get("count")
    ]
    if lost:
        out.append(Block("failures", "items that timed out or killed their worker",
                         ["", "items", "e.g."], lost))  # fmt: skip
    for key in ("top", "bottom"):
        if s.get(key):
            out.append(Block(key, f"{key} {len(s[key])} by {s.get('by')}", list(s[key][0]),
                             [list(r.values()) for r in s[key]]))  # fmt: skip
    tm = s.get("time") or {}
    if tm.get("duration_s"):
        d = tm["duration_s"]
        out.append(Block("time", "time per item (duration_s, seconds)", ["", *STATS],
                         [["s", *[d.get(k) for k in STATS]]]))  # fmt: skip
    per_run = tm.get("per_run") or []
    if len(per_run) > 1:
        out.append(Block("time", "runs", ["started", "status", "wall s", "worker-s", "cost"],
                         [[r["started"], r["status"], r["wall_s"], r["worker_s"], r["cost"]]
                          for r in per_run]))  # fmt: skip
    slow = (tm.get("partitions") or {}).get("slowest") or []
    if slow:
        out.append(Block("time", "slowest partitions", ["partition", "compute s", "x median"],
                         [[p["partition"], p["compute_s"], p["vs_median"]] for p in slow]))  # fmt: skip
    return out


# --------------------------------------------------------------------------- terminal


def print_summary(s: dict[str, Any], say: Callable[[Any], None]) -> None:
    """The summary as the terminal shows it (``sweep results URL``), line by line (and
    rich tables) through ``say``."""
    from rich.table import Table

    say(f"[bold]{s['name'] or s['output']}[/]: {s['state']}")
    for line in status_lines(s):
        say(f"  {line}")
    if s["state"] == "budget-exhausted":
        say(
            "  [yellow]stopped at its cap[/]: raise max_worker_hours / max_cost and rerun the"
            " same `sweep run` to go on (finished partitions are kept)"
        )
    elif not s["complete"] and s["state"] not in ("succeeded",):
        say(
            "  [yellow]incomplete[/]: rerun the same `sweep run` to finish"
            " (resume computes only what is missing)"
        )
    for b in blocks(s):
        t = Table(show_edge=False, pad_edge=False, title=b.title, title_justify="left")
        for i, h in enumerate(b.headers):
            t.add_column(h, justify="left" if i == 0 or h in ("error", "bin") else "right",
                         overflow="fold")  # fmt: skip
        for row in b.rows:
            t.add_row(*[_fmt(v) for v in row])
        say(t)


def status_lines(s: dict[str, Any]) -> list[str]:
    """Counts, completeness, time and cost, a line each."""
    total = f"{s['items']:,}" if s["items"] is not None else "?"
    pct = f" ({s['percent_done']}%)" if s["percent_done"] is not None else ""
    parts = f"{s['partitions']:,}" if s["partitions"] else "?"
    lines = [
        f"items      {s['items_done']:,}/{total} done{pct}, ok {s['ok']:,}, failed {s['errors']:,}",
        f"partitions {s['partitions_done']:,}/{parts}",
    ]
    tm = s.get("time") or {}
    if tm.get("worker_s") is not None:
        lines.append(
            f"time       {_fmt(tm.get('wall_s'))} s wall over {tm.get('runs')} run(s),"
            f" {_fmt(tm['worker_s'])} worker-s"
            + (f", {_fmt(tm['worker_hours'])} worker-hours" if tm.get("worker_hours") else "")
            + (f", cost {_fmt(tm['cost'])}" if tm.get("cost") is not None else "")
            + (f" (cap: {tm['cap']})" if tm.get("cap") else "")
        )
    if s.get("where"):
        lines.append(f"where      {s['where']} (the tables below; the counts are all items)")
    return lines


def _params_text(params: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in (params or {}).items())


def failure_hotspots(s: dict[str, Any], limit: int = 8) -> list[dict[str, Any]]:
    """The parameter bins with the highest error rates (where the sweep fails)."""
    if not s.get("errors"):
        return []
    rows = []
    for param, bins in (s.get("failures_by_parameter") or {}).items():
        for b in bins:
            if b["errors"] and b["items"]:
                rows.append({"parameter": param, **b, "rate": b["errors"] / b["items"]})
    # bins whose errors are well beyond chance at the overall rate (z > 3), else the worst
    p = s["errors"] / max(s["items_done"], 1)

    def z(r: dict[str, Any]) -> float:
        sd = math.sqrt(r["items"] * p * (1 - p))
        return (r["errors"] - r["items"] * p) / sd if sd else 0.0

    rows.sort(key=lambda r: (-r["rate"], -r["errors"]))
    return [r for r in rows if z(r) > 3][:limit] or rows[: min(limit, 3)]


# --------------------------------------------------------------------------- figures


def figures(s: dict[str, Any], max_params: int = 4) -> dict[str, Any]:
    """The summary's figures (matplotlib), by name: ``effects-<result>`` (mean and p10-p90
    per bin of the most influential parameters), ``heatmap-<result>``, ``failures``."""
    import matplotlib  # optional extra: sweep-runner[plot]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, Any] = {}
    for y, per in (s.get("effects") or {}).items():
        shown = list(per.items())[:max_params]
        if not shown:
            continue
        fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.1), squeeze=False)
        for ax, (param, e) in zip(axes[0], shown, strict=True):
            bins = [b for b in e["bins"] if b["mean"] is not None]
            labels = [str(b["bin"]) for b in bins]
            x = (
                [(b["lo"] + b["hi"]) / 2 for b in bins]
                if e["binning"] == "range"
                else list(range(len(bins)))
            )
            means = [b["mean"] for b in bins]
            low = [b["p10"] if b["p10"] is not None else b["mean"] for b in bins]
            high = [b["p90"] if b["p90"] is not None else b["mean"] for b in bins]
            if e["binning"] == "range":
                ax.fill_between(x, low, high, alpha=0.25, label="p10-p90")
                ax.plot(x, means, marker="o", ms=3, label="mean")
            else:  # categories: no line between them
                ax.errorbar(
                    x,
                    means,
                    yerr=[[m - lo for m, lo in zip(means, low, strict=True)],
                          [hi - m for m, hi in zip(means, high, strict=True)]],
                    fmt="o", ms=4, capsize=4, label="mean, p10-p90",
                )  # fmt: skip
                ax.set_xticks(x, labels, rotation=30 if len(labels) > 4 else 0)
            ax.set_xlabel(param)
            ax.set_title(f"{param}: {e['sensitivity']:.0%} of Var({y})", fontsize=9)
        axes[0][0].set_ylabel(y)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        out[f"effects-{y}"] = fig
    for y, h in (s.get("heatmaps") or {}).items():
        fig, ax = plt.subplots(figsize=(5.2, 4.2))
        grid = [[float("nan") if v is None else v for v in row] for row in h["mean"]]
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        xl, yl = [str(b) for b in h["x_bins"]], [str(b) for b in h["y_bins"]]
        crowded = len(xl) > 6 or max(map(len, xl), default=0) > 8  # category values may be short
        ax.set_xticks(
            range(len(xl)), xl, rotation=60 if crowded else 0, ha="right" if crowded else "center",
            fontsize=6 if crowded else 8,
        )  # fmt: skip
        ax.set_yticks(range(len(yl)), yl, fontsize=6 if len(yl) > 6 else 8)
        ax.set_xlabel(h["x"])
        ax.set_ylabel(h["y"])
        ax.set_title(f"mean {y}", fontsize=9)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        out[f"heatmap-{y}"] = fig
    failing = {
        p: bins for p, bins in (s.get("failures_by_parameter") or {}).items()
        if any(b["errors"] for b in bins)
    }  # fmt: skip
    if failing:
        shown_f = list(failing.items())[: max_params * 2]
        # one scale for every parameter: a flat 10% is not drawn as tall as a bin at 100%
        fig, axes = plt.subplots(
            1, len(shown_f), figsize=(3.4 * len(shown_f), 2.9), squeeze=False, sharey=True
        )
        top = 0.0
        for ax, (param, bins) in zip(axes[0], shown_f, strict=True):
            rates = [b["errors"] / b["items"] if b["items"] else 0.0 for b in bins]
            top = max(top, *rates)
            ax.bar(range(len(bins)), rates, color="tab:red")
            ax.set_xticks(range(len(bins)), [str(b["bin"]) for b in bins], rotation=60, fontsize=6)
            ax.set_xlabel(param)
        axes[0][0].set_ylim(0, max(1e-9, top) * 1.1)
        axes[0][0].set_ylabel("error rate")
        fig.suptitle("where it fails", fontsize=10)
        fig.tight_layout()
        out["failures"] = fig
    return out


def write_plot(s: dict[str, Any], path: str) -> list[str]:
    """All figures stacked into one image (PNG, or SVG when ``path`` ends in .svg)."""
    import matplotlib  # optional extra: sweep-runner[plot]

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    figs = figures(s)
    if not figs:
        from .exceptions import SourceError

        raise SourceError("nothing to plot: no numeric result and no failures in the output")
    if path.lower().endswith(".svg"):
        parts = [_svg_body(f) for f in figs.values()]
        with open(path, "w") as fh:
            fh.write(_stack_svg(parts))
    else:
        images = [mpimg.imread(io.BytesIO(_png(f)), format="png") for f in figs.values()]
        width = max(im.shape[1] for im in images)
        heights = [im.shape[0] for im in images]
        fig = plt.figure(figsize=(width / 100, sum(heights) / 100), dpi=100)
        top = 1.0
        for im, h in zip(images, heights, strict=True):
            ax = fig.add_axes((0, top - h / sum(heights), im.shape[1] / width, h / sum(heights)))
            ax.imshow(im)
            ax.axis("off")
            top -= h / sum(heights)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    for f in figs.values():
        plt.close(f)
    return list(figs)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _svg_body(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _stack_svg(parts: list[str]) -> str:
    """One SVG document: the figures as nested ``<svg>`` elements, one under the other."""
    sizes = []
    for p in parts:
        head = p[: p.index(">")]
        w = re.search(r'width="([\d.]+)pt"', head)
        h = re.search(r'height="([\d.]+)pt"', head)
        sizes.append((float(w.group(1)) if w else 400.0, float(h.group(1)) if h else 300.0))
    y, nested = 0.0, []
    for p, (_, h) in zip(parts, sizes, strict=True):
        nested.append(p.replace("<svg", f'<svg y="{y}pt"', 1))
        y += h
    width = max(w for w, _ in sizes)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
        f' width="{width}pt" height="{y}pt" viewBox="0 0 {width} {y}">'
        + "".join(nested)
        + "</svg>\n"
    )


# --------------------------------------------------------------------------- HTML


def report_html(
    s: dict[str, Any],
    spec: dict[str, Any] | None = None,
    redact: Callable[[Any], Any] = lambda x: x,
) -> str:
    """One self-contained HTML page: the summary's tables and figures (inline PNG), the
    spec (``redact`` applied) and the summary as JSON. Needs no network to open."""
    import matplotlib.pyplot as plt  # optional extra: sweep-runner[plot]

    e = html.escape
    figs = figures(s)
    images = {name: base64.b64encode(_png(f)).decode() for name, f in figs.items()}
    for f in figs.values():
        plt.close(f)

    def table(b: Block) -> str:
        head = "".join(f"<th>{e(str(h))}</th>" for h in b.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in r) + "</tr>" for r in b.rows
        )
        return (
            f"<table><caption>{e(b.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )

    def img(name: str, alt: str) -> str:
        return (
            f'<figure><img alt="{e(alt)}" src="data:image/png;base64,{images[name]}">'
            f"<figcaption>{e(alt)}</figcaption></figure>"
            if name in images
            else ""
        )

    results = list(s.get("effects") or {})
    sections = {
        "results": ("Results", ""),
        "parameters": (
            "What the parameters do",
            "".join(
                img(
                    f"effects-{y}",
                    f"mean and p10-p90 of {y} per bin of the most influential parameters",
                )
                + img(f"heatmap-{y}", f"mean {y} over its two most influential parameters")
                for y in results
            ),
        ),
        "failures": ("Where it fails", img("failures", "error rate per parameter bin")),
        "top": ("Top items", ""),
        "bottom": ("Bottom items", ""),
        "time": ("Time and cost", ""),
    }
    all_blocks = blocks(s)
    html_sections = [
        "<section id='status'><h2>Status</h2><ul>"
        + "".join(f"<li>{e(line)}</li>" for line in status_lines(s))
        + f"<li>state: {e(s['state'])}, complete: {e(str(s['complete']))}</li></ul></section>"
    ]
    for key, (title, extra) in sections.items():
        mine = [b for b in all_blocks if b.key == key]
        if mine or extra:
            html_sections.append(
                f"<section id='{key}'><h2>{e(title)}</h2>"
                + "".join(table(b) for b in mine)
                + extra
                + "</section>"
            )
    if spec is not None:
        html_sections.append(
            "<section id='spec'><h2>Spec</h2><pre>"
            + e(json.dumps(redact(spec), indent=2, default=str))
            + "</pre></section>"
        )
    html_sections.append(
        "<section id='summary-json'><h2>Summary (sweep results --json)</h2><details><pre>"
        + e(json.dumps(s, indent=1, default=str))
        + "</pre></details></section>"
    )
    title = e(str(s.get("name") or s["output"]))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>sweep report: {title}</title><style>{_CSS}</style></head><body>"
        f"<h1>{title}</h1><p class='output'>{e(s['output'])}</p>"
        + "".join(html_sections)
        + "</body></html>\n"
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1.5rem;color:#222}
h1{margin-bottom:0}.output{color:#666;margin-top:.2rem}
table{border-collapse:collapse;margin:.6rem 0}th,td{padding:.2rem .6rem;border-bottom:1px solid #ddd;
text-align:right}th:first-child,td:first-child{text-align:left}
caption{text-align:left;font-weight:600;padding:.3rem 0;white-space:nowrap}figure{margin:.6rem 0}img{max-width:100%}pre{background:#f6f6f6;padding:.6rem;overflow:auto}
"""
