"""A SODA 2.1 client for any Socrata portal (data.ny.gov, data.cityofnewyork.us, ...).

Why not sodapy: we need exact paging (``$order`` always set), bounded retries with backoff
and jitter that honour ``Retry-After``, and raw page bytes to stage in the lake as received.
The httpx transport is the seam tests use to point it at a local replay server.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from pydantic import SecretStr

from civiclake.errors import ParameterError, SourceError

if TYPE_CHECKING:
    from civiclake.config import Settings

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
RETRY_AFTER_CAP_SECONDS = 300.0
USER_AGENT = "civiclake (+https://github.com/civiclake)"
SYSTEM_SELECT = ":*, *"
"""``$select`` adding the system fields (``:id``, ``:created_at``, ``:updated_at``) to a row."""


@dataclass(frozen=True)
class Page:
    """One page as the portal sent it, plus its decoded rows (a list of dicts by default, or
    what the ``decode`` given to ``iter_pages`` made of the body, e.g. an Arrow table)."""

    number: int
    offset: int
    body: bytes
    rows: Any


class BodyError(ValueError):
    """A decoder's word that a body is not a complete JSON answer (retried as truncated)."""


def floating_timestamp(day: date | datetime) -> str:
    """SoQL floating timestamp literal: ``'2023-04-10T00:00:00.000'``."""
    if not isinstance(day, datetime):
        day = datetime(day.year, day.month, day.day)
    return f"'{day.strftime('%Y-%m-%dT%H:%M:%S')}.000'"


def date_range_where(field: str, start: date | datetime, stop: date | datetime) -> str:
    """``$where`` for ``start <= field < stop`` on a floating-timestamp column."""
    return f"{field} >= {floating_timestamp(start)} AND {field} < {floating_timestamp(stop)}"


