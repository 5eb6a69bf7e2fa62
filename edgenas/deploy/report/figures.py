"""The report's figures (matplotlib, no pyplot state): each function takes a ``RunView`` and returns a
``Chart`` or None when the run holds nothing to draw."""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from edgenas.deploy.report import pareto

STAGE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
AXIS_LABELS = {
    "params": "parameters",
    "macs": "MACs per image",
    "latency": "latency, ms (median)",
    "peak memory": "peak memory, KB (activations)",
    "flash": "flash, KB (model file)",
}
BUDGET_KEYS = {"params": "max_params", "macs": "max_macs", "latency": "max_latency_ms"}


@dataclass
class Chart:
    name: str  # file stem of --png, id in the HTML
    title: str
    figure: object  # matplotlib.figure.Figure
    points: int  # data points drawn: the report's check that a figure is not empty


def new_figure(width: float, *, height: float, rows: int = 1, cols: int = 1, **kw):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def stage_colours(journal: list[dict]) -> dict[str, str]:
    stages = list(dict.fromkeys(r["stage"] for r in journal))
    return {s: STAGE_COLOURS[i % len(STAGE_COLOURS)] for i, s in enumerate(stages)}


def _metric(view) -> str:
    return "verification accuracy, val pairs (%)" if view.task == "face" else "validation accuracy (%)"


def best_so_far(journal: list[dict]) -> list[float | None]:
    """After each candidate, the best accuracy of the trained ones so far (None before the first)."""
    best, out = None, []
    for r in journal:
        if r["status"] == "trained":
            best = r["acc"] if best is None else max(best, r["acc"])
        out.append(best)
    return out


