"""The bench conditions: the kit's probe (edgenas_env.py) on this machine, on a fake / with fake
vcgencmd, nvpmodel and nvidia-smi commands, on an empty /, and compare's warnings about them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgenas.cli import main
from edgenas.deploy.gate.environment import condition_warnings, differences
from edgenas.device_kit import edgenas_env as env
from edgenas.device_kit import edgenas_kit as kit


def put(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def command(bin_dir: Path, name: str, output: str) -> None:
    """An executable ``name`` that prints ``output``: the real subprocess path, a canned answer."""
    put(bin_dir, name, f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    (bin_dir / name).chmod(stat.S_IRWXU)


@pytest.fixture
def jetson(tmp_path) -> tuple[Path, str]:
    """A fake / of a 4-core Jetson under jetson_clocks, and a PATH with its commands."""
    root, bin_dir = tmp_path / "root", tmp_path / "bin"
    put(root, "sys/devices/system/cpu/online", "0-3\n")
    for cpu in range(4):
        d = f"sys/devices/system/cpu/cpu{cpu}"
        put(root, f"{d}/cpufreq/scaling_governor", "performance\n" if cpu else "schedutil\n")
        put(root, f"{d}/cpufreq/scaling_cur_freq", f"{1000000 + 100000 * cpu}\n")  # kHz
        put(root, f"{d}/cpufreq/cpuinfo_max_freq", "1510400\n")
        put(root, f"{d}/cpufreq/scaling_min_freq", "1510400\n")
        put(root, f"{d}/cpufreq/scaling_max_freq", "1510400\n")
        put(root, f"{d}/thermal_throttle/core_throttle_count", "2\n")
    put(root, "proc/loadavg", "0.52 0.40 0.31 2/345 6789\n")
    put(root, "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\x00")
    put(root, "etc/nv_tegra_release", "# R36 (release)\n")
    for zone, (kind, milli) in enumerate(
        [("cpu-thermal", "48500"), ("gpu-thermal", "45250"), ("cpu-thermal", "49000")]
    ):
        put(root, f"sys/class/thermal/thermal_zone{zone}/type", kind)
        put(root, f"sys/class/thermal/thermal_zone{zone}/temp", milli)
    put(root, "sys/class/thermal/thermal_zone3/temp", "not a number")
    command(bin_dir, "vcgencmd", "throttled=0x50005")
    command(bin_dir, "nvpmodel", "NV Power Mode: 15W\n1")
    command(
        bin_dir,
        "nvidia-smi",
        "NVIDIA H100 80GB HBM3, 1980, 1980, 2619, 2619, 41, 0x0000000000000000, P0\n"
        "NVIDIA H100 80GB HBM3, 1410, 1980, 2619, 2619, 87, 0x0000000000000040, P0",
    )
    return root, str(bin_dir)


def test_every_reading_from_a_fake_root_and_commands(jetson):
    root, path = jetson
    s = env.snapshot(root, path)
    assert s["cpus"] == 4 and s["cpu_governor"] == "performance,schedutil"
    assert s["cpu_freq_mhz"] == pytest.approx(1150.0) and s["cpu_max_freq_mhz"] == pytest.approx(1510.4)
    assert s["load_avg"] == [0.52, 0.40, 0.31]
    assert s["temperatures_c"] == {"cpu-thermal": 48.5, "gpu-thermal": 45.2, "cpu-thermal.2": 49.0}
    assert s["cpu_throttle_count"] == 8 and s["rpi_throttled"] == 0x50005
    assert s["jetson_nvpmodel"] == "15W" and s["jetson_clocks"] is True
    gpus = s["gpus"]
    assert [g["sm_clock_mhz"] for g in gpus] == [1980.0, 1410.0] and gpus[1]["temperature_c"] == 87.0
    assert [g["slowed_down"] for g in gpus] == [False, True] and gpus[1]["throttle_reasons"] == "0x0000000000000040"


def test_environment_block_from_before_and_after(jetson):
    root, path = jetson
    before = env.snapshot(root, path)
    for cpu in range(4):
        put(root, f"sys/devices/system/cpu/cpu{cpu}/thermal_throttle/core_throttle_count", "5\n")
    put(root, "proc/loadavg", "3.10 1.00 0.50 2/345 6789\n")
    e = env.environment(before, env.snapshot(root, path))
    assert set(e) == set(env.FIELDS)
    assert e["load_avg_before"] == [0.52, 0.40, 0.31] and e["load_avg_after"] == [3.10, 1.00, 0.50]
    assert e["cpu_throttle_events"] == 12 and e["throttled"] is True
    assert e["rpi_throttled"] == "0x50005"
    assert e["rpi_throttle_flags"] == ["under-voltage", "throttled", "under-voltage-occurred", "throttling-occurred"]
    json.dumps(e)  # it goes into the bench JSON as it is
    assert env.describe(e) == (
        "governor performance,schedutil, CPU 1150 MHz (max 1510.4), load 0.52 -> 3.1 on 4 CPUs, "
        "max 49 °C, nvpmodel 15W, jetson_clocks on, NVIDIA H100 80GB HBM3 1980/1980 MHz, "
        "NVIDIA H100 80GB HBM3 1410/1980 MHz, THROTTLED"
    )


def test_jetson_clocks_off_and_not_a_jetson(jetson):
    root, path = jetson
    put(root, "sys/devices/system/cpu/cpu2/cpufreq/scaling_min_freq", "729600\n")
    assert env.snapshot(root, path)["jetson_clocks"] is False
    (root / "etc/nv_tegra_release").unlink()
    put(root, "proc/device-tree/model", "Raspberry Pi 5 Model B Rev 1.0\x00")
    s = env.snapshot(root, path)
    assert s["jetson_clocks"] is None and s["jetson_nvpmodel"] is None


def test_nothing_readable_gives_null_everywhere(tmp_path):
    (tmp_path / "empty-bin").mkdir()
    s = env.snapshot(tmp_path, str(tmp_path / "empty-bin"))
    assert s == dict.fromkeys(s) and len(s) == 11
    e = env.environment(s, s)
    assert e == dict.fromkeys(env.FIELDS) and env.describe(e) == "not readable here"


def test_a_failing_command_reads_as_null(tmp_path):
    bin_dir = tmp_path / "bin"
    put(bin_dir, "nvidia-smi", "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (bin_dir / "nvidia-smi").chmod(stat.S_IRWXU)
    command(bin_dir, "vcgencmd", 'error=1 error_msg="Command not registered"')
    s = env.snapshot(tmp_path, str(bin_dir))
    assert s["gpus"] is None and s["rpi_throttled"] is None


def test_this_machine(tmp_path):
    """The real /: what Linux always exposes is read, and agrees with Python's own view."""
    s = env.snapshot()
    assert set(s) == {
        "cpus",
        "cpu_governor",
        "cpu_freq_mhz",
        "cpu_max_freq_mhz",
        "load_avg",
        "temperatures_c",
        "cpu_throttle_count",
        "rpi_throttled",
        "jetson_nvpmodel",
        "jetson_clocks",
        "gpus",
    }
    assert s["cpus"] == os.cpu_count()
    assert s["load_avg"] is not None and len(s["load_avg"]) == 3
    assert abs(s["load_avg"][2] - os.getloadavg()[2]) < 0.5  # the 15-min average moves slowly between reads
    cpuinfo = Path("/proc/cpuinfo").read_text()
    if "cpu MHz" in cpuinfo or Path("/sys/devices/system/cpu/cpu0/cpufreq").is_dir():
        assert s["cpu_freq_mhz"] > 0
    if not Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").exists():
        assert s["cpu_governor"] is None


