"""Exceptions whose message is fit to show a user as the single line of a failed command."""


class CivicLakeError(Exception):
    """A failure the user can act on; the CLI prints its message alone and exits 1."""

    exit_code = 1


class ParameterError(CivicLakeError):
    """Bad input detected before anything runs; the CLI exits 2 and nothing is written."""

    exit_code = 2


class SourceError(CivicLakeError):
    """The source could not deliver (retries exhausted, dataset missing, incomplete answer)."""
