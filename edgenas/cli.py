"""The ``edgenas`` command: parse flags, call the library, print. Errors are one line, exit code 2.

Library errors name Python parameters (``device='cuda': ...``); here they are shown with the
flag the user typed (``--device cuda: ...``).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from edgenas.errors import EdgenasError, ParamError
from edgenas.version import __version__

# Library parameter -> the flag that sets it, where the two names differ.
FLAGS = {"profile": "--profile", "formats": "--format", "target": "TARGET", "ray": "--ray", "json_out": "--json",
         "png_dir": "--png", "model": "--model"}
# Write failures of the machine, not of edgenas: one line (exit 1) wherever they surface.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so the command ends as on Ctrl-C (exit 143)."""


@contextmanager
def _sigterm_as_exception():
    def handler(signum, frame):
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a test runner's worker): leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def flag_of(param: str) -> str:
    return FLAGS.get(param, "--" + param.replace("_", "-"))


def error_line(e: EdgenasError) -> str:
    return e.flag_message(flag_of) if isinstance(e, ParamError) else str(e)


class EdgenasGroup(click.Group):
    """Turns every error into one ``edgenas: error: ...`` line and the right exit code.

    Ctrl-C exits 130 and SIGTERM 143; a search stopped either way keeps its journal (``--resume``).
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            with _sigterm_as_exception():
                rv = super().main(args, prog_name or "edgenas", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.ClickException as e:
            click.echo(f"edgenas: error: {e.format_message()}", err=True)
            code = e.exit_code
        except EdgenasError as e:
            click.echo(f"edgenas: error: {error_line(e)}", err=True)
            code = e.exit_code
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            click.echo(f"edgenas: error: cannot write {e.filename or 'a file'}: {e.strerror}; fix that "
                       "(free space, permissions) and run the command again", err=True)
            code = 1
        except (click.Abort, KeyboardInterrupt):
            click.echo("edgenas: interrupted; a search continues with the same command and --resume", err=True)
            code = 130
        except Terminated:
            click.echo("edgenas: terminated; a search continues with the same command and --resume", err=True)
            code = 143
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(cls=EdgenasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgenas")
def main():
    """Discover small, accurate networks for edge devices; export, benchmark and guard them."""


device_option = click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                             help="Training device. Default: cuda when present, else cpu.")
seed_option = click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
                           help="Seed of splits, inits and shuffles.")
data_options = [
    click.option("--dataset", default=None, help="cifar10, cifar100, fashionmnist, kmnist, emnist, imagefolder, digits. Default: the profile's (digits)."),
    click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Where the dataset lies (or is downloaded to)."),
    click.option("--download", is_flag=True, help="Download a torchvision dataset into --data-dir if absent."),
]


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress output (errors still go to stderr).")


def with_data_options(f):
    for option in reversed(data_options):
        f = option(f)
    return f


@main.command()
@click.option("--profile", "profile_name", default="demo", show_default=True, help="Built-in profile name or a .toml path.")
@with_data_options
@click.option("--task", type=click.Choice(["classify", "face"]), default=None, help="Override the profile's task.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory. Default: runs/PROFILE-DATASET[-N].")
@device_option
@seed_option
@click.option("--resume", is_flag=True, help="Continue an interrupted search in --out (default: the unfinished matching run written last).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Candidates trained at once on the device (speculatively; decisions are unchanged).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Train candidates as Ray tasks: 'local', or a Ray cluster's address (needs edgenas[ray]).")
@quiet_option
def discover(profile_name, dataset, data_dir, download, task, out, device, seed, resume, workers, ray_address, quiet):
    """Search an architecture under the profile's budgets and train it (demo profile on digits by default)."""
    from edgenas.config.profile import load_profile
    from edgenas.run.discover import discover as run_discover
    from edgenas.run.progress import reporter

    profile = load_profile(profile_name)
    if task:
        profile = dataclasses.replace(profile, task=task)
    with reporter(quiet) as (log, progress):
        summary = run_discover(profile, dataset=dataset, data_dir=data_dir, out=out, device=device, seed=seed,
                               resume=resume, download=download, workers=workers, ray=ray_address, log=log,
                               progress=progress)
    click.echo(json.dumps({k: summary[k] for k in ("arch_str", "params", "macs", "run_dir") if k in summary}
                          | {k: v for k, v in summary.items() if k.startswith("test_") or k.startswith("verify_")}))


