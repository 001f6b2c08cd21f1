"""Calls from many callers gathered into shared batches: one queue in front of each loaded model.

Every model call (:meth:`.runtime.Runtime.run`) goes through its runtime's :class:`CallQueue`. The model's runner
thread (one per model) takes what waits whenever the model is free: a call that finds it idle runs at once (a lone
caller pays one thread hand-over, nothing worth measuring); calls that arrive while it is busy wait, and the next run
takes everything waiting (up to ``gather_max_inputs`` inputs), one runtime call per set of equal options, so the
inputs of many callers share the token-budget batches; each caller gets exactly its own results, in order, and is
woken by its own answer alone. ``gather_window_ms`` makes a run wait that long for company. Running every model
call on one thread keeps the math libraries' thread-local buffers (MKL, oneDNN, OpenMP) once per model, not once for
every thread that ever led a run (with hundreds of concurrent callers that was some 150 MB more resident memory).

Threads, asyncio tasks (:func:`run_async`) and the HTTP server's requests all meet in the same queue. The queue is
bounded by ``queue_limit`` (past it a call fails at once with :class:`QueueFull`); a call that is cancelled while it
waits (its ``run_async`` awaiter was cancelled: a client went away, a deadline passed) is dropped before it runs.
A model call that fails (whatever it raises) fails the calls of that runtime call alone; the runner goes on.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
OptionsT = TypeVar("OptionsT")
ResultT = TypeVar("ResultT")
T = TypeVar("T")

# threads that wait for gathered calls (waiting costs no CPU; the work runs in one of them at a time per model)
WAITING_THREADS = 256
# how long a call that is about to run alone waits for run_async calls already started but not yet queued
# (asyncio.gather of many calls starts their threads one after another): at most this, and not at all when none is
# on its way or other calls wait already
ARRIVAL_WAIT_S = 0.005
# how often an idle runner looks whether its queue still exists (a freed queue also wakes it at once)
RUNNER_IDLE_CHECK_S = 30.0


class QueueFull(RuntimeError):
    """A model's queue holds ``queue_limit`` calls already: try again later (HTTP: 503 with Retry-After)."""

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(f"{limit} calls are already waiting for this model (queue_limit); try again in "
                         f"{retry_after:.0f} s or raise queue_limit")
        self.limit = limit
        self.retry_after = retry_after


class CallToken:
    """What cancels the model calls one :func:`run_async` call makes while they still wait in a queue."""

    def __init__(self) -> None:
        self.cancelled = False
        self._calls: list[tuple[CallQueue[Any, Any, Any], Future[Any]]] = []
        self._lock = threading.Lock()
        self.arriving = True  # started, not yet in a queue (counted in _Arrivals)

    def attach(self, queue: CallQueue[Any, Any, Any], future: Future[Any]) -> None:
        with self._lock:
            if not self.cancelled:
                self._calls.append((queue, future))
                return
        if future.cancel():  # cancelled between the caller's check and here: dropped all the same
            queue.discard(future)

    def cancel(self) -> None:
        """Drop every call still waiting (one already running finishes; its result is thrown away)."""
        with self._lock:
            self.cancelled = True
            calls, self._calls = self._calls, []
        for queue, future in calls:
            if future.cancel():
                queue.discard(future)


class _Arrivals:
    """How many run_async calls have started and not yet reached a queue (or finished without one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self._lock:
            self.count += 1

    def done(self, token: CallToken) -> None:
        with self._lock:
            if token.arriving:
                token.arriving = False
                self.count -= 1


_ARRIVALS = _Arrivals()
_TOKEN: contextvars.ContextVar[CallToken | None] = contextvars.ContextVar("flagstack_call_token", default=None)
_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=WAITING_THREADS, thread_name_prefix="flagstack-call")
        return _EXECUTOR


async def run_async(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in a waiting thread, without blocking the event loop: the model calls it makes
    are gathered with every other caller's (see :mod:`.gather`). Cancelling the await drops those calls that still
    wait; the asyncio methods of flagstack's LangChain and LlamaIndex classes and the HTTP server use it."""
    token = CallToken()
    context = contextvars.copy_context()
    context.run(_TOKEN.set, token)

    def call() -> T:
        try:
            return context.run(function, *args, **kwargs)
        finally:
            _ARRIVALS.done(token)

    _ARRIVALS.add()
    try:
        future = asyncio.get_running_loop().run_in_executor(_executor(), call)
    except BaseException:
        _ARRIVALS.done(token)
        raise
    future.add_done_callback(settle)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        token.cancel()
        raise


