"""Amazon S3 and S3-compatible stores (``s3://BUCKET/prefix``) through s3fs.

Credentials come from AWS's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, SSO, instance roles), the region from ``AWS_REGION``; an S3-compatible store
(MinIO, ...) is reached with botocore's own endpoint override ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``. A ``civiclake-lake`` block may carry s3fs options instead (``key``,
``secret``, ``endpoint_url``, ``client_kwargs``...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from civiclake.lake._backend import FSSPEC_FILE_IO, LakeBackend

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
# A failing request is retried by botocore; a few attempts, not the minutes of the defaults.
RETRY_ATTEMPTS = 3


def endpoint(options: Mapping[str, Any]) -> str | None:
    """The endpoint override: the lake option, else botocore's environment variables."""
    client = options.get("client_kwargs") or {}
    explicit = options.get("endpoint_url") or client.get("endpoint_url")
    return explicit or next((os.environ[n] for n in ENDPOINT_ENV if os.environ.get(n)), None)


def region(options: Mapping[str, Any]) -> str | None:
    client = options.get("client_kwargs") or {}
    return client.get("region_name") or next(
        (os.environ[n] for n in REGION_ENV if os.environ.get(n)), None
    )


class S3Backend(LakeBackend):
    name = "S3"
    schemes: ClassVar[tuple[str, ...]] = ("s3", "s3a")
    extra = "s3"
    driver = "s3fs"

    def endpoint(self, options: Mapping[str, Any]) -> str | None:
        return endpoint(options)

    def storage_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(options)
        config = dict(merged.get("config_kwargs") or {})
        config.setdefault("retries", {"max_attempts": RETRY_ATTEMPTS, "mode": "standard"})
        if endpoint(options):
            # S3-compatible stores (MinIO, moto) serve path-style URLs; virtual hosts need DNS.
            config.setdefault("s3", {"addressing_style": "path"})
        merged["config_kwargs"] = config
        client = dict(merged.get("client_kwargs") or {})
        if not client.get("region_name") and region(options):
            # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is what the other SDKs read
            client["region_name"] = region(options)
            merged["client_kwargs"] = client
        return merged

    def iceberg_properties(self, options: Mapping[str, Any]) -> dict[str, str]:
        props = {"py-io-impl": FSSPEC_FILE_IO}
        if url := endpoint(options):
            props["s3.endpoint"] = url
        if name := region(options):
            props["s3.region"] = name
        if options.get("key"):
            props["s3.access-key-id"] = str(options["key"])
        if options.get("secret"):
            props["s3.secret-access-key"] = str(options["secret"])
        if options.get("token"):
            props["s3.session-token"] = str(options["token"])
        if options.get("profile"):
            props["s3.profile-name"] = str(options["profile"])
        return props

    def credential_source(self, options: Mapping[str, Any]) -> str | None:
        if options.get("key") or options.get("profile"):
            return "lake options (key/secret or profile)"
        if options.get("anon"):
            return "anonymous"
        import botocore.session

        session = botocore.session.get_session()
        credentials = session.get_credentials()
        if credentials is None:
            return None
        method = getattr(credentials, "method", "unknown")
        return f"AWS credential chain ({method})" + (
            f", endpoint {endpoint(options)}" if endpoint(options) else ""
        )

    def missing_credentials(self) -> str:
        return (
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
            "or use --lake-block"
        )

    def credentials_hint(self) -> str:
        return "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile in AWS_PROFILE)"

    def endpoint_hint(self) -> str:
        url = endpoint({})
        return f"AWS_ENDPOINT_URL {url}" if url else "check the region and network"
