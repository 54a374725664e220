"""rightfocus studio: a local web app to inspect explanations, paint "don't look here" masks,
retrain with them and compare (``rightfocus studio RUN_DIR``).

``create_app(session)`` is the ASGI app (FastAPI; the API is documented at ``/docs``);
:func:`serve` runs it with uvicorn. It binds to 127.0.0.1 unless told otherwise; any other
address requires an access token, generated here and printed once.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable
from typing import Any

from rightfocus.studio.app import create_app
from rightfocus.studio.session import StudioSession

__all__ = ["StudioSession", "create_app", "is_loopback", "serve", "studio_url"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def studio_url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(
    session: StudioSession,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    announce: Callable[[str], None] = print,
    **uvicorn_options: Any,
) -> None:
    """Serve the studio until interrupted. A non-loopback ``host`` gets a generated token
    (printed once in the URL) unless one is given; ``port=0`` picks a free port."""
    # heavy: uvicorn, only when serving
    import uvicorn

    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    if port == 0:
        port = free_port(host)
    app = create_app(session, token=token)
    announce(f"rightfocus studio for {session.run_name}: {studio_url(host, port, token)}")
    if token and not is_loopback(host):
        announce("Anyone with this URL can edit the feedback store; share it only with annotators.")
    uvicorn.run(app, host=host, port=port, log_level="warning", **uvicorn_options)
