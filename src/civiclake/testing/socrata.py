"""A local Socrata (SODA 2.1) server, so tests and benchmarks never depend on the real API.

It serves ``GET /resource/{dataset_id}.json`` with the subset of SoQL the pipelines use
(``$where`` conjunctions, ``$select=count(*)`` or ``:*, *`` for the system fields ``:id``,
``:created_at``, ``:updated_at``, ``$order``, ``$limit``, ``$offset``), the dataset metadata at
``/api/views/{dataset_id}.json`` (typed columns; the ``X-SODA2-Fields`` / ``X-SODA2-Types``
headers on data pages), omits null fields from row objects as Socrata does, and can
inject the failures the real service shows: 429s, 500s, truncated bodies, slow answers, 404s,
counts that disagree with the data, and unstable paging when ``$order`` is missing.

Standard library only (orjson, when installed, just serialises pages faster). Run it
in-process (``with SocrataServer(...) as server:``) or as its own process for benchmarks
(``python -m civiclake.testing.socrata --rows N``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import enum
import gc
import itertools
import json
import math
import operator
import random
import re
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

try:  # optional, ~10x faster page serialisation; its output is byte-identical to json.dumps below
    import orjson as _orjson
except ImportError:  # pragma: no cover - the standard library path works the same, slower
    _orjson = None

__all__ = ["Fault", "RequestRecord", "SocrataServer", "bnt_rows", "main", "tabular_view"]

DEFAULT_LIMIT = 1000  # what Socrata returns when $limit is absent
CONTENT_TYPE = "application/json;charset=utf-8"
ROW_ID = ":id"

_RESOURCE_RE = re.compile(r"^/resource/([^/]+)\.json$")
_VIEW_RE = re.compile(r"^/api/views/([^/]+)\.json$")
_SYSTEM_SELECT_RE = re.compile(r"^\s*:\*\s*,\s*\*\s*$")
_COUNT_RE = re.compile(
    r"^\s*count\s*\(\s*\*\s*\)\s*(?:as\s+([A-Za-z_][A-Za-z0-9_]*))?\s*$", re.IGNORECASE
)
_IDENT_RE = re.compile(r"^:?[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^']|'')*')
      | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<lp>\()
      | (?P<rp>\))
      | (?P<word>:?[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)
    )""",
    re.VERBOSE,
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class Fault(enum.StrEnum):
    """Failure modes the server can inject, to exercise client retry and validation paths."""

    RATE_LIMIT = "429"
    SERVER_ERROR = "500"
    TRUNCATED = "truncated"
    SLOW = "slow"
    NOT_FOUND = "404"


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it, so tests can assert on what the client sent."""

    path: str
    params: dict[str, str]
    headers: dict[str, str]
    status: int
    fault: Fault | None = None


@dataclass
class _FaultSpec:
    fault: Fault
    remaining: int
    retry_after: float | None
    delay: float
    only: str


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    headers: dict[str, str]
    delay: float


class _QueryError(Exception):
    """A SoQL error that Socrata answers with 400 and a JSON error body."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_Clause = tuple[str, str, str | float]


def _error_body(code: str, message: str) -> bytes:
    return _dumps({"code": code, "error": True, "message": message})


def _dumps(value: object) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(value)
    return json.dumps(value, separators=(",", ":"), check_circular=False).encode()


