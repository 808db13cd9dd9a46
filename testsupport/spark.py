"""A real Spark standalone cluster on 127.0.0.1 (one master, one worker) for tests and benches.

The pyspark wheel has no ``start-master.sh``/``start-worker.sh``, but its
``sbin/spark-daemon.sh`` starts the same daemons. Everything (logs, pid files, the worker's
scratch space) lives in a temp dir; the worker runs this Python for its executors. Use it as a
context manager (``with SparkCluster() as cluster: cluster.master``) or run
``python -m testsupport.spark`` to keep one up for a benchmark.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from testsupport._process import Service, free_port, log_tail, serve_until_interrupted

__all__ = ["MASTER_CLASS", "WORKER_CLASS", "SparkCluster", "main"]

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
HOST = "127.0.0.1"


def spark_home() -> Path:
    """The installed ``pyspark`` package: it is a whole Spark distribution (jars, sbin)."""
    import pyspark

    return Path(pyspark.__file__).parent


class SparkCluster(Service):
    """``spark://127.0.0.1:PORT`` with one worker of ``cores`` cores and ``memory``."""

    def __init__(self, *, cores: int = 2, memory: str = "1g", timeout: float = 90.0) -> None:
        self.cores = cores
        self.memory = memory
        self.timeout = timeout
        self.port = 0
        self.webui_port = 0
        self._dir: Path | None = None
        self._started: list[str] = []

    @property
    def master(self) -> str:
        return f"spark://{HOST}:{self.port}"

    def start(self) -> Self:
        self._dir = Path(tempfile.mkdtemp(prefix="civiclake-spark-cluster-"))
        try:
            self.port, self.webui_port = free_port(), free_port()
            self._daemon("start", MASTER_CLASS, "--host", HOST, "--port", str(self.port),
                         "--webui-port", str(self.webui_port))  # fmt: skip
            self._wait(lambda: _listening(self.port), "master")
            self._daemon("start", WORKER_CLASS, "--host", HOST, "--port", str(free_port()),
                         "--webui-port", str(free_port()), "--cores", str(self.cores),
                         "--memory", self.memory, self.master)  # fmt: skip
            self._wait(self._worker_registered, "worker")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for daemon in reversed(self._started):
            self._daemon("stop", daemon, check=False)
        self._started.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _env(self) -> dict[str, str]:
        assert self._dir is not None
        env = dict(os.environ)
        env.update(
            SPARK_HOME=str(spark_home()),
            SPARK_LOCAL_IP=HOST,
            PYSPARK_PYTHON=sys.executable,
            SPARK_LOG_DIR=str(self._dir / "logs"),
            SPARK_PID_DIR=str(self._dir / "pids"),
            SPARK_WORKER_DIR=str(self._dir / "work"),
        )
        return env

    def _daemon(self, action: str, daemon: str, *args: str, check: bool = True) -> None:
        script = spark_home() / "sbin" / "spark-daemon.sh"
        done = subprocess.run(
            ["bash", str(script), action, daemon, "1", *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"spark-daemon.sh {action} {daemon} failed: {done.stderr.strip()}")
        if action == "start":
            self._started.append(daemon)

    def _worker_registered(self) -> bool:
        assert self._dir is not None
        for log in (self._dir / "logs").glob("*Master*.out"):
            if "Registering worker" in log.read_text(errors="replace"):
                return True
        return False

    def _wait(self, ready: object, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.5)
        logs = sorted((self._dir / "logs").glob("*.out")) if self._dir else []
        tail = "\n".join(log_tail(path) for path in logs)
        raise RuntimeError(f"Spark {what} not up after {self.timeout:.0f} s:\n{tail}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--memory", default="1g")
    args = parser.parse_args(argv)
    serve_until_interrupted(
        SparkCluster(cores=args.cores, memory=args.memory),
        lambda cluster: [f"CIVICLAKE_SPARK_MASTER={cluster.master}"],
    )


if __name__ == "__main__":
    main()
