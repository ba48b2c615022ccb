"""The console in a real browser: Playwright driving Debian's Chromium against a
uvicorn server on a free port. Screenshots go to ``test-artifacts/console/``
(kept by CI as artifacts; docs/console.png is one of them).

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; .ci/run installs it) or
``$SNAPTAIL_CHROMIUM``; skipped without it, unless ``SNAPTAIL_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from snaptail import AgentStore
from snaptail.projections import AgentStats, ProjectionWorker
from snaptail.ui import create_app
from tests.ui_support import XSS_NAME, Fleet, seed_fleet

CHROMIUM = os.environ.get("SNAPTAIL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"

pytestmark = pytest.mark.timeout(300)


def _browser_missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc})"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = _browser_missing()
    if problem:
        if os.environ.get("SNAPTAIL_REQUIRE_BROWSER") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """uvicorn serving the console in a thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        self.port = _free_port()
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the console did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return seed_fleet(f"sqlite:///{tmp_path_factory.mktemp('console') / 'agents.db'}")


@pytest.fixture(scope="module")
def server(fleet: Fleet) -> Iterator[str]:
    with Server(create_app(fleet.url)) as running:
        yield f"http://127.0.0.1:{running.port}"


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.dialogs = dialogs
    try:
        yield page
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        context.close()
        assert not dialogs, f"a script ran in the page: {dialogs}"


def _rows(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("#fleet tbody tr td:nth-child(2)").all_inner_texts()]


def test_fleet_sort_search_and_open_an_agent(page: Any, server: str, fleet: Fleet) -> None:
    page.goto(server + "/")
    assert page.locator("#read-model").get_attribute("data-state") == "current"
    assert page.locator("#fleet tbody tr").count() == 4
    assert _rows(page)[0] == str(fleet.big)  # by events, most first
    assert page.locator("#chart svg").count() == 2
    page.screenshot(path=str(_artifact("fleet.png")), full_page=True)
    page.click("#sort-name")
    names = page.locator("#fleet tbody .agent-link").all_inner_texts()
    assert [n.lower() for n in names] == sorted(n.lower() for n in names)
    page.click("#sort-name")  # again: the other way
    assert page.locator("#fleet tbody .agent-link").all_inner_texts() == list(reversed(names))
    page.fill("#search", "support")
    page.click("#search-button")
    assert _rows(page) == [str(fleet.chat)]
    page.fill("#search", str(fleet.small)[:5])
    page.click("#search-button")
    assert str(fleet.small) in _rows(page)
    page.click(f"a[href='/agents/{fleet.small}']")
    assert page.locator("#agent-name").inner_text() == "tiny helper"
    assert page.locator("#agent-status").inner_text() == "paused"


def test_timeline_older_events_filter_and_time_travel(page: Any, server: str, fleet: Fleet) -> None:
    page.goto(f"{server}/agents/{fleet.big}")
    head = int(page.locator("#agent-version").inner_text())
    first = page.locator("li.event").first
    assert int(first.get_attribute("data-version")) == head
    first.locator("summary").click()
    assert first.locator("pre.payload").is_visible()
    page.screenshot(path=str(_artifact("agent.png")), full_page=False)
    page.click("#older-events")
    versions = [int(v) for v in page.locator("li.event").evaluate_all(
        "items => items.map(i => i.dataset.version)")]  # fmt: skip
    assert versions == list(range(head - 50, head - 100, -1))
    page.select_option("#type-select", "ToolCallCompleted")
    page.click("#filter-button")
    types = set(page.locator("li.event").evaluate_all("items => items.map(i => i.dataset.type)"))
    assert types == {"ToolCallCompleted"}
    cut = page.locator("li.event .cut a").first
    cut.locator("xpath=ancestor::details").locator("summary").click()
    cut.click()
    assert page.locator("#full-payload").is_visible()
    page.goto(f"{server}/agents/{fleet.big}")
    page.fill("#travel-version", str(head - 1))
    page.click("#travel-button")
    assert page.locator("#travel-at").inner_text() == str(head - 1)
    assert page.locator("#travel-event").inner_text() == "InputItemAdded"
    assert page.locator("#changes tbody tr").count() >= 1
    assert "state.window.items" in page.locator("#changes").inner_text()
    page.click("#travel-prev")
    assert page.locator("#travel-at").inner_text() == str(head - 2)


def test_values_from_the_log_render_as_text(page: Any, server: str, fleet: Fleet) -> None:
    page.goto(server + "/")
    assert page.get_by_text(XSS_NAME, exact=True).count() >= 1
    page.goto(f"{server}/agents/{fleet.big}")
    assert page.locator("#agent-name").inner_text() == XSS_NAME
    head = int(page.locator("#agent-version").inner_text())
    page.goto(f"{server}/agents/{fleet.big}/events/{head - 1}")
    assert "<img src=x" in page.locator("#full-payload").inner_text()
    assert page.locator("main img").count() == 0
    # (the page fixture fails the test if any dialog - alert() - was opened)


def test_projection_lag_drops_after_catch_up(page: Any, server: str, fleet: Fleet) -> None:
    page.goto(server + "/projections")
    lag = page.locator("tr[data-name='AgentStats'] [data-field='lag_events']")
    assert lag.inner_text() == "0"
    with AgentStore(fleet.url) as store:
        agent = store.get(fleet.chat)
        for i in range(5):
            agent.add_input("user", f"while you watch {i}")
        store.save(agent)
    page.wait_for_function(  # the page polls every second
        "() => document.querySelector(\"tr[data-name='AgentStats'] .lag\").textContent === '5'",
        timeout=10_000,
    )
    page.screenshot(path=str(_artifact("projections-behind.png")), full_page=True)
    with ProjectionWorker(AgentStats, fleet.url) as worker:
        assert worker.catch_up() == 5
    page.wait_for_function(
        "() => document.querySelector(\"tr[data-name='AgentStats'] .lag\").textContent === '0'",
        timeout=10_000,
    )


def test_snapshots_page_and_verify(page: Any, server: str, fleet: Fleet) -> None:
    page.goto(server + "/snapshots")
    assert "missing" in page.locator("#snapshot-problems").inner_text()
    page.fill("#verify-sample", "3")
    page.click("#verify-button")
    assert page.locator("#verdicts tbody tr").count() == 3


def test_a_non_loopback_bind_refuses_requests_without_the_token(
    page: Any, fleet: Fleet
) -> None:
    host = _outward_address()
    with Server(create_app(fleet.url, token="s3cret"), host="0.0.0.0") as running:
        base = f"http://{host}:{running.port}"
        response = page.goto(base + "/")
        assert response.status == 401
        assert "needs its token" in page.locator("#error-message").inner_text()
        page.screenshot(path=str(_artifact("token-refused.png")), full_page=True)
        response = page.goto(base + "/?token=s3cret")
        assert response.status == 200 and page.url == base + "/"
        assert page.locator("#fleet tbody tr").count() == 4
        assert page.goto(base + "/projections").status == 200  # the cookie carries it


def _outward_address() -> str:
    """This machine's address on its network (127.0.0.1 if it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
