"""A throw-away BigQuery emulator (bqemulator) for tests and benchmarks, on 127.0.0.1.

bqemulator serves the BigQuery REST API over an in-memory DuckDB, so the official
``google-cloud-bigquery`` client talks to it unchanged (``api_endpoint`` + anonymous
credentials). It lives in its own venv (``scripts/install-emulators`` puts it under
``.emulators/bqemulator``) because its web-stack pins clash with Prefect's; the executable is
found through ``$CIVICLAKE_BQEMULATOR``, then under the repository root, then on PATH.

The emulator refuses to start without DuckDB's ``spatial`` extension, which DuckDB downloads at
run time; offline, the install script pins DuckDB and installs the extension's PyPI package
(``duckdb-extension-spatial``) into the emulator's venv, and this harness gives the process a
private HOME whose ``~/.duckdb/extensions`` holds that file, so nothing is fetched and nothing
is written to the user's home. Use it as a context manager (``with BigQueryEmulator() as bq:
bq.endpoint``) or run ``python -m testsupport.bigquery`` to keep one up.
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from testsupport._process import (
    Service,
    free_port,
    log_tail,
    serve_until_interrupted,
    stop_process_group,
)

__all__ = ["ENV_VAR", "INSTALL_HINT", "BigQueryEmulator", "find_executable", "main"]

ENV_VAR = "CIVICLAKE_BQEMULATOR"
INSTALL_HINT = "run scripts/install-emulators (or set CIVICLAKE_BQEMULATOR to bqemulator)"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXECUTABLE = REPO_ROOT / ".emulators" / "bqemulator" / "bin" / "bqemulator"
DEFAULT_PROJECT = "civiclake-test"
HOST = "127.0.0.1"
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
_DUCKDB_PLATFORMS = {
    ("linux", "x86_64"): "linux_amd64",
    ("linux", "amd64"): "linux_amd64",
    ("linux", "aarch64"): "linux_arm64",
    ("linux", "arm64"): "linux_arm64",
    ("darwin", "x86_64"): "osx_amd64",
    ("darwin", "arm64"): "osx_arm64",
}


def find_executable() -> Path:
    """``$CIVICLAKE_BQEMULATOR``, else ``.emulators/bqemulator/bin/bqemulator``, else PATH."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RuntimeError(f"{ENV_VAR}={explicit} is not an executable file")
        return path
    if DEFAULT_EXECUTABLE.is_file():
        return DEFAULT_EXECUTABLE
    found = shutil.which("bqemulator")
    if found:
        return Path(found)
    raise RuntimeError(f"bqemulator not found; {INSTALL_HINT}")


def bundled_spatial_extension(executable: Path) -> tuple[str, Path] | None:
    """(DuckDB version dir, file) of the ``duckdb-extension-spatial`` package beside the
    emulator, or None (then DuckDB looks in the real ``~/.duckdb`` or downloads it)."""
    venv = executable.resolve().parent.parent  # <venv>/bin/bqemulator
    pattern = "lib/python*/site-packages/duckdb_extension_spatial/extensions/v*"
    for version_dir in sorted(venv.glob(pattern), reverse=True):
        extension = version_dir / "spatial.duckdb_extension"
        if extension.is_file():
            return version_dir.name, extension
    return None


