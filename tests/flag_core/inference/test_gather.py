"""The queue in front of each model: concurrent callers share runs, each gets exactly its own results; a lone call
runs in its own thread; the queue is bounded; a cancelled call is dropped; a failing run fails its callers only."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from flag_core import FlagModel, FlagReranker, QueueFull
from flag_core.frameworks import run_async
from flag_core.inference.gather import CallQueue


class Recorder:
    """A runtime stand-in: each run records its items, options and thread; a run can be held until released."""

    def __init__(self, **settings: Any) -> None:
        self.runs: list[tuple[list[str], Any, int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()
        self.fail_on: set[str] = set()
        values = {"gather_window_ms": 0.0, "gather_max_inputs": 4096, "queue_limit": None, **settings}
        self.settings = SimpleNamespace(**values)
        self.queue: CallQueue[str, Any, list[str]] = CallQueue(self.execute, self.split, lambda: self.settings)

    def execute(self, items: list[str], options: Any) -> list[str]:
        self.runs.append((list(items), options, threading.get_ident()))
        self.started.set()
        self.hold.wait(10)
        if self.fail_on & set(items):
            raise RuntimeError(f"model failed on {sorted(self.fail_on & set(items))}")
        return [f"{item}:{options}" for item in items]

    @staticmethod
    def split(result: list[str], positions: list[int]) -> list[str]:
        return [result[i] for i in positions]


def start(target: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = target(*args)
        except BaseException as error:  # the test reads it
            box["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        event.wait(0.005)
    raise AssertionError("condition not reached")


def test_a_lone_call_runs_at_once_and_every_run_is_on_the_models_one_runner_thread() -> None:
    recorder = Recorder()
    assert recorder.queue.run(["a", "b"], 1) == ["a:1", "b:1"]
    other, box = start(recorder.queue.run, ["c"], 2)
    other.join(10)
    assert box["result"] == ["c:2"]
    (_, _, first), (_, _, second) = recorder.runs
    assert [run[:2] for run in recorder.runs] == [(["a", "b"], 1), (["c"], 2)]
    # one thread per model, neither caller's (thread-local MKL / oneDNN buffers exist once, not per caller thread)
    assert first == second and first not in (threading.get_ident(), other.ident)


def test_calls_that_arrive_while_busy_share_one_run_and_get_their_own_results() -> None:
    recorder = Recorder()
    recorder.hold.clear()
    first, first_box = start(recorder.queue.run, ["x"], 1)
    assert recorder.started.wait(10)
    others = [start(recorder.queue.run, [f"t{i}a", f"t{i}b"], 1) for i in range(8)]
    wait_for(lambda: recorder.queue.depth == 8)
    recorder.hold.set()
    for thread, _ in [(first, first_box), *others]:
        thread.join(10)
    assert first_box["result"] == ["x:1"]
    for i, (_, box) in enumerate(others):
        assert box["result"] == [f"t{i}a:1", f"t{i}b:1"]
    assert len(recorder.runs) == 2 and len(recorder.runs[1][0]) == 16  # the eight waiting calls in one run
    assert recorder.queue.runs == 2 and recorder.queue.calls == 9


def test_calls_with_other_options_run_apart_and_the_largest_batch_is_kept() -> None:
    recorder = Recorder(gather_max_inputs=4)
    recorder.hold.clear()
    first, _ = start(recorder.queue.run, ["x"], 1)
    assert recorder.started.wait(10)
    calls = [start(recorder.queue.run, [f"{i}a", f"{i}b"], i % 2) for i in range(4)]
    wait_for(lambda: recorder.queue.depth == 4)
    recorder.hold.set()
    for thread, _ in calls:
        thread.join(10)
    for i, (_, box) in enumerate(calls):
        assert box["result"] == [f"{i}a:{i % 2}", f"{i}b:{i % 2}"]
    assert all(len(items) <= 4 for items, _, _ in recorder.runs)
    assert all(len({item.split(":")[0][-1] for item in items}) >= 1 for items, _, _ in recorder.runs)
    for items, options, _ in recorder.runs[1:]:
        assert all(int(item[0]) % 2 == options for item in items)  # a run holds calls of one set of options
    first.join(10)


def test_a_failing_run_fails_its_callers_and_the_queue_goes_on() -> None:
    recorder = Recorder()
    recorder.hold.clear()
    recorder.fail_on = {"bad"}
    first = start(recorder.queue.run, ["x"], 0)
    assert recorder.started.wait(10)
    bad = start(recorder.queue.run, ["bad"], 1)
    good_same_run = start(recorder.queue.run, ["fine"], 1)
    good_other = start(recorder.queue.run, ["other"], 2)
    wait_for(lambda: recorder.queue.depth == 3)
    recorder.hold.set()
    for thread, _ in (first, bad, good_same_run, good_other):
        thread.join(10)
    assert first[1]["result"] == ["x:0"]
    assert "model failed on ['bad']" in str(bad[1]["error"])
    assert "model failed" in str(good_same_run[1]["error"])  # the same model call: its callers share its failure
    assert good_other[1]["result"] == ["other:2"]
    assert recorder.queue.run(["after"], 0) == ["after:0"]


def test_the_queue_is_bounded() -> None:
    recorder = Recorder(queue_limit=2)
    recorder.hold.clear()
    first, _ = start(recorder.queue.run, ["x"], 0)
    assert recorder.started.wait(10)
    waiting = [start(recorder.queue.run, [f"w{i}"], 0) for i in range(2)]
    wait_for(lambda: recorder.queue.depth == 2)
    with pytest.raises(QueueFull, match="queue_limit") as caught:
        recorder.queue.run(["one too many"], 0)
    assert caught.value.retry_after > 0
    recorder.hold.set()
    for thread, _box in [(first, {}), *waiting]:
        thread.join(10)
    assert [box["result"] for _, box in waiting] == [["w0:0"], ["w1:0"]]


def test_a_call_run_while_running_one_goes_straight_through() -> None:
    recorder = Recorder()
    inner: list[Any] = []

    def execute(items: list[str], options: Any) -> list[str]:
        if options == "outer":
            inner.append(queue.run(["nested"], "inner"))
        return list(items)

    queue: CallQueue[str, Any, list[str]] = CallQueue(execute, Recorder.split, lambda: recorder.settings)
    assert queue.run(["a"], "outer") == ["a"] and inner == [["nested"]]


async def test_a_cancelled_call_is_dropped_before_it_runs() -> None:
    recorder = Recorder()
    recorder.hold.clear()
    first = asyncio.ensure_future(run_async(recorder.queue.run, ["x"], 0))
    await asyncio.to_thread(recorder.started.wait, 10)
    dropped = asyncio.ensure_future(run_async(recorder.queue.run, ["dropped"], 0))
    kept = asyncio.ensure_future(run_async(recorder.queue.run, ["kept"], 0))
    await asyncio.to_thread(wait_for, lambda: recorder.queue.depth == 2)
    dropped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert recorder.queue.depth == 1  # out of the queue at once: it no longer counts towards queue_limit
    recorder.hold.set()
    assert await first == ["x:0"] and await kept == ["kept:0"]
    assert [items for items, _, _ in recorder.runs] == [["x"], ["kept"]]


async def test_asyncio_calls_of_one_loop_turn_share_one_run_without_threads_of_their_own() -> None:
    recorder = Recorder()
    threads_before = threading.active_count()
    results = await asyncio.gather(*(recorder.queue.arun([f"q{i}"], 0) for i in range(32)))
    assert results == [[f"q{i}:0"] for i in range(32)]
    assert [items for items, _, _ in recorder.runs] == [[f"q{i}" for i in range(32)]]  # one run, in call order
    assert recorder.queue.runs == 1 and recorder.queue.calls == 32
    assert threading.active_count() <= threads_before + 1  # the model's runner at most: no thread per call


async def test_a_cancelled_asyncio_call_is_dropped_and_a_full_queue_refuses_at_once() -> None:
    recorder = Recorder(queue_limit=2)
    recorder.hold.clear()
    first = asyncio.ensure_future(recorder.queue.arun(["x"], 0))
    await asyncio.to_thread(recorder.started.wait, 10)
    dropped = asyncio.ensure_future(recorder.queue.arun(["dropped"], 0))
    kept = asyncio.ensure_future(recorder.queue.arun(["kept"], 0))
    await asyncio.sleep(0)  # both submitted: queued at the end of this turn of the loop, counted already
    assert recorder.queue.depth == 2
    with pytest.raises(QueueFull, match="queue_limit"):
        await recorder.queue.arun(["one too many"], 0)
    dropped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert recorder.queue.depth == 1
    recorder.hold.set()
    assert await first == ["x:0"] and await kept == ["kept:0"]
    assert [items for items, _, _ in recorder.runs] == [["x"], ["kept"]]


def test_a_call_from_a_loop_closed_before_its_turn_ended_still_runs_and_leaves_nothing_behind() -> None:
    recorder = Recorder(queue_limit=1)
    futures: list[Any] = []

    async def submit() -> None:  # a task whose loop stops in the same turn: the turn's end never comes
        futures.append(recorder.queue.submit(["orphan"], 0, loop=asyncio.get_running_loop()))

    loop = asyncio.new_event_loop()
    loop.run_until_complete(submit())
    loop.close()
    assert futures[0].result(10) == ["orphan:0"]
    wait_for(lambda: recorder.queue.depth == 0)
    assert recorder.queue.run(["later"], 0) == ["later:0"]  # not refused: nothing counts against queue_limit
    assert not recorder.queue._turns  # the closed loop is not held


def test_the_counts_are_made_before_the_callers_are_answered() -> None:
    recorder = Recorder()
    seen: list[tuple[int, int]] = []  # the counts at the moment each answer is given
    for _ in range(3):
        future = recorder.queue.submit(["a"], 0)
        future.add_done_callback(lambda _: seen.append((recorder.queue.runs, recorder.queue.calls)))
        future.result(10)
    assert seen == [(1, 1), (2, 2), (3, 3)]


def forward_passes(model: Any) -> list[int]:
    """A list that grows by one at every forward pass of ``model``'s torch module."""
    passes: list[int] = []
    model.runtime.loaded.model.register_forward_hook(lambda *_: passes.append(1))
    return passes


