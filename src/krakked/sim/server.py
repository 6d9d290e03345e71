"""Serving the simulator over real HTTP on loopback: ``krakked sim serve`` and test servers."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from krakked.sim.app import Simulator

__all__ = ["connection_info", "is_loopback", "open_socket", "running", "serve"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_socket(host: str, port: int, *, allow_remote: bool = False) -> socket.socket:
    """A listening socket (port 0 = a free one); non-loopback hosts need ``allow_remote``."""
    if not is_loopback(host) and not allow_remote:
        raise ValueError(
            f"refusing to serve the simulator on {host!r}: it is not a loopback address "
            "(pass --allow-remote if you really mean it)"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def connection_info(sim: Simulator, sock: socket.socket) -> dict[str, Any]:
    """The JSON line ``krakked sim serve --json`` prints: URLs and the demo key pairs."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    spot = sim.config.account("spot")
    futures = sim.config.account("futures")
    return {
        "spot_url": base,
        "futures_url": base,
        "ws_url": f"ws://{shown}:{port}/v2",
        "api_key": spot.api_key,
        "api_secret": spot.api_secret,
        "futures_api_key": futures.api_key,
        "futures_api_secret": futures.api_secret,
    }


def _server(sim: Simulator) -> uvicorn.Server:
    config = uvicorn.Config(sim.app, log_level="warning", lifespan="off", access_log=False,
                            timeout_graceful_shutdown=1)
    return uvicorn.Server(config)


def serve(sim: Simulator, sock: socket.socket) -> None:
    """Serve ``sim`` on the listening ``sock`` until interrupted (Ctrl-C)."""
    _server(sim).run(sockets=[sock])


@contextlib.contextmanager
def running(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[dict[str, Any]]:
    """Serve ``sim`` in a background thread for the duration of the block; yields the info."""
    sock = open_socket(host, port)
    server = _server(sim)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.01)
        yield connection_info(sim, sock)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
