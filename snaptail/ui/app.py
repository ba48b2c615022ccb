"""The console's ASGI app: HTML pages and the ``/api/v1`` JSON API (Starlette).

Every route is a GET that reads (other methods get 405). Values from the log are
escaped by Jinja2's autoescaping and, in the one script, set as text (never as
HTML); a Content-Security-Policy allows only the console's own script and styles.
With a token, every request must carry it (``Authorization: Bearer``, the cookie
that ``?token=`` sets, or ``?token=`` itself); without one, only requests whose
``Host`` is a loopback name are served (against DNS rebinding).
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from snaptail.domain.memory import format_bytes
from snaptail.errors import SnaptailError
from snaptail.ui.data import BadRequest, Console, NotFound

logger = logging.getLogger("snaptail.ui")

COOKIE = "snaptail_ui_token"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
API_ENDPOINTS = {
    "/api/v1/fleet": "agents from the AgentStats read model: sort, order, q, page, per_page",
    "/api/v1/agents/{id}": "one agent: identity, status, version, snapshot health, memory",
    "/api/v1/agents/{id}/events": "its timeline, newest first: before, type, limit",
    "/api/v1/agents/{id}/events/{version}": "one event with its whole payload",
    "/api/v1/agents/{id}/at/{version}": "the agent as of a version, and what changed",
    "/api/v1/projections": "each projection's position, lag, worker and dead letters",
    "/api/v1/snapshots": "fingerprints per type; agents whose snapshot is not used",
    "/api/v1/snapshots/verify": "rebuild a random sample and compare (read-only): sample",
}


def _ago(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("snaptail.ui", "templates"), autoescape=True)
    env.filters["bytes"] = lambda n: "-" if n is None else format_bytes(int(n))
    env.filters["num"] = lambda n: "-" if n is None else f"{n:,}"
    env.filters["ago"] = _ago
    env.filters["money"] = lambda x: f"${float(x or 0):,.4f}"
    return env


class _Guard(BaseHTTPMiddleware):
    """The token check (when a token is set) and the security headers."""

    def __init__(self, app: Any, token: str | None) -> None:
        super().__init__(app)
        self.token = token

    def _allowed(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = [
            request.headers.get("authorization", "").removeprefix("Bearer ").strip(),
            request.cookies.get(COOKIE, ""),
            request.query_params.get("token", ""),
        ]
        return any(g and hmac.compare_digest(g.encode(), self.token.encode()) for g in given)

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not self._allowed(request):
            message = (
                "this console needs its token: open it with ?token=... in the address, "
                "or send 'Authorization: Bearer ...'"
            )
            response = _error(request, 401, message)
        elif self.token is not None and "token" in request.query_params:
            # Keep the token in a cookie and take it out of the address bar.
            query = urlencode([(k, v) for k, v in request.query_params.multi_items()
                               if k != "token"])  # fmt: skip
            response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), 303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        else:
            started = time.perf_counter()
            response = await call_next(request)
            # The server's own time for the request (browsers' dev tools show it).
            elapsed = (time.perf_counter() - started) * 1000
            response.headers["Server-Timing"] = f"app;dur={elapsed:.2f}"
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


_templates = _environment()


def _page(name: str, request: Request, code: int = 200, **context: Any) -> HTMLResponse:
    def url_with(**changes: Any) -> str:
        params = dict(request.query_params)
        params.pop("token", None)
        for key, value in changes.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = str(value)
        return request.url.path + ("?" + urlencode(params) if params else "")

    html = _templates.get_template(name).render(request=request, url_with=url_with, **context)
    return HTMLResponse(html, status_code=code)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, message: str) -> Response:
    if _is_api(request):
        return JSONResponse({"error": message, "status": status}, status_code=status)
    return _page("error.html", request, status, status=status, message=message)


def _closing(console: Console) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            console.close()

    return lifespan


def create_app(
    db: str | None = None,
    view_db: str | None = None,
    *,
    token: str | None = None,
    allowed_hosts: list[str] | None = None,
    keys: str | None = None,
) -> Starlette:
    """The console over the event database ``db`` (views in ``view_db``, default the
    same database). ``token``: required on every request. ``allowed_hosts``: the
    ``Host`` names served (default: loopback names only, or any with a token).
    ``keys``: the key store URL (default ``$SNAPTAIL_KEYS_URL``)."""
    console = Console(db, view_db, keys=keys)

    def handle(request: Request, action: Callable[[], Any], template: str) -> Response:
        data = action()
        if _is_api(request):
            return JSONResponse(data)
        return _page(template, request, data=data, db=console.db_url)

    def fleet(request: Request) -> Response:
        q = request.query_params
        return handle(
            request,
            lambda: console.fleet(sort=q.get("sort"), order=q.get("order"), q=q.get("q"),
                                  page=q.get("page"), per_page=q.get("per_page")),
            "fleet.html",
        )

    def agent(request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        if _is_api(request):
            return JSONResponse(console.agent(agent_id))
        q = request.query_params
        summary = console.agent(agent_id)
        timeline = console.events(
            agent_id, before=q.get("before"), type=q.get("type"), limit=q.get("limit")
        )
        return _page("agent.html", request, data=summary, timeline=timeline, db=console.db_url)

    def events(request: Request) -> Response:
        q = request.query_params
        return JSONResponse(
            console.events(request.path_params["agent_id"], before=q.get("before"),
                           type=q.get("type"), limit=q.get("limit"))
        )

    def event(request: Request) -> Response:
        p = request.path_params
        return handle(request, lambda: console.event(p["agent_id"], p["version"]), "event.html")

    def at_version(request: Request) -> Response:
        p = request.path_params
        version = p.get("version") or request.query_params.get("version") or ""
        return handle(
            request, lambda: console.at_version(p["agent_id"], version), "version.html"
        )

    def projections(request: Request) -> Response:
        return handle(request, console.projections, "projections.html")

    def snapshots(request: Request) -> Response:
        q = request.query_params
        return handle(
            request,
            lambda: console.snapshots(after=q.get("after"), limit=q.get("limit")),
            "snapshots.html",
        )

    def verify(request: Request) -> Response:
        sample = request.query_params.get("sample")
        return handle(request, lambda: console.verify(sample), "verify.html")

    def api_index(request: Request) -> Response:
        return JSONResponse({"version": "v1", "endpoints": API_ENDPOINTS})

    async def bad_request(request: Request, exc: Exception) -> Response:
        return _error(request, 400, str(exc))

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(request, 404, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = {404: f"no page at {request.url.path}",
                  405: f"{request.method} is not allowed: the console only reads"}  # fmt: skip
        return _error(request, exc.status_code, detail.get(exc.status_code, str(exc.detail)))

    async def snaptail_error(request: Request, exc: Exception) -> Response:
        logger.warning("console request %s failed: %s", request.url.path, exc)
        return _error(request, 500, f"{type(exc).__name__}: {exc}")

    async def crash(request: Request, exc: Exception) -> Response:
        logger.exception("console request %s failed", request.url.path, exc_info=exc)
        return _error(
            request, 500, f"internal error ({type(exc).__name__}); the server log has details"
        )

    static = resources.files("snaptail.ui") / "static"
    routes = [
        Route("/", fleet),
        Route("/agents/{agent_id}", agent),
        Route("/agents/{agent_id}/events/{version}", event),
        Route("/agents/{agent_id}/at", at_version),
        Route("/agents/{agent_id}/at/{version}", at_version),
        Route("/projections", projections),
        Route("/snapshots", snapshots),
        Route("/snapshots/verify", verify),
        Route("/api/v1", api_index),
        Route("/api/v1/fleet", fleet),
        Route("/api/v1/agents/{agent_id}", agent),
        Route("/api/v1/agents/{agent_id}/events", events),
        Route("/api/v1/agents/{agent_id}/events/{version}", event),
        Route("/api/v1/agents/{agent_id}/at/{version}", at_version),
        Route("/api/v1/projections", projections),
        Route("/api/v1/snapshots", snapshots),
        Route("/api/v1/snapshots/verify", verify),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    hosts = allowed_hosts or (["*"] if token else LOOPBACK_HOSTS)
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(_Guard, token=token),
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
        ],
        exception_handlers={
            BadRequest: bad_request,
            NotFound: not_found,
            HTTPException: http_error,
            SnaptailError: snaptail_error,
            Exception: crash,
        },
        lifespan=_closing(console),
    )
    app.state.console = console
    return app
