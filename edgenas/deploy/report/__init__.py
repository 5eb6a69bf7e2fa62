"""Seeing a run: the Pareto front, the figures and the self-contained HTML report."""
