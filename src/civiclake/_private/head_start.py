"""Work a command starts before it imports Prefect, taken over by the flow run it then starts.

From a command's start to its flow's first line is 2.3-3.3 s on this machine (``import
prefect``, then the flow run created), all of it before the first request. A fetch waits on the
network, so started in a thread at once its pages are in the raw zone by the time the flow asks
for them. The flow takes a head start only when it asks for exactly what was started (the same
key); otherwise, and however the command ends, the head start is cancelled and what it wrote is
removed. A task retry fetches afresh: a head start is taken once.

Log lines of the head start are held until the flow takes it, then go to the flow's run log.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("civiclake")

PLAN_TIMEOUT_SECONDS = 60.0


@dataclass
class HeadStart:
    """Started work: ``value`` once ``key`` is known (``ready``), ``cancel`` to give it up."""

    cancel: Callable[[], None]
    ready: threading.Event
    key: Hashable = None
    value: Any = None


_started: dict[str, HeadStart] = {}
_lock = threading.Lock()


def begin(name: str, head_start: HeadStart) -> None:
    """Register ``head_start`` as this process's ``name`` work (one per name)."""
    with _lock:
        previous = _started.pop(name, None)
        _started[name] = head_start
    if previous is not None:
        previous.cancel()


def take(name: str, key: Hashable) -> Any:
    """The value of the ``name`` head start if it was started for ``key`` (then it is the
    caller's), else None (a different one is cancelled)."""
    with _lock:
        started = _started.pop(name, None)
    if started is None:
        return None
    if started.ready.wait(PLAN_TIMEOUT_SECONDS) and started.key == key:
        return started.value
    logger.debug("head start %s not taken: started for %r, asked %r", name, started.key, key)
    started.cancel()
    return None


def warm(work: Callable[[], None]) -> None:
    """Run ``work`` (imports the flow will need) in a daemon thread; its errors are the flow's
    to meet later, so they are ignored here."""

    def run() -> None:
        with contextlib.suppress(Exception):
            work()

    threading.Thread(target=run, name="civiclake-warm", daemon=True).start()


def cancel_all() -> None:
    """Give up whatever was not taken (the command ends)."""
    with _lock:
        left = list(_started.values())
        _started.clear()
    for started in left:
        started.cancel()


class DeferredLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for work that runs before the run's logger exists: records are held, then
    replayed into the logger ``attach`` gives, which receives every later one directly."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.getLogger(name), {})
        self._held: list[tuple[int, object, tuple[object, ...], dict[str, Any]]] = []
        self._target: logging.Logger | logging.LoggerAdapter[Any] | None = None
        self._guard = threading.Lock()

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        with self._guard:
            if self._target is None:
                self._held.append((level, msg, args, kwargs))
                return
            target = self._target
        target.log(level, msg, *args, **kwargs)

    def attach(self, target: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        with self._guard:
            held, self._held = self._held, []
            for level, msg, args, kwargs in held:
                target.log(level, msg, *args, **kwargs)
            self._target = target