async def test_gathered_model_calls_share_forward_passes(model_path: str) -> None:
    model = FlagModel(model_path, devices="cpu")
    model.gather_window_ms = 500  # every call of the gather arrives within the window: one run, whatever the timing
    texts = [f"text number {i} about {'pandas ' * (i % 7)}bears" for i in range(20)]
    alone = model.encode_corpus(texts)
    passes = forward_passes(model)
    model.encode_corpus(texts)
    one_call = len(passes)
    passes.clear()
    results = await asyncio.gather(*(run_async(model.encode_corpus, [text]) for text in texts))
    assert len(passes) == one_call < len(texts)
    np.testing.assert_allclose(np.concatenate(results), alone, atol=1e-6)
    for text, result in zip(texts, results, strict=True):
        np.testing.assert_allclose(result, model.encode_corpus([text]), atol=1e-6)


async def test_gathered_rerank_calls_share_forward_passes(reranker_path: str) -> None:
    reranker = FlagReranker(reranker_path, devices="cpu")
    reranker.gather_window_ms = 500
    pairs = [(f"query {i}", f"passage {j} on topic {i}") for i in range(6) for j in range(3)]
    alone = [reranker.compute_score([pair]) for pair in pairs]
    passes = forward_passes(reranker)
    results = await asyncio.gather(*(run_async(reranker.compute_score, [pair]) for pair in pairs))
    assert len(passes) == 1
    np.testing.assert_allclose(results, alone, atol=1e-5)