@main.command()
@click.argument("target", type=click.Path(exists=True))
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs. Default: the profile's train.final_epochs.")
@click.option("--profile", "profile_name", default=None, help="For an ARCH.json: the training protocol's profile (default demo).")
@with_data_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="For an ARCH.json or --candidate: the run directory to create (default for --candidate: RUN_DIR-cN).")
@click.option("--candidate", type=int, default=None, metavar="N",
              help="Train candidate N of RUN_DIR's search (as `edgenas pareto` numbers them) into a new run directory.")
@device_option
@seed_option
@quiet_option
def train(target, epochs, profile_name, dataset, data_dir, download, out, candidate, device, seed, quiet):
    """Train a discovered network (RUN_DIR or ARCH.json) from scratch and report test accuracy."""
    from edgenas.run.final import candidate_run, train_final
    from edgenas.run.progress import reporter

    if candidate is not None:
        if not Path(target).is_dir():
            raise click.BadParameter(f"{target} is a file; --candidate needs a RUN_DIR", param_hint="--candidate")
        target, out = str(candidate_run(target, candidate, out=out).path), None
    with reporter(quiet) as (log, progress):
        summary = train_final(target, epochs=epochs, device=device, seed=seed, profile=profile_name, dataset=dataset,
                              data_dir=data_dir, out=out, download=download, log=log, progress=progress)
    click.echo(json.dumps(summary))


@main.command()
@click.argument("name", required=False)
def profiles(name):
    """List the built-in profiles, or show everything NAME (a name or .toml path) sets."""
    from edgenas.config.profile import list_profiles, load_profile

    if name:
        p = load_profile(name)
        click.echo(json.dumps(p.to_dict(), indent=2))
        return
    for p in list_profiles():
        s, b = p.search, p.budget
        budgets = ", ".join(f"{k}={getattr(b, k)}" for k in ("max_params", "max_macs", "max_latency_ms") if getattr(b, k))
        click.echo(f"{p.name:14} {p.strategy:5} {p.task:8} depth {s.min_depth}-{s.max_depth}, width {s.min_width}-{s.max_width}, "
                   f"{s.epochs} epochs; {budgets or 'no budget'}" + (f" on {b.runtime}" if b.max_latency_ms else "") + (f" at {b.device}" if b.device else "")
                   + f"\n{'':14} {p.description}")


# -- seeing the search (edgenas/deploy/pareto.py, edgenas/deploy/report.py) ----------------------------------------
@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--x", "axis", type=click.Choice(["params", "macs", "latency"]), default="params", show_default=True,
              help="The cost against which accuracy is traded.")
@click.option("--json", "as_json", is_flag=True, help="Print the front as JSON.")
def pareto(run_dir, axis, as_json):
    """The non-dominated trained candidates of RUN_DIR's search (accuracy against --x), cheapest first."""
    from edgenas.deploy.pareto import format_rows, front_rows
    from edgenas.run.rundir import RunDir

    run = RunDir.open(run_dir)
    journal, latencies = run.journal(), run.latencies()
    rows = front_rows(journal, axis, latencies)
    if axis == "latency" and not rows and any(r["status"] == "trained" for r in journal):
        raise click.BadParameter(f"{run.path} has no latency measured for a trained candidate "
                                 "(a profile with budget.max_latency_ms measures them); use --x params or --x macs",
                                 param_hint="--x latency")
    click.echo(json.dumps({"run_dir": str(run.path), "x": axis, "front": rows}, indent=2) if as_json
               else format_rows(rows, axis))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="The HTML file. Default: RUN_DIR/report.html.")
@click.option("--png", "png_dir", type=click.Path(file_okay=False), default=None, help="Also write each figure as DIR/NAME.png.")
def report(run_dir, out, png_dir):
    """One self-contained HTML page of RUN_DIR: trajectory, trade-offs, network, budgets, export, provenance."""
    from edgenas.deploy.report import write_report

    written = write_report(run_dir, out, png_dir=png_dir)
    for path in written:
        click.echo(f"wrote {path}")


# -- export (edgenas/deploy/exporter.py) ---------------------------------------------------------------
def _export_formats(ctx, param, value):
    from edgenas.deploy.formats import parse_formats

    try:
        return parse_formats(value)
    except ParamError as e:
        raise click.BadParameter(e.message) from None


