"""``edgenas discover``, ``train``, ``profiles``, ``pareto``, ``report``: searching and seeing a search."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from edgenas.cli.app import (
    device_option,
    main,
    quiet_option,
    seed_option,
    training_threads_option,
    with_data_options,
)


@main.command()
@click.option(
    "--profile", "profile_name", default="demo", show_default=True, help="Built-in profile name or a .toml path."
)
@with_data_options
@click.option("--task", type=click.Choice(["classify", "face"]), default=None, help="Override the profile's task.")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Run directory. Default: runs/PROFILE-DATASET[-N]."
)
@device_option
@seed_option
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted search in --out (default: the unfinished matching run written last).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Candidates trained at once on the device (speculatively; decisions are unchanged).",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS",
    help="Train candidates as Ray tasks: 'local', or a Ray cluster's address (needs edgenas[ray]).",
)
@training_threads_option
@quiet_option
def discover(
    profile_name,
    *,
    dataset,
    data_dir,
    download,
    task,
    out,
    device,
    seed,
    resume,
    workers,
    ray_address,
    train_threads,
    quiet,
):
    """Search an architecture under the profile's budgets and train it (demo profile on digits by default)."""
    from edgenas.config.profile import load_profile
    from edgenas.run.discover import discover as run_discover
    from edgenas.run.progress import reporter

    profile = load_profile(profile_name)
    if task:
        profile = dataclasses.replace(profile, task=task)
    with reporter(quiet) as progress:
        summary = run_discover(
            profile,
            dataset=dataset,
            data_dir=data_dir,
            out=out,
            device=device,
            seed=seed,
            resume=resume,
            download=download,
            workers=workers,
            ray=ray_address,
            threads=train_threads,
            log=progress,
        )
    click.echo(
        json.dumps(
            {k: summary[k] for k in ("arch_str", "params", "macs", "run_dir") if k in summary}
            | {k: v for k, v in summary.items() if k.startswith("test_") or k.startswith("verify_")}
        )
    )


@main.command()
@click.argument("target", type=click.Path(exists=True))
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Epochs. Default: the profile's train.final_epochs."
)
@click.option(
    "--profile", "profile_name", default=None, help="For an ARCH.json: the training protocol's profile (default demo)."
)
@with_data_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="For an ARCH.json or --candidate: the run directory to create (default for --candidate: RUN_DIR-cN).",
)
@click.option(
    "--candidate",
    type=int,
    default=None,
    metavar="N",
    help="Train candidate N of RUN_DIR's search (as `edgenas pareto` numbers them) into a new run directory.",
)
@device_option
@click.option(
    "--seed",
    type=click.IntRange(0, 2**31 - 1),
    default=None,
    help="Seed of inits and shuffles. Default: 0 (with --resume: the training's own).",
)
@training_threads_option
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Write RUN_DIR/checkpoint.pt every N epochs (0: only on Ctrl-C/SIGTERM). Default: the profile's "
    "train.checkpoint_every.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue RUN_DIR's stopped training from its checkpoint.pt (its own epochs, seed, threads and device).",
)
@quiet_option
def train(
    target,
    *,
    epochs,
    profile_name,
    dataset,
    data_dir,
    download,
    out,
    candidate,
    device,
    seed,
    train_threads,
    checkpoint_every,
    resume,
    quiet,
):
    """Train a discovered network (RUN_DIR or ARCH.json) from scratch and report test accuracy.

    Earlier final weights are kept as RUN_DIR/model.N.pt (figures in summary.json's earlier_models)."""
    from edgenas.run.final import candidate_run, train_final
    from edgenas.run.progress import reporter

    if candidate is not None:
        if not Path(target).is_dir():
            raise click.BadParameter(f"{target} is a file; --candidate needs a RUN_DIR", param_hint="--candidate")
        if resume:
            raise click.UsageError(
                "--resume continues a run directory's training: give that directory, not --candidate"
            )
        target, out = str(candidate_run(target, candidate, out=out).path), None
    with reporter(quiet) as progress:
        summary = train_final(
            target,
            epochs=epochs,
            device=device,
            seed=seed,
            profile=profile_name,
            dataset=dataset,
            data_dir=data_dir,
            out=out,
            download=download,
            threads=train_threads,
            checkpoint_every=checkpoint_every,
            resume=resume,
            log=progress,
        )
    click.echo(json.dumps(summary))


