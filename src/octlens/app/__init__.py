"""The local web app (``octlens serve``): drop a scan, see every run's answer and maps.

:func:`serve` loads the runs once (a folder that is not a run is a one-line error before any
port is opened) and serves :func:`~octlens.app.server.create_app` with uvicorn on the loopback
interface by default.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fastapi import FastAPI

from octlens.app.guard import LOOPBACK, served_names
from octlens.app.server import Limits, create_app, example_scans
from octlens.app.service import ScanService
from octlens.errors import OctlensError, arg


def build_app(
    runs: Sequence[str | Path],
    methods: Sequence[str] | None = None,
    limits: Limits | None = None,
    device: str | None = None,
    precision: str = "auto",
    hosts: Sequence[str] = LOOPBACK,
    layer: str | None = None,
) -> FastAPI:
    """The app for ``runs``, offering example scans from the first run's training data, and
    answering to the names ``hosts`` (:func:`~octlens.app.guard.served_names`); ``layer`` is
    the layer the CAMs explain (default: the last stage)."""
    service = ScanService(runs, methods, device=device, precision=precision, layer=layer)
    data = Path(str(service.runs[0].run.checkpoint.meta["config"]["data"]))
    return create_app(service, limits, example_scans(data), hosts=hosts)


def serve(
    runs: Sequence[str | Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    methods: Sequence[str] | None = None,
    limits: Limits | None = None,
    device: str | None = None,
    precision: str = "auto",
    announce: Callable[[str], None] = print,
    allow_hosts: Sequence[str] = (),
    layer: str | None = None,
) -> None:
    """Load the runs, then serve the app until interrupted; ``announce`` gets the address.

    The app answers to the loopback names, ``host`` and ``allow_hosts`` only (a page on another
    site cannot reach it under a name of its own). A bad port is refused before the runs load.
    """
    import uvicorn

    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise OctlensError(f"{arg('port')} {port}: a port number from 1 to 65535")
    hosts = served_names(host, allow_hosts)
    app = build_app(runs, methods, limits, device, precision, hosts, layer)
    announce(f"octlens: serving {len(runs)} run(s) at http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextlib.contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on a free port of ``host`` in a thread; yields its base URL. For tests,
    benchmarks and notebooks: the server stops when the block ends."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="octlens-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


__all__ = ["Limits", "ScanService", "background_server", "build_app", "create_app", "serve"]
