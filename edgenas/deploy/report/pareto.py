"""The Pareto front of a search: trained candidates that no other beats on accuracy and cost at once.

Pure: journal records (as ``pipeline.py`` writes them) in, candidate numbers out. Candidates are
numbered 1, 2, … in journal order, the number ``edgenas pareto`` shows and ``train --candidate`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgenas.search.space import Arch

AXES = ("params", "macs", "latency")  # the cost axis: record field params, macs, latency_ms


@dataclass(frozen=True)
class Point:
    """One trained candidate on the accuracy/cost plane."""

    number: int  # 1-based position in the journal
    cost: float  # params, MACs or milliseconds
    acc: float  # ranking accuracy, percent


def arch_of(record: dict) -> Arch:
    return Arch.from_dict(record)


def latency_of(record: dict, latencies: dict[str, float]) -> float | None:
    """The record's measured latency, else the run's latency.jsonl entry for its architecture."""
    if record.get("latency_ms") is not None:
        return float(record["latency_ms"])
    return latencies.get(str(arch_of(record)))


def cost_of(record: dict, axis: str, latencies: dict[str, float] | None = None) -> float | None:
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    if axis == "latency":
        return latency_of(record, latencies or {})
    value = record.get(axis)
    return None if value is None else float(value)


def points(journal: list[dict], axis: str, latencies: dict[str, float] | None = None) -> list[Point]:
    """Trained candidates with a known cost; skipped (never trained) and failed ones are left out."""
    out = []
    for number, record in enumerate(journal, start=1):
        cost = cost_of(record, axis, latencies)
        if record.get("status") == "trained" and cost is not None:
            out.append(Point(number, cost, float(record["acc"])))
    return out


def dominates(a: Point, b: Point) -> bool:
    """``a`` costs no more and is no less accurate than ``b``, and is strictly better in one."""
    return a.cost <= b.cost and a.acc >= b.acc and (a.cost < b.cost or a.acc > b.acc)


def front(pts: list[Point]) -> list[Point]:
    """The non-dominated points, cheapest first (equal points are all kept).

    Sorted by cost, then accuracy descending: a point is on the front iff it is more accurate than
    every cheaper one, or ties the best so far at the same cost.
    """
    ordered = sorted(pts, key=lambda p: (p.cost, -p.acc, p.number))
    out: list[Point] = []
    for p in ordered:
        if not out or p.acc > out[-1].acc or (p.acc == out[-1].acc and p.cost == out[-1].cost):
            out.append(p)
    return out


def front_rows(journal: list[dict], axis: str = "params", latencies: dict[str, float] | None = None) -> list[dict]:
    """The front as rows for ``edgenas pareto``: candidate number, architecture and its figures."""
    latencies = latencies or {}
    rows = []
    for p in front(points(journal, axis, latencies)):
        r = journal[p.number - 1]
        rows.append(
            {
                "candidate": p.number,
                "arch": str(arch_of(r)),
                "stage": r["stage"],
                "epochs": r["epochs"],
                "acc": r["acc"],
                "params": r["params"],
                "macs": r["macs"],
                "latency_ms": latency_of(r, latencies),
            }
        )
    return rows


def format_rows(rows: list[dict], axis: str) -> str:
    """A plain-text table of the front."""
    head = (
        f"{'#':>4}  {'arch':24} {'stage':8} {'epochs':>6} {'acc %':>7} {'params':>10} {'MACs':>12} {'latency ms':>10}"
    )
    lines = [head]
    for r in rows:
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}"
        lines.append(
            f"{r['candidate']:>4}  {r['arch']:24} {r['stage']:8} {r['epochs']:>6} {r['acc']:>7.2f} "
            f"{r['params']:>10,} {r['macs']:>12,} {lat:>10}"
        )
    lines.append(f"{len(rows)} non-dominated trained candidate(s): accuracy against {axis}")
    return "\n".join(lines)