def _fraction_below_one(ctx, param, value):
    from edgenas.device_kit.edgenas_kit import (
        parse_fraction,  # the kit's parser: one reading of "1%"
    )

    try:
        drop = parse_fraction(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if drop >= 1:
        raise click.BadParameter(f"{value!r} must be below 100%: write e.g. 1% or 0.01")
    return drop


def _optional_drop(ctx, param, value):
    return None if value is None else _fraction_below_one(ctx, param, value)


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--format", "formats", default="onnx", show_default=True, callback=_export_formats,
              help="Comma-separated formats: onnx, tensorrt, onnx-int8 (engine and INT8 file are built from the ONNX file).")
@click.option("--fp16", is_flag=True, help="TensorRT: build an FP16 engine.")
@click.option("--int8", is_flag=True, help="TensorRT: build an INT8 engine, calibrated on the run's training images.")
@click.option("--calibration-images", type=click.IntRange(min=1), default=512, show_default=True, help="INT8: images to calibrate on.")
@click.option("--int8-max-drop", default="1%", show_default=True, callback=_fraction_below_one,
              help="INT8: what it may lose against PyTorch (1% or 0.01): TensorRT, top-1 agreement; "
                   "onnx-int8, test accuracy in percentage points (faces: verification accuracy).")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default=None,
              help="onnx-int8: how activation ranges are calibrated. Default: minmax.")
def export(run_dir, formats, fp16, int8, calibration_images, int8_max_drop, calibration_method):
    """Export RUN_DIR's network to RUN_DIR/export/ and check it against PyTorch (exit 1 on a parity failure)."""
    from edgenas.deploy.exporter import export_run

    report = export_run(run_dir, formats=formats, fp16=fp16, int8=int8, calibration_images=calibration_images,
                        int8_max_drop=int8_max_drop, calibration_method=calibration_method)
    for line in report.lines():
        click.echo(line)
    for why in report.skipped.values():
        click.echo(f"edgenas: {why}; the ONNX export in {report.out_dir} is complete", err=True)
    click.echo(f"ready for the device: copy {report.out_dir}, then run `python edgenas_kit.py check .` there")


flip_option = click.option("--flip", is_flag=True, help="Faces: embed each image plus its horizontal mirror, summed "
                           "(insightface's Accuracy-Flip).")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="One folder of images per person (for lfw: the LFW root). Default: the run's data directory.")
@click.option("--pairs", "pairs_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Pairs in LFW pairs.txt format, naming images under --data-dir. Default: the run's held-out test pairs.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Where to write the figures. Default: RUN_DIR/verify.json.")
@device_option
@flip_option
def verify(run_dir, data_dir, pairs_file, json_out, device, flip):
    """Face verification of a face run: 10-fold accuracy, threshold, ROC AUC, TAR@FAR=1e-3."""
    from edgenas.deploy.verify import format_verification, verify_run
    from edgenas.run.rundir import write_json_atomic

    result = verify_run(run_dir, data_dir=data_dir, pairs_file=pairs_file, device=device, flip=flip)
    click.echo(format_verification(result))
    out = Path(json_out) if json_out else Path(run_dir) / "verify.json"
    write_json_atomic(out, result)
    click.echo(f"wrote {out}")


# -- bench and compare (edgenas/deploy/bench.py, edgenas/deploy/compare.py) --------------------------
runtime_option = click.option("--runtime", default=None, help="onnxruntime-cpu, onnxruntime-cpu-int8, onnxruntime-cuda, "
                              "tensorrt-fp16, tensorrt-int8, torch-cpu, torch-cuda. Default: onnxruntime-cpu "
                              "(tensorrt-fp16 for .engine).")
batch_option = click.option("--batch", type=int, default=1, show_default=True, help="Images per inference.")
threads_option = click.option("--threads", type=int, default=None, help="CPU threads of CPU runtimes. Default: all available.")
device_url_option = click.option("--device", "device_url", default=None, metavar="URL",
                                 help="Time on the device server at http://HOST:PORT (`edgenas_kit.py serve`) instead of here.")
device_token_option = click.option("--device-token-file", type=click.Path(dir_okay=False), default=None,
                                   help="File holding the device's token. Default: $EDGENAS_DEVICE_TOKEN.")


def _device_token(device_url, token_file) -> str:
    from edgenas.runtime.device_client import check_url, read_token

    if token_file and not device_url:
        raise click.UsageError("--device-token-file goes with --device URL")
    check_url(device_url, "device")
    return read_token(token_file, flag="--device-token-file")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "model_file", type=click.Path(dir_okay=False), default=None,
              help="The exported file. Default: RUN_DIR/export/model.onnx (also model.int8.onnx, model.engine).")
