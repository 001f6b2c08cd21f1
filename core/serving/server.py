"""Running the app on uvicorn: :func:`serve` blocks until the server stops (SIGINT / SIGTERM: uvicorn stops taking
connections and finishes the requests in flight first); :func:`stop_servers` stops the ones this process runs, as
those signals would (for a program that runs a server in a thread)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from .config import DEFAULT_PORT

_RUNNING: list[Any] = []
_LOCK = threading.Lock()


def serve(app: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT, log_level: str = "info") -> str | None:
    """Serve ``app`` (from :func:`~.app.create_app`) on ``host``:``port`` until stopped; the error that stopped it
    when its models failed to load, else None."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False))
    state = getattr(app.state, "flagstack", None)
    failure: list[str] = []
    if state is not None:

        def stop(error: str) -> None:
            failure.append(error)
            server.should_exit = True

        state.on_load_error = stop
    with _LOCK:
        _RUNNING.append(server)
    try:
        with _stopped_by_signals():
            server.run()
    finally:
        with _LOCK:
            _RUNNING.remove(server)
    if not server.started and not failure:
        return f"the server did not start on {host}:{port} (see the log above: is the port taken?)"
    return failure[0] if failure else None


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """uvicorn answers SIGINT / SIGTERM with a graceful shutdown and then raises the signal again for the handler
    that was there before; that handler is a no-op here, so a stopped server returns (exit status 0, no
    KeyboardInterrupt) instead of killing the process after its graceful shutdown."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in saved:
        signal.signal(number, lambda *_: None)
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


class _Waiting:
    """A server run elsewhere (Ray Serve) that this process waits on: stopped as a uvicorn server is."""

    should_exit = False


def wait_until_stopped(poll: float = 0.2) -> None:
    """Block until SIGINT / SIGTERM (in the main thread) or :func:`stop_servers` (the ``--ray`` server: Ray Serve
    runs it, this process only waits)."""
    waiting = _Waiting()
    with _LOCK:
        _RUNNING.append(waiting)
    saved = {}
    if threading.current_thread() is threading.main_thread():
        saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
        for number in saved:
            signal.signal(number, lambda *_: setattr(waiting, "should_exit", True))
    stop = threading.Event()
    try:
        while not waiting.should_exit:
            stop.wait(poll)
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
        with _LOCK:
            _RUNNING.remove(waiting)


def stop_servers() -> int:
    """Stop every server :func:`serve` runs in this process (each finishes its requests in flight); how many."""
    with _LOCK:
        servers = list(_RUNNING)
    for server in servers:
        server.should_exit = True
    return len(servers)