class SocrataClient:
    """Talks to one portal; every request retried on transient failures, then fails in one line."""

    def __init__(
        self,
        base_url: str,
        *,
        app_token: SecretStr | None = None,
        timeout: float = 30.0,
        max_attempts: int = 6,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if app_token is not None and app_token.get_secret_value():
            headers["X-App-Token"] = app_token.get_secret_value()
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._sleep = sleep
        self.retries = 0  # retries made so far, for the run summary
        self.last_headers: httpx.Headers = httpx.Headers()  # of the last 200 answer

    @classmethod
    def from_settings(
        cls, settings: Settings, *, base_url: str | None = None, **kwargs: Any
    ) -> SocrataClient:
        """The client the settings describe (portal, token, timeout, retry policy); another
        portal than ``CIVICLAKE_SOCRATA_URL`` with ``base_url``."""
        return cls(
            base_url or settings.socrata_url,
            app_token=settings.socrata_app_token,
            timeout=settings.http_timeout,
            max_attempts=settings.http_max_attempts,
            backoff_initial=settings.http_backoff_initial,
            backoff_max=settings.http_backoff_max,
            **kwargs,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SocrataClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self, dataset_id: str, *, where: str | None = None) -> int:
        """Rows matching ``where``: the reference a complete fetch must reach."""
        params = {"$select": "count(*)"}
        if where:
            params["$where"] = where
        _, rows = self._get(dataset_id, params)
        try:
            if not isinstance(rows, list):
                raise TypeError("not a list")
            return int(next(iter(rows[0].values())))
        except (IndexError, KeyError, StopIteration, TypeError, ValueError, AttributeError):
            raise SourceError(
                f"Socrata dataset '{dataset_id}' gave an unreadable count: {str(rows)[:200]}"
            ) from None

    def soda2_columns(self, dataset_id: str) -> list[dict[str, str]] | None:
        """The columns a data page declares in its ``X-SODA2-Fields`` / ``X-SODA2-Types``
        headers, as metadata columns (``fieldName``, ``dataTypeName``); None without them."""
        self._get(dataset_id, {"$limit": "1"})
        try:
            fields = orjson.loads(self.last_headers.get("x-soda2-fields", ""))
            types = orjson.loads(self.last_headers.get("x-soda2-types", ""))
        except orjson.JSONDecodeError:
            return None
        if not isinstance(fields, list) or not isinstance(types, list) or not fields:
            return None
        if len(fields) != len(types):
            return None
        return [
            {"fieldName": str(f), "dataTypeName": str(t)}
            for f, t in zip(fields, types, strict=True)
        ]

    def view(self, dataset_id: str) -> dict[str, Any]:
        """The dataset's metadata (``/api/views/ID.json``): name, view type, typed columns."""
        _, payload = self._get(dataset_id, {}, path=f"/api/views/{dataset_id}.json")
        if not isinstance(payload, dict) or "id" not in payload:
            said = str(payload.get("message", payload))[:200] if isinstance(payload, dict) else ""
            raise SourceError(
                f"Socrata view '{dataset_id}' at {self.base_url} answered something that is not "
                f"a view{': ' + said if said else ''}"
            )
        return payload

    def iter_pages(
        self,
        dataset_id: str,
        *,
        order: str,
        where: str | None = None,
        page_size: int = 50_000,
        select: str | None = None,
        decode: Callable[[bytes], Any] | None = None,
    ) -> Iterator[Page]:
        """Pages of ``page_size`` rows in a stable ``order`` until a short page ends the result.

        ``select=":*, *"`` adds the system fields (``:id``, ``:created_at``, ``:updated_at``).
        ``decode`` turns a body into rows (anything with a length; ``BodyError`` when the body
        is cut short): by default orjson's Python objects.
        """
        if not order:
            raise ValueError("paging without $order returns duplicates and misses rows")
        offset, number = 0, 0
        while True:
            params = {"$order": order, "$limit": str(page_size), "$offset": str(offset)}
            if where:
                params["$where"] = where
            if select:
                params["$select"] = select
            body, rows = self._get(dataset_id, params, decode=decode)
            if decode is None and not isinstance(rows, list):
                raise SourceError(f"Socrata dataset '{dataset_id}' answered a non-list page")
            number += 1
            count = len(rows)
            page = Page(number=number, offset=offset, body=body, rows=rows)
            # this frame must not keep the page alive while the next one downloads (~30 MB of
            # body and its decoded rows a page): only the consumer holds it
            del body, rows
            if count:
                yield page
            del page
            offset += count
            if count < page_size:
                return

    def _get(
        self,
        dataset_id: str,
        params: dict[str, str],
        *,
        path: str | None = None,
        decode: Callable[[bytes], Any] | None = None,
    ) -> tuple[bytes, Any]:
        path = path or f"/resource/{dataset_id}.json"
        what = f"GET {self.base_url}{path}"
        last_reason = ""
        for attempt in range(1, self._max_attempts + 1):
            retry_after: float | None = None
            try:
                response = self._client.get(path, params=params)
            except httpx.TimeoutException:
                last_reason = f"timed out after {self._client.timeout.read}s"
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise ParameterError(  # a wrong URL does not get better by asking again
                    f"{what}: {self.base_url!r} is not a portal URL ({exc}): give "
                    "https://host, e.g. https://data.ny.gov"
                ) from None
            except httpx.TransportError as exc:
                if _is_tls_mismatch(exc):
                    raise ParameterError(
                        f"{what}: the server does not speak HTTPS ({exc}): "
                        f"use {self.base_url.replace('https://', 'http://', 1)}"
                    ) from None
                last_reason = f"connection failed ({type(exc).__name__}: {exc})"
            else:
                # the response and its stream refer to each other: without breaking that cycle
                # every page's body (~30 MB) lived on until the cyclic GC ran (measured: RSS grew
                # 29 MB a page; a 300k-row load held ~180 MB of old bodies)
                response.stream = httpx.ByteStream(b"")
                status = response.status_code
                if status == 200 and _is_html(response):
                    raise SourceError(
                        f"{what} answered an HTML page, not JSON (a login, maintenance or "
                        f"error page?): is {self.base_url} a Socrata portal?"
                    )
                if status == 200:
                    self.last_headers = response.headers
                    body = response.content
                    try:
                        return body, (decode or orjson.loads)(body)
                    except (orjson.JSONDecodeError, BodyError):
                        last_reason = f"invalid JSON body ({len(body)} bytes, truncated?)"
                elif status == 404:
                    raise SourceError(
                        f"Socrata dataset '{dataset_id}' not found at {self.base_url} (HTTP 404)"
                    )
                elif status in RETRYABLE_STATUS:
                    last_reason = f"HTTP {status}"
                    retry_after = _retry_after_seconds(response)
                elif status == 400:  # the portal refused the query itself: bad input
                    raise ParameterError(
                        f"{what}: the portal refused the query (HTTP 400): "
                        f"{_error_message(response)}"
                    )
                else:
                    raise SourceError(f"{what} failed: HTTP {status}: {_error_message(response)}")
            if attempt == self._max_attempts:
                break
            delay = self._backoff(attempt, retry_after)
            self.retries += 1
            logger.warning(
                "%s: %s; retry %d/%d in %.1fs",
                what,
                last_reason,
                attempt,
                self._max_attempts - 1,
                delay,
            )
            self._sleep(delay)
        raise SourceError(f"{what} failed after {self._max_attempts} attempts: {last_reason}")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_SECONDS)
        ceiling = min(self._backoff_max, self._backoff_initial * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter": spread, never zero


def _is_html(response: httpx.Response) -> bool:
    """An HTML page where JSON was asked for: not a truncated answer, not worth a retry."""
    kind = response.headers.get("Content-Type", "").lower()
    if "html" in kind:
        return True
    return response.content[:200].lstrip().lower().startswith((b"<!doctype html", b"<html"))


def _is_tls_mismatch(exc: httpx.TransportError) -> bool:
    """https:// spoken to a plain-http server (an SSL record error, not a network failure)."""
    text = f"{exc} {exc.__cause__ or ''} {exc.__context__ or ''}"
    markers = ("WRONG_VERSION_NUMBER", "record layer failure", "http request", "UNEXPECTED_RECORD")
    return any(m.lower() in text.lower() for m in markers)


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date; fall back to our own backoff


def _error_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
        message = payload.get("message") or payload.get("error") or payload
    except (ValueError, AttributeError):
        message = response.text
    return " ".join(str(message).split())[:300]