class BigQueryEmulator(Service):
    """One bqemulator process (ephemeral storage) with its files in a temp dir.

    ``endpoint`` is the REST base URL for ``ClientOptions(api_endpoint=...)``; ``project`` the
    emulator's default project; ``gcs_root`` the folder that ``gs://bucket/path`` URIs of load
    jobs resolve to (``gcs_root/bucket/path``).
    """

    def __init__(
        self,
        *,
        project: str = DEFAULT_PROJECT,
        executable: Path | str | None = None,
        base_dir: str | Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.project = project
        self.executable = Path(executable) if executable else None
        self.base_dir = base_dir
        self.timeout = timeout
        self.port: int | None = None
        self.grpc_port: int | None = None
        self.dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise RuntimeError("the BigQuery emulator is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def gcs_root(self) -> Path:
        if self.dir is None:
            raise RuntimeError("the BigQuery emulator is not started")
        return self.dir / "gcs"

    @property
    def log_path(self) -> Path | None:
        return self.dir / "bqemulator.log" if self.dir else None

    def start(self) -> Self:
        """Start on free ports and wait until ``/readyz`` answers; undone on failure."""
        if self._process is not None:
            return self
        executable = self.executable or find_executable()
        self.dir = Path(tempfile.mkdtemp(prefix="civiclake-bq-", dir=self.base_dir))
        atexit.register(self.stop)
        try:
            env = self._environment(executable)
            for attempt in range(1, START_ATTEMPTS + 1):
                self.port, self.grpc_port = free_port(), free_port()
                self._spawn(executable, env)
                try:
                    self._wait_ready()
                    return self
                except RuntimeError:
                    taken = "address already in use" in self._log_tail().lower()
                    self._terminate()
                    if attempt == START_ATTEMPTS or not taken:
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def _environment(self, executable: Path) -> dict[str, str]:
        assert self.dir is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_")}
        for sub in ("uploads", "gcs"):
            (self.dir / sub).mkdir()
        env.update(
            BQEMU_ENABLE_FORMAT_EXTENSIONS="false",  # avro: a download attempt, not needed
            BQEMU_UPLOAD_STAGING_DIR=str(self.dir / "uploads"),
            BQEMU_GCS_LOCAL_ROOT=str(self.dir / "gcs"),
            BQEMU_METRICS_ENABLED="false",
        )
        bundled = bundled_spatial_extension(executable)
        machine = (sys.platform, platform.machine().lower())
        if bundled and machine in _DUCKDB_PLATFORMS:
            version, extension = bundled
            target = self.dir / "home" / ".duckdb" / "extensions" / version
            target = target / _DUCKDB_PLATFORMS[machine]
            target.mkdir(parents=True)
            (target / extension.name).symlink_to(extension)
            env["HOME"] = str(self.dir / "home")  # DuckDB's extension directory is ~/.duckdb
        return env

    def _spawn(self, executable: Path, env: dict[str, str]) -> None:
        assert self.dir is not None and self.log_path is not None
        command = [str(executable), "start", "--ephemeral", "--project", self.project]
        command += ["--rest-host", HOST, "--rest-port", str(self.port)]
        command += ["--grpc-host", HOST, "--grpc-port", str(self.grpc_port)]
        command += ["--log-level", "warning", "--log-format", "console"]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends its children too
            )

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.timeout
        url = f"{self.endpoint}/readyz"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = self._log_tail()
                hint = ""
                if "spatial" in log or "'numpy' is required" in log:
                    hint = (
                        "\nthe emulator's venv lacks DuckDB's spatial extension or numpy: "
                        + INSTALL_HINT
                    )
                raise RuntimeError(
                    f"bqemulator exited with {self._process.returncode}:\n{log}{hint}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"bqemulator not ready after {self.timeout:.0f} s:\n{self._log_tail()}")

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process)

    def stop(self) -> None:
        """Stop the emulator and delete its directory. Safe to call twice."""
        atexit.unregister(self.stop)
        self._terminate()
        directory, self.dir = self.dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)


def main(argv: list[str] | None = None) -> None:
    """Keep an emulator up until Ctrl-C, printing the settings that point civiclake at it."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--project", default=DEFAULT_PROJECT)
    args = parser.parse_args(argv)
    serve_until_interrupted(
        BigQueryEmulator(project=args.project),
        lambda emulator: [
            f"CIVICLAKE_BIGQUERY_ENDPOINT={emulator.endpoint}",
            f"CIVICLAKE_BIGQUERY_PROJECT={emulator.project}",
        ],
    )


if __name__ == "__main__":
    main()