def settle(future: asyncio.Future[Any]) -> None:
    """A done-callback for a future whose awaiter may be gone: reads its error, so asyncio does not warn that it
    was never retrieved."""
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)
class _Call(Generic[ItemT, OptionsT]):
    items: list[ItemT]
    options: OptionsT
    future: Future[Any] = field(default_factory=Future)


def _answer(future: Future[T], execute: Callable[..., T], *args: Any) -> None:
    """``future`` answered with ``execute(*args)`` run here, or with what it raises."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(execute(*args))
    except BaseException as error:
        future.set_exception(error)


def _wake(box: list[threading.Condition]) -> None:
    """Wake a runner whose queue was freed (it then ends)."""
    with box[0]:
        box[0].notify_all()


_QUEUES: weakref.WeakSet[CallQueue[Any, Any, Any]] = weakref.WeakSet()
_EXITING = False


def _at_exit() -> None:
    """Before the interpreter joins its threads: each runner finishes what waits and ends, and is waited for (a
    runner killed inside a model run aborts the process)."""
    global _EXITING
    _EXITING = True
    runners = []
    for queue in list(_QUEUES):
        with queue._condition:
            queue._condition.notify_all()
            runner = queue._runner
        if runner is not None and runner is not threading.current_thread():
            runners.append(runner)
    for runner in runners:
        runner.join()


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads: every queue starts over (a new lock, no runner, none of the
    parent's waiting calls, whose callers are not in this process), as do the waiting threads and arrival count."""
    global _EXECUTOR, _EXECUTOR_LOCK
    _EXECUTOR, _EXECUTOR_LOCK = None, threading.Lock()
    _ARRIVALS.__init__()  # type: ignore[misc]
    for queue in list(_QUEUES):
        queue._start_over()


