"""edgenas device kit, second file: the conditions a benchmark ran under (CPU governor and clocks,
load, temperatures, throttling; a Raspberry Pi's, a Jetson's and NVIDIA GPUs' own readings).

Standard library only; ``edgenas_kit.py`` imports it from beside itself. Every reading is ``None``
where the system does not expose it. ``root`` (a fake ``/`` for tests) and ``path`` (where to
look for ``vcgencmd``, ``nvpmodel`` and ``nvidia-smi``) default to the real machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

COMMAND_TIMEOUT_S = 5.0
# vcgencmd get_throttled bits: (bit, flag); bits 0-3 hold now, bits 16-19 have held since boot.
RPI_FLAGS = (
    (0, "under-voltage"),
    (1, "arm-frequency-capped"),
    (2, "throttled"),
    (3, "soft-temperature-limit"),
    (16, "under-voltage-occurred"),
    (17, "arm-frequency-capping-occurred"),
    (18, "throttling-occurred"),
    (19, "soft-temperature-limit-occurred"),
)
RPI_NOW_MASK = 0xF
# nvidia-smi clocks throttle reasons that slow a busy GPU down (not idle, not application clocks).
GPU_SLOWDOWN_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
GPU_QUERY = (
    "name",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "clocks.max.mem",
    "temperature.gpu",
    "clocks_throttle_reasons.active",
    "pstate",
)


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(errors="replace").strip()
    except (OSError, ValueError):
        return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _cpu_dirs(root: Path) -> list[Path]:
    base = root / "sys/devices/system/cpu"
    try:
        return sorted((p for p in base.iterdir() if re.fullmatch(r"cpu\d+", p.name)), key=lambda p: int(p.name[3:]))
    except OSError:
        return []


def _per_cpu(root: Path, rel: str) -> list[str]:
    values = [_read(root, str(p.relative_to(root) / rel)) for p in _cpu_dirs(root)]
    return [v for v in values if v]


def cpu_count(root: Path) -> int | None:
    """Online CPUs from /sys/devices/system/cpu/online ("0-3,6"), else the cpuN folders."""
    text = _read(root, "sys/devices/system/cpu/online")
    if text:
        try:
            return sum(
                int(b) - int(a) + 1
                for a, _, b in (part.partition("-") if "-" in part else (part, "", part) for part in text.split(","))
            )
        except ValueError:
            pass
    return len(_cpu_dirs(root)) or None


def cpu_governor(root: Path) -> str | None:
    governors = sorted(set(_per_cpu(root, "cpufreq/scaling_governor")))
    return ",".join(governors) or None


def cpu_freq_mhz(root: Path) -> float | None:
    """Mean current clock over CPUs (cpufreq, kHz), else /proc/cpuinfo's "cpu MHz" lines."""
    khz = [x for x in map(_number, _per_cpu(root, "cpufreq/scaling_cur_freq")) if x]
    if khz:
        return round(sum(khz) / len(khz) / 1000, 1)
    mhz = [
        _number(line.split(":", 1)[1])
        for line in (_read(root, "proc/cpuinfo") or "").splitlines()
        if line.split(":")[0].strip() == "cpu MHz" and ":" in line
    ]
    read = [x for x in mhz if x]
    return round(sum(read) / len(read), 1) if read else None


def cpu_max_freq_mhz(root: Path) -> float | None:
    khz = [x for x in map(_number, _per_cpu(root, "cpufreq/cpuinfo_max_freq")) if x]
    return round(max(khz) / 1000, 1) if khz else None


def load_avg(root: Path) -> list[float] | None:
    """The 1, 5 and 15 minute load averages (/proc/loadavg)."""
    parts = (_read(root, "proc/loadavg") or "").split()
    values = [v for v in map(_number, parts[:3]) if v is not None]
    return values if len(values) == 3 else None


