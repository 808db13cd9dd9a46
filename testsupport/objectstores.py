"""Object-store emulators (Azurite, moto S3, gcp-storage-emulator) for tests, on 127.0.0.1.

Each context manager starts one emulator process on a free port with a throw-away directory,
waits until it answers, creates a bucket (container) and yields an :class:`ObjectStore`. Its
``env`` is what a *user* would export so that civiclake, fsspec (adlfs / s3fs / gcsfs) and
PyIceberg's FsspecFileIO reach the emulator with nothing but each ecosystem's standard
variables; ``bad_env`` is the same with a wrong credential, for failure paths. The process
group is terminated and the directory removed on exit, also when the body fails.

- Azure: ``AZURE_STORAGE_CONNECTION_STRING`` (Azurite's dev account; it checks the key).
- S3: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_REGION`` /
  ``AWS_DEFAULT_REGION`` / ``AWS_ENDPOINT_URL``. moto only checks signatures with its IAM
  authentication on, so the harness creates an IAM user with an access key, then switches
  authentication on through ``/moto-api/reset-auth``: a wrong secret gets
  ``SignatureDoesNotMatch``.
- GCS: ``STORAGE_EMULATOR_HOST`` (gcsfs then falls back to anonymous credentials) and
  ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``, which gcsfs reads *when it is imported*
  (otherwise every call takes 60+ s); this module sets it with ``setdefault`` on import for
  that reason. The emulator checks no credentials at all, so ``bad_env`` points at a port
  where nothing listens ("wrong endpoint").

Executables: ``CIVICLAKE_AZURITE`` or ``<repo>/.emulators/node_modules/.bin/azurite-blob``
(``scripts/install-emulators``) or ``azurite-blob`` on PATH; moto and gcp-storage-emulator
run as ``python -m`` modules of this interpreter (or ``CIVICLAKE_MOTO_SERVER`` /
``CIVICLAKE_GCS_EMULATOR``, or ``moto_server`` / ``gcp-storage-emulator`` on PATH).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testsupport._process import free_port, log_tail, stop_process_group

if TYPE_CHECKING:
    from pytest import MonkeyPatch

# gcsfs decides at import time whether to use its slow experimental filesystem
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "ObjectStore",
    "azurite",
    "find_azurite",
    "gcs_emulator",
    "moto_s3",
]

HOST = "127.0.0.1"
# variables that point fsspec / PyIceberg at a store: cleared before a test sets its own
_STORE_VARS = ("AWS_", "AZURE_", "GOOGLE_", "GCSFS_", "CLOUDSDK_", "STORAGE_EMULATOR_HOST")
REPO_ROOT = Path(__file__).resolve().parents[1]
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
DEFAULT_BUCKET = "civiclake"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret: it is in Microsoft's documentation)
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
WRONG_AZURE_KEY = base64.b64encode(b"civiclake-wrong-key".ljust(64, b"!")).decode()
S3_REGION = "us-east-1"  # moto's default; buckets there need no LocationConstraint
GCS_PROJECT = "civiclake-test"
AZURITE_HINT = "run scripts/install-emulators (npm azurite) or set CIVICLAKE_AZURITE"
PYTHON_HINT = "install the dev extra: pip install -e '.[dev]' (moto[server], gcp-storage-emulator)"
_CHILD_ENV_DROP = ("AWS_", "AZURE_", "MOTO_", "GOOGLE_", "STORAGE_EMULATOR_HOST")
_PORT_TAKEN = ("address already in use", "eaddrinuse", "errno 98")
# harness requests go straight to 127.0.0.1, never through an HTTP(S)_PROXY from the env
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ObjectStore:
    """A running emulator as a user sees it: a bucket, an endpoint and the env to reach it."""

    kind: str  # "azure" | "s3" | "gcs"
    bucket: str
    endpoint: str  # azure: the blob endpoint, http://127.0.0.1:PORT/devstoreaccount1
    env: dict[str, str] = field(repr=False)
    bad_env: dict[str, str] = field(repr=False)

    @property
    def scheme(self) -> str:
        return {"azure": "abfs", "s3": "s3", "gcs": "gs"}[self.kind]

    def lake_url(self, prefix: str = "") -> str:
        """``abfs://bucket/prefix``, ``s3://bucket/prefix`` or ``gs://bucket/prefix``."""
        prefix = prefix.strip("/")
        return f"{self.scheme}://{self.bucket}" + (f"/{prefix}" if prefix else "")

    def secrets(self) -> list[str]:
        """The secret values in ``env`` and ``bad_env``: tests assert none leaks into output."""
        found: list[str] = []
        for env in (self.env, self.bad_env):
            if secret := env.get("AWS_SECRET_ACCESS_KEY"):
                found.append(secret)
            connection_string = env.get("AZURE_STORAGE_CONNECTION_STRING", "")
            for part in connection_string.split(";"):
                name, _, value = part.partition("=")
                if name in ("AccountKey", "SharedAccessSignature") and value:
                    found.append(value)
        return found

    def list_objects(self, prefix: str = "") -> list[str]:
        """Object keys under ``prefix``, read with the store's own API (not with fsspec).

        Independent of ``os.environ``, so asserts hold whatever env a test has set.
        """
        prefix = prefix.lstrip("/")
        if self.kind == "azure":
            return _azure_list(self.env["AZURE_STORAGE_CONNECTION_STRING"], self.bucket, prefix)
        if self.kind == "s3":
            return _s3_list(_s3_client(self.env, "s3"), self.bucket, prefix)
        if self.kind == "gcs":
            return _gcs_list(self.endpoint, self.bucket, prefix)
        raise ValueError(f"unknown object store kind {self.kind!r}")


# -- Azure (Azurite) -----------------------------------------------------------------------


def azure_connection_string(blob_endpoint: str, key: str = AZURITE_KEY) -> str:
    """The dev-account connection string with an explicit ``BlobEndpoint`` (http, IP host)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={blob_endpoint};"
    )


def find_azurite() -> list[str]:
    """The ``azurite-blob`` command: env override, the repo's .emulators, else PATH."""
    override = os.environ.get("CIVICLAKE_AZURITE")
    if override:
        return [override]
    local = REPO_ROOT / ".emulators" / "node_modules" / ".bin" / "azurite-blob"
    if local.is_file():
        return [str(local)]
    found = shutil.which("azurite-blob")
    if found:
        return [found]
    raise RuntimeError(f"Azurite (azurite-blob) not found; {AZURITE_HINT}")


@contextlib.contextmanager
def azurite(bucket: str = DEFAULT_BUCKET, *, timeout: float = 60.0) -> Iterator[ObjectStore]:
    """Azurite's blob service with one container; the dev account's key is enforced."""
    command = find_azurite()

    def argv(port: int, directory: Path) -> list[str]:
        data = directory / "data"
        data.mkdir(exist_ok=True)
        return [
            *command,
            "--blobHost",
            HOST,
            "--blobPort",
            str(port),
            "--location",
            str(data),
            "--skipApiVersionCheck",  # newer SDKs send API versions Azurite does not know yet
            "--loose",
            "--disableTelemetry",
        ]

    with _serve("azurite", argv, f"/{AZURITE_ACCOUNT}?comp=list", timeout) as port:
        endpoint = f"http://{HOST}:{port}/{AZURITE_ACCOUNT}"
        good = azure_connection_string(endpoint)
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(good) as service:
            service.create_container(bucket)
        yield ObjectStore(
            kind="azure",
            bucket=bucket,
            endpoint=endpoint,
            env={"AZURE_STORAGE_CONNECTION_STRING": good},
            bad_env={
                "AZURE_STORAGE_CONNECTION_STRING": azure_connection_string(
                    endpoint, WRONG_AZURE_KEY
                )
            },
        )