def _parse_where(text: str) -> list[_Clause]:
    """Parse ``a op lit AND (b op lit) ...``: the conjunctions incremental loads send."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].isspace():
            break
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.end() == pos:
            raise _QueryError("query.compiler.malformed", f"Unexpected input at {pos}: {text!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()

    index = 0

    def peek() -> tuple[str, str]:
        return tokens[index] if index < len(tokens) else ("end", "")

    def take(kind: str) -> str:
        nonlocal index
        got_kind, value = peek()
        if got_kind != kind or (kind == "word" and value.upper() == "AND"):
            raise _QueryError(
                "query.compiler.malformed",
                f"Expected {kind} but found {value or 'end of input'!r} in {text!r}",
            )
        index += 1
        return value

    def is_and() -> bool:
        kind, value = peek()
        return kind == "word" and value.upper() == "AND"

    def conjunction() -> list[_Clause]:
        nonlocal index
        clauses = term()
        while is_and():
            index += 1
            clauses += term()
        return clauses

    def term() -> list[_Clause]:
        nonlocal index
        if peek()[0] == "lp":
            index += 1
            clauses = conjunction()
            take("rp")
            return clauses
        field = take("word").strip("`")
        op = take("op")
        kind, value = peek()
        index += 1
        literal: str | float
        if kind == "str":
            literal = value[1:-1].replace("''", "'")
        elif kind == "num":
            literal = float(value)
        else:
            raise _QueryError(
                "query.compiler.malformed", f"Expected a literal after {field} {op} in {text!r}"
            )
        return [(field, op, literal)]

    clauses = conjunction()
    if index != len(tokens):
        raise _QueryError(
            "query.compiler.malformed",
            f"Unexpected {peek()[1]!r} in {text!r} (only AND is supported)",
        )
    return clauses


def _parse_order(text: str) -> list[tuple[str, bool]]:
    """Parse ``a, b DESC``: returns (field, descending) pairs."""
    terms: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or not _IDENT_RE.match(words[0]):
            raise _QueryError("query.compiler.malformed", f"Bad $order term {part!r}")
        direction = words[1].upper() if len(words) == 2 else "ASC"
        if direction not in ("ASC", "DESC"):
            raise _QueryError("query.compiler.malformed", f"Bad $order direction {words[1]!r}")
        terms.append((words[0], direction == "DESC"))
    return terms


def _parse_int(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _QueryError("query.compiler.malformed", f"{name} must be an integer") from None
    if value < 0:
        raise _QueryError("query.compiler.malformed", f"{name} must not be negative")
    return value


class _Dataset:
    """Rows without ':id' (what is served) plus the hidden ids and the known columns."""

    __slots__ = ("columns", "common", "explicit_ids", "rows", "system")

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows: list[dict[str, Any]] = []
        self.explicit_ids: dict[int, str] = {}
        self.system: dict[int, dict[str, str]] = {}  # :created_at, :updated_at, ...
        self.columns: set[str] = set()
        common: set[str] | None = None
        previous: Any = None
        for index, row in enumerate(rows):
            if any(v is None or k.startswith(":") for k, v in row.items()):
                # Socrata omits null fields; system fields are served only when selected
                if ROW_ID in row:
                    self.explicit_ids[index] = row[ROW_ID]
                system = {k: v for k, v in row.items() if k.startswith(":") and k != ROW_ID}
                if system:
                    self.system[index] = system
                row = {k: v for k, v in row.items() if v is not None and not k.startswith(":")}
            self.rows.append(row)
            keys = row.keys()
            if previous is not None and keys == previous:
                continue  # same columns as the row before: the common case, skip set work
            previous = keys
            self.columns.update(keys)
            common = set(keys) if common is None else common & keys
        self.common: set[str] = common or set()

    def id_of(self, index: int) -> str:
        explicit = self.explicit_ids.get(index)
        return f"row-{index}" if explicit is None else explicit

    def with_system_fields(self, index: int) -> dict[str, Any]:
        """The row as ``$select=:*, *`` serves it: system fields first."""
        return {ROW_ID: self.id_of(index), **self.system.get(index, {}), **self.rows[index]}

    def check_column(self, name: str) -> None:
        if name.startswith(":"):
            return
        if self.columns and name not in self.columns:
            raise _QueryError("query.soql.no-such-column", f"No such column: {name}")

    def filter(self, clauses: list[_Clause]) -> Sequence[int]:
        """Indices of the rows matching every clause (a range when there are none).

        String comparisons on columns every row has run as C-level ``map`` pipelines: a
        date-range filter over a million rows then costs a fraction of a second.
        """
        rows = self.rows
        if not clauses:
            return range(len(rows))
        masks: list[Iterator[Any]] = []
        for clause in clauses:
            field, op, literal = clause
            if isinstance(literal, str) and field != ROW_ID and field in self.common:
                values = map(operator.itemgetter(field), rows)
                masks.append(map(_OPS[op], values, itertools.repeat(literal)))
            else:
                masks.append(map(self._check(clause), itertools.count(), rows))
        combined = masks[0]
        for mask in masks[1:]:
            combined = map(operator.and_, combined, mask)
        return list(itertools.compress(range(len(rows)), combined))

    def _check(self, clause: _Clause) -> Callable[[int, dict[str, str]], bool]:
        field, op, literal = clause
        compare = _OPS[op]
        id_of = self.id_of
        if isinstance(literal, float):
            number = literal

            def numeric(index: int, row: dict[str, str]) -> bool:
                value = id_of(index) if field == ROW_ID else row.get(field)
                if value is None:
                    return False
                try:
                    return compare(float(value), number)
                except ValueError:
                    return False

            return numeric
        text = literal
        if field == ROW_ID:
            return lambda index, row: compare(id_of(index), text)
        if field.startswith(":"):
            system = self.system

            def system_field(index: int, row: dict[str, str]) -> bool:
                value = system.get(index, {}).get(field)
                return value is not None and compare(value, text)

            return system_field

        def textual(index: int, row: dict[str, str]) -> bool:
            value = row.get(field)
            return value is not None and compare(value, text)

        return textual

    def sort(self, indices: Sequence[int], terms: list[tuple[str, bool]]) -> list[int]:
        """Sort by string values; rows missing a field sort last ascending (first descending)."""
        if len({desc for _, desc in terms}) == 1:
            return self._sorted(indices, [f for f, _ in terms], terms[0][1])
        result: Sequence[int] = indices
        for field, desc in reversed(terms):  # stable passes, least significant first
            result = self._sorted(result, [field], desc)
        return list(result)

    def _sorted(self, indices: Sequence[int], fields: list[str], desc: bool) -> list[int]:
        # Decorate-sort-undecorate keeps the per-element work in C for the common case.
        keys = self._keys(indices, fields)
        order = sorted(range(len(keys)), key=keys.__getitem__, reverse=desc)
        return list(map(indices.__getitem__, order))

    def _keys(self, indices: Sequence[int], fields: list[str]) -> list[Any]:
        rows = self.rows
        if ROW_ID not in fields and all(f in self.common for f in fields):
            return list(map(operator.itemgetter(*fields), map(rows.__getitem__, indices)))
        id_of = self.id_of
        parts: list[Callable[[int], tuple[bool, str]]] = []
        for field in fields:
            if field == ROW_ID:
                parts.append(lambda i: (False, id_of(i)))
            else:
                parts.append(lambda i, f=field: (f not in rows[i], rows[i].get(f, "")))
        if len(parts) == 1:
            return list(map(parts[0], indices))
        return [tuple(part(i) for part in parts) for i in indices]


class _HTTPServer(ThreadingHTTPServer):
    """Tracks open connections so stop() can close idle keep-alive sockets at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: SocrataServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away (timed out, closed): expected in fault tests
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms stalls
    server_version = "civiclake-fake-socrata/1"

    def do_GET(self) -> None:
        app: SocrataServer = self.server.app  # type: ignore[attr-defined]
        headers = {key.lower(): value for key, value in self.headers.items()}
        response = app._handle(self.path, headers)
        delay = response.delay + app.latency
        if delay > 0 and app._stopping.wait(delay):
            self.close_connection = True  # stopped while "slow": drop the request
            return
        self.send_response(response.status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log: tests and benchmarks make thousands."""


class SocrataServer:
    """A Socrata-compatible HTTP server on 127.0.0.1, run in a background thread.

    Start and stop it yourself (``start()``/``stop()``) or use it as a context manager.
    """

    _CACHE_SIZE = 8

    def __init__(
        self,
        datasets: dict[str, list[dict[str, str]]] | None = None,
        *,
        seed: int = 0,
        port: int = 0,
        latency: float = 0.0,
    ) -> None:
        self._seed = seed
        self._port = port
        # every answer waits this long first: a portal across the internet (data.ny.gov
        # answered B&T's count and pages in 0.4-0.5 s each, measured in the speed issue)
        self.latency = latency
        self._lock = threading.Lock()
        self._datasets: dict[str, _Dataset] = {}
        self._views: dict[str, dict[str, Any]] = {}
        # the data pages' X-SODA2 headers: the dataset's columns, even when add_view replaces
        # its metadata by one without a column list (as some portals' views are)
        self._soda2: dict[str, list[tuple[str, str]]] = {}
        self._generation = 0
        self._cache: OrderedDict[Hashable, Sequence[int]] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}
        self._faults: list[_FaultSpec] = []
        self._count_offset = 0
        self._drop_rows = 0
        self._counter = 0
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self.requests: list[RequestRecord] = []
        for dataset_id, rows in (datasets or {}).items():
            self.add_dataset(dataset_id, rows)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        if self._url is None:
            raise RuntimeError("SocrataServer has not been started")
        return self._url

    def start(self) -> SocrataServer:
        """Bind a port and serve in a daemon thread; returns self for chaining."""
        if self._httpd is not None:
            raise RuntimeError("SocrataServer is already running")
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-socrata",
            daemon=True,
        )
        self._httpd = httpd
        self._thread.start()
        self._url = f"http://127.0.0.1:{httpd.server_address[1]}"
        return self

    def stop(self) -> None:
        """Stop serving, wake slow handlers and close keep-alive connections."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> SocrataServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- data and faults -----------------------------------------------------------------

    def add_dataset(
        self,
        dataset_id: str,
        rows: list[dict[str, Any]],
        *,
        columns: Sequence[tuple[str, str]] | None = None,
        name: str | None = None,
    ) -> None:
        """Replace a dataset's rows (and its metadata, when ``columns`` are given as
        ``(fieldName, dataTypeName)``). Rows without ':id' get a hidden ``row-<index>``; keys
        ``:created_at`` / ``:updated_at`` are served only to ``$select=:*, *``; None values
        are omitted from the rows served, as Socrata does."""
        dataset = _Dataset(rows)
        with self._lock:
            self._datasets[dataset_id] = dataset
            # (taken before new metadata replaces the view: two changes within one second
            # must still differ, or a client would reuse pages of the older rows)
            previous = self._views.get(dataset_id, {}).get("rowsUpdatedAt", 0)
            if columns is not None:
                self._views[dataset_id] = tabular_view(dataset_id, columns, name, len(rows))
                self._soda2[dataset_id] = list(columns)
            if dataset_id in self._views:  # the metadata says when the rows last changed
                stamp = max(int(time.time()), previous + 1)
                self._views[dataset_id] = {**self._views[dataset_id], "rowsUpdatedAt": stamp}
            self._generation += 1
            self._cache.clear()

    def add_view(self, dataset_id: str, view: dict[str, Any]) -> None:
        """Serve ``view`` as the metadata of ``dataset_id`` (e.g. a chart or a map view)."""
        with self._lock:
            self._views[dataset_id] = view

    def inject(
        self,
        fault: Fault,
        *,
        times: int = 1,
        retry_after: float | None = None,
        delay: float = 5.0,
        only: str = "any",
    ) -> None:
        """Apply ``fault`` to the next ``times`` resource requests of kind ``only``.

        Faults are used first-in first-out. ``retry_after`` (RATE_LIMIT) is sent rounded up
        to whole seconds; ``delay`` (SLOW) is how long the answer is held back.
        """
        if only not in ("any", "data", "count"):
            raise ValueError(f"only must be 'any', 'data' or 'count', not {only!r}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(_FaultSpec(Fault(fault), times, retry_after, delay, only))

    def clear_faults(self) -> None:
        """Drop queued faults, the count offset and any pending row drop."""
        with self._lock:
            self._faults.clear()
            self._count_offset = 0
            self._drop_rows = 0

    def set_count_offset(self, offset: int) -> None:
        """Make count(*) answer ``true count + offset`` (0 resets) to fake a count mismatch."""
        with self._lock:
            self._count_offset = offset

    def drop_rows_once(self, n: int) -> None:
        """Make the next data page silently omit its last ``n`` rows."""
        with self._lock:
            self._drop_rows = n

    # -- request handling ----------------------------------------------------------------

    def _take_fault(self, kind: str) -> _FaultSpec | None:
        with self._lock:
            for spec in self._faults:
                if spec.only in ("any", kind):
                    spec.remaining -= 1
                    if spec.remaining <= 0:
                        self._faults.remove(spec)
                    return spec
        return None

    def _handle(self, raw_path: str, headers: dict[str, str]) -> _Response:
        split = urlsplit(raw_path)
        path = unquote(split.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        with self._lock:
            self._counter += 1
            counter = self._counter
        extra: dict[str, str] = {}
        delay = 0.0
        spec: _FaultSpec | None = None
        match = _RESOURCE_RE.match(path)
        view_match = _VIEW_RE.match(path)
        if view_match is not None:
            with self._lock:
                view = self._views.get(view_match.group(1))
            if view is None:
                status, body = 404, _error_body("not_found", "Cannot find view")
            else:
                status, body = 200, _dumps(view)
        elif match is None:
            status, body = 404, _error_body("not_found", f"No such path: {path}")
        else:
            kind = "count" if _COUNT_RE.match(params.get("$select", "")) else "data"
            spec = self._take_fault(kind)
            fault = spec.fault if spec else None
            if fault is Fault.RATE_LIMIT:
                status, body = 429, _error_body("too_many_requests", "Too many requests")
                if spec and spec.retry_after is not None:
                    extra["Retry-After"] = str(math.ceil(spec.retry_after))
            elif fault is Fault.SERVER_ERROR:
                status, body = 500, _error_body("internal_error", "Internal server error")
            elif fault is Fault.NOT_FOUND:
                status, body = 404, _error_body("not_found", "Dataset not found")
            else:
                try:
                    status, body = self._query(match.group(1), params, counter)
                    extra.update(self._soda2_headers(match.group(1), status))
                except _QueryError as exc:
                    status, body = 400, _error_body(exc.code, exc.message)
                if fault is Fault.TRUNCATED:
                    body = body[: len(body) // 2]
                elif fault is Fault.SLOW and spec:
                    delay = spec.delay
        record = RequestRecord(path, params, headers, status, spec.fault if spec else None)
        self.requests.append(record)  # before answering, so a client never sees it missing
        return _Response(status, body, extra, delay)

    def _soda2_headers(self, dataset_id: str, status: int) -> dict[str, str]:
        with self._lock:
            view = self._views.get(dataset_id)
            declared = self._soda2.get(dataset_id)
        if status != 200 or (view is None and declared is None):
            return {}
        if declared is not None:
            pairs = declared
        else:
            pairs = [(c["fieldName"], c["dataTypeName"]) for c in (view or {}).get("columns", [])]
        return {
            "X-SODA2-Fields": json.dumps([f for f, _ in pairs]),
            "X-SODA2-Types": json.dumps([t for _, t in pairs]),
        }

    def _query(self, dataset_id: str, params: dict[str, str], counter: int) -> tuple[int, bytes]:
        with self._lock:
            dataset = self._datasets.get(dataset_id)
            generation = self._generation
        if dataset is None:
            return 404, _error_body("not_found", "Dataset not found")
        where = params.get("$where", "").strip()
        clauses = _parse_where(where) if where else []
        for field, _, _ in clauses:
            dataset.check_column(field)
        limit = _parse_int(params, "$limit", DEFAULT_LIMIT)
        offset = _parse_int(params, "$offset", 0)

        def matching() -> Sequence[int]:
            return self._cached((generation, dataset_id, where), lambda: dataset.filter(clauses))

        select = params.get("$select")
        system_fields = select is not None and _SYSTEM_SELECT_RE.match(select) is not None
        if select is not None and not system_fields:
            count = _COUNT_RE.match(select)
            if count is None:
                raise _QueryError(
                    "query.compiler.malformed", f"Only count(*) is supported in $select: {select!r}"
                )
            total = len(matching())
            with self._lock:
                total += self._count_offset
            result = [{count.group(1) or "count": str(total)}]
            return 200, _dumps(result[offset : offset + limit])

        order = params.get("$order", "").strip()
        if order:
            terms = _parse_order(order)
            for field, _ in terms:
                dataset.check_column(field)
            ordered = self._cached(
                (generation, dataset_id, where, order),
                lambda: dataset.sort(matching(), terms),
            )
            page: Sequence[int] = ordered[offset : offset + limit]
        else:
            # No $order: a fresh random permutation per request, of which this page is a slice
            # (a random sample is exactly that, and costs O(page) instead of O(dataset)).
            rows = matching()
            size = max(0, min(limit, len(rows) - offset))
            page = random.Random(self._seed * 1_000_003 + counter).sample(rows, size)
        with self._lock:
            drop, self._drop_rows = self._drop_rows, 0
        if drop:
            page = page[: max(0, len(page) - drop)]
        if system_fields:
            return 200, _dumps([dataset.with_system_fields(i) for i in page])
        served = dataset.rows
        return 200, _dumps([served[i] for i in page])

    def _cached(self, key: Hashable, build: Callable[[], Sequence[int]]) -> Sequence[int]:
        """LRU of filtered/sorted index lists, so each page or count is a cheap lookup."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            gate = self._building.setdefault(key, threading.Lock())
        with gate:  # one thread builds; concurrent requests for the same query wait for it
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    return hit
            try:
                value = build()
            finally:
                with self._lock:
                    self._building.pop(key, None)
            with self._lock:
                self._cache[key] = value
                while len(self._cache) > self._CACHE_SIZE:
                    self._cache.popitem(last=False)
            return value


# -- synthetic data ----------------------------------------------------------------------


def tabular_view(
    dataset_id: str, columns: Sequence[tuple[str, str]], name: str | None, rows: int
) -> dict[str, Any]:
    """``/api/views/ID.json`` of a tabular dataset, as Socrata shapes it (the fields used)."""
    return {
        "id": dataset_id,
        "name": name or dataset_id,
        "assetType": "dataset",
        "viewType": "tabular",
        "displayType": "table",
        "columns": [
            {
                "id": index + 1,
                "name": field.replace("_", " ").title(),
                "fieldName": field,
                "dataTypeName": kind,
                "position": index + 1,
                "cachedContents": {"count": str(rows)} if index == 0 else {},
            }
            for index, (field, kind) in enumerate(columns)
        ],
    }


_MASK64 = (1 << 64) - 1
_COUNT_STRINGS = [str(n) for n in range(5001)]


def _mix64(value: int) -> int:
    """splitmix64 finaliser: a fast deterministic hash for the synthetic counts."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def bnt_rows(
    start: datetime.date,
    days: int,
    *,
    plazas: Sequence[int] = (21, 22, 23, 24, 25, 26, 27, 28, 29, 30),
) -> list[dict[str, str]]:
    """Deterministic rows shaped like the MTA Bridges & Tunnels hourly traffic dataset.

    One row per (date, hour, plaza, direction), ordered that way; the same key always gets
    the same counts, so overlapping ranges agree. Strings are shared to keep 1M rows small.
    """
    hours = [str(h) for h in range(24)]
    # Hash (date, hour) and (plaza, direction) separately, then combine cheaply per row.
    keys = [
        (_mix64(((plaza & 0xFFFFFFFF) << 1 | d) + 0x5BD1E995), str(plaza), direction)
        for plaza in sorted(plazas)
        for d, direction in enumerate(("I", "O"))
    ]
    counts = _COUNT_STRINGS
    rows: list[dict[str, str]] = []
    append = rows.append
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a million new dicts would trigger many pointless full collections
    try:
        for day_index in range(days):
            day = start + datetime.timedelta(days=day_index)
            date = f"{day.isoformat()}T00:00:00.000"
            ordinal = day.toordinal()
            for hour, hour_text in enumerate(hours):
                slot = _mix64(ordinal * 24 + hour)
                for salt, plaza_text, direction in keys:
                    mixed = ((slot ^ salt) * 0x9E3779B97F4A7C15) & _MASK64
                    mixed ^= mixed >> 29
                    append(
                        {
                            "plaza_id": plaza_text,
                            "date": date,
                            "hour": hour_text,
                            "direction": direction,
                            "vehicles_e_zpass": counts[mixed % 5001],
                            "vehicles_vtoll": counts[(mixed >> 32) % 5001],
                        }
                    )
    finally:
        if gc_was_enabled:
            gc.enable()
    return rows


# -- command line --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve synthetic rows until SIGTERM/SIGINT; the URL is the first stdout line."""
    parser = argparse.ArgumentParser(prog="python -m civiclake.testing.socrata")
    parser.add_argument("--rows", type=int, required=True, help="number of rows to serve")
    parser.add_argument(
        "--kind",
        choices=("bnt", "sample"),
        default="bnt",
        help="B&T hourly traffic rows, or the every-type sample dataset (with its metadata)",
    )
    parser.add_argument("--dataset", default="qzve-kjga", help="dataset id")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="seed for unordered paging")
    parser.add_argument(
        "--start",
        type=datetime.date.fromisoformat,
        default=datetime.date(2020, 1, 1),
        help="first date of the synthetic rows (YYYY-MM-DD)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds every answer waits, to play a portal across the internet (default 0)",
    )
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must not be negative")
    if args.latency < 0:
        parser.error("--latency must not be negative")
    server = SocrataServer(seed=args.seed, port=args.port, latency=args.latency)
    if args.kind == "sample":
        from civiclake.testing.socrata_samples import COLUMNS, sample_rows

        server.add_dataset(args.dataset, sample_rows(args.rows), columns=COLUMNS, name="Sample")
    else:
        days = math.ceil(args.rows / (10 * 2 * 24))
        server.add_dataset(args.dataset, bnt_rows(args.start, days)[: args.rows])
    gc.collect()
    gc.freeze()  # a million row dicts: keep the collector from walking them on every page
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        print(server.url, flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
