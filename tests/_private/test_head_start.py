"""Work begun before Prefect is imported: taken by the same key only, else cancelled; its log
lines held until the taker's logger is known."""

from __future__ import annotations

import logging
import threading

import pytest

from civiclake._private import head_start
from civiclake._private.prefetch import Prefetch


def started(key: object, value: object, cancelled: list[object]) -> head_start.HeadStart:
    ready = threading.Event()
    ready.set()
    return head_start.HeadStart(lambda: cancelled.append(key), ready, key, value)


def test_taken_by_the_same_key_once() -> None:
    cancelled: list[object] = []
    head_start.begin("work", started(("a", 1), "pages", cancelled))
    assert head_start.take("work", ("a", 1)) == "pages"
    assert head_start.take("work", ("a", 1)) is None  # taken once: a retry starts afresh
    head_start.cancel_all()
    assert cancelled == []


def test_another_key_cancels_it() -> None:
    cancelled: list[object] = []
    head_start.begin("work", started(("a", 1), "pages", cancelled))
    assert head_start.take("work", ("a", 2)) is None
    assert cancelled == [("a", 1)]


def test_what_is_not_taken_is_cancelled_when_the_command_ends() -> None:
    cancelled: list[object] = []
    head_start.begin("work", started("k", "v", cancelled))
    head_start.begin("other", started("k2", "v2", cancelled))
    head_start.cancel_all()
    assert sorted(cancelled) == ["k", "k2"]
    assert head_start.take("work", "k") is None


def test_a_second_begin_cancels_the_first() -> None:
    cancelled: list[object] = []
    head_start.begin("work", started("first", 1, cancelled))
    head_start.begin("work", started("second", 2, cancelled))
    assert cancelled == ["first"]
    assert head_start.take("work", "second") == 2


def test_held_log_lines_go_to_the_taker_in_order(caplog: pytest.LogCaptureFixture) -> None:
    log = head_start.DeferredLog("civiclake.test.ahead")
    log.info("page %d written", 1)
    log.warning("retrying %s", "page 2")
    target = logging.getLogger("civiclake.test.run")
    with caplog.at_level(logging.INFO, logger="civiclake.test"):
        assert caplog.records == []  # held, not logged yet
        log.attach(target)
        log.info("page %d written", 2)
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("civiclake.test.run", "INFO", "page 1 written"),
        ("civiclake.test.run", "WARNING", "retrying page 2"),
        ("civiclake.test.run", "INFO", "page 2 written"),
    ]


def test_a_closed_prefetch_closes_its_generator() -> None:
    """Cancelling a head start stops its producer and runs the generator's cleanup (the
    fetch's HTTP client closes)."""
    closed = threading.Event()
    first = threading.Event()

    def pages():  # type: ignore[no-untyped-def]
        try:
            for n in range(1_000_000):
                yield n
                first.set()
        finally:
            closed.set()

    running = Prefetch(pages(), depth=2)
    running.start()
    assert first.wait(10)
    running.close(timeout=10)
    assert closed.is_set()
