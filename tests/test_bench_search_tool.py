"""benchmarks/bench_search.py's parts: hand-designed nets sized and counted right, and the table's paired tests."""

import bench_search as bench
import pytest
import torch

from edgenas.search.space import Arch, count_macs
from edgenas.training.network import build_model


def test_mac_counter_agrees_with_the_search_space_count():
    arch = Arch(4, 6, (0, 1, 0, 1), (3, 5, 7, 3))
    model = build_model(arch, 1, 10)
    assert bench.n_macs(model, (1, 10, 10)) == count_macs(arch, in_channels=1, num_classes=10, input_size=(10, 10))


@pytest.mark.slow  # sizing builds 60 networks of each family
@pytest.mark.parametrize("name", list(bench.HAND))
@pytest.mark.parametrize("target", [2000, 8000])
def test_hand_designed_nets_are_sized_to_the_target_and_run_on_small_images(name, target):
    width, params = bench.sized(name, target, 1, 10)
    model = bench.HAND[name](width, 1, 10)
    assert bench.n_params(model) == params
    smallest = bench.n_params(bench.HAND[name](0.05, 1, 10))
    assert params <= target or params == smallest  # within the target, or the smallest the family builds
    for side in (8, 10, 14):
        assert model.eval()(torch.zeros(2, 1, side, side)).shape == (2, 10)


def test_table_reports_mean_sd_and_paired_tests():
    def row(seed, egnas, rand):
        method = {"candidates": 10, "candidate_epochs": 30, "seconds": 1.0, "params": 1500, "macs": 20000, "arch": "a"}
        return {
            "seed": seed,
            "dataset": "digits",
            "size": [8, 8],
            "budget": "params:2000",
            "final_epochs": 15,
            "methods": {"egnas": {**method, "test_acc": egnas}, "random": {**method, "test_acc": rand}},
        }

    text = bench.table([row(s, 80.0 + s, 82.0 + s + (s % 2) * 0.5) for s in range(5)])
    assert "| egnas | 10 | 30 | 1 | 1,500 | 20,000 | 82.00 ± 1.58 | - |" in text
    assert "| random | 10 | 30 | 1 | 1,500 | 20,000 | 84.20 ± 1.60 | -2.20 pp, t-test p=" in text