def _raise(error: BaseException) -> Any:
    raise error


@pytest.mark.parametrize("error", [ZeroDivisionError("observer"), SystemExit("observer")])
def test_a_failing_observer_never_fails_or_strands_the_callers_and_the_runner_goes_on(error: BaseException) -> None:
    recorder = Recorder()
    recorder.queue.observers.append(lambda *_: _raise(error))
    recorder.hold.clear()
    first = start(recorder.queue.run, ["x"], 0)
    assert recorder.started.wait(10)
    others = [start(recorder.queue.run, [f"o{i}"], i % 2) for i in range(3)]  # two groups in the next run
    wait_for(lambda: recorder.queue.depth == 3)
    recorder.hold.set()
    for thread, _ in (first, *others):
        thread.join(10)
        assert not thread.is_alive()
    assert [box.get("result") for _, box in others] == [["o0:0"], ["o1:1"], ["o2:0"]]
    assert recorder.queue.run(["after"], 0) == ["after:0"]


def test_a_run_that_raises_any_exception_fails_its_callers_alone_and_the_runner_goes_on() -> None:
    recorder = Recorder()
    recorder.hold.clear()
    first = start(recorder.queue.run, ["x"], 0)
    assert recorder.started.wait(10)
    execute = recorder.execute

    def interrupted(items: list[str], options: Any) -> list[str]:
        if "stop" in items:
            raise KeyboardInterrupt
        return execute(items, options)

    recorder.queue._execute = interrupted  # type: ignore[method-assign]
    stop = start(recorder.queue.run, ["stop"], 1)
    wait_for(lambda: recorder.queue.depth == 1)
    later = start(recorder.queue.run, ["later"], 2)  # a group after the interrupted one, in the same gathered run
    wait_for(lambda: recorder.queue.depth == 2)
    recorder.hold.set()
    for thread, _ in (first, stop, later):
        thread.join(10)
        assert not thread.is_alive()
    assert first[1]["result"] == ["x:0"]
    assert isinstance(stop[1]["error"], KeyboardInterrupt)
    assert later[1]["result"] == ["later:2"]  # answered: the runner thread went on
    assert recorder.queue.run(["after"], 3) == ["after:3"]