@runtime_option
@threads_option
@flip_option
@click.option("--max-drop", default=None, callback=_optional_drop,
              help="Gate: exit 1 when the file loses more accuracy than this against PyTorch (1% or 0.01 = 1 pp).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the figures. Default: RUN_DIR/export/MODEL.evaluate.json.")
def evaluate(run_dir, model_file, runtime, threads, flip, max_drop, json_out):
    """The whole test split through an exported file, beside PyTorch: top-1/top-5, per class, confusion
    matrix (faces: the verification protocol). Exit 1 when --max-drop is exceeded."""
    from edgenas.deploy.bench import check_writable
    from edgenas.deploy.evaluate import (
        check_drop,
        evaluate_run,
        format_evaluation,
        result_path,
    )
    from edgenas.run.rundir import RunDir, write_json_atomic

    if json_out:
        check_writable(json_out, "--json")
    result = evaluate_run(run_dir, model=model_file, runtime=runtime, threads=threads, flip=flip)
    click.echo(format_evaluation(result))
    out = Path(json_out) if json_out else result_path(RunDir.open(run_dir), Path(result["model"]))
    write_json_atomic(out, result)
    click.echo(f"wrote {out}")
    if max_drop is not None:
        check_drop(result, max_drop=max_drop, figures=out)
        click.echo(f"gate passed: {result['drop_pp']:.2f} pp lost, at most {100 * max_drop:g} pp allowed")


@main.command()
@click.argument("model", type=click.Path())
@runtime_option
@batch_option
@threads_option
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs first.")
@click.option("--runs", type=int, default=100, show_default=True, help="Timed runs.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the bench JSON here.")
@device_url_option
@device_token_option
def bench(model, runtime, batch, threads, warmup, runs, json_out, device_url, device_token_file):
    """Time MODEL (.onnx, .engine or RUN_DIR): p50/p90/p99, mean, std, throughput."""
    from edgenas.deploy.bench import bench as run_bench
    from edgenas.deploy.bench import (
        bench_on_device,
        check_writable,
        format_bench,
        stale_export,
        write_bench,
    )

    if json_out:
        check_writable(json_out, "--json")
    if device_url or device_token_file:
        token = _device_token(device_url, device_token_file)
        result = bench_on_device(model, device_url, token=token, runtime=runtime, batch=batch, threads=threads,
                                 warmup=warmup, runs=runs)
    else:
        stale = stale_export(model, runtime)
        if stale:
            click.echo(f"edgenas: warning: {stale}", err=True)
        result = run_bench(model, runtime=runtime, batch=batch, threads=threads, warmup=warmup, runs=runs)
    click.echo(format_bench(result))
    if json_out:
        write_bench(json_out, result)
        click.echo(f"wrote {json_out}")


@main.command()
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--metric", type=click.Choice(["p50", "p90", "p99"]), default="p50", show_default=True, help="The metric that decides.")
@click.option("--max-regression", default="5%", show_default=True, help="Allowed slow-down: 5% or 0.05.")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (for CI comments).")
@click.option("--allow-env-mismatch", is_flag=True, help="Compare results from different runtimes/devices/threads/batches.")
@click.option("--update-baseline", is_flag=True, help="Accept CURRENT: write it over BASELINE.")
@click.option("--history", "history_dir", type=click.Path(file_okay=False), default=None,
              help="History mode: judge CURRENT.json against the results in DIR, then add it there.")