# -- compare's warnings ----------------------------------------------------------------------------
def block(**readings) -> dict:
    return (
        dict.fromkeys(env.FIELDS)
        | {"cpus": 4, "load_avg_before": [0.1, 0.1, 0.1], "load_avg_after": [1.0, 0.3, 0.1]}
        | readings
    )


def result(**readings) -> dict:
    return {"schema": kit.SCHEMA, "threads": 1, "environment": block(**readings)}


def test_differences_between_conditions():
    assert differences(block(), block()) == []
    assert differences(block(cpu_governor="performance"), block(cpu_governor=None)) == []  # unknown is no evidence
    found = differences(
        block(cpu_governor="performance", cpu_freq_mhz=1500.0, jetson_clocks=True),
        block(cpu_governor="powersave", cpu_freq_mhz=750.0, jetson_clocks=False),
    )
    assert found == [
        "CPU governor 'performance' vs 'powersave'",
        "jetson_clocks True vs False",
        "CPU clock 1500 vs 750 MHz",
    ]
    assert differences(block(cpu_freq_mhz=1500.0), block(cpu_freq_mhz=1400.0)) == []  # within 20 %


def test_loaded_throttled_and_version_1_warnings():
    assert condition_warnings(result(), result(), ("b.json", "c.json")) == []
    loaded = result(load_avg_after=[3.6, 1.0, 0.5])  # 3.6 - 1 own thread > 4 / 2
    assert condition_warnings(result(), loaded, ("b.json", "c.json")) == ["c.json ran with load average 3.6 on 4 CPUs"]
    pi = result(throttled=True, rpi_throttled="0x50005", rpi_throttle_flags=["under-voltage", "throttled"])
    assert condition_warnings(pi, result(), ("b.json", "c.json")) == [
        "b.json ran with throttled: Raspberry Pi 0x50005 (under-voltage, throttled)"
    ]
    old = {"schema": "edgenas.bench/1", "threads": 1}
    assert condition_warnings(old, result(), ("b.json", "c.json")) == [
        "b.json records no bench conditions (edgenas.bench/1)"
    ]