def test_waiting_callers_are_woken_by_their_own_answers_only() -> None:
    """Callers wait on their own results, not on the queue: a run wakes the callers it answered and nobody else."""
    recorder = Recorder()
    recorder.hold.clear()
    first = start(recorder.queue.run, ["x"], 0)
    assert recorder.started.wait(10)
    waiting = [start(recorder.queue.run, [f"w{i}"], 0) for i in range(6)]
    wait_for(lambda: recorder.queue.depth == 6)
    assert not recorder.queue._condition._waiters  # type: ignore[attr-defined]  # the runner is running
    recorder.hold.set()
    for thread, _ in (first, *waiting):
        thread.join(10)
    assert [box["result"] for _, box in waiting] == [[f"w{i}:0"] for i in range(6)]


def test_a_freed_queue_ends_its_runner_thread() -> None:
    import gc

    recorder = Recorder()
    assert recorder.queue.run(["a"], 0) == ["a:0"]
    runner = recorder.queue._runner
    assert runner is not None and runner.is_alive()
    del recorder
    gc.collect()
    runner.join(10)
    assert not runner.is_alive()


PROGRAM_HEAD = """
import os, signal, sys, threading, time
from types import SimpleNamespace
from flag_core.inference.gather import CallQueue

settings = SimpleNamespace(gather_window_ms=0.0, gather_max_inputs=4096, queue_limit=None)
runs = []

def execute(items, options):
    runs.append((list(items), threading.current_thread()))
    if options == "slow":
        started.set()
        time.sleep(1.0)
        open(sys.argv[1], "w").write("finished")
    return list(items)

started = threading.Event()
queue = CallQueue(execute, lambda result, positions: [result[i] for i in positions], lambda: settings)
"""


def run_program(body: str, tmp_path: Any) -> Any:
    import subprocess
    import sys

    script = tmp_path / "program.py"
    script.write_text(PROGRAM_HEAD + body)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "marker")], capture_output=True, text=True,
                          timeout=120)


def test_an_interrupted_caller_lets_the_run_in_progress_finish_before_the_process_exits(tmp_path: Any) -> None:
    """Ctrl-C while the main thread waits: the interpreter waits for the runner's run in progress (a runner killed
    inside torch at exit aborts the process: 'terminate called without an active exception', status 134)."""
    done = run_program("""
threading.Thread(target=lambda: (started.wait(10), os.kill(os.getpid(), signal.SIGINT))).start()
try:
    queue.run(["long"], "slow")
except KeyboardInterrupt:
    sys.exit(3)
""", tmp_path)
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "marker").read_text() == "finished"  # the run went to its end before the process did


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no os.fork on this platform")
def test_a_forked_child_runs_its_calls_on_a_runner_of_its_own(tmp_path: Any) -> None:
    """The child has none of the parent's threads: a caller thread of the child is never taken for the runner (a
    reused thread id once let it bypass the queue), and the parent's waiting calls are not the child's."""
    done = run_program("""
import warnings
warnings.simplefilter("ignore", DeprecationWarning)
assert queue.run(["parent"], 0) == ["parent"]
parent_runner = queue._runner
pid = os.fork()
if pid == 0:
    try:
        runs.clear()
        assert queue.depth == 0 and queue._runner is None
        box = {}
        callers = [threading.Thread(target=lambda i=i: box.__setitem__(i, queue.run([f"c{i}"], 1))) for i in range(3)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(10)
        assert box == {i: [f"c{i}"] for i in range(3)}, box
        assert queue.run(["main"], 1) == ["main"]
        runners = {thread for _, thread in runs}
        assert runners == {queue._runner} and queue._runner is not parent_runner, runs
        assert not set(callers) & runners
        os._exit(0)
    except BaseException as error:
        print("child:", repr(error), flush=True)
        os._exit(1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
""", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