def temperatures_c(root: Path) -> dict[str, float] | None:
    """Each thermal zone's temperature in °C, by zone type (a repeated type gets ".N")."""
    base, temps = root / "sys/class/thermal", {}
    try:
        zones = sorted(p for p in base.iterdir() if p.name.startswith("thermal_zone"))
    except OSError:
        return None
    for zone in zones:
        milli = _number(_read(root, f"sys/class/thermal/{zone.name}/temp"))
        if milli is None:
            continue
        name = _read(root, f"sys/class/thermal/{zone.name}/type") or zone.name
        key = name if name not in temps else f"{name}.{zone.name.removeprefix('thermal_zone')}"
        temps[key] = round(milli / 1000, 1)
    return temps or None


def cpu_throttle_count(root: Path) -> int | None:
    """Thermal throttling events of all cores since boot (x86 thermal_throttle counters)."""
    counts = [int(x) for x in _per_cpu(root, "thermal_throttle/core_throttle_count") if x.isdigit()]
    return sum(counts) if counts else None


def _command(name: str, args: list[str], path: str | None) -> str | None:
    exe = shutil.which(name, path=path)
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def rpi_throttled(path: str | None) -> int | None:
    """``vcgencmd get_throttled`` ("throttled=0x50005") as an int."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", _command("vcgencmd", ["get_throttled"], path) or "")
    return int(m.group(1), 16) if m else None


def rpi_flags(bits: int | None) -> list[str] | None:
    return None if bits is None else [flag for bit, flag in RPI_FLAGS if bits >> bit & 1]


def is_jetson(root: Path) -> bool:
    model = _read(root, "proc/device-tree/model") or ""
    return (root / "etc/nv_tegra_release").exists() or "jetson" in model.lower()


def jetson_nvpmodel(path: str | None) -> str | None:
    """The power mode ``nvpmodel -q`` names ("NV Power Mode: MAXN")."""
    m = re.search(r"NV Power Mode:\s*(\S.*)", _command("nvpmodel", ["-q"], path) or "")
    return m.group(1).strip() if m else None


def jetson_clocks(root: Path) -> bool | None:
    """Whether jetson_clocks pinned the CPUs: every CPU's minimum clock equals its maximum."""
    if not is_jetson(root):
        return None
    lows, highs = _per_cpu(root, "cpufreq/scaling_min_freq"), _per_cpu(root, "cpufreq/scaling_max_freq")
    return lows == highs if lows and len(lows) == len(highs) else None


def nvidia_gpus(path: str | None) -> list[dict] | None:
    """Clocks (MHz), temperature (°C), pstate and active throttle reasons of each NVIDIA GPU."""
    out = _command("nvidia-smi", [f"--query-gpu={','.join(GPU_QUERY)}", "--format=csv,noheader,nounits"], path)
    if not out:
        return None
    gpus = []
    for line in out.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(GPU_QUERY):
            continue
        name, sm, max_sm, mem, max_mem, temp, reasons, pstate = cells
        mask = int(reasons, 16) if re.fullmatch(r"0x[0-9a-fA-F]+", reasons) else None
        gpus.append(
            {
                "name": name,
                "sm_clock_mhz": _number(sm),
                "max_sm_clock_mhz": _number(max_sm),
                "mem_clock_mhz": _number(mem),
                "max_mem_clock_mhz": _number(max_mem),
                "temperature_c": _number(temp),
                "throttle_reasons": reasons if mask is not None else None,
                "slowed_down": None if mask is None else bool(mask & GPU_SLOWDOWN_MASK),
                "pstate": pstate,
            }
        )
    return gpus or None


def snapshot(root: str | Path = "/", path: str | None = None) -> dict:
    """Every reading at one moment."""
    root = Path(root)
    jetson = is_jetson(root)
    return {
        "cpus": cpu_count(root),
        "cpu_governor": cpu_governor(root),
        "cpu_freq_mhz": cpu_freq_mhz(root),
        "cpu_max_freq_mhz": cpu_max_freq_mhz(root),
        "load_avg": load_avg(root),
        "temperatures_c": temperatures_c(root),
        "cpu_throttle_count": cpu_throttle_count(root),
        "rpi_throttled": rpi_throttled(path),
        "jetson_nvpmodel": jetson_nvpmodel(path) if jetson else None,
        "jetson_clocks": jetson_clocks(root),
        "gpus": nvidia_gpus(path),
    }


