"""Running the app: the ``promptgym serve`` process, and a server in a background thread.

``promptgym serve`` shuts down gracefully on SIGTERM or Ctrl-C: it stops accepting connections,
finishes every request in flight (a request cut off after ``request_timeout_s`` more is refunded) and
exits 0; a second Ctrl-C quits at once. Its access log never holds a query string (a key put in
``?api_key=`` is refused and not logged).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from promptgym.errors import ConfigError
from promptgym.lm.base import BlackBoxLM
from promptgym.serve.app import create_app
from promptgym.serve.config import ServerConfig
from promptgym.serve.keys import KeyStore


def _resolve(model: str | BlackBoxLM, keys_db: str | Path | KeyStore, dtype: str) -> tuple[BlackBoxLM, KeyStore]:
    from promptgym.lm import get_lm

    lm = get_lm(model, dtype) if isinstance(model, str) else model  # create_app checks it
    store = keys_db if isinstance(keys_db, KeyStore) else KeyStore(keys_db)
    return lm, store


class _RedactQuery(logging.Filter):
    """Drops the query string from access-log lines: a client that put a key in ``?api_key=`` (refused,
    the key goes in a header) must not find it stored in clear text in the operator's logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(a.split("?", 1)[0] + "?[redacted]" if isinstance(a, str) and a.startswith("/")
                                and "?" in a else a for a in record.args)
        return True


def serve(model: str | BlackBoxLM, keys_db: str | Path | KeyStore, host: str = "127.0.0.1", port: int = 8000,
          dtype: str = "bfloat16", config: ServerConfig | None = None, log_level: str = "info") -> None:
    """Serve until SIGTERM or Ctrl-C (the ``promptgym serve`` command), then shut down gracefully.

    The model runs on the main thread, which loaded it, and HTTP on a second thread: with torch's
    OpenMP threads, a process in which two threads run the model was measured ~20% slower per
    call on 2 cores (benchmarks/RESULTS.md, "Serving"). uvicorn installs signal handlers only on the
    main thread, so this function installs them: without, SIGTERM killed the process mid-request
    (the client saw a protocol error for a call that stayed charged). The first SIGTERM or SIGINT
    stops accepting connections and lets every request in flight finish (at most
    ``request_timeout_s``, then it is cancelled and refunded); a second SIGINT quits at once. A
    SIGKILL cannot be caught: calls reserved at that moment stay charged (:mod:`promptgym.serve.worker`).
    """
    import signal

    import uvicorn

    lm, store = _resolve(model, keys_db, dtype)
    config = config or ServerConfig()
    app = create_app(lm, store, config, worker_thread=False)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=True,
                                           timeout_graceful_shutdown=config.request_timeout_s + 5))
    access = logging.getLogger("uvicorn.access")  # configured by uvicorn.Config above
    redact = _RedactQuery()
    access.addFilter(redact)

    def on_signal(signum: int, frame: Any) -> None:
        if server.should_exit and signum == signal.SIGINT:
            server.force_exit = True
        server.should_exit = True

    saved = {}
    if threading.current_thread() is threading.main_thread():
        saved = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def run_http() -> None:
        try:
            server.run()
        finally:
            app.state.shutdown()  # ends the model loop below

    http = threading.Thread(target=run_http, name="promptgym-http", daemon=True)
    http.start()
    try:
        app.state.worker.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        http.join(timeout=30)
        store.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        access.removeFilter(redact)
    if not server.started:
        raise ConfigError(f"could not serve on {host}:{port} (is the port in use?)")


class ServerURL(str):
    """A running server's base URL; ``.app`` is its FastAPI app (tests read ``app.state``)."""

    app: FastAPI

    def __new__(cls, url: str, app: FastAPI) -> ServerURL:
        obj = super().__new__(cls, url)
        obj.app = app
        return obj


@contextlib.contextmanager
def run_app_in_background(app: Any, host: str = "127.0.0.1", port: int = 0,
                          log_level: str = "warning") -> Iterator[str]:
    """Run the ASGI ``app`` under uvicorn in a thread on ``host:port`` (0: a free port) and yield its base
    URL; stops it on exit. (Tests also run their own small FastAPI apps with it.)"""
    import uvicorn

    # uvicorn binds the port itself (0: a free one, read back once started); a socket bound here and
    # handed over answered every request ~40 ms late (measured: 46 ms vs 3.6 ms per GET /health)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                           lifespan="off", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, name="promptgym-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {host}:{port}")
            time.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def serve_in_background(model: str | BlackBoxLM, keys_db: str | Path | KeyStore, host: str = "127.0.0.1",
                        port: int = 0, dtype: str = "bfloat16", log_level: str = "warning",
                        **options: Any) -> Iterator[ServerURL]:
    """Run a server in a thread on ``host:port`` (0: a free port) and yield its base URL (a
    :class:`ServerURL`); stops it on exit.

    ``model``: a preset / Hugging Face name (loaded with ``dtype``) or a
    :class:`~promptgym.lm.base.BlackBoxLM`; ``keys_db``: a path or a :class:`KeyStore`; ``options``:
    :class:`ServerConfig` fields.
    """
    config = ServerConfig(**options)
    lm, store = _resolve(model, keys_db, dtype)
    app = create_app(lm, store, config)
    try:
        with run_app_in_background(app, host, port, log_level) as url:
            yield ServerURL(url, app)
    finally:
        app.state.shutdown()
        if store is not keys_db:
            store.close()
