"""``edgenas latency-table`` and ``latency-check``: predicting a target's latency from a table built on it."""

from __future__ import annotations

from pathlib import Path

import click

from edgenas.cli.app import device_token, device_token_option, device_url_option, main

quick_option = click.option(
    "--quick", is_flag=True, help="One pass of short timings (tests and smoke runs; less accurate)."
)
seed_of_networks = "Seed of the random networks."
jobs_option = click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes converting the graphs before any is timed (LiteRT and ExecuTorch take a second or two "
    "per graph here; timing stays one graph at a time).",
)


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


@main.command("latency-table")
@click.option(
    "--profile", "profile_name", default="demo", show_default=True, help="Built-in profile name or a .toml path."
)
@device_url_option
@device_token_option
@click.option("--runtime", default=None, help="Runtime to time on. Default: the profile's budget.runtime.")
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads. Default: the profile's budget.threads."
)
@click.option(
    "--model",
    type=click.Choice(["pairs", "lookup", "regression"]),
    default="pairs",
    show_default=True,
    help="pairs: every part and every pair of neighbouring parts timed (holds where a layer's cost depends on its "
    "neighbours); lookup: every part timed in a chain (quicker to build); regression: least squares on random networks.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=None,
    help="Random networks measured to fit the model. Default: 40 (pairs, lookup), 60 (regression).",
)
@click.option("--dataset", default=None, help="Whose input shape and classes. Default: the profile's.")
@click.option(
    "--classes", type=click.IntRange(min=1), default=None, help="Classes, for a dataset whose files decide them."
)
@quick_option
@jobs_option
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True, help=seed_of_networks)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the table (JSON).")
def latency_table(
    profile_name,
    *,
    device_url,
    device_token_file,
    runtime,
    threads,
    model,
    samples,
    dataset,
    classes,
    quick,
    jobs,
    seed,
    out,
):
    """Build a latency table for the profile's space, timed here or on a device server (--device URL)."""
    from edgenas.config.profile import load_profile
    from edgenas.deploy.bench import check_writable
    from edgenas.run.files import write_json_atomic
    from edgenas.runtime import table_build as tb

    token = device_token(device_url, device_token_file) if device_url or device_token_file else None
    check_writable(out, "--out")
    profile = load_profile(profile_name)
    target = tb.profile_target(profile, runtime=runtime, threads=threads, dataset=dataset, classes=classes)
    timer = tb.make_timer(target, device=device_url, token=token, quick=quick)
    table = tb.build_table(
        profile.search,
        target=target,
        timer=timer,
        model=model,
        samples=samples,
        seed=seed,
        space_name=profile.name,
        rounds=1 if quick else tb.ROUNDS,
        jobs=jobs,
        log=_echo_err,
    )
    write_json_atomic(Path(out), table.to_dict())
    where = f" on {device_url}" if device_url else ""
    click.echo(
        f"wrote {out}: {table.model} table, {len(table.entries)} parts"
        + (f" and {len(table.junctions)} pairs" if table.junctions else "")
        + f", built in {table.build_seconds:.0f} s "
        f"for {target.runtime}{where}, {target.threads} thread(s), batch {target.batch}, input {target.input_chw}"
    )


def _refuse_non_finite(report: dict, table_path: str) -> None:
    """A figure that is not a number ("nan %") says nothing about the table: refuse instead of printing it."""
    import math

    bad = [
        n["arch"]
        for n in report["networks"]
        if not all(math.isfinite(n[k]) and n[k] >= 0 for k in ("predicted_ms", "measured_ms"))
    ]
    if bad:
        raise click.ClickException(
            f"{table_path}: {len(bad)} of {report['samples']} networks have no finite predicted "
            f"or measured latency (first: {bad[0]}); rebuild the table with "
            "`edgenas latency-table` and check it again"
        )


@main.command("latency-check")
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False))
@device_url_option
@device_token_option
@click.option("--runtime", default=None, help="Runtime to measure on; must be the table's (default).")
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True, help="Random networks to check.")
@click.option("--profile", "profile_name", default=None, help="Draw from this profile's space. Default: the table's.")
@quick_option
@jobs_option
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=1, show_default=True, help=seed_of_networks)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the figures here.")
def latency_check(
    table_path, *, device_url, device_token_file, runtime, samples, profile_name, quick, jobs, seed, json_out
):
    """Predicted vs measured latency of random networks: median and p95 |error| %, share within ±10 %."""
    from edgenas.config.profile import load_profile
    from edgenas.deploy.bench import check_writable
    from edgenas.run.files import write_json_atomic
    from edgenas.runtime import table_build as tb
    from edgenas.runtime.latency_table import read_table

    token = device_token(device_url, device_token_file) if device_url or device_token_file else None
    if json_out:
        check_writable(json_out, "--json")
    table = read_table(table_path)
    target = tb.table_target(table, runtime)
    config = tb.table_space(table, load_profile(profile_name) if profile_name else None)
    timer = tb.make_timer(target, device=device_url, token=token, quick=quick)
    differs = table.mismatch(timer.built_for())
    if differs:
        where = f"the device at {device_url}" if device_url else "here"
        raise click.UsageError(
            f"{table_path} was built for {differs} ({where}); check it where it was built "
            "(--device URL for a table built on a device server)"
        )
    report = tb.check_table(
        table,
        config=config,
        target=target,
        timer=timer,
        samples=samples,
        seed=seed,
        rounds=1 if quick else tb.ROUNDS,
        jobs=jobs,
        log=_echo_err,
    )
    _refuse_non_finite(report, table_path)
    click.echo(tb.format_check(report))
    if json_out:
        write_json_atomic(Path(json_out), report)
        click.echo(f"wrote {json_out}")