@main.command()
@click.argument("name", required=False)
def profiles(name):
    """List the built-in profiles, or show everything NAME (a name or .toml path) sets."""
    from edgenas.config.profile import list_profiles, load_profile
    from edgenas.config.strategies import OVER_BUDGET, RandomConfig

    if name:
        p = load_profile(name)
        click.echo(json.dumps(p.to_dict(), indent=2))
        return
    for p in list_profiles():
        s, b = p.search, p.budget
        budgets = ", ".join(
            f"{k}={getattr(b, k)}" for k in ("max_params", "max_macs", "max_latency_ms") if getattr(b, k)
        )
        where = (f" on {b.runtime}" if b.max_latency_ms else "") + (f" at {b.device}" if b.device else "")
        memory = ", ".join(f"{k}={getattr(b, k)}" for k in ("max_peak_memory_kb", "max_flash_kb") if getattr(b, k))
        if memory:
            budgets = ", ".join(filter(None, (budgets, f"{memory} on {b.memory_target}")))
        where += f", predicted by {b.latency_table}" if b.latency_table else ""
        over = (
            "another network is drawn"
            if isinstance(s, RandomConfig)
            else f"{s.over_budget} ({OVER_BUDGET[s.over_budget]})"
        )
        where += f"; over budget: {over}" if budgets else ""
        click.echo(
            f"{p.name:14} {p.strategy:5} {p.task:8} depth {s.min_depth}-{s.max_depth}, width {s.min_width}-{s.max_width}, "
            f"{s.epochs} epochs; {budgets or 'no budget'}{where}\n{'':14} {p.description}"
        )


# -- seeing the search (edgenas/deploy/report/pareto.py, edgenas/deploy/report/run_report.py) ----------------------------------------
@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--x",
    "axis",
    type=click.Choice(["params", "macs", "latency"]),
    default="params",
    show_default=True,
    help="The cost against which accuracy is traded.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the front as JSON.")
def pareto(run_dir, axis, as_json):
    """The non-dominated trained candidates of RUN_DIR's search (accuracy against --x), cheapest first."""
    from edgenas.deploy.report.pareto import format_rows, front_rows
    from edgenas.run.rundir import RunDir

    run = RunDir.open(run_dir)
    journal, latencies = run.journal(), run.latencies()
    rows = front_rows(journal, axis, latencies)
    if axis == "latency" and not rows and any(r["status"] == "trained" for r in journal):
        raise click.BadParameter(
            f"{run.path} has no latency measured for a trained candidate "
            "(a profile with budget.max_latency_ms measures them); use --x params or --x macs",
            param_hint="--x latency",
        )
    click.echo(
        json.dumps({"run_dir": str(run.path), "x": axis, "front": rows}, indent=2)
        if as_json
        else format_rows(rows, axis)
    )


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="The HTML file. Default: RUN_DIR/report.html."
)
@click.option(
    "--png", "png_dir", type=click.Path(file_okay=False), default=None, help="Also write each figure as DIR/NAME.png."
)
def report(run_dir, out, png_dir):
    """One self-contained HTML page of RUN_DIR: trajectory, trade-offs, network, budgets, export, provenance."""
    from edgenas.deploy.report.run_report import write_report

    written = write_report(
        run_dir, out=out, png_dir=png_dir, warn=lambda line: click.echo(f"edgenas: warning: {line}", err=True)
    )
    for path in written:
        click.echo(f"wrote {path}")
