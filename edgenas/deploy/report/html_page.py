"""The report's HTML: sections of figures (base64 PNG) and tables; no script, no external resource."""

from __future__ import annotations

from edgenas.deploy.report import pareto
from edgenas.deploy.report.view import RunView, esc

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.missing{color:#8a6d3b;background:#fcf8e3;padding:.4em .8em;border-radius:4px}
.state{display:inline-block;padding:2px 8px;border-radius:4px;background:#dff0d8}.running{background:#fcf8e3}
code{background:#f5f5f5;padding:0 3px}
"""


def table(headers: list[str], rows: list[list], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned."""

    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{esc(v)}</td>" for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(pairs: list[tuple[str, object]]) -> str:
    body = "".join(f'<tr><th class="l">{esc(k)}</th><td class="l">{esc(v)}</td></tr>' for k, v in pairs)
    return f"<table><tbody>{body}</tbody></table>"


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def figure(charts: dict, *, name: str, caption: str, absent: str) -> str:
    if name not in charts:
        return missing(absent)
    chart, data = charts[name]
    return (
        f'<figure id="fig-{name}" data-points="{chart.points}"><img alt="{esc(chart.title)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{esc(caption)}</figcaption></figure>'
    )


def num(value, fmt: str = ",") -> str:
    return "-" if value is None else format(value, fmt)


def _header(view: RunView) -> str:
    s, j = view.summary or {}, view.journal
    summary_damage = view.damaged.get("summary.json")
    state = (
        '<span class="state">finished</span>'
        if view.finished
        else f'<span class="state running">summary.json is damaged ({esc(summary_damage)}): figures below are from the '
        "journal</span>"
        if summary_damage
        else f'<span class="state running">in progress: {len(j)} candidates journaled, no summary.json yet</span>'
    )
    counts = {k: sum(r["status"] == k for r in j) for k in ("trained", "skipped", "failed")}
    tests = [(k, f"{v:.2f}") for k, v in s.items() if k.startswith("test_") and isinstance(v, (int, float))]
    tests += [("test figures after", s["test_from"])] if s.get("test_from") else []
    rule = (s.get("over_budget") or {}).get("text")
    w = view.winner_figures()
    pairs = [
        ("architecture", f"{view.winner or '-'} ({view.arch_source})" if view.winner else "-"),
        ("parameters", num(w.get("params"))),
        ("MACs per image", num(w.get("macs"))),
        ("latency (ms)", num(w.get("latency_ms"), ".3f")),
        ("search accuracy", num(s.get("search_acc"), ".2f")),
        ("validation accuracy", num(s.get("val_acc"), ".2f")),
        *tests,
        (
            "candidates",
            f"{len(j)}: {counts['trained']} trained, {counts['skipped']} skipped, {counts['failed']} failed",
        ),
        *([("budget rule", rule)] if rule else []),
        ("search time (s)", num(s.get("search_seconds"), ".1f")),
    ]
    damage = "".join(
        f'<p class="missing">damaged, not shown: {esc(name)}: {esc(why)}</p>' for name, why in view.damaged.items()
    )
    return f"<h1>edgenas report: {esc(view.path.name)}</h1><p>{esc(view.path)} {state}</p>{damage}{kv_table(pairs)}"


def _trajectory(view: RunView, charts: dict) -> str:
    rows = [
        [
            n,
            r["stage"],
            str(pareto.arch_of(r)),
            r["status"],
            f"{r['acc']:.2f}" if r["status"] == "trained" else "-",
            r["epochs"],
            num(r["params"]),
            num(r["macs"]),
            num(pareto.latency_of(r, view.latencies), ".3f"),
            f"{r.get('seconds', 0):.1f}",
            r.get("reason", ""),
        ]
        for n, r in enumerate(view.journal, start=1)
    ]
    return (
        "<h2>Search trajectory</h2>"
        + figure(
            charts,
            name="trajectory",
            caption="Each candidate in the order the search asked for it, coloured by stage; "
            "skipped (over budget, never trained) and failed (non-finite loss) candidates are marked at the "
            "bottom; the line is the best accuracy so far; below, the epochs each candidate trained.",
            absent="No candidate has finished yet.",
        )
        + (
            table(
                [
                    "#",
                    "stage",
                    "architecture",
                    "status",
                    "acc %",
                    "epochs",
                    "params",
                    "MACs",
                    "latency ms",
                    "seconds",
                    "reason",
                ],
                rows,
                left=4,
            )
            if rows
            else ""
        )
    )


def _tradeoffs(view: RunView, charts: dict) -> str:
    parts = [
        "<h2>Accuracy against parameters, MACs and latency</h2>",
        figure(
            charts,
            name="tradeoffs",
            caption="Trained candidates; the black step line is the Pareto front (no other "
            "candidate is both cheaper and more accurate); red dashed lines are the budgets; the star is the winner. "
            "Latency is drawn where two or more trained candidates were measured (a latency budget measures each).",
            absent="No candidate has finished yet.",
        ),
    ]
    for axis in ("params", "macs", "latency"):
        rows = pareto.front_rows(view.journal, axis, view.latencies)
        if rows:
            parts.append(
                f"<h3>Pareto front against {esc(axis)}</h3>"
                + table(
                    ["#", "architecture", "stage", "epochs", "acc %", "params", "MACs", "latency ms"],
                    [
                        [
                            r["candidate"],
                            r["arch"],
                            r["stage"],
                            r["epochs"],
                            f"{r['acc']:.2f}",
                            num(r["params"]),
                            num(r["macs"]),
                            num(r["latency_ms"], ".3f"),
                        ]
                        for r in rows
                    ],
                    left=3,
                )
            )
    if len(parts) > 2:
        parts.append(
            f"<p>Train a point of the front to completion: <code>edgenas train {esc(view.path)} --candidate N"
            "</code>.</p>"
        )
    return "".join(parts)


def _network(view: RunView, charts: dict) -> str:
    rows = view.layers
    body = (
        table(
            ["layer", "op", "kernel", "in ch", "out ch", "stride", "output", "params", "MACs"],
            [
                [
                    r["name"],
                    r["op"],
                    r["kernel"] or "-",
                    r["c_in"],
                    r["c_out"] or "-",
                    r["stride"] or "-",
                    r["resolution"],
                    num(r["params"]),
                    num(r["macs"]),
                ]
                for r in rows
            ],
            left=2,
        )
        if rows
        else ""
    )
    note = (
        "Latency share per layer: not available (this run has no per-layer latency table; "
        "the latency budget measures whole networks)."
    )
    return (
        "<h2>The discovered network</h2>"
        + figure(
            charts,
            name="network",
            caption=f"{view.winner} ({view.arch_source}): parameters and MACs of each layer.",
            absent="No architecture yet: no candidate has been trained.",
        )
        + body
        + (missing(note) if rows else "")
    )


def _budgets(view: RunView, charts: dict) -> str:
    rows = [
        [
            a,
            num(v, ",.4g"),
            num(lim, ",.4g") if lim else "no budget",
            f"{100 * v / lim:.1f} %" if lim and v is not None else "-",
        ]
        for a, v, lim in view.budget_use()
    ]
    b = view.budget
    runtime = f"latency measured on {b.get('runtime')}, {b.get('threads')} thread(s), batch {b.get('batch')}"
    return (
        "<h2>Time per stage and budgets</h2>"
        + figure(
            charts,
            name="stages",
            caption="Seconds of candidate training per stage (and the final training).",
            absent="No candidate has finished yet.",
        )
        + figure(
            charts,
            name="budgets",
            caption="The winner's figures as a share of each budget set in the profile.",
            absent="No budget is set in this run's profile (or no winner yet).",
        )
        + table(["", "winner", "budget", "used"], rows)
        + f"<p>{esc(runtime)}</p>"
    )


def _export(view: RunView, charts: dict) -> str:
    formats = (view.parity or {}).get("formats", {})
    rows = [
        [
            name,
            p.get("precision"),
            p.get("runtime"),
            "yes" if p.get("passed") else "NO",
            num(p.get("top1_agreement"), ".2%"),
            num(p.get("accuracy"), ".2%"),
            num(p.get("max_abs_diff"), ".3g"),
            num(p.get("min_cosine"), ".6f"),
            p.get("samples"),
        ]
        for name, p in formats.items()
    ]
    parity = (
        table(
            [
                "format",
                "precision",
                "runtime",
                "passed",
                "top-1 agreement",
                "accuracy",
                "max |diff|",
                "min cosine",
                "samples",
            ],
            rows,
            left=3,
        )
        if rows
        else missing(
            f"Export parity: export/parity.json is damaged ({view.damaged['export/parity.json']}); run "
            f"`edgenas export {view.path}` again."
            if "export/parity.json" in view.damaged
            else f"Export parity: not available; run `edgenas export {view.path}`."
        )
    )
    benches = [
        [
            name,
            b["runtime"],
            b.get("device"),
            b.get("threads"),
            b["batch"],
            b["runs"],
            f"{b['p50_ms']:.3f}",
            f"{b['p90_ms']:.3f}",
            f"{b['p99_ms']:.3f}",
        ]
        for name, b in view.benches
    ]
    bench_table = (
        table(["file", "runtime", "device", "threads", "batch", "runs", "p50 ms", "p90 ms", "p99 ms"], benches, left=3)
        if benches
        else ""
    )
    return (
        "<h2>Export, evaluation and bench</h2>"
        + figure(
            charts,
            name="export",
            caption="Held-out accuracy of the PyTorch network and of each exported format "
            "(fp32, fp16, INT8) on the same images, from export/parity.json.",
            absent="Evaluation figures: not available (no export/parity.json).",
        )
        + parity
        + figure(
            charts,
            name="bench",
            caption="Latency of each timed run; lines at p50, p90 and p99.",
            absent=f"Bench latency: not available; write one with `edgenas bench {view.path}/export/model.onnx "
            f"--json {view.path}/bench.json`.",
        )
        + bench_table
        + _runtimes(view)
    )


def _runtimes(view: RunView) -> str:
    """``edgenas bench RUN_DIR --runtime all``: every runtime on the exported network, fastest first."""
    r = view.runtimes
    if not r:
        return ""
    rows = [
        [
            x["runtime"],
            x["precision"],
            x["runtime_version"],
            x["file"],
            f"{x['size_bytes'] / 1024:.1f} KiB",
            f"{x['p50_ms']:.4f}",
            f"{x['p90_ms']:.4f}",
            "-" if x.get("accuracy") is None else f"{x['accuracy']:.2f} %",
        ]
        for x in r.get("rows", [])
    ]
    threads = r.get("threads")
    return (
        f"<h3>Which runtime is fastest here</h3><p>{esc(r.get('device'))}, {esc(threads)} thread"
        f"{'s' if threads != 1 else ''}, batch {esc(r.get('batch'))}: {esc(r.get('rounds'))} interleaved rounds "
        f"(export/bench-all.json, {esc(r.get('created'))}).</p>"
        + table(["runtime", "precision", "version", "file", "size", "p50 ms", "p90 ms", "test accuracy"], rows, left=4)
        + (
            "<p>Left out: " + "; ".join(f"{esc(n)}: {esc(why)}" for n, why in r.get("skipped", {}).items()) + "</p>"
            if r.get("skipped")
            else ""
        )
    )


def _face(view: RunView, charts: dict) -> str:
    if view.task != "face":
        return ""
    v = view.verify
    keys = ("pairs_source", "pairs", "accuracy", "accuracy_std", "threshold", "roc_auc", "tar_at_far", "far")
    absent = (
        f"ROC curve: not available; run `edgenas verify {view.path}`."
        if v is None
        else "ROC curve: not available; this verify.json stores no curve (made by an older edgenas; run verify again)."
    )
    return (
        "<h2>Face verification</h2>"
        + figure(
            charts,
            name="roc",
            caption="True accept rate against false accept rate over the verification pairs.",
            absent=absent,
        )
        + (kv_table([(k, v.get(k)) for k in keys if k in v]) if v else "")
    )


def _provenance(view: RunView, created: str) -> str:
    m, s = view.meta, view.summary or {}
    p, ds = m.get("profile", {}), m.get("dataset", {})
    versions = s.get("versions") or {"edgenas": m.get("edgenas_version")}
    pairs = [
        ("profile", f"{p.get('name')}: {p.get('description', '')}"),
        ("strategy", p.get("strategy")),
        ("task", view.task),
        ("dataset", f"{ds.get('name')} ({ds.get('data_dir') or 'built in'})"),
        ("data", f"{m['data']['in_channels']} x {m['data']['input_size']}, {m['data']['num_classes']} classes"),
        ("seed", m.get("seed")),
        ("device", s.get("device", m.get("device"))),
        ("started", m.get("created")),
        *[(f"{k} version", v) for k, v in versions.items()],
        ("report made", created),
    ]
    if "from_run" in m:
        pairs.append(("trained from", f"candidate {m.get('candidate')} of {m['from_run']}"))
    return "<h2>Provenance</h2>" + kv_table(pairs)


def page(view: RunView, charts: dict, created: str) -> str:
    """The whole HTML document; ``charts``: name -> (Chart, base64 PNG)."""
    body = (
        _header(view)
        + _trajectory(view, charts)
        + _tradeoffs(view, charts)
        + _network(view, charts)
        + _budgets(view, charts)
        + _export(view, charts)
        + _face(view, charts)
        + _provenance(view, created)
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>edgenas report: '
        f"{esc(view.path.name)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )
