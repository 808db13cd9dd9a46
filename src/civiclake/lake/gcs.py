"""Google Cloud Storage (``gs://BUCKET/prefix``) through gcsfs.

Credentials are Google's application default credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, the metadata server); ``STORAGE_EMULATOR_HOST``
(the google-cloud-storage standard) points everything at an emulator, which needs no
credentials. A ``civiclake-lake`` block may carry gcsfs options instead (``token``: a service
account JSON as a dict, ``project``, ``endpoint_url``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from civiclake.lake._backend import FSSPEC_FILE_IO, LakeBackend

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
PROJECT_ENV = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT")
# gcsfs >= 2025 probes each bucket for hierarchical namespaces at first use; against an
# emulator (or a network without that API) every probe waits for a timeout, 60+ s.
HNS_PROBE_ENV = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"


def emulator() -> str | None:
    host = os.environ.get(EMULATOR_ENV)
    if host and not host.startswith(("http://", "https://")):
        host = f"http://{host}"
    return host or None


class GCSBackend(LakeBackend):
    name = "GCS"
    schemes: ClassVar[tuple[str, ...]] = ("gs", "gcs")
    extra = "gcs"
    driver = "gcsfs"

    def prepare(self) -> None:
        os.environ.setdefault(HNS_PROBE_ENV, "false")
        # gcsfs logs a full traceback for every failed request; civiclake reports one line.
        quiet = logging.getLogger("gcsfs")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", "GCS project not set")

    def endpoint(self, options: Mapping[str, Any]) -> str | None:
        return options.get("endpoint_url") or emulator() or "https://storage.googleapis.com"

    def storage_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(options)
        if emulator():
            merged.setdefault("token", "anon")  # emulators take no credentials
        project = next((os.environ[n] for n in PROJECT_ENV if os.environ.get(n)), None)
        if project:
            merged.setdefault("project", project)
        return merged

    def iceberg_properties(self, options: Mapping[str, Any]) -> dict[str, str]:
        props = {"py-io-impl": FSSPEC_FILE_IO}
        merged = self.storage_options(options)
        token = merged.get("token")
        if isinstance(token, str):
            props["gcs.oauth2.token"] = token
        elif isinstance(token, dict):
            import json

            props["gcs.oauth2.token"] = json.dumps(token)
        if host := merged.get("endpoint_url") or emulator():
            props["gcs.service.host"] = str(host)
        if merged.get("project"):
            props["gcs.project-id"] = str(merged["project"])
        return props

    def credential_source(self, options: Mapping[str, Any]) -> str | None:
        if options.get("token"):
            return "lake option token"
        if emulator():
            return f"none needed: emulator at {EMULATOR_ENV}={emulator()}"
        if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            return "GOOGLE_APPLICATION_CREDENTIALS"
        adc = Path("~/.config/gcloud/application_default_credentials.json").expanduser()
        if adc.is_file():
            return "gcloud application default credentials"
        return None

    def missing_credentials(self) -> str:
        return (
            "no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS (or run `gcloud auth "
            f"application-default login`), {EMULATOR_ENV} for an emulator, or use --lake-block"
        )

    def credentials_hint(self) -> str:
        return "check GOOGLE_APPLICATION_CREDENTIALS and the account's bucket permissions"

    def endpoint_hint(self) -> str:
        host = emulator()
        return f"{EMULATOR_ENV} {host}" if host else "check the network"
