"""``edgenas export``, ``verify``, ``evaluate``, ``bench``: shipping a network and timing it (``compare`` is in ``compare.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from edgenas.cli.app import (
    batch_option,
    device_option,
    device_token,
    device_token_option,
    device_url_option,
    main,
    runtime_option,
    threads_option,
)
from edgenas.errors import ParamError


# -- export (edgenas/deploy/export/exporter.py) ---------------------------------------------------------------
def _export_formats(ctx, param, value):
    from edgenas.deploy.export.formats import parse_formats

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
@click.option(
    "--format",
    "formats",
    default="onnx",
    show_default=True,
    callback=_export_formats,
    help="Comma-separated formats: onnx, tensorrt, onnx-int8 (engine and INT8 file are built from the ONNX file), "
    "litert, litert-int8, executorch, executorch-int8, openvino, openvino-int8, ncnn (converted from the "
    "PyTorch network; pip install 'edgenas[runtimes]'), "
    "tflm (full-integer .tflite and a firmware bundle for TensorFlow Lite Micro).",
)
@click.option("--fp16", is_flag=True, help="TensorRT: build an FP16 engine.")
@click.option("--int8", is_flag=True, help="TensorRT: build an INT8 engine, calibrated on the run's training images.")
@click.option(
    "--calibration-images",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="INT8: images to calibrate on.",
)
@click.option(
    "--int8-max-drop",
    default="1%",
    show_default=True,
    callback=_fraction_below_one,
    help="INT8: what it may lose against PyTorch (1% or 0.01): TensorRT, top-1 agreement; "
    "onnx-int8, test accuracy in percentage points (faces: verification accuracy).",
)
@click.option(
    "--calibration-method",
    type=click.Choice(["minmax", "entropy", "percentile"]),
    default=None,
    help="onnx-int8: how activation ranges are calibrated. Default: minmax.",
)
@click.option(
    "--max-images",
    type=click.IntRange(min=1),
    default=None,
    help="tflm: evaluate the test split's first N images through TFLM (~10-30 ms each). Default: all of them.",
)
def export(run_dir, *, formats, fp16, int8, calibration_images, int8_max_drop, calibration_method, max_images):
    """Export RUN_DIR's network to RUN_DIR/export/ and check it against PyTorch (exit 1 on a parity failure)."""
    from edgenas.deploy.export.exporter import export_run

    report = export_run(
        run_dir,
        formats=formats,
        fp16=fp16,
        int8=int8,
        calibration_images=calibration_images,
        int8_max_drop=int8_max_drop,
        calibration_method=calibration_method,
        max_images=max_images,
    )
    for line in report.lines():
        click.echo(line)
    if "tflm" in report.parity:
        m = report.parity["tflm"]["memory"]["measured"]
        e = report.parity["tflm"]["memory"]["estimate"]
        click.echo(
            f"tflm: tensor arena {m['arena_bytes']:,} B ({m['peak_memory_bytes']:,} B activations, estimated "
            f"{e['peak_memory_bytes']:,} B; {m['persistent_bytes']:,} B persistent), flash {m['flash_bytes']:,} B; "
            f"firmware bundle in {report.out_dir / 'tflm'} (latency on a microcontroller is not measured here)"
        )
    for why in report.skipped.values():
        click.echo(f"edgenas: {why}; the ONNX export in {report.out_dir} is complete", err=True)
    click.echo(f"ready for the device: copy {report.out_dir}, then run `python edgenas_kit.py check .` there")


