"""``edgenas compare files|history|models``: the latency gate for CI, one subcommand per way of judging.

The former one-command form (``compare A B``, ``compare --history DIR CURRENT``, ``compare --models A B``)
still runs for one release, with a one-line notice naming the subcommand that replaces it.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import click

from edgenas.cli.app import (
    batch_option,
    device_token,
    device_token_option,
    device_url_option,
    main,
    runtime_option,
    threads_option,
)


def with_options(*options):
    """Apply click options in the order they are listed (as ``--help`` shows them)."""

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


# -- the options, each defined once ---------------------------------------------------------------------
max_regression_option = click.option(
    "--max-regression", default="5%", show_default=True, help="Allowed slow-down: 5% or 0.05."
)
markdown_option = click.option("--markdown", is_flag=True, help="Print a Markdown table (for CI comments).")
metric_option = click.option(
    "--metric",
    type=click.Choice(["p50", "p90", "p99"]),
    default="p50",
    show_default=True,
    help="The metric that decides.",
)
allow_env_mismatch_option = click.option(
    "--allow-env-mismatch", is_flag=True, help="Compare results from different runtimes/devices/threads/batches."
)
update_baseline_option = click.option("--update-baseline", is_flag=True, help="Accept CURRENT: write it over BASELINE.")
window_option = click.option(
    "--window", type=int, default=10, show_default=True, help="The last N results of the same environment."
)
png_option = click.option(
    "--png", "png_out", type=click.Path(dir_okay=False), default=None, help="Draw the trend into this PNG."
)
paired_options = [
    runtime_option,
    batch_option,
    threads_option,
    click.option("--rounds", type=int, default=15, show_default=True, help="Rounds of A then B."),
    click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs per model and round."),
    click.option("--runs", type=int, default=20, show_default=True, help="Timed runs per model and round."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random input."),
    click.option("--json-a", type=click.Path(dir_okay=False), default=None, help="Write A's bench JSON here."),
    click.option("--json-b", type=click.Path(dir_okay=False), default=None, help="Write B's bench JSON here."),
    click.option(
        "--write-baselines", type=click.Path(file_okay=False), default=None, help="Write DIR/a.json and DIR/b.json."
    ),
    device_url_option,
    device_token_option,
]


# -- the group, and the former form ----------------------------------------------------------------------
class CompareGroup(click.Group):
    """Subcommands; a first argument that names none (a file, an option) runs the former one-command form."""

    FORMER = "(former form)"  # a name no one types: it reaches the former command only through parse_args

    def __init__(self, *args, former: click.Command, **kwargs):
        super().__init__(*args, **kwargs)
        self.former = former

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names and not self._typo(args[0]):
            args = [self.FORMER, *args]
        return super().parse_args(ctx, args)

    def _typo(self, arg: str) -> bool:
        """``file`` for ``files``: no such file, and close to a subcommand (click then suggests it)."""
        return (
            not arg.startswith("-")
            and not Path(arg).exists()
            and bool(difflib.get_close_matches(arg, list(self.commands), cutoff=0.75))
        )

    def get_command(self, ctx, cmd_name):
        return self.former if cmd_name == self.FORMER else super().get_command(ctx, cmd_name)


@click.command("compare", hidden=True)
@click.argument("files", nargs=-1, type=click.Path())
@with_options(metric_option, max_regression_option, markdown_option, allow_env_mismatch_option, update_baseline_option)
@click.option("--history", "history_dir", type=click.Path(file_okay=False), default=None)
@with_options(window_option, png_option)
@click.option("--models", nargs=2, type=click.Path(), default=None)
@with_options(*paired_options)
def former_compare(files, history_dir, models, **options):
    """The former form, its exclusivity checked by hand as before; goes in the next release."""
    from edgenas.deploy.gate.compare import parse_max_regression

    new = "models A B" if models else "history DIR CURRENT" if history_dir else "files BASELINE CURRENT"
    old = "--models A B" if models else "--history DIR CURRENT" if history_dir else "BASELINE CURRENT"
    click.echo(
        f"edgenas: warning: `edgenas compare {old}` is deprecated and goes in the next release: "
        f"run `edgenas compare {new}` with the same options",
        err=True,
    )
    o = options
    parse_max_regression(o["max_regression"])  # first, as before
    paired = {
        k: o[k]
        for k in (
            "runtime",
            "batch",
            "threads",
            "rounds",
            "warmup",
            "runs",
            "seed",
            "json_a",
            "json_b",
            "write_baselines",
            "device_url",
            "device_token_file",
        )
    }
    if (o["device_url"] or o["device_token_file"]) and not models:
        raise click.UsageError("--device URL goes with --models A B (the device times both)")
    if models:
        if files or o["update_baseline"] or history_dir:
            raise click.UsageError(
                "--models A B takes no BASELINE/CURRENT files, no --history and no --update-baseline"
            )
        return _models(
            models[0], model_b=models[1], max_regression=o["max_regression"], markdown=o["markdown"], **paired
        )
    if history_dir:
        if len(files) != 1 or o["update_baseline"]:
            raise click.UsageError(
                "--history DIR takes one CURRENT.json and no --update-baseline (the history keeps every result)"
            )
        return _history(
            history_dir,
            current_path=files[0],
            dir_label="--history",
            metric=o["metric"],
            max_regression=o["max_regression"],
            markdown=o["markdown"],
            window=o["window"],
            png_out=o["png_out"],
        )
    if len(files) != 2:
        raise click.UsageError("give BASELINE.json CURRENT.json, --history DIR CURRENT.json, or --models A B")
    if o["png_out"]:
        raise click.UsageError("--png draws a history's trend: it needs --history DIR")
    return _files(
        files[0],
        current=files[1],
        metric=o["metric"],
        max_regression=o["max_regression"],
        markdown=o["markdown"],
        allow_env_mismatch=o["allow_env_mismatch"],
        update_baseline=o["update_baseline"],
    )


@main.group(cls=CompareGroup, former=former_compare)
def compare():
    """Latency gate for CI: a result against a baseline (files), against a history of results (history), or
    two models timed in alternation here or on a device (models). Exit 0 ok, 1 regression, 2 unusable input.

    The former form `edgenas compare A B`, `--history DIR CURRENT`, `--models A B` runs for one more release."""


# -- the subcommands ---------------------------------------------------------------------------------------
@compare.command("files")
@click.argument("baseline", type=click.Path())
@click.argument("current", type=click.Path())
@with_options(metric_option, max_regression_option, markdown_option, allow_env_mismatch_option, update_baseline_option)
def compare_files(baseline, current, **options):
    """CURRENT.json against BASELINE.json (`edgenas bench --json`). Exit 0 ok, 1 regression, 2 unusable input."""
    return _files(baseline, current=current, **options)


@compare.command("history")
@click.argument("history_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.argument("current", type=click.Path())
@with_options(metric_option, max_regression_option, markdown_option, window_option, png_option)
def compare_history(history_dir, current, **options):
    """CURRENT.json against the median of the last results in DIR of the same environment, then add it to DIR.
    Exit 0 ok, 1 regression, 2 unusable input."""
    return _history(history_dir, current_path=current, dir_label="DIR", **options)


@compare.command("models")
@click.argument("model_a", metavar="A", type=click.Path())
@click.argument("model_b", metavar="B", type=click.Path())
@with_options(max_regression_option, markdown_option, *paired_options)
def compare_models(model_a, model_b, **options):
    """Time models A and B in alternation (here, or on the device server with --device): B regressed when the
    interval of its latency ratio to A lies above the threshold. Exit 0 ok, 1 regression, 2 unusable input."""
    return _models(model_a, model_b=model_b, **options)


# -- what each subcommand does (the former form calls them too) ---------------------------------------------
def _files(baseline, *, current, metric, max_regression, markdown, allow_env_mismatch, update_baseline) -> int:
    from edgenas.deploy.gate import compare as cmp

    threshold = cmp.parse_max_regression(max_regression)
    result = cmp.compare_files(
        baseline, current, metric=metric, max_regression=threshold, allow_env_mismatch=allow_env_mismatch
    )
    click.echo(result.table(markdown))
    if update_baseline:
        from edgenas.deploy.bench import read_bench

        cmp.update_baseline(baseline, read_bench(current))
        click.echo(f"accepted {current} as the new baseline: wrote {baseline}")
        return 0
    if result.regressed:
        click.echo(f"to accept the new latency as the baseline: {result.accept_command(allow_env_mismatch)}")
    return result.exit_code


def _history(directory, *, current_path, dir_label, metric, max_regression, markdown, window, png_out) -> int:
    from edgenas.deploy.bench import check_writable, read_bench
    from edgenas.deploy.gate.compare import parse_max_regression
    from edgenas.deploy.gate.history import History, judge

    threshold = parse_max_regression(max_regression)
    check_writable(directory, dir_label, directory=True)
    if png_out:
        check_writable(png_out, "--png")
    current = read_bench(current_path)
    history = History.load(directory)
    trend = judge(current, history=history, name=current_path, window=window, metric=metric, max_regression=threshold)
    click.echo(trend.table(markdown))
    if png_out:
        trend.save_png(png_out)
        click.echo(f"wrote {png_out}")
    if history.holds(current):
        click.echo(f"{current_path} is already in {directory}: not added again")
    else:
        click.echo(f"added {current_path} to the history: {history.append(current)}")
    return trend.exit_code


def _models(
    model_a,
    *,
    model_b,
    max_regression,
    markdown,
    runtime,
    batch,
    threads,
    rounds,
    warmup,
    runs,
    seed,
    json_a,
    json_b,
    write_baselines,
    device_url,
    device_token_file,
) -> int:
    from edgenas.deploy.bench import check_writable, write_bench
    from edgenas.deploy.gate.compare import (
        paired_compare,
        paired_compare_on_device,
        parse_max_regression,
    )

    threshold = parse_max_regression(max_regression)
    options = dict(
        runtime=runtime,
        rounds=rounds,
        batch=batch,
        threads=threads,
        warmup=warmup,
        runs_per_round=runs,
        max_regression=threshold,
    )
    token = device_token(device_url, device_token_file) if device_url or device_token_file else None
    for flag, path in (("--json-a", json_a), ("--json-b", json_b)):
        if path:
            check_writable(path, flag)
    if write_baselines:
        check_writable(write_baselines, "--write-baselines", directory=True)
    if token is not None:
        result = paired_compare_on_device(model_a, model_b, url=device_url, token=token, **options)
    else:
        result = paired_compare(model_a, model_b, seed=seed, **options)
    click.echo(result.table(markdown))
    targets = [(json_a, result.bench_a), (json_b, result.bench_b)]
    if write_baselines:
        targets += [
            (Path(write_baselines) / "a.json", result.bench_a),
            (Path(write_baselines) / "b.json", result.bench_b),
        ]
    for path, record in targets:
        if path:
            write_bench(path, record)
            click.echo(f"wrote {path}")
    return result.exit_code
