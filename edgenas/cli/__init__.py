"""The ``edgenas`` command: parse flags, call the library, print. Errors are one line, exit code 2.

``app`` holds the group and what its commands share; each command group lives in its own module:
``search`` (discover, train, profiles, pareto, report), ``deploy`` (export, verify, evaluate, bench),
``compare`` (compare files, history, models), ``latency`` (latency-table, latency-check), ``memory`` (memory-check). Importing them registers their commands.
"""

from edgenas.cli import compare, deploy, latency, memory, search  # noqa: F401  (registers the commands on ``main``)
from edgenas.cli.app import Terminated, error_line, flag_of, main

__all__ = ["main", "flag_of", "error_line", "Terminated"]
