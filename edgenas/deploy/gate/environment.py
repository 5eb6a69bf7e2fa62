"""Warnings about the conditions bench results ran under (their ``environment`` blocks, measured by
the device kit's ``edgenas_env.py``): different settings, a loaded machine, throttling."""

from __future__ import annotations

from pathlib import Path

# Settings that change latency; results under different values are not like for like.
SETTINGS = {
    "cpu_governor": "CPU governor",
    "cpu_max_freq_mhz": "maximum CPU clock (MHz)",
    "jetson_nvpmodel": "Jetson power mode",
    "jetson_clocks": "jetson_clocks",
}
CLOCK_GAP = 0.2  # current CPU clocks further apart than 20 % of the higher one
BUSY_SHARE = 0.5  # load average, less the bench's own threads, above half the CPUs: loaded


def _gpu_max_clocks(env: dict) -> list | None:
    gpus = env.get("gpus")
    return [(g.get("max_sm_clock_mhz"), g.get("max_mem_clock_mhz")) for g in gpus] if gpus else None


def differences(a: dict, b: dict) -> list[str]:
    """The settings two environment blocks both recorded and disagree on."""
    found = [
        f"{label} {a[k]!r} vs {b[k]!r}"
        for k, label in SETTINGS.items()
        if a.get(k) is not None and b.get(k) is not None and a[k] != b[k]
    ]
    fa, fb = a.get("cpu_freq_mhz"), b.get("cpu_freq_mhz")
    if fa and fb and abs(fa - fb) > CLOCK_GAP * max(fa, fb):
        found.append(f"CPU clock {fa:g} vs {fb:g} MHz")
    ga, gb = _gpu_max_clocks(a), _gpu_max_clocks(b)
    if ga and gb and ga != gb:
        found.append(f"GPU maximum clocks (SM, memory MHz) {ga} vs {gb}")
    return found


def load_note(env: dict, threads: int | None) -> str | None:
    """ "load average 3.1 on 2 CPUs" when others' work shared the machine with the bench."""
    cpus = env.get("cpus")
    loads = [avg[0] for avg in (env.get("load_avg_before"), env.get("load_avg_after")) if avg]
    if not cpus or not loads:
        return None
    if max(loads) - (threads or 1) > BUSY_SHARE * cpus:
        return f"load average {max(loads):g} on {cpus} CPUs"
    return None


def throttle_note(env: dict) -> str | None:
    if not env.get("throttled"):
        return None
    parts = [
        f"Raspberry Pi {env['rpi_throttled']} ({', '.join(env.get('rpi_throttle_flags') or [])})"
        if env.get("rpi_throttled") not in (None, "0x0")
        else None,
        f"{env['cpu_throttle_events']} CPU thermal throttle events" if env.get("cpu_throttle_events") else None,
        *(f"{g['name']} slowed down ({g['throttle_reasons']})" for g in env.get("gpus") or [] if g.get("slowed_down")),
    ]
    return "throttled: " + ("; ".join(p for p in parts if p) or "yes")


def record_notes(record: dict, name: str) -> list[str]:
    """Warnings about one result on its own: no environment recorded, loaded, throttled."""
    env = record.get("environment")
    if env is None:
        return [f"{Path(name).name} records no bench conditions ({record['schema']})"]
    notes = [load_note(env, record.get("threads")), throttle_note(env)]
    return [f"{Path(name).name} ran with {n}" for n in notes if n]


def difference_note(baseline: dict, current: dict) -> list[str]:
    """One warning listing the settings two results disagree on (none when either has no block)."""
    if baseline.get("environment") is None or current.get("environment") is None:
        return []
    diffs = differences(baseline["environment"], current["environment"])
    return ["different conditions: " + "; ".join(diffs)] if diffs else []


def condition_warnings(baseline: dict, current: dict, names: tuple[str, str]) -> list[str]:
    """Everything ``compare`` should warn about the conditions of ``baseline`` and ``current``."""
    return difference_note(baseline, current) + record_notes(baseline, names[0]) + record_notes(current, names[1])
