"""What the docker tests' fixtures and tests share (pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy_support import ROOT

from testsupport.dockerd import DockerDaemon

IMAGE = "civiclake:latest"  # what prefect.yaml's docker deployments run
BASE_CACHE = ROOT / ".emulators" / "docker"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")  # the TLS proxy's CA is in it
CONTAINER_UID = 1000  # the Dockerfile's `civiclake` user


@dataclass
class Engine:
    daemon: DockerDaemon
    docker: str  # the CLI that builds with BuildKit

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.docker, *args],
            env=self.daemon.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def inspect(self, *args: str) -> list[dict[str, object]]:
        done = self.run("inspect", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@dataclass
class Image:
    name: str
    base: str
    build_seconds: float
    build_log: str