def _azure_list(connection_string: str, container: str, prefix: str) -> list[str]:
    from azure.storage.blob import ContainerClient

    with ContainerClient.from_connection_string(connection_string, container) as client:
        return sorted(blob.name for blob in client.list_blobs(name_starts_with=prefix or None))


# -- S3 (moto) -----------------------------------------------------------------------------


def _python_module_command(module: str, script: str, override_env: str) -> list[str]:
    """``python -m module`` of this interpreter, an env override, else the script on PATH."""
    override = os.environ.get(override_env)
    if override:
        return [override]
    if importlib.util.find_spec(module.split(".")[0]) is not None:
        return [sys.executable, "-m", module]
    found = shutil.which(script)
    if found:
        return [found]
    raise RuntimeError(f"{script} not found; {PYTHON_HINT} or set {override_env}")


@contextlib.contextmanager
def moto_s3(bucket: str = DEFAULT_BUCKET, *, timeout: float = 60.0) -> Iterator[ObjectStore]:
    """moto's S3 with IAM authentication on: only the created access key is accepted."""
    command = _python_module_command("moto.server", "moto_server", "CIVICLAKE_MOTO_SERVER")

    def argv(port: int, directory: Path) -> list[str]:
        return [*command, "-H", HOST, "-p", str(port)]

    with _serve("moto", argv, "/moto-api/data.json", timeout) as port:
        endpoint = f"http://{HOST}:{port}"
        key_id, secret = _moto_setup(endpoint, bucket)

        def env(secret_key: str) -> dict[str, str]:
            return {
                "AWS_ACCESS_KEY_ID": key_id,
                "AWS_SECRET_ACCESS_KEY": secret_key,
                "AWS_REGION": S3_REGION,  # read by the AWS C++ SDK (pyarrow)
                "AWS_DEFAULT_REGION": S3_REGION,  # read by botocore (s3fs); it ignores AWS_REGION
                "AWS_ENDPOINT_URL": endpoint,  # botocore's standard endpoint override
            }

        # same key id, wrong secret: moto answers SignatureDoesNotMatch
        yield ObjectStore("s3", bucket, endpoint, env(secret), env(_flip(secret)))


def _moto_setup(endpoint: str, bucket: str) -> tuple[str, str]:
    """Create the bucket and an IAM user allowed ``s3:*``, then turn moto's auth on."""
    setup = {
        "AWS_ACCESS_KEY_ID": "setup",
        "AWS_SECRET_ACCESS_KEY": "setup",
        "AWS_ENDPOINT_URL": endpoint,
    }
    iam = _s3_client(setup, "iam")
    iam.create_user(UserName="civiclake")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    arn = iam.create_policy(PolicyName="civiclake-s3", PolicyDocument=json.dumps(policy))
    iam.attach_user_policy(UserName="civiclake", PolicyArn=arn["Policy"]["Arn"])
    key = iam.create_access_key(UserName="civiclake")["AccessKey"]
    _s3_client(setup, "s3").create_bucket(Bucket=bucket)
    # from now on every request is signature-checked against IAM (0 unauthenticated actions)
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST")
    request.add_header("Content-Type", "text/plain")  # a form body would be parsed away
    with _DIRECT.open(request, timeout=10) as response:
        response.read()
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


