"""A private Docker engine for tests, and a base image built without any container registry.

``DockerDaemon`` starts Debian's ``dockerd`` with its own data root, exec root, pid file and
socket under a temp dir, and ALWAYS with ``--iptables=false --ip-forward=false --bridge=none``:
without them dockerd rewrites the host's iptables and turns on ip_forward. Containers then run
with ``--network host`` (they reach the test servers on 127.0.0.1).

``debian_base_image`` makes the ``BASE_IMAGE`` for the Dockerfile when no registry is reachable:
``debootstrap --variant=minbase bookworm`` with python3 + python3-venv (~80 s, ~250 MB), cached
as a tarball (``docker import`` of the cache takes seconds).

``python -m testsupport.dockerd`` keeps one engine up by hand and prints its DOCKER_HOST.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Self

import httpx

from testsupport._process import Service, log_tail, serve_until_interrupted, stop_process_group

__all__ = ["BASE_IMAGE", "DockerDaemon", "debian_base_image", "docker_client", "main"]

DOCKERD = "dockerd"
# The host's network settings stay untouched: no iptables rules, no ip_forward, no docker0.
NETWORK_FLAGS = ("--iptables=false", "--ip-forward=false", "--bridge=none")
SUITE = "bookworm"  # Debian 12: python3 is 3.11, the version civiclake targets
BASE_PACKAGES = ("python3", "python3-venv")
BASE_IMAGE = f"civiclake-base:{SUITE}-python3"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
# Debian's docker.io client (20.10) builds with BuildKit by itself; newer clients need buildx.
DEBIAN_CLIENT = Path("/usr/bin/docker")
STOP_GRACE_SECONDS = 30


class DockerDaemon(Service):
    """One dockerd process with everything under its own temp dir; stopped and deleted on exit."""

    def __init__(self, *, base_dir: str | Path | None = None, timeout: float = 60.0) -> None:
        self.base_dir = base_dir
        self.timeout = timeout
        self.dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def socket(self) -> Path:
        if self.dir is None:
            raise RuntimeError("dockerd is not started")
        return self.dir / "docker.sock"

    @property
    def host(self) -> str:
        """What ``DOCKER_HOST`` must be for clients of this engine (docker CLI, docker-py)."""
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        if self.dir is None:
            raise RuntimeError("dockerd is not started")
        return self.dir / "dockerd.log"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) pointed at this engine."""
        env = dict(os.environ if base is None else base)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        return env

    def start(self) -> Self:
        if self.dir is not None:
            return self
        if shutil.which(DOCKERD) is None:
            raise RuntimeError("dockerd not found: apt-get install docker.io")
        # short path: containerd's sockets live under the exec root (108-byte socket paths)
        self.dir = Path(tempfile.mkdtemp(prefix="cl-dockerd-", dir=self.base_dir))
        atexit.register(self.stop)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                DOCKERD,
                "--data-root",
                str(self.dir / "data"),
                "--exec-root",
                str(self.dir / "exec"),
                "--pidfile",
                str(self.dir / "docker.pid"),
                "--host",
                self.host,
                *NETWORK_FLAGS,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # containerd goes with it
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.timeout
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("http://docker/_ping").status_code == 200:
                        return
                time.sleep(0.3)
        raise RuntimeError(f"dockerd did not start; log tail:\n{log_tail(self.log_path, 30)}")

    def stop(self) -> None:
        """Stop dockerd (it stops its containers and unmounts its layers), delete its dir."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None:
            # dockerd alone first: it stops its containers and containerd in order (~1-3 s);
            # a signal to the whole group kills containerd under it and dockerd then waits 30 s
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_GRACE_SECONDS)
            stop_process_group(process, grace=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        directory, self.dir = self.dir, None
        if directory is not None:
            _unmount_under(directory)
            shutil.rmtree(directory, ignore_errors=True)


def _unmount_under(directory: Path) -> None:
    """Unmount what dockerd left mounted below ``directory`` (its exec root keeps the default
    network namespace mounted at ``netns/default`` after a clean shutdown), deepest first."""
    prefix = f"{directory}/"
    with contextlib.suppress(OSError):
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        targets = [
            line.split()[1].encode().decode("unicode_escape")  # mounts escapes spaces as \040
            for line in mounts
            if len(line.split()) > 1
        ]
        for target in sorted((t for t in targets if t.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "--lazy", target], capture_output=True, check=False)


def docker_client() -> str:
    """The docker CLI that can ``docker build --secret``: one with buildx, else Debian's 20.10."""
    found = shutil.which("docker")
    if found:
        probe = subprocess.run(
            [found, "buildx", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return found
    if DEBIAN_CLIENT.is_file():
        return str(DEBIAN_CLIENT)
    if found:
        return found
    raise RuntimeError("no docker client found: apt-get install docker.io")


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's apt uses (deb822 ``URIs:`` or one-line ``deb URL``)."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                found = re.match(r"\s*(?:URIs:|deb(?:\s+\[[^]]*\])?)\s+(\S+)", line)
                if found and "security" not in found.group(1):
                    return found.group(1)
    return FALLBACK_MIRROR


def debian_base_image(cache_dir: Path, env: Mapping[str, str], name: str = BASE_IMAGE) -> str:
    """``name`` in the engine of ``env``: imported from the cached rootfs tarball, debootstrapped
    into the cache first when it is missing (atomically: an interrupted run leaves no cache)."""
    docker = docker_client()
    present = subprocess.run(
        [docker, "image", "inspect", name], env=env, capture_output=True, check=False
    )
    if present.returncode == 0:
        return name
    tarball = cache_dir / f"{SUITE}-{'-'.join(BASE_PACKAGES)}.tar"
    if not tarball.is_file():
        _debootstrap(tarball)
    subprocess.run([docker, "import", str(tarball), name], env=env, capture_output=True, check=True)
    return name


def _debootstrap(tarball: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap not found: apt-get install debootstrap")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=tarball.parent) as work:
        rootfs = Path(work) / "rootfs"
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                apt_mirror(),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise RuntimeError(f"debootstrap failed:\n{tail}")
        # the downloaded packages and package lists (~50 MB) are not part of an image
        for junk in (rootfs / "var/cache/apt/archives", rootfs / "var/lib/apt/lists"):
            for path in junk.iterdir():
                if path.is_file():
                    path.unlink()
        partial = Path(work) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.replace(tarball)


def main(argv: list[str] | None = None) -> None:
    """Keep an engine up until Ctrl-C, printing the DOCKER_HOST to use."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.parse_args(argv)
    serve_until_interrupted(DockerDaemon(), lambda daemon: [f"DOCKER_HOST={daemon.host}"])


if __name__ == "__main__":
    main()
