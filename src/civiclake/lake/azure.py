"""Azure Blob Storage / ADLS Gen2 (``abfs://CONTAINER/prefix``) through adlfs.

Credentials as Azure tools expect them: ``AZURE_STORAGE_CONNECTION_STRING``, or
``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY`` (the tutorial's storage
account and access key) or a SAS token / service principal, all read by adlfs from the
environment; or the same names as storage options in a ``civiclake-lake`` block
(``connection_string``, ``account_name``, ``account_key``, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from civiclake.lake._backend import FSSPEC_FILE_IO, LakeBackend

# fsspec option -> PyIceberg FileIO property (pyiceberg.io.ADLS_*)
_ICEBERG_PROPERTIES = {
    "connection_string": "adls.connection-string",
    "account_name": "adls.account-name",
    "account_key": "adls.account-key",
    "sas_token": "adls.sas-token",
    "tenant_id": "adls.tenant-id",
    "client_id": "adls.client-id",
    "client_secret": "adls.client-secret",
    "account_host": "adls.account-host",
}
# option -> the environment variable adlfs reads when the option is not given
_ENV = {
    "connection_string": "AZURE_STORAGE_CONNECTION_STRING",
    "account_name": "AZURE_STORAGE_ACCOUNT_NAME",
    "account_key": "AZURE_STORAGE_ACCOUNT_KEY",
    "sas_token": "AZURE_STORAGE_SAS_TOKEN",
    "client_secret": "AZURE_STORAGE_CLIENT_SECRET",
}


class AzureBackend(LakeBackend):
    name = "Azure Blob"
    schemes: ClassVar[tuple[str, ...]] = ("abfs", "abfss", "az")
    extra = "azure"
    driver = "adlfs"
    container_word: ClassVar[str] = "container"

    def endpoint(self, options: Mapping[str, Any]) -> str | None:
        connection = options.get("connection_string") or os.environ.get(
            "AZURE_STORAGE_CONNECTION_STRING", ""
        )
        if endpoint := _blob_endpoint(str(connection)):
            return endpoint
        account = options.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        return f"https://{account}.blob.core.windows.net" if account else None

    def iceberg_properties(self, options: Mapping[str, Any]) -> dict[str, str]:
        props = {"py-io-impl": FSSPEC_FILE_IO}
        for option, prop in _ICEBERG_PROPERTIES.items():
            value = options.get(option) or os.environ.get(_ENV.get(option, ""), "")
            if value:
                props[prop] = str(value)
        return props

    def credential_source(self, options: Mapping[str, Any]) -> str | None:
        for option in ("connection_string", "account_key", "sas_token", "client_secret"):
            if options.get(option):
                return f"lake option {option}"
        if os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
            return "AZURE_STORAGE_CONNECTION_STRING" + _endpoint_note(
                os.environ["AZURE_STORAGE_CONNECTION_STRING"]
            )
        account = options.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        if account and any(os.environ.get(_ENV[k]) for k in ("account_key", "sas_token")):
            return f"AZURE_STORAGE_ACCOUNT_NAME ({account}) + key"
        if account and os.environ.get("AZURE_STORAGE_CLIENT_SECRET"):
            return f"service principal for account {account}"
        return None

    def missing_credentials(self) -> str:
        return (
            "no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or "
            "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY, or use --lake-block"
        )

    def credentials_hint(self) -> str:
        return "check the key in AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_KEY"

    def endpoint_hint(self) -> str:
        endpoint = _blob_endpoint(os.environ.get("AZURE_STORAGE_CONNECTION_STRING", ""))
        return f"BlobEndpoint {endpoint}" if endpoint else "check the account name and network"


def _blob_endpoint(connection_string: str) -> str | None:
    match = re.search(r"BlobEndpoint=([^;]+)", connection_string)
    return match.group(1) if match else None


def _endpoint_note(connection_string: str) -> str:
    endpoint = _blob_endpoint(connection_string)
    return f" (endpoint {endpoint})" if endpoint else ""
