"""Running the app with uvicorn: in the foreground (``rankguide-edge serve``) or in a background thread
(tests, benchmarks, notebooks)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import NativeError
from .settings import ServerConfig


def _uvicorn() -> Any:
    from . import require_server_deps

    require_server_deps()
    import uvicorn

    return uvicorn


class BackgroundServer:
    """A uvicorn server for ``app`` on ``host:port`` (port 0 picks a free one) in a daemon thread.

    >>> with BackgroundServer(create_app(settings)) as srv:      # doctest: +SKIP
    ...     urllib.request.urlopen(srv.url + "/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
                 startup_timeout: float = 300.0) -> None:
        uvicorn = _uvicorn()
        self.app = app
        self.startup_timeout = startup_timeout
        self._config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                                      timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", None) or []
        for s in servers:
            for sock in s.sockets:
                return int(sock.getsockname()[1])
        return int(self._config.port)

    @property
    def base_url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        return f"http://{self._config.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI API root, ``http://host:port/v1``."""
        return self.base_url + "/v1"

    def start(self) -> BackgroundServer:
        """Start serving; returns once the app has started (models loaded) or raises NativeError."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._server.run, name="rankguide-uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self._thread = None
                raise NativeError("the server failed to start (see the log above): check the models and the port")
            if time.monotonic() > deadline:
                self.stop()
                raise NativeError(f"the server did not start within {self.startup_timeout:g} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the app's shutdown (workers joined, models closed)."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=60)
        self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(settings: ServerConfig, *, log_level: str = "info", progress: bool = True) -> None:
    """Load the models, then serve ``settings.host:settings.port`` in the foreground until interrupted."""
    uvicorn = _uvicorn()
    from .app import create_app
    from .solvers import SharedModelSolvers

    app = create_app(settings, SharedModelSolvers(settings, progress=progress))
    app.state.pool.start()  # load the models now: a missing model is a one-line error, not a traceback
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, lifespan="on",
                    timeout_graceful_shutdown=5)
    finally:
        app.state.pool.close()
