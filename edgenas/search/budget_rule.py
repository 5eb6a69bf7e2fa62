"""What the depth stage's ``over_budget`` rule did in a search, from its journal (summary, console, report)."""

from __future__ import annotations


def budget_rule_note(config, journal: list[dict], *, has_budget: bool) -> dict:
    """``{"rule", "depth_over_budget", "depth_trained", "text"}``: the rule, the depth candidates it
    found over a budget, the (depth, width) of the depth candidates trained, and one line saying it."""
    rule = getattr(config, "over_budget", None)
    if rule is None:  # the random strategy: a network over a budget is not trained, another is drawn
        over = sum(r["status"] == "skipped" for r in journal)
        text = (
            f"random search: {over} drawn network(s) over the budget were redrawn"
            if has_budget
            else "no budget: every drawn network trained"
        )
        return {"rule": "redraw", "depth_over_budget": 0, "depth_trained": [], "over_budget": over, "text": text}
    depth = [r for r in journal if r.get("stage") == "depth"]
    over = [r for r in depth if r["status"] == "skipped"]
    trained = [(r["depth"], r["width"]) for r in depth if r["status"] != "skipped"]
    note = {"rule": rule, "depth_over_budget": len(over), "depth_trained": trained}
    if not has_budget:
        text = "no budget: the published search"
    elif not over:
        text = f"over_budget = {rule}: no depth candidate was over the budget"
    elif rule == "stop":
        text = (
            f"over_budget = stop: the depth stage ended at depth {over[0]['depth']}, where a candidate of width "
            f"{over[0]['width']} was over the budget ({over[0].get('reason', '')})"
        )
    elif trained:
        depths, widths = [d for d, _ in trained], [w for _, w in trained]
        text = (
            f"over_budget = narrow: {len(over)} depth candidate(s) over the budget were tried narrower; the depth "
            f"stage trained depths {min(depths)}-{max(depths)} at widths {max(widths)}-{min(widths)} "
            f"(the widest of the grid that fit)"
        )
    else:
        text = (
            f"over_budget = narrow: no depth candidate fitted the budget, down to width {min(r['width'] for r in over)}"
        )
    return {**note, "text": text}
