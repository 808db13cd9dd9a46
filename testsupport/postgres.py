"""A real, throw-away PostgreSQL server for tests and benchmarks, from the machine's binaries.

No container and no mock: ``initdb`` into a temp dir, ``pg_ctl start`` on a free port bound to
127.0.0.1 only, one database owned by a user with a password. Local socket connections are
trusted (that is how the setup runs); TCP connections need the password (SCRAM), so tests
see real password handling. Durability is off (``fsync=off``): the data dies with the server.

As root, ``initdb`` and ``postgres`` refuse to run, so the directory is given to the
``postgres`` user and the binaries run through ``runuser``. Use it as a context manager
(``with PostgresServer() as pg: pg.url``) or run ``python -m testsupport.postgres``
to keep one up for a benchmark.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import quote

from testsupport._process import Service, free_port, log_tail, serve_until_interrupted

__all__ = ["INSTALL_HINT", "PostgresBinaries", "PostgresServer", "find_binaries", "main"]

INSTALL_HINT = "install the postgresql package: apt-get install -y postgresql"
SEARCH_ROOT = Path("/usr/lib/postgresql")  # Debian/Ubuntu: one bin/ per installed major version
SYSTEM_USER = "postgres"
SUPERUSER = "postgres"
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
_VERSION_RE = re.compile(r"\d+")


@dataclass(frozen=True)
class PostgresBinaries:
    initdb: Path
    pg_ctl: Path
    postgres: Path
    psql: Path


def find_binaries() -> PostgresBinaries:
    """The highest ``/usr/lib/postgresql/<version>/bin``, else the server binaries on PATH."""
    names = ("initdb", "pg_ctl", "postgres", "psql")

    def version(bin_dir: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in _VERSION_RE.findall(bin_dir.parent.name))

    for bin_dir in sorted(SEARCH_ROOT.glob("*/bin"), key=version, reverse=True):
        if all((bin_dir / name).is_file() for name in names):
            return PostgresBinaries(*(bin_dir / name for name in names))
    found = [shutil.which(name) for name in names]
    if all(found):
        return PostgresBinaries(*(Path(p).resolve() for p in found if p))
    missing = [name for name, path in zip(names, found, strict=True) if not path]
    raise RuntimeError(f"PostgreSQL binaries not found ({', '.join(missing)}); {INSTALL_HINT}")


class PostgresServer(Service):
    """One PostgreSQL cluster in a temp dir: ``.url`` for the user, ``.admin_url`` as superuser."""

    def __init__(
        self,
        *,
        user: str = "civiclake",
        password: str | None = None,
        database: str = "civiclake",
        port: int | None = None,
        base_dir: str | Path | None = None,
        settings: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.user = user
        self.password = password or secrets.token_urlsafe(16)
        self.database = database
        self.admin_password = secrets.token_urlsafe(16)
        self.port = port
        self.host = "127.0.0.1"
        self.base_dir = base_dir
        self.timeout = timeout
        # throw-away data: skip every durability cost
        self.settings = {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            **(settings or {}),
        }
        self.dir: Path | None = None
        self._binaries: PostgresBinaries | None = None
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return self._url(self.user, self.password, self.database)

    @property
    def admin_url(self) -> str:
        return self._url(SUPERUSER, self.admin_password, "postgres")

    def _url(self, user: str, password: str, database: str) -> str:
        if self.port is None:
            raise RuntimeError("the PostgreSQL server is not started")
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(database, safe='')}"

    @property
    def data_dir(self) -> Path:
        if self.dir is None:
            raise RuntimeError("the PostgreSQL server is not started")
        return self.dir / "data"

    def start(self) -> Self:
        """initdb, start, create the user and its database; everything is undone on failure."""
        if self.dir is not None:
            return self
        self._binaries = find_binaries()
        self.dir = Path(tempfile.mkdtemp(prefix="civiclake-pg-", dir=self.base_dir))
        atexit.register(self.stop)
        try:
            self._initdb()
            self._start()
            self._create_user_and_database()
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        assert self.dir is not None and self._binaries is not None
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.admin_password + "\n")
        if self._as_root:
            _chown_tree(self.dir)
        self._run(
            [
                str(self._binaries.initdb),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        pwfile.unlink()

    def _start(self) -> None:
        assert self.dir is not None and self._binaries is not None
        fixed_port = self.port
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = fixed_port or free_port()
            options = [f"-c listen_addresses={self.host}", f"-p {self.port}", f"-k {self.dir}"]
            options += [f"-c {key}={value}" for key, value in self.settings.items()]
            try:
                self._run(
                    [
                        str(self._binaries.pg_ctl),
                        "-D",
                        str(self.data_dir),
                        "-l",
                        str(self.dir / "postgres.log"),
                        "-o",
                        " ".join(options),
                        "-t",
                        str(int(self.timeout)),
                        "-w",
                        "start",
                    ],
                    "pg_ctl start",
                )
                return
            except RuntimeError as exc:
                taken = "could not bind" in self._log_tail() or "in use" in self._log_tail()
                if fixed_port is not None or attempt == START_ATTEMPTS or not taken:
                    raise RuntimeError(f"{exc}\nserver log:\n{self._log_tail()}") from None

    def _create_user_and_database(self) -> None:
        assert self._binaries is not None and self.dir is not None
        password = self.password.replace("'", "''")
        user, database = _ident(self.user), _ident(self.database)
        statements = [
            f"CREATE ROLE {user} LOGIN PASSWORD '{password}'",
            f"CREATE DATABASE {database} OWNER {user}",
        ]
        command = [str(self._binaries.psql), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        command += ["-h", str(self.dir), "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres"]
        for statement in statements:
            command += ["-c", statement]
        self._run(command, "creating the user and database", secret=self.password)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory. Safe to call twice."""
        atexit.unregister(self.stop)
        directory, self.dir = self.dir, None
        if directory is None:
            return
        if self._binaries is not None and (directory / "data" / "postmaster.pid").exists():
            command = [str(self._binaries.pg_ctl), "-D", str(directory / "data")]
            command += ["-m", "fast", "-w", "-t", str(int(self.timeout)), "stop"]
            subprocess.run(
                self._as_postgres(command),
                cwd=directory,
                env=_clean_env(),
                capture_output=True,
                check=False,
                timeout=self.timeout + 10,
            )
        shutil.rmtree(directory, ignore_errors=True)

    def _run(self, command: list[str], what: str, *, secret: str | None = None) -> None:
        result = subprocess.run(
            self._as_postgres(command),
            cwd=self.dir,
            env=_clean_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=self.timeout + 30,
        )
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            if secret:
                output = output.replace(secret, "***")
            raise RuntimeError(f"PostgreSQL {what} failed (exit {result.returncode}): {output}")

    def _as_postgres(self, command: list[str]) -> list[str]:
        """As root the server binaries refuse to run: run them as the ``postgres`` user."""
        if not self._as_root:
            return command
        runuser = shutil.which("runuser")
        if runuser is None:
            raise RuntimeError("running as root needs runuser (util-linux) to start PostgreSQL")
        return [runuser, "-u", SYSTEM_USER, "--", *command]

    def _log_tail(self, lines: int = 20) -> str:
        return log_tail(self.dir / "postgres.log" if self.dir is not None else None, lines)


def _chown_tree(directory: Path) -> None:
    import pwd

    try:
        account = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root needs a '{SYSTEM_USER}' user; {INSTALL_HINT}"
        ) from None
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid)


def _clean_env() -> dict[str, str]:
    """The caller's environment without PG* variables that would point the tools elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("LC_ALL", "C")
    return env


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def main(argv: list[str] | None = None) -> None:
    """Keep a server up until Ctrl-C, printing its URL (for benchmarks run by hand)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    serve_until_interrupted(PostgresServer(port=args.port), lambda server: [server.url])


if __name__ == "__main__":
    main()
