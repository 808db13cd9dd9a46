"""Debian's Chromium driven by Playwright, with the flags this network needs, and a guard that
blocks and counts every request leaving an allowed origin (tests of offline pages and the UI).

Never lets Playwright download a browser: ``/usr/bin/chromium`` (apt ``chromium``) or nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # without these Chromium floods a closed network with refused connections
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass
class Guard:
    """What a page asked for: requests let through, requests blocked, console errors."""

    allowed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@contextmanager
def chromium_page(profile_dir: Path, width: int = 1300, height: int = 1000) -> Iterator[Any]:
    """A fresh Chromium page (its own empty profile); closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(FLAGS),
            viewport={"width": width, "height": height},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def guard(page: Any, allow: tuple[str, ...]) -> Guard:
    """Block every request whose URL does not start with one of ``allow`` (counted either way)."""
    seen = Guard()

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(allow):
            seen.allowed.append(url)
            r.continue_()
        else:
            seen.blocked.append(url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.console_errors.append(str(e)))
    return seen