def _s3_client(env: dict[str, str], service: str) -> Any:
    """A botocore client built from explicit values only, so os.environ cannot redirect it."""
    import botocore.config
    import botocore.session

    return botocore.session.Session().create_client(
        service,
        region_name=S3_REGION,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


def _s3_list(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return sorted(keys)


def _flip(secret: str) -> str:
    """A different secret of the same shape (a wrong password, not a malformed one)."""
    return ("B" if secret[0] == "A" else "A") + secret[1:]


# -- GCS (gcp-storage-emulator) ------------------------------------------------------------


@contextlib.contextmanager
def gcs_emulator(bucket: str = DEFAULT_BUCKET, *, timeout: float = 60.0) -> Iterator[ObjectStore]:
    """gcp-storage-emulator, in memory. It accepts any credentials, so none are configured."""
    command = _python_module_command(
        "gcp_storage_emulator", "gcp-storage-emulator", "CIVICLAKE_GCS_EMULATOR"
    )

    def argv(port: int, directory: Path) -> list[str]:
        return [*command, "start", "-H", HOST, "--port", str(port), "--in-memory"]

    with _serve("gcp-storage-emulator", argv, "/storage/v1/b", timeout) as port:
        endpoint = f"http://{HOST}:{port}"
        _http_json("POST", f"{endpoint}/storage/v1/b?project={GCS_PROJECT}", {"name": bucket})

        def env(host: str) -> dict[str, str]:
            return {"STORAGE_EMULATOR_HOST": host, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

        # nothing listens on a port just released by the OS: "wrong endpoint"
        yield ObjectStore(
            "gcs", bucket, endpoint, env(endpoint), env(f"http://{HOST}:{free_port()}")
        )


def _gcs_list(endpoint: str, bucket: str, prefix: str) -> list[str]:
    names: list[str] = []
    token = ""
    while True:
        query = {"prefix": prefix, **({"pageToken": token} if token else {})}
        url = f"{endpoint}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o?"
        page = _http_json("GET", url + urllib.parse.urlencode(query))
        names += [item["name"] for item in page.get("items", [])]
        token = page.get("nextPageToken", "")
        if not token:
            return sorted(names)


def _http_json(method: str, url: str, body: object | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with _DIRECT.open(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else {}


# -- process lifecycle ---------------------------------------------------------------------


@contextlib.contextmanager
def _serve(
    name: str,
    argv: Callable[[int, Path], list[str]],
    probe_path: str,
    timeout: float,
) -> Iterator[int]:
    """Run ``argv(port, dir)`` until it answers HTTP on ``probe_path``; yield the port.

    The process gets its own session (process group) so that stopping it also ends its
    children; it is stopped and its directory removed whatever happens in the body.
    """
    directory = Path(tempfile.mkdtemp(prefix=f"civiclake-{name}-"))
    log_path = directory / "emulator.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CHILD_ENV_DROP)}
    stop: Callable[[], None] | None = None
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            with log_path.open("ab") as log:  # the child keeps its own copy of the fd
                process = subprocess.Popen(
                    argv(port, directory),
                    cwd=directory,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            stop = functools.partial(stop_process_group, process)
            atexit.register(stop)  # an aborted run leaves no emulator behind
            if _wait_http(process, f"http://{HOST}:{port}{probe_path}", timeout):
                break
            stop()
            atexit.unregister(stop)
            stop = None
            tail = log_tail(log_path, 30)
            taken = any(marker in tail.lower() for marker in _PORT_TAKEN)
            if attempt == START_ATTEMPTS or not taken:
                raise RuntimeError(
                    f"{name} did not answer on {HOST}:{port} within {timeout:.0f} s;"
                    f" log tail:\n{tail}"
                )
        yield port
    finally:
        if stop is not None:
            stop()
            atexit.unregister(stop)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_http(process: subprocess.Popen[bytes], url: str, timeout: float) -> bool:
    """True once the server sends any HTTP response; False if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with _DIRECT.open(url, timeout=2) as response:
                response.read()
            return True
        except urllib.error.HTTPError:
            return True  # an error status is an answer: the server is up
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return False


def use_env(monkeypatch: MonkeyPatch, tmp_path: Path, env: dict[str, str]) -> None:
    """Only ``env`` decides where fsspec/PyIceberg go: no inherited vars, no config files."""
    import fsspec

    for key in list(os.environ):
        if key.startswith(_STORE_VARS):
            monkeypatch.delenv(key)
    # the developer's ~/.aws must not help or hurt
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # fsspec caches instances by constructor arguments, not by environment
    for cls in set(fsspec.registry.values()):
        cls.clear_instance_cache()
