"""The exceptions edgenas raises for the user: each message is one line that says what to do."""


class EdgenasError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with when this reaches it."""

    exit_code = 1


class UserInputError(EdgenasError):
    """Bad input from the user (flag, profile, dataset, file): exit code 2, nothing is lost."""

    exit_code = 2


class ProfileError(UserInputError):
    """A profile file has an unknown key, a wrong type or an impossible value."""


class DataError(UserInputError):
    """A dataset is unknown, missing or malformed."""


class RunDirError(UserInputError):
    """A run directory is taken, missing, or was made by another configuration."""


class MissingDependency(UserInputError):
    """An optional package (tensorrt, ray, matplotlib) is needed for what was asked."""


class SearchError(EdgenasError):
    """The search could not produce an architecture (e.g. nothing fits the budget)."""


class ParityError(EdgenasError):
    """An exported model does not compute what the PyTorch model computes."""