flip_option = click.option(
    "--flip",
    is_flag=True,
    help="Faces: embed each image plus its horizontal mirror, summed (insightface's Accuracy-Flip).",
)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="One folder of images per person (for lfw: the LFW root). Default: the run's data directory.",
)
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Pairs in LFW pairs.txt format, naming images under --data-dir. Default: the run's held-out test pairs.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the figures. Default: RUN_DIR/verify.json.",
)
@device_option
@flip_option
def verify(run_dir, *, data_dir, pairs_file, json_out, device, flip):
    """Face verification of a face run: 10-fold accuracy, threshold, ROC AUC, TAR@FAR=1e-3."""
    from edgenas.deploy.verify import format_verification, verify_run
    from edgenas.run.rundir import write_json_atomic

    result = verify_run(run_dir, data_dir=data_dir, pairs_file=pairs_file, device=device, flip=flip)
    click.echo(format_verification(result))
    out = Path(json_out) if json_out else Path(run_dir) / "verify.json"
    write_json_atomic(out, result)
    click.echo(f"wrote {out}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--model",
    "model_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="The exported file. Default: RUN_DIR/export/model.onnx (also model.int8.onnx, model.engine, "
    "tflm/model.tflite: TFLM's interpreter).",
)
@runtime_option
@threads_option
@flip_option
@click.option(
    "--max-drop",
    default=None,
    callback=_optional_drop,
    help="Gate: exit 1 when the file loses more accuracy than this against PyTorch (1% or 0.01 = 1 pp).",
)
@click.option(
    "--max-images",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate only the test split's first N images (slow runtimes: tflm-int8). Default: all of them.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the figures. Default: RUN_DIR/export/MODEL.evaluate.json.",
)
def evaluate(run_dir, *, model_file, runtime, threads, flip, max_drop, max_images, json_out):
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
    result = evaluate_run(run_dir, model=model_file, runtime=runtime, threads=threads, flip=flip, max_images=max_images)
    click.echo(format_evaluation(result))
    if result["stale"]:
        click.echo(f"edgenas: warning: {result['stale']}", err=True)
    out = Path(json_out) if json_out else result_path(RunDir.open(run_dir), Path(result["model"]))
    write_json_atomic(out, result)
    click.echo(f"wrote {out}")
    if max_drop is not None:
        check_drop(result, max_drop=max_drop, figures=out)
        click.echo(f"gate passed: {result['drop_pp']:.2f} pp lost, at most {100 * max_drop:g} pp allowed")


def _bench_all(run_dir, *, batch: int, threads, warmup: int, runs: int, rounds: int, json_out, device: bool) -> None:
    from edgenas.deploy import bench_all
    from edgenas.device_kit.edgenas_kit import available_cpus

    if device:
        raise ParamError("runtime", "all", "times the runtimes of this machine; give one runtime with {device}")
    if not Path(run_dir).is_dir():
        raise ParamError("runtime", "all", f"times a run directory's export; {run_dir} is not a directory")
    record = bench_all.bench_all(
        run_dir,
        threads=threads or available_cpus(),
        batch=batch,
        rounds=rounds,
        warmup=warmup,
        runs=max(1, -(-runs // rounds)),
    )
    click.echo(bench_all.format_table(record))
    out = Path(json_out) if json_out else bench_all.default_json(run_dir)
    bench_all.write(out, record)
    click.echo(f"wrote {out}")


@main.command()
@click.argument("model", type=click.Path())
@runtime_option
@batch_option
@threads_option
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs first.")
@click.option("--runs", type=int, default=100, show_default=True, help="Timed runs.")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the bench JSON here (--runtime all: default RUN_DIR/export/bench-all.json).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="--runtime all: interleaved rounds; each times every runtime with --warmup and --runs/ROUNDS runs.",
)
@device_url_option
@device_token_option
def bench(model, *, runtime, batch, threads, warmup, runs, json_out, rounds, device_url, device_token_file):
    """Time MODEL (.onnx, .engine, .tflite, .pte, .xml, .ncnn.param or RUN_DIR): p50/p90/p99, mean, std, throughput.

    --runtime all with a RUN_DIR: every installed runtime and precision on its export, in interleaved
    rounds, as one table (p50, p90, size on disk, test accuracy where `edgenas evaluate` wrote it)."""
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
    if runtime == "all":
        return _bench_all(
            model,
            batch=batch,
            threads=threads,
            warmup=warmup,
            runs=runs,
            rounds=rounds,
            json_out=json_out,
            device=bool(device_url or device_token_file),
        )
    if device_url or device_token_file:
        token = device_token(device_url, device_token_file)
        result = bench_on_device(
            model, url=device_url, token=token, runtime=runtime, batch=batch, threads=threads, warmup=warmup, runs=runs
        )
    else:
        stale = stale_export(model, runtime)
        if stale:
            click.echo(f"edgenas: warning: {stale}", err=True)
        result = run_bench(model, runtime=runtime, batch=batch, threads=threads, warmup=warmup, runs=runs)
    click.echo(format_bench(result))
    if json_out:
        write_bench(json_out, result)
        click.echo(f"wrote {json_out}")
