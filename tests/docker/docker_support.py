"""What the docker tests' fixtures and tests share (pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from deploy_support import ROOT

from testsupport.dockerd import DockerDaemon, debian_base_image

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


def build_image(engine: Engine, name: str, *build_args: str) -> Image:
    """./Dockerfile on the Debian base as ``name``, with the host's CA bundle as the BuildKit
    secret; ``build_args`` are ``KEY=VALUE`` build arguments."""
    began = time.monotonic()
    base = debian_base_image(BASE_CACHE, engine.daemon.env())
    args = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", "-t", name]
    for arg in build_args:
        args += ["--build-arg", arg]
    if HOST_CA.is_file():
        args += ["--secret", f"id=ca,src={HOST_CA}"]
    env = engine.daemon.env()
    env["DOCKER_BUILDKIT"] = "1"
    done = subprocess.run(
        [engine.docker, *args, str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, "docker build failed:\n" + "\n".join(log.splitlines()[-40:])
    return Image(name, base, time.monotonic() - began, log)
