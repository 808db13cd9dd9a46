"""Exceptions whose message is fit to show a user as the single line of a failed command."""


class CivicLakeError(Exception):
    """A failure the user can act on; the CLI prints its message alone and exits 1."""

    exit_code = 1


class ParameterError(CivicLakeError):
    """Bad input detected before anything runs; the CLI exits 2 and nothing is written."""

    exit_code = 2


class ConfigError(ParameterError, ValueError):
    """A setting (environment or config file) that is invalid: exit 2; a ValueError for code
    that reads settings as a library."""


class SourceError(CivicLakeError):
    """The source could not deliver (retries exhausted, dataset missing, incomplete answer)."""


def describe(exc: BaseException) -> str:
    """One line about an exception nobody turned into a CivicLakeError: what failed, where."""
    if isinstance(exc, CivicLakeError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def first_line(exc: BaseException) -> str:
    """The first line of an error's text, or its type's name when it has none (DuckDB's and
    Arrow's errors carry the offending input after the first line)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
