"""``snaptail ui``: a web console and JSON API over one database (extra ``snaptail[ui]``).

The only package that imports the web libraries (Starlette, Jinja2, uvicorn);
``import snaptail`` loads none of it. See :func:`create_app` and :func:`serve`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from snaptail.ui.app import create_app
from snaptail.ui.data import BadRequest, Console, NotFound

__all__ = ["BadRequest", "Console", "NotFound", "check_bind", "create_app", "is_loopback", "serve"]

DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse (``ValueError``) a non-loopback ``host`` without a token: the console
    would show every agent's log to anyone who can reach the port."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to listen on {host}, which is not a loopback address, without a "
            "token: anyone who reaches it would read every agent's log. Give --token "
            "(or set SNAPTAIL_UI_TOKEN), or bind 127.0.0.1"
        )


def serve(
    db: str | None = None,
    view_db: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    keys: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the console with uvicorn until interrupted (after :func:`check_bind`).
    ``keys``: the key store URL for agents with data subjects (default
    ``$SNAPTAIL_KEYS_URL``). ``on_ready`` is called once the databases and the key
    store are open, before serving."""
    import uvicorn

    check_bind(host, token)
    hosts = None if token else [host, "localhost", "127.0.0.1", "::1", "[::1]"]
    app = create_app(db, view_db, token=token, allowed_hosts=hosts, keys=keys)
    if on_ready is not None:
        on_ready()
    uvicorn.run(app, host=host, port=port, log_level="warning")