def trajectory(view) -> Chart | None:
    """Candidate order against ranking accuracy by stage, skipped/failed marked, best so far, epochs."""
    journal = view.journal
    if not journal:
        return None
    fig, axes = new_figure(10, height=6.2, rows=2, cols=1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax, ax_epochs = axes[0][0], axes[1][0]
    colours = stage_colours(journal)
    numbers = range(1, len(journal) + 1)
    for stage, colour in colours.items():
        pts = [(n, r["acc"]) for n, r in zip(numbers, journal) if r["stage"] == stage and r["status"] == "trained"]
        if pts:
            ax.scatter(*zip(*pts), color=colour, label=stage, zorder=3, s=36)
    trained = [r["acc"] for r in journal if r["status"] == "trained"]
    floor = min(trained, default=0.0)
    for status, marker, colour in (("skipped", "x", "#555555"), ("failed", "v", "#d62728")):
        ns = [n for n, r in zip(numbers, journal) if r["status"] == status]
        if ns:
            ax.scatter(
                ns,
                [floor] * len(ns),
                marker=marker,
                color=colour,
                s=60,
                zorder=4,
                label=f"{status} ({len(ns)}, not ranked)",
            )
    best = [(n, b) for n, b in zip(numbers, best_so_far(journal)) if b is not None]
    if best:
        ax.step(*zip(*best), where="post", color="black", lw=1.2, label="best so far")
    ax.set_ylabel(_metric(view))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    state = "" if view.finished else f" (in progress: {len(journal)} candidates so far)"
    ax.set_title(f"Search trajectory{state}")
    bars = ax_epochs.bar(
        list(numbers),
        [r["epochs"] for r in journal],
        color=[colours[r["stage"]] for r in journal],
        edgecolor="black",
        linewidth=0.4,
    )
    for bar, r in zip(bars, journal):
        if r["status"] != "trained":
            bar.set_hatch("//")
            bar.set_alpha(0.45)
    ax_epochs.set_ylabel("epochs")
    ax_epochs.set_xlabel("candidate (journal order; hatched: not trained to the end)")
    ax_epochs.grid(alpha=0.3, axis="y")
    return Chart("trajectory", "Search trajectory", fig, len(journal))


def tradeoff_axes(view) -> list[str]:
    """params and MACs; latency too where two or more trained candidates have one (a latency budget
    measures every candidate; without one only the winner is measured, and one point trades nothing)."""
    axes = ["params", "macs"]
    if len(pareto.points(view.journal, "latency", view.latencies)) >= 2:
        axes.append("latency")
    return axes


def _draw_tradeoff(ax, *, view, axis: str, colours: dict) -> int:

    journal, lat = view.journal, view.latencies
    pts = pareto.points(journal, axis, lat)
    for stage, colour in colours.items():
        mine = [p for p in pts if journal[p.number - 1]["stage"] == stage]
        if mine:
            ax.scatter([p.cost for p in mine], [p.acc for p in mine], color=colour, s=30, label=stage, zorder=3)
    front = pareto.front(pts)
    if front:
        ax.step(
            [p.cost for p in front],
            [p.acc for p in front],
            where="post",
            color="black",
            lw=1.2,
            label="Pareto front",
            zorder=2,
        )
        ax.scatter(
            [p.cost for p in front], [p.acc for p in front], facecolors="none", edgecolors="black", s=90, zorder=4
        )
    floor = min((p.acc for p in pts), default=0.0)
    skipped = [
        (c, floor) for r in journal if r["status"] == "skipped" and (c := pareto.cost_of(r, axis, lat)) is not None
    ]
    if skipped:
        ax.scatter(*zip(*skipped), marker="x", color="#555555", s=50, label="skipped (over budget)", zorder=4)
    winner = [p for p in pts if view.winner and str(pareto.arch_of(journal[p.number - 1])) == view.winner]
    if winner:
        ax.scatter(
            [p.cost for p in winner],
            [p.acc for p in winner],
            marker="*",
            color="gold",
            edgecolors="black",
            s=220,
            label="winner",
            zorder=5,
        )
    limit = (view.budget or {}).get(BUDGET_KEYS[axis]) or 0
    if limit:
        ax.axvline(limit, color="#d62728", ls="--", lw=1.2, label=f"budget {limit:,}")
    ax.set_xlabel(AXIS_LABELS[axis])
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.grid(alpha=0.3)
    return len(pts) + len(skipped)


def tradeoffs(view) -> Chart | None:
    """Accuracy against params, MACs and (when measured) latency, with the front and the budget lines."""
    if not view.journal:
        return None
    axes = tradeoff_axes(view)
    fig, grid = new_figure(4.6 * len(axes), height=4.2, rows=1, cols=len(axes), sharey=True)
    colours = stage_colours(view.journal)
    drawn = 0
    for ax, axis in zip(grid[0], axes):
        drawn += _draw_tradeoff(ax, view=view, axis=axis, colours=colours)
    grid[0][0].set_ylabel(_metric(view))
    handles: dict[str, object] = {}  # legend label -> the first artist drawn with it
    for ax in grid[0]:  # one legend of every kind of mark drawn on any panel
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    grid[0][0].legend(handles.values(), handles.keys(), fontsize=8, loc="best")
    fig.suptitle("Accuracy against cost: trained candidates, the Pareto front and the budgets")
    return Chart("tradeoffs", "Accuracy against parameters, MACs and latency", fig, drawn)


def network(view) -> Chart | None:
    """The discovered network layer by layer: parameters and MACs per layer."""
    rows = view.layers
    if not rows:
        return None
    fig, grid = new_figure(10, height=max(2.4, 1.2 + 0.38 * len(rows)), rows=1, cols=2, sharey=True)
    labels = [r["label"] for r in rows]
    ys = list(range(len(rows)))[::-1]
    colours = ["#2ca02c" if r["op"] == "conv" else "#1f77b4" if r["op"] == "sep" else "#7f7f7f" for r in rows]
    for ax, key, title in ((grid[0][0], "params", "parameters"), (grid[0][1], "macs", "MACs per image")):
        ax.barh(ys, [r[key] for r in rows], color=colours)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="x")
    grid[0][0].set_yticks(ys, labels, fontsize=8, family="monospace")
    fig.suptitle(f"{view.winner}: layer by layer (green conv, blue separable, grey stem/head)")
    return Chart("network", "The discovered network", fig, len(rows))


