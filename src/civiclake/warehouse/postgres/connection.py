"""The connection: ``CIVICLAKE_POSTGRES_URL``, one line per failure, and secret masking.

The password never leaves this module: connection errors name host, port and database only.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from pydantic import SecretStr

from civiclake.config import Settings
from civiclake.errors import CivicLakeError, ParameterError
from civiclake.warehouse._arrow_sql import one_line

ENV_VAR = "CIVICLAKE_POSTGRES_URL"
CONNECT_TIMEOUT_S = 10
_CONNECT_PREFIX = re.compile(
    r"connection (?:failed: )?(?:to server at |to server on )?[^:]*failed:\s*"
)


def postgres_url(settings: Settings) -> SecretStr:
    """The connection URL: ``settings.postgres_url`` when set, else ``$CIVICLAKE_POSTGRES_URL``."""
    value: Any = getattr(settings, "postgres_url", None) or os.environ.get(ENV_VAR)
    if not value:
        raise ParameterError(
            f"no PostgreSQL warehouse configured: set {ENV_VAR}"
            "=postgresql://user:password@host:5432/database"
        )
    return value if isinstance(value, SecretStr) else SecretStr(str(value))


def connect(url: SecretStr) -> psycopg.Connection[Any]:
    raw = url.get_secret_value()
    target, secrets = describe(raw)
    try:
        conn = psycopg.connect(
            raw, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="civiclake"
        )
    except psycopg.Error as exc:
        reason = _mask(_CONNECT_PREFIX.sub("", one_line(str(exc))), secrets)
        reason = reason.replace("FATAL: ", "").replace("connection is bad: ", "").strip()
        reason = reason or type(exc).__name__
        raise CivicLakeError(f"cannot connect to PostgreSQL at {target}: {reason}") from None
    try:
        conn.execute("SET TIME ZONE 'UTC'")
    except psycopg.Error as exc:
        conn.close()
        raise CivicLakeError(f"PostgreSQL at {target}: {server_reason(exc)}") from None
    return conn


def describe(raw: str) -> tuple[str, list[str]]:
    """``host:port/db`` of a URL or conninfo string, and the secrets to mask in messages."""
    params: dict[str, Any] = {}
    with contextlib.suppress(psycopg.Error):
        params = psycopg.conninfo.conninfo_to_dict(raw)
    if not params and "://" in raw:  # libpq could not parse it: take what a URL parser can
        with contextlib.suppress(ValueError):
            parts = urlsplit(raw)
            params = {"host": parts.hostname, "dbname": parts.path.lstrip("/")}
            params["password"] = unquote(parts.password or "")
            params["port"] = parts.port
    secrets = [str(params.get("password") or "")]
    for pattern in (r"://[^:/@]*:([^@]*)@", r"password\s*=?\s*'?([^'\s]+)"):
        for found in re.finditer(pattern, raw):
            secrets += [found.group(1), unquote(found.group(1))]
    secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or 5432
    database = params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user") or "?"
    return _mask(f"{host}:{port}/{database}", secrets), secrets


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def load_error(table: str, exc: BaseException) -> CivicLakeError:
    """A failed load as one line: the server's reason, the file's, or our own message."""
    if isinstance(exc, CivicLakeError):
        return exc
    reason = server_reason(exc) if isinstance(exc, psycopg.Error) else one_line(str(exc))
    return CivicLakeError(f"loading {table} into PostgreSQL failed: {reason or type(exc).__name__}")


def server_reason(exc: psycopg.Error) -> str:
    """The server's primary message (no DETAIL/CONTEXT lines): one line for the CLI."""
    primary = exc.diag.message_primary if exc.diag else None
    return one_line(primary or str(exc)) or type(exc).__name__
