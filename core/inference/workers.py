"""One worker process per device, for spreading a call over several GPUs.

Each device gets a single-process :class:`concurrent.futures.ProcessPoolExecutor` (spawn start method)
whose initializer builds that device's runtime once. A worker that raises makes the call raise the
same exception; a worker that dies makes it raise a RuntimeError naming the device. Nothing waits
forever on a dead process.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_STATE: Any = None
_OPEN_POOLS: weakref.WeakSet[DevicePool] = weakref.WeakSet()


@atexit.register
def _close_open_pools() -> None:
    for device_pool in list(_OPEN_POOLS):
        device_pool.close()


def _init_worker(factory: Callable[[str], Any], device: str) -> None:
    global _STATE
    _STATE = factory(device)


def _call_worker(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return function(_STATE, *args, **kwargs)


class DevicePool:
    """Long-lived worker processes, one per device, each holding what ``factory(device)`` built.

    ``factory`` must be picklable (a module-level function or a dataclass with ``__call__``).
    """

    def __init__(self, factory: Callable[[str], Any], devices: Sequence[str]) -> None:
        self.factory = factory
        self.devices = list(devices)
        self._executors: dict[str, ProcessPoolExecutor] = {}
        self._lock = threading.Lock()
        _OPEN_POOLS.add(self)

    def _executor(self, device: str) -> ProcessPoolExecutor:
        executor = self._executors.get(device)
        if executor is None:
            executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.factory, device),
            )
            self._executors[device] = executor
        return executor

    def map(self, function: Callable[..., Any], shards: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        """Call ``function(state, *args, **kwargs)`` on worker i for shard i, where ``state`` is what the
        factory built in that worker (``function`` is e.g. an unbound method such as ``Runtime.compute``, so
        it must be picklable by reference); results in shard order."""
        if len(shards) > len(self.devices):
            raise ValueError(f"{len(shards)} shards for {len(self.devices)} devices")
        with self._lock:
            futures: list[tuple[str, Future[Any]]] = []
            for device, (args, kwargs) in zip(self.devices, shards, strict=False):
                futures.append((device, self._executor(device).submit(_call_worker, function, args, kwargs)))
            results: list[Any] = []
            try:
                for device, future in futures:
                    try:
                        results.append(future.result())
                    except BrokenProcessPool as exc:
                        self._discard(device)
                        raise RuntimeError(
                            f"the worker process for device {device} died or could not start "
                            f"({exc.__cause__ or exc}); see its error output above"
                        ) from exc
            except BaseException:
                for _, future in futures:
                    future.cancel()
                raise
            return results

    def map_sharded(self, function: Callable[..., Any], items: Sequence[Any], *args: Any) -> list[Any]:
        """Split ``items`` into one contiguous shard per device, call ``function(state, shard, *args)`` on
        each worker, and return the per-shard results in order."""
        size = math.ceil(len(items) / len(self.devices))
        shards: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            ((items[start : start + size], *args), {}) for start in range(0, len(items), size)
        ]
        return self.map(function, shards)

    def _discard(self, device: str) -> None:
        executor = self._executors.pop(device, None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop every worker process."""
        with self._lock:
            for device in list(self._executors):
                executor = self._executors.pop(device)
                executor.shutdown(wait=True, cancel_futures=True)

    def __del__(self) -> None:
        for executor in getattr(self, "_executors", {}).values():
            executor.shutdown(wait=False, cancel_futures=True)
