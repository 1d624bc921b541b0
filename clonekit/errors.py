"""Errors a user can fix. The CLI prints them as one line, without a traceback.

Each message names the bad value, what was expected and what to do next.
Internal invariants use `assert` instead.
"""


class ClonekitError(Exception):
    """A problem the user can fix; the message says how."""


class InputError(ClonekitError):
    """A missing, empty, unreadable or unrecognised input file."""


class ExportFormatError(InputError):
    """An export file that is not in the format it claims (or any known one)."""


class ConfigError(ClonekitError):
    """One or more bad config values; all of them are listed at once."""

    def __init__(self, problems: list[str] | str, where: str = ""):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        head = f"{where}: " if where else ""
        super().__init__(head + "; ".join(self.problems))


class DependencyError(ClonekitError):
    """An optional package is missing; the message gives the pip command."""


def require(module: str, extra: str) -> object:
    """Import an optional dependency or say which extra installs it.

    >>> require("json", "core").__name__
    'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DependencyError(
            f"{module} is not installed ({e}). Install it with: pip install 'clonekit[{extra}]'"
        ) from e
