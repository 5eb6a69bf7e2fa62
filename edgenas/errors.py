"""The exceptions edgenas raises for the user: each message is one line that says what to do."""

from __future__ import annotations


class EdgenasError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with when this reaches it."""

    exit_code = 1


class UserInputError(EdgenasError):
    """Bad input from the user (flag, profile, dataset, file): exit code 2, nothing is lost."""

    exit_code = 2


class ParamError(UserInputError):
    """A bad argument of a library function, named as the caller wrote it.

    ``str()`` names the Python parameter (``device='cuda': ...``); the CLI names the flag instead
    (``--device cuda: ...``), see ``flag_message``. ``{name}`` in the message names another
    parameter the same way (``continue it with {resume}``).
    """

    def __init__(self, param: str, value, message: str):
        self.param, self.value, self.message = param, value, message
        super().__init__(f"{param}={value!r}: {self._fill(message, lambda n: n)}")

    @staticmethod
    def _fill(message: str, name_of) -> str:
        import re

        return re.sub(r"\{([a-z_]+)\}", lambda m: name_of(m.group(1)), message)

    def flag_message(self, flag_of) -> str:
        """The message with flags: ``flag_of(param)`` is the flag that sets a parameter."""
        value = "" if self.value is True else f" {self.value}"
        return f"{flag_of(self.param)}{value}: {self._fill(self.message, flag_of)}"


class ProfileError(UserInputError):
    """A profile file has an unknown key, a wrong type or an impossible value."""


class DataError(UserInputError):
    """A dataset is unknown, missing or malformed."""


class RunDirError(UserInputError):
    """A run directory is taken, missing, damaged, or was made by another configuration."""


class RunWriteError(EdgenasError):
    """A run directory's file could not be written (disk full, file-size limit, read-only, no
    permission) while work was in progress: exit code 1. Nothing torn is left behind; the same
    command with ``--resume`` continues once the cause is fixed."""


class TrainingStopped(EdgenasError):
    """A training stopped on request (Ctrl-C, SIGTERM) after writing its checkpoint: exit 130 or 143."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class MissingDependency(UserInputError):
    """An optional package (tensorrt, ray) is needed for what was asked."""


class SearchError(EdgenasError):
    """The search could not produce an architecture (e.g. nothing fits the budget)."""


class ParityError(EdgenasError):
    """An exported model does not compute what the PyTorch model computes."""


class AccuracyDropError(ParityError):
    """An exported model loses more accuracy against PyTorch than its gate allows (exit code 1)."""


class DeviceUnavailable(EdgenasError):
    """The device server (``[budget] device``, ``--device``) stopped answering, retries included.

    ``reason``: the last failure, in a few words (connection refused, timed out ...)."""

    def __init__(self, message: str, *, reason: str = ""):
        super().__init__(message)
        self.reason = reason


class DeviceRefused(UserInputError):
    """The device server refused a request (token, upload size, not a model it can time)."""
