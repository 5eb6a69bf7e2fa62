"""The ``edgenas`` group: errors as one line and exit codes, and the options several commands share.

Library errors name Python parameters (``device='cuda': ...``); here they are shown with the
flag the user typed (``--device cuda: ...``).
"""

from __future__ import annotations

import errno
import signal
import sys
from contextlib import contextmanager

import click

from edgenas.config.runtimes import RUNTIMES
from edgenas.errors import EdgenasError, ParamError
from edgenas.version import __version__

# Library parameter -> the flag that sets it, where the two names differ.
FLAGS = {
    "profile": "--profile",
    "formats": "--format",
    "target": "TARGET",
    "ray": "--ray",
    "json_out": "--json",
    "png_dir": "--png",
    "model": "--model",
}
# Write failures of the machine, not of edgenas: one line (exit 1) wherever they surface.
# click >= 8.2 raises this for a group given no command (earlier versions print the help and exit 0).
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())
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

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: PLR0917 (click's signature)
        try:
            with _sigterm_as_exception():
                rv = super().main(args, prog_name or "edgenas", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except NO_ARGS_IS_HELP as e:  # a group given no command: its help, as click prints it
            click.echo(e.format_message(), err=True)
            code = e.exit_code
        except click.ClickException as e:
            click.echo(f"edgenas: error: {e.format_message()}", err=True)
            code = e.exit_code
        except EdgenasError as e:
            click.echo(f"edgenas: error: {error_line(e)}", err=True)
            code = e.exit_code
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            click.echo(
                f"edgenas: error: cannot write {e.filename or 'a file'}: {e.strerror}; fix that "
                "(free space, permissions) and run the command again",
                err=True,
            )
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


device_option = click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Training device. Default: cuda when present, else cpu.",
)
seed_option = click.option(
    "--seed",
    type=click.IntRange(0, 2**31 - 1),
    default=0,
    show_default=True,
    help="Seed of splits, inits and shuffles.",
)
data_options = [
    click.option(
        "--dataset",
        default=None,
        help="cifar10, cifar100, fashionmnist, kmnist, emnist, imagefolder, digits. Default: the profile's (digits).",
    ),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Where the dataset lies (or is downloaded to).",
    ),
    click.option("--download", is_flag=True, help="Download a torchvision dataset into --data-dir if absent."),
]


training_threads_option = click.option(
    "--threads",
    "train_threads",
    type=click.IntRange(min=0, max=1024),
    default=None,
    metavar="N",
    help="CPU threads while training. Default: the profile's train.threads, else 1 (every core for a big "
    "training step); 0: that policy. A resume keeps the run's own.",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress output (errors still go to stderr).")


def with_data_options(f):
    for option in reversed(data_options):
        f = option(f)
    return f


# Options of the commands that time models (bench, compare, latency-table, latency-check).
runtime_option = click.option(
    "--runtime",
    default=None,
    help=f"{', '.join(RUNTIMES)}. Default: onnxruntime-cpu "
    "(tensorrt-fp16 for .engine; the runtime a .tflite/.pte/.xml/.ncnn.param file's metadata names).",
)
batch_option = click.option("--batch", type=int, default=1, show_default=True, help="Images per inference.")
threads_option = click.option(
    "--threads", type=int, default=None, help="CPU threads of CPU runtimes. Default: all available."
)
device_url_option = click.option(
    "--device",
    "device_url",
    default=None,
    metavar="URL",
    help="Time on the device server at http://HOST:PORT (`edgenas_kit.py serve`) instead of here.",
)
device_token_option = click.option(
    "--device-token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File holding the device's token. Default: $EDGENAS_DEVICE_TOKEN.",
)


def device_token(device_url, token_file) -> str:
    from edgenas.runtime.device_client import check_url, read_token

    if token_file and not device_url:
        raise click.UsageError("--device-token-file goes with --device URL")
    check_url(device_url, "device")
    return read_token(token_file, flag="--device-token-file")
