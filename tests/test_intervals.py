"""Paired mode's intervals: known answers against scipy, and the gate's error rate on simulated gates
(benchmarks/gate_calibration.py; no real timing)."""

from __future__ import annotations

import gate_calibration
import numpy as np
import pytest
from scipy.stats import wilcoxon
from scipy.stats.mstats import median_cihs

from edgenas.deploy.gate import intervals

GATES = 2000
NOMINAL = 0.025  # one tail of a 95 % interval
SLACK = 0.005  # the allowance; the binomial standard error at 2.5 % over 2000 gates is 0.35 pp


@pytest.mark.parametrize("n", [7, 10, 15, 20, 30])
def test_hs_interval_matches_scipy(n):
    x = np.exp(np.random.default_rng(n).normal(0, 0.1, n))
    assert intervals.hs_interval(x) == pytest.approx(tuple(median_cihs(x, 0.05)), rel=1e-12)


def test_sign_interval_is_the_order_statistics_of_the_sign_test():
    x = np.arange(1.0, 16.0)  # n = 15: P(B <= 3) = 1.8 % <= 2.5 % < P(B <= 4) = 5.9 %
    assert intervals.sign_interval(x) == (4.0, 12.0)


@pytest.mark.parametrize("n", [8, 15, 30])
def test_wilcoxon_interval_ends_where_the_exact_test_starts_rejecting(n):
    logs = np.random.default_rng(n).normal(0, 0.1, n)
    lo, hi = intervals.wilcoxon_interval(np.exp(logs))
    eps = 1e-9  # far below the gaps between Walsh averages (~1e-3 here), far above float rounding
    p_in = wilcoxon(logs - np.log(lo) - eps, alternative="greater", method="exact").pvalue
    p_out = wilcoxon(logs - np.log(lo) + eps, alternative="greater", method="exact").pvalue
    assert p_out <= NOMINAL < p_in
    assert lo < np.median(np.exp(logs)) < hi


def test_rows_give_one_interval_each_and_bad_ratios_are_refused():
    x = np.exp(np.random.default_rng(0).normal(0, 0.1, (4, 12)))
    for method in intervals.METHODS.values():
        lo, hi = method(x)
        assert lo.shape == hi.shape == (4,) and np.all(lo < hi)
        assert method(x[2]) == pytest.approx((lo[2], hi[2]))
    for bad in ([1.0], [1.0, np.nan], [1.0, -1.0]):
        with pytest.raises(ValueError):
            intervals.wilcoxon_interval(bad)


@pytest.mark.parametrize("machine", gate_calibration.MACHINES)
def test_the_default_gate_keeps_its_false_failure_rate(machine):
    """2000 simulated gates whose true slowdown equals the threshold: the build fails at most
    nominal + 0.5 pp of the time, and twice the threshold is still caught most of the time."""
    r = gate_calibration.calibrate(intervals.DEFAULT_METHOD, machine=machine, gates=GATES, rounds=15)
    assert r["false_failure"] <= NOMINAL + SLACK, r
    assert 0.93 <= r["coverage"] and r["power"] >= 0.6, r


def test_the_calibration_test_would_catch_the_old_bootstrap():
    """The percentile bootstrap that paired mode used before fails the same bar (3.8 % measured)."""
    ratios = gate_calibration.simulate_ratios("lognormal", gates=GATES, rounds=15, ratio=1.05)
    lo, _ = intervals.bootstrap_interval(ratios, resamples=500)
    assert np.mean(lo > 1.05) > NOMINAL + SLACK