getattr(threading, "_register_atexit", atexit.register)(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _serve(owner: weakref.ReferenceType[CallQueue[Any, Any, Any]], condition: threading.Condition) -> None:
    """The model's runner thread: runs what waits in the queue, one gathered run after another, for as long as the
    queue exists. It holds the queue only while it runs something (a freed queue wakes it, and it ends)."""
    while True:
        queue = owner()
        if queue is None:
            return
        with condition:
            if not queue._waiting:
                del queue
                if _EXITING:
                    return
                if owner() is not None:  # (freeing it here would have sent its wake-up before this wait)
                    condition.wait(RUNNER_IDLE_CHECK_S)
                continue
        try:
            queue._serve_waiting()
        except BaseException:  # nothing ends the runner (the calls it took are answered by _serve_waiting)
            logger.exception("the model's runner met an error outside a model run; it goes on")
        del queue


class CallQueue(Generic[ItemT, OptionsT, ResultT]):
    """The queue in front of one runtime: ``run(items, options)`` gives ``execute(items, options)``'s result for the
    caller's items, having run them together with other callers' waiting items of the same options.

    The model's runner thread (made at the first call) takes what waits and runs it; a caller only waits for its
    own result, so nothing wakes the callers but their own answers. ``settings`` is read at every call and run
    (``gather_window_ms``, ``gather_max_inputs``, ``queue_limit``); ``split`` takes a result and the positions of
    one caller's items in it.
    """

    def __init__(self, execute: Callable[[list[ItemT], OptionsT], ResultT],
                 split: Callable[[ResultT, list[int]], ResultT], settings: Callable[[], Any]) -> None:
        self._execute = execute
        self._split = split
        self._settings = settings
        self._waiting: list[_Call[ItemT, OptionsT]] = []
        # event loops whose current turn queued calls here: more of that turn's calls may follow (a hint for the
        # runner's arrival wait, cleared when the turn ends; a closed loop's is dropped)
        self._turns: set[asyncio.AbstractEventLoop] = set()
        # only the runner waits on it (re-entrant: a queue freed while its runner holds the lock wakes it)
        self._condition = threading.Condition(threading.RLock())
        self._box = [self._condition]  # what a freed queue's finalizer wakes (a forked child gets a new one)
        self._runner: threading.Thread | None = None  # the one thread runtime calls run on (made at first use)
        weakref.finalize(self, _wake, self._box)
        _QUEUES.add(self)
        self.runs = 0  # runtime calls made (each one or more callers' items)
        self.calls = 0  # callers' calls answered
        # called after each runtime call with (callers, inputs, seconds): the server's metrics
        self.observers: list[Callable[[int, int, float], None]] = []

    @property
    def depth(self) -> int:
        """Calls waiting now (not counting the ones running)."""
        with self._condition:
            return len(self._waiting)

    def refusal(self) -> QueueFull | None:
        """The :class:`QueueFull` a call made now would meet (None: it would be taken), for callers that can refuse
        work before preparing it (the server answers 503 before reading a request's texts)."""
        limit = self._settings().queue_limit
        with self._condition:
            return self._refusal(limit)

    def _refusal(self, limit: int | None) -> QueueFull | None:  # with the lock held
        return QueueFull(limit, retry_after=1.0) if limit is not None and len(self._waiting) >= limit else None

    def discard(self, future: Future[Any]) -> None:
        """Take a cancelled call out of the queue (it no longer counts towards queue_limit or depth)."""
        with self._condition:
            self._waiting = [call for call in self._waiting if call.future is not future]

    def run(self, items: list[ItemT], options: OptionsT) -> ResultT:
        """The result for ``items`` (in order), gathered with other callers' items of equal ``options``."""
        token = _TOKEN.get()
        if token is not None and token.cancelled:
            raise CancelledError()
        future = self.submit(items, options, token)
        if token is not None:
            token.attach(self, future)
        try:
            return future.result()  # raises CancelledError when it was dropped
        except BaseException:
            if future.cancel():  # the caller stopped waiting (an interrupt): its call is dropped, not run
                self.discard(future)
            raise

    async def arun(self, items: list[ItemT], options: OptionsT) -> ResultT:
        """:meth:`run` for asyncio callers, without a thread of their own: the call waits in the queue and the
        event loop goes on; cancelling the await drops the call unless it already runs (then its result is
        thrown away)."""
        future = self.submit(items, options, loop=asyncio.get_running_loop())
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancel():
                self.discard(future)
            raise

    def submit(self, items: list[ItemT], options: OptionsT, token: CallToken | None = None,
               loop: asyncio.AbstractEventLoop | None = None) -> Future[ResultT]:
        """Queue a call and return at once: the future gets its result (or its error). A full queue raises
        :class:`QueueFull` here. ``token``: the :func:`run_async` call it belongs to (no longer on its way).
        ``loop``: the running event loop of the calling thread (asyncio callers): a run about to start waits
        (at most ``ARRIVAL_WAIT_S``) for the end of that loop's turn, so the calls its tasks make in one turn run
        together (``asyncio.gather`` of many calls: one run, not one for the first call and one for the rest)."""
        future: Future[ResultT] = Future()
        if threading.current_thread() is self._runner:  # a model call made while running one (no queue within)
            _answer(future, self._execute, items, options)
            return future
        settings = self._settings()
        with self._condition:
            refused = self._refusal(settings.queue_limit)
            if refused is not None:
                raise refused
            call = _Call(items, options, future)
            if loop is not None and loop not in self._turns:
                loop.call_soon(self._turn_ended, loop)  # first: a loop that cannot take it leaves nothing behind
                self._turns.add(loop)
            if not self._runner_started():  # the interpreter is shutting down: no new threads; run here (under
                _answer(future, self._execute, items, options)  # the lock: still one run at a time)
                return future
            if token is not None:  # no longer on its way (the runner's arrival wait reads this under the lock)
                _ARRIVALS.done(token)
            self._waiting.append(call)
            self._condition.notify_all()
        return future

    def _turn_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on ``loop`` after the turn that queued calls here: the runner need not wait for more of them."""
        with self._condition:
            self._turns.discard(loop)
            self._condition.notify_all()

    def _turn_pending(self) -> bool:  # with the lock held
        self._turns = {loop for loop in self._turns if not loop.is_closed()}
        return bool(self._turns)

    def _runner_started(self) -> bool:
        """Start the runner thread unless it runs (called with the lock held); False when no thread can start."""
        if self._runner is not None and self._runner.is_alive():
            return True
        runner = threading.Thread(target=_serve, args=(weakref.ref(self), self._condition), daemon=True,
                                  name="flagstack-model")
        try:
            runner.start()
        except RuntimeError:
            return False
        self._runner = runner
        return True

    def _start_over(self) -> None:
        """After a fork, in the child (see :func:`_after_fork_in_child`)."""
        self._condition = threading.Condition(threading.RLock())
        self._box[0] = self._condition
        self._runner = None
        self._waiting = []
        self._turns = set()

    def _serve_waiting(self) -> None:
        """On the runner: take what waits (up to ``gather_max_inputs`` inputs, after the window and the arrival
        wait) and run it, one runtime call per set of equal options."""
        try:
            settings = self._settings()
        except BaseException as error:  # the runtime is gone: every waiting call is told so
            with self._condition:
                waiting, self._waiting = self._waiting, []
            for call in waiting:
                if call.future.set_running_or_notify_cancel():
                    call.future.set_exception(error)
            return
        taken: list[_Call[ItemT, OptionsT]] = []
        try:
            self._take_and_run(settings, taken)
        finally:  # a call taken here is always answered, whatever stopped the run
            for call in taken:
                if not call.future.done():
                    call.future.set_exception(RuntimeError("the model run that held this call was interrupted"))

    def _take_and_run(self, settings: Any, taken: list[_Call[ItemT, OptionsT]]) -> None:
        cap = settings.gather_max_inputs
        now = time.monotonic()
        window_end = now + float(settings.gather_window_ms or 0.0) / 1000.0
        with self._condition:
            # the arrival wait serves a burst that meets an idle model (asyncio.gather of many calls through
            # run_async: their threads start one after another; under steady load the calls that came during the
            # last run are already here), and waits for the end of an event loop's turn that is queuing calls
            arrival_end = now + ARRIVAL_WAIT_S
            burst = len(self._waiting) <= 1
            while sum(len(call.items) for call in self._waiting) < cap:
                now = time.monotonic()
                arriving = (burst and _ARRIVALS.count > 0) or self._turn_pending()
                end = max(window_end, arrival_end if arriving else now)
                if end <= now:
                    break
                self._condition.wait(end - now)
            count = 0
            while self._waiting and (not taken or count + len(self._waiting[0].items) <= cap):
                call = self._waiting.pop(0)
                if call.future.set_running_or_notify_cancel():
                    taken.append(call)
                    count += len(call.items)
        groups: dict[Any, list[_Call[ItemT, OptionsT]]] = {}
        for call in taken:
            groups.setdefault(call.options, []).append(call)
        for options, calls in groups.items():
            self._run_group(options, calls)

    def _run_group(self, options: OptionsT, calls: Sequence[_Call[ItemT, OptionsT]]) -> None:
        items = [item for call in calls for item in call.items]
        started = time.perf_counter()
        try:
            result = self._execute(items, options)
            parts = [result] if len(calls) == 1 else []
            start = 0
            for call in calls if len(calls) > 1 else ():
                parts.append(self._split(result, list(range(start, start + len(call.items)))))
                start += len(call.items)
        except BaseException as error:  # every caller of this runtime call gets its error; the runner goes on
            for call in calls:
                call.future.set_exception(error)
            return
        self.runs += 1  # counted before the callers are answered (a caller may read the counts at once)
        self.calls += len(calls)
        for call, part in zip(calls, parts, strict=True):
            call.future.set_result(part)
        for observer in self.observers:
            try:
                observer(len(calls), len(items), time.perf_counter() - started)
            except BaseException:  # a metrics callback never fails the callers (they have their results) or the runner
                logger.exception("a gather observer failed")