@click.option("--window", type=int, default=10, show_default=True, help="History mode: the last N results of the same environment.")
@click.option("--png", "png_out", type=click.Path(dir_okay=False), default=None, help="History mode: draw the trend into this PNG.")
@click.option("--models", nargs=2, type=click.Path(), default=None, help="Paired mode: measure models A and B in alternation.")
@runtime_option
@batch_option
@threads_option
@click.option("--rounds", type=int, default=15, show_default=True, help="Paired mode: rounds of A then B.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Paired mode: untimed runs per model and round.")
@click.option("--runs", type=int, default=20, show_default=True, help="Paired mode: timed runs per model and round.")
@click.option("--seed", type=int, default=0, show_default=True, help="Paired mode: seed of the random input.")
@click.option("--json-a", type=click.Path(dir_okay=False), default=None, help="Paired mode: write A's bench JSON here.")
@click.option("--json-b", type=click.Path(dir_okay=False), default=None, help="Paired mode: write B's bench JSON here.")
@click.option("--write-baselines", type=click.Path(file_okay=False), default=None, help="Paired mode: write DIR/a.json and DIR/b.json.")
@device_url_option
@device_token_option
def compare(files, metric, max_regression, markdown, allow_env_mismatch, update_baseline, history_dir, window, png_out,
            models, runtime, batch, threads, rounds, warmup, runs, seed, json_a, json_b, write_baselines, device_url,
            device_token_file):
    """Latency gate: BASELINE.json CURRENT.json, --history DIR CURRENT.json, or --models A B.
    Exit 0 ok, 1 regression, 2 unusable input."""
    from edgenas.deploy import compare as cmp

    threshold = cmp.parse_max_regression(max_regression)
    if (device_url or device_token_file) and not models:
        raise click.UsageError("--device URL goes with --models A B (the device times both)")
    if models:
        if files or update_baseline or history_dir:
            raise click.UsageError("--models A B takes no BASELINE/CURRENT files, no --history and no --update-baseline")
        options = dict(runtime=runtime, rounds=rounds, batch=batch, threads=threads, warmup=warmup, runs_per_round=runs)
        if device_url or device_token_file:
            options.update(device=device_url, token=_device_token(device_url, device_token_file))
        else:
            options.update(seed=seed)
        return _paired(models, markdown=markdown, threshold=threshold, json_a=json_a, json_b=json_b,
                       write_baselines=write_baselines, options=options)
    if history_dir:
        if len(files) != 1 or update_baseline:
            raise click.UsageError("--history DIR takes one CURRENT.json and no --update-baseline (the history keeps every result)")
        return _history(history_dir, current_path=files[0], markdown=markdown, png_out=png_out, window=window,
                        metric=metric, max_regression=threshold)
    if len(files) != 2:
        raise click.UsageError("give BASELINE.json CURRENT.json, --history DIR CURRENT.json, or --models A B")
    if png_out:
        raise click.UsageError("--png draws a history's trend: it needs --history DIR")
    result = cmp.compare_files(files[0], files[1], metric=metric, max_regression=threshold, allow_env_mismatch=allow_env_mismatch)
    click.echo(result.table(markdown))
    if update_baseline:
        from edgenas.deploy.bench import read_bench

        cmp.update_baseline(files[0], read_bench(files[1]))
        click.echo(f"accepted {files[1]} as the new baseline: wrote {files[0]}")
        return 0
    if result.regressed:
        click.echo(f"to accept the new latency as the baseline: {result.accept_command(allow_env_mismatch)}")
    return result.exit_code


def _paired(models, *, markdown, threshold, json_a, json_b, write_baselines, options) -> int:
    from edgenas.deploy.bench import check_writable, write_bench
    from edgenas.deploy.compare import paired_compare, paired_compare_on_device

    for flag, path in (("--json-a", json_a), ("--json-b", json_b)):
        if path:
            check_writable(path, flag)
    if write_baselines:
        check_writable(write_baselines, "--write-baselines", directory=True)
    if "device" in options:
        url = options.pop("device")
        result = paired_compare_on_device(models[0], models[1], url, max_regression=threshold, **options)
    else:
        result = paired_compare(models[0], models[1], max_regression=threshold, **options)
    click.echo(result.table(markdown))
    targets = [(json_a, result.bench_a), (json_b, result.bench_b)]
    if write_baselines:
        targets += [(Path(write_baselines) / "a.json", result.bench_a), (Path(write_baselines) / "b.json", result.bench_b)]
    for path, record in targets:
        if path:
            write_bench(path, record)
            click.echo(f"wrote {path}")
    return result.exit_code


def _history(directory, *, current_path, markdown, png_out, **options) -> int:
    from edgenas.deploy.bench import check_writable, read_bench
    from edgenas.deploy.history import History, judge

    check_writable(directory, "--history", directory=True)
    if png_out:
        check_writable(png_out, "--png")
    current = read_bench(current_path)
    history = History.load(directory)
    trend = judge(current, history=history, name=current_path, **options)
    click.echo(trend.table(markdown))
    if png_out:
        trend.save_png(png_out)
        click.echo(f"wrote {png_out}")
    if history.holds(current):
        click.echo(f"{current_path} is already in {directory}: not added again")
    else:
        click.echo(f"added {current_path} to the history: {history.append(current)}")
    return trend.exit_code


if __name__ == "__main__":  # pragma: no cover
    main()
