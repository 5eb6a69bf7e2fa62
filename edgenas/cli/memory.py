"""``edgenas memory-check``: the footprint model's estimate beside TFLM's measured arena, on random networks."""

from __future__ import annotations

from pathlib import Path

import click

from edgenas.cli.app import main


@main.command("memory-check")
@click.option(
    "--profile", "profile_name", default="demo", show_default=True, help="Built-in profile name or a .toml path."
)
@click.option(
    "--runtime",
    type=click.Choice(["tflm"]),
    default="tflm",
    show_default=True,
    help="Where the arena is measured: TensorFlow Lite Micro's interpreter on this machine.",
)
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True, help="Random networks to check.")
@click.option("--dataset", default=None, help="Whose input shape and classes. Default: the profile's.")
@click.option(
    "--classes", type=click.IntRange(min=1), default=None, help="Classes, for a dataset whose files decide them."
)
@click.option(
    "--seed", type=click.IntRange(0, 2**31 - 1), default=1, show_default=True, help="Seed of the random networks."
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the figures here.")
def memory_check(profile_name, *, runtime, samples, dataset, classes, seed, json_out):
    """Estimated vs measured memory of random INT8 networks: activations exact?, persistent and flash |error| %."""
    from edgenas.config.profile import load_profile
    from edgenas.deploy.bench import check_writable
    from edgenas.run.files import write_json_atomic
    from edgenas.runtime import memory_check as mc
    from edgenas.runtime.backend import check_available
    from edgenas.runtime.table_build import profile_target
    from edgenas.runtime.tflm import RUNTIME as TFLM

    if json_out:
        check_writable(json_out, "--json")
    profile = load_profile(profile_name)
    if profile.task != "classify":
        raise click.UsageError(f"--profile {profile_name}: memory-check models classifiers; its task is {profile.task}")
    tflm = check_available(TFLM)
    target = profile_target(profile, dataset=dataset, classes=classes)
    report = mc.check_memory(
        profile.search,
        input_chw=target.input_chw,
        outputs=target.outputs,
        convert=tflm.convert,
        samples=samples,
        seed=seed,
        target=profile.budget.memory_target,
        log=lambda line: click.echo(line, err=True),
    )
    report["profile"] = profile.name
    click.echo(mc.format_check(report))
    if json_out:
        write_json_atomic(Path(json_out), report)
        click.echo(f"wrote {json_out}")