def test_paired_verdict_warns_about_a_loaded_machine(tmp_path):
    from edgenas.deploy.gate.compare import PairedResult

    loaded = json.loads(Path(bench_json(tmp_path / "a.json", block(load_avg_before=[3.9, 2.0, 1.0]))).read_text())
    r = PairedResult([1.0, 1.01], (0.99, 1.02), 0.95, 0.05, loaded, loaded)
    assert r.exit_code == 0 and r.verdict.endswith("\nwarning: the paired run ran with load average 3.9 on 4 CPUs")
    assert "\n\n> warning: the paired run ran with load average 3.9" in r.table(markdown=True)


def bench_json(path: Path, environment: dict | None, schema: str = kit.SCHEMA) -> str:
    samples = [1.0] * 10
    r = {
        "schema": schema,
        "model": "m.onnx",
        "model_sha256": "a" * 64,
        "runtime": "onnxruntime-cpu",
        "runtime_version": "1.20",
        "device": "cpu",
        "host": "h",
        "threads": 1,
        "batch": 1,
        "input_shape": [1, 3, 32, 32],
        "warmup": 1,
        "runs": 10,
        **kit.latency_stats(samples),
        "samples_ms": samples,
        "created": "2026-01-01T00:00:00Z",
    }
    if environment is not None:
        r["environment"] = environment
    path.write_text(json.dumps(r))
    return str(path)


def test_compare_warns_in_its_verdict_and_reads_version_1(tmp_path):
    v1 = bench_json(tmp_path / "v1.json", None, "edgenas.bench/1")
    governed = bench_json(tmp_path / "perf.json", block(cpu_governor="performance"))
    saving = bench_json(tmp_path / "save.json", block(cpu_governor="powersave"))
    r = CliRunner().invoke(main, ["compare", "files", governed, saving])
    assert r.exit_code == 0 and "PASS" in r.output
    assert "warning: different conditions: CPU governor 'performance' vs 'powersave'" in r.output
    r = CliRunner().invoke(main, ["compare", "files", v1, governed, "--markdown"])
    assert r.exit_code == 0 and "> warning: v1.json records no bench conditions (edgenas.bench/1)" in r.output
    r = CliRunner().invoke(main, ["compare", "files", v1, v1])
    assert r.exit_code == 0 and r.output.count("records no bench conditions") == 2