def stage_times(view) -> Chart | None:
    """Seconds spent training candidates per stage, and the final training."""
    seconds: dict[str, float] = {}
    for r in view.journal:
        seconds[r["stage"]] = seconds.get(r["stage"], 0.0) + float(r.get("seconds") or 0.0)
    final = (view.summary or {}).get("final_train_seconds")
    if final is not None:
        seconds["final training"] = float(final)
    if not seconds:
        return None
    fig, grid = new_figure(7, height=max(2.4, 0.8 + 0.45 * len(seconds)))
    ax = grid[0][0]
    names = list(seconds)[::-1]
    ax.barh(names, [seconds[n] for n in names], color="#1f77b4")
    for y, n in enumerate(names):
        ax.text(seconds[n], y, f" {seconds[n]:.1f} s", va="center", fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_title("Time per stage")
    ax.grid(alpha=0.3, axis="x")
    return Chart("stages", "Time per stage", fig, len(seconds))


def budgets(view) -> Chart | None:
    """The winner's params, MACs and latency as a share of each budget that is set."""
    shares = [(axis, value, limit) for axis, value, limit in view.budget_use() if limit and value is not None]
    if not shares:
        return None
    fig, grid = new_figure(7, height=max(2.4, 0.9 + 0.5 * len(shares)))
    ax = grid[0][0]
    names = [f"{AXIS_LABELS[a]}\n{v:,.4g} of {lim:,.4g}" for a, v, lim in shares]
    pct = [100.0 * v / lim for _, v, lim in shares]
    ax.barh(names, pct, color=["#2ca02c" if p <= 100 else "#d62728" for p in pct])
    ax.axvline(100, color="#d62728", ls="--")
    ax.set_xlabel("% of the budget")
    ax.set_title("The winner against the budgets")
    return Chart("budgets", "Budgets against the winner", fig, len(shares))


def export_accuracy(view) -> Chart | None:
    """Held-out accuracy of PyTorch and of each exported format (fp32, fp16, INT8), from parity.json."""
    formats = (view.parity or {}).get("formats", {})
    bars: list[tuple[str, float]] = []  # (label, accuracy in percent)
    for name, p in formats.items():
        if "reference_accuracy" in p and not bars:
            bars.append(("PyTorch fp32", 100.0 * p["reference_accuracy"]))
        if "accuracy" in p:
            bars.append((f"{name} {p.get('precision', '')}".strip(), 100.0 * p["accuracy"]))
        elif "mean_cosine" in p:
            bars.append((f"{name} {p.get('precision', '')} (mean cosine x100)".strip(), 100.0 * p["mean_cosine"]))
    if not bars:
        return None
    fig, grid = new_figure(7, height=max(2.4, 0.9 + 0.45 * len(bars)))
    ax = grid[0][0]
    ax.barh([b[0] for b in bars][::-1], [b[1] for b in bars][::-1], color="#9467bd")
    lo = min(b[1] for b in bars)
    ax.set_xlim(max(0.0, lo - 5.0), 100.0)
    for y, (_, v) in enumerate(bars[::-1]):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("held-out accuracy (%)")
    ax.set_title("Export: PyTorch against the exported formats")
    return Chart("export", "Export parity and evaluation (fp32 vs INT8)", fig, len(bars))


def bench(view) -> Chart | None:
    """Latency distribution of each bench JSON found in the run directory."""
    records = [(name, b) for name, b in view.benches if b.get("samples_ms")]
    if not records:
        return None
    fig, grid = new_figure(8, height=3.6)
    ax = grid[0][0]
    for name, b in records:
        ax.hist(b["samples_ms"], bins=40, alpha=0.6, label=f"{name}: {b['runtime']}, batch {b['batch']}")
        for key, ls in (("p50_ms", "-"), ("p90_ms", "--"), ("p99_ms", ":")):
            ax.axvline(b[key], color="black", ls=ls, lw=0.9)
    ax.set_xlabel("latency, ms (lines: p50, p90, p99)")
    ax.set_ylabel("runs")
    ax.legend(fontsize=8)
    ax.set_title("Bench latency distribution")
    return Chart("bench", "Bench latency distribution", fig, sum(len(b["samples_ms"]) for _, b in records))


def roc(view) -> Chart | None:
    """A face run's ROC curve on its verification pairs, when verify.json stores it."""
    curve = (view.verify or {}).get("roc")
    if not curve or not curve.get("fpr"):
        return None
    fig, grid = new_figure(5, height=4.6)
    ax = grid[0][0]
    auc = view.verify.get("roc_auc")
    ax.plot(curve["fpr"], curve["tpr"], color="#1f77b4", label=f"AUC {auc:.2f}%" if auc is not None else "ROC")
    ax.plot([0, 1], [0, 1], color="#999999", ls=":", lw=0.8)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC: {view.verify.get('pairs_source', 'verification pairs')}")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return Chart("roc", "Face verification ROC", fig, len(curve["fpr"]))


ALL = (trajectory, tradeoffs, network, stage_times, budgets, export_accuracy, bench, roc)