def _throttled(before: dict, after: dict, events: int | None) -> bool | None:
    """True on any sign of throttling during the run, False when some source says none, else None."""
    signs = []
    if events is not None:
        signs.append(events > 0)
    for s in (before, after):
        if s["rpi_throttled"] is not None:
            signs.append(bool(s["rpi_throttled"] & RPI_NOW_MASK))
    signs += [g["slowed_down"] for g in after["gpus"] or [] if g["slowed_down"] is not None]
    return any(signs) if signs else None


def environment(before: dict, after: dict) -> dict:
    """The bench JSON's ``environment`` block from snapshots taken before and after the timed runs:
    load both times, clocks, temperatures and throttle readings after (what the run left)."""
    b, a = before["cpu_throttle_count"], after["cpu_throttle_count"]
    events = a - b if a is not None and b is not None else None
    return {
        "cpus": after["cpus"],
        "cpu_governor": after["cpu_governor"],
        "cpu_freq_mhz": after["cpu_freq_mhz"],
        "cpu_max_freq_mhz": after["cpu_max_freq_mhz"],
        "load_avg_before": before["load_avg"],
        "load_avg_after": after["load_avg"],
        "temperatures_c": after["temperatures_c"],
        "cpu_throttle_events": events,
        "rpi_throttled": None if after["rpi_throttled"] is None else hex(after["rpi_throttled"]),
        "rpi_throttle_flags": rpi_flags(after["rpi_throttled"]),
        "jetson_nvpmodel": after["jetson_nvpmodel"],
        "jetson_clocks": after["jetson_clocks"],
        "gpus": after["gpus"],
        "throttled": _throttled(before, after, events),
    }


def describe(env: dict) -> str:
    """One line of the readings an environment block has, e.g. for ``edgenas bench``'s output."""
    clock = env.get("cpu_freq_mhz") and f"CPU {env['cpu_freq_mhz']:g} MHz" + (
        f" (max {env['cpu_max_freq_mhz']:g})" if env.get("cpu_max_freq_mhz") else ""
    )
    before, after = env.get("load_avg_before"), env.get("load_avg_after")
    temps = env.get("temperatures_c")
    parts = [
        env.get("cpu_governor") and f"governor {env['cpu_governor']}",
        clock,
        before and after and f"load {before[0]:g} -> {after[0]:g} on {env.get('cpus')} CPUs",
        temps and f"max {max(temps.values()):g} °C",
        env.get("jetson_nvpmodel") and f"nvpmodel {env['jetson_nvpmodel']}",
        env.get("jetson_clocks") is not None and f"jetson_clocks {'on' if env['jetson_clocks'] else 'off'}",
        *(
            f"{g['name']} {g['sm_clock_mhz']:g}/{g['max_sm_clock_mhz']:g} MHz"
            for g in env.get("gpus") or []
            if g.get("sm_clock_mhz") is not None and g.get("max_sm_clock_mhz") is not None
        ),
        env.get("throttled") is not None and ("THROTTLED" if env["throttled"] else "not throttled"),
    ]
    return ", ".join(p for p in parts if p) or "not readable here"


FIELDS = (
    "cpus",
    "cpu_governor",
    "cpu_freq_mhz",
    "cpu_max_freq_mhz",
    "load_avg_before",
    "load_avg_after",
    "temperatures_c",
    "cpu_throttle_events",
    "rpi_throttled",
    "rpi_throttle_flags",
    "jetson_nvpmodel",
    "jetson_clocks",
    "gpus",
    "throttled",
)
