import subprocess
import sys

from conftest import BENCHMARKS

from edgenas.training.data import load_dataset


def test_synthetic_fashionmnist_loads_through_the_real_loader(tmp_path):
    tool = BENCHMARKS / "synthetic_data.py"
    r = subprocess.run(
        [
            sys.executable,
            str(tool),
            "fashionmnist",
            str(tmp_path),
            "--train",
            "300",
            "--test",
            "50",
            "--label-noise",
            "0.5",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" in r.stdout
    data = load_dataset("fashionmnist", data_dir=str(tmp_path), val_fraction=0.1)
    assert data.train.x.shape == (270, 1, 28, 28) and len(data.test) == 50 and data.num_classes == 10
    assert 0 <= int(data.train.y.min()) and int(data.train.y.max()) <= 9


def test_synthetic_fashionmnist_as_an_rgb_imagefolder(tmp_path):
    tool = BENCHMARKS / "synthetic_data.py"
    r = subprocess.run(
        [
            sys.executable,
            str(tool),
            "fashionmnist",
            str(tmp_path),
            "--train",
            "100",
            "--test",
            "20",
            "--imagefolder",
            "32",
            "32",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" in r.stdout and "RGB imagefolder" in r.stdout
    data = load_dataset("imagefolder", data_dir=str(tmp_path), val_fraction=0.1)
    assert data.train.x.shape == (90, 3, 32, 32) and len(data.test) == 20 and data.num_classes == 10
    assert (data.train.x[:, 0] == data.train.x[:, 2]).all()  # grey in all three channels
