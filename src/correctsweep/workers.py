"""Run one function in several workers at once: processes on this machine, or Ray tasks on this node.

The corrector search (`corrector`) uses these to let several Optuna workers share one study. A pool
starts a worker per slot, tells its caller when workers end (raising the first error a worker raised),
and stops every worker on request. Stopping raises KeyboardInterrupt inside each worker (SIGTERM for a
process, ray.cancel for a task), so a worker winds down as Ctrl-C would wind down the search in the
parent: the candidate it was running is left for the next search to retry.

Processes are spawned, not forked: the parent has OpenMP and torch thread pools, which a forked child
cannot use safely. They ignore SIGINT (a terminal's Ctrl-C reaches the whole process group, and the
parent, which gets it too, stops them once), and stop on their own when the parent dies.
"""

from __future__ import annotations

import _thread
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

STOP_WAIT_S = 30  # how long a stopped worker may take to leave its journal writes whole before it is killed
RESEND_S = 0.01  # after which a stop swallowed in a C callback is sent again (see _resend_swallowed_stops)


class ProcessWorkers:
    """Workers as spawned processes of this one."""

    def __init__(self, fn: Callable[[Any], None]):
        self.fn = fn
        self.running: dict[int, tuple[multiprocessing.Process, multiprocessing.connection.Connection]] = {}

    def start(self, slot: int, job: Any) -> None:
        receive, send = multiprocessing.Pipe(duplex=False)
        process = multiprocessing.get_context("spawn").Process(target=_child, args=(self.fn, job, send, os.getpid()),
                                                               daemon=True)
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # inherited across spawn
        try:
            process.start()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        send.close()
        self.running[slot] = process, receive

    def wait(self, timeout: float) -> None:
        """Until a worker ends or `timeout` seconds pass; raises the error a worker raised."""
        sentinels = {process.sentinel: slot for slot, (process, _) in self.running.items()}
        for ready in multiprocessing.connection.wait(list(sentinels), timeout):
            process, receive = self.running.pop(sentinels[ready])
            process.join()
            try:
                error = receive.recv()
            except EOFError:  # it ended (or died) without an error to report
                error = None
            receive.close()
            if error is not None:
                raise error

    def stop(self) -> None:
        for process, _ in self.running.values():
            if process.is_alive():
                process.terminate()  # SIGTERM: KeyboardInterrupt in the worker (see _child)
        deadline = time.monotonic() + STOP_WAIT_S
        for process, receive in self.running.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
            receive.close()
        self.running.clear()


def _child(fn: Callable[[Any], None], job: Any, send: multiprocessing.connection.Connection, parent: int) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    sys.unraisablehook = _resend_swallowed_stops(signal.SIGTERM)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        fn(job)
    except KeyboardInterrupt:
        pass  # stopped by the parent, or the parent died: nobody waits for an answer
    except BaseException as e:
        try:
            send.send(e)
        except Exception:  # an exception that does not pickle: its traceback as text
            send.send(RuntimeError(traceback.format_exc()))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _resend_swallowed_stops(signum: int) -> Callable[[Any], None]:
    """An unraisable-exception hook that, for a stop swallowed in a C callback, delivers `signum` to the
    main thread again a moment later, from a timer thread: the hook itself still runs inside the callback,
    where the stop would be swallowed once more."""
    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            threading.Timer(RESEND_S, resend).start()
        else:
            sys.__unraisablehook__(unraisable)

    def resend() -> None:
        if sys.unraisablehook is hook:  # not once its Ray task has ended (see _ray_task)
            _thread.interrupt_main(signum)
    return hook


def _ray_task(fn: Callable[[Any], None], job: Any) -> None:
    """`fn(job)` in a Ray task; ray.cancel interrupts it as SIGINT would. The hook is the task's own: a Ray
    worker process runs other tasks after it."""
    sys.unraisablehook = _resend_swallowed_stops(signal.SIGINT)
    try:
        fn(job)
    finally:
        sys.unraisablehook = sys.__unraisablehook__


def _watch_parent(parent: int) -> None:
    """A worker of a killed parent (SIGKILL, OOM) stops instead of searching on beside its rerun."""
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


class RayWorkers:
    """Workers as Ray tasks on this node, where the journal is (a run on a URI storage keeps it in a
    node-local mirror). Slot 0 asks for no CPU: it runs on those Ray reserved for the trial, which waits
    meanwhile, so the search goes on even when the cluster has no CPU free; the others ask for `cpus`
    each and start once the node has them."""

    def __init__(self, fn: Callable[[Any], None], cpus: float):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.fn, self.remote, self.cpus = ray, fn, ray.remote(_ray_task), cpus
        self.here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.running: dict[int, Any] = {}

    def start(self, slot: int, job: Any) -> None:
        self.running[slot] = self.remote.options(num_cpus=0 if slot == 0 else self.cpus, max_retries=0,
                                                 scheduling_strategy=self.here).remote(self.fn, job)

    def wait(self, timeout: float) -> None:
        """Until a worker ends or `timeout` seconds pass; raises the error a worker raised."""
        slots = {ref: slot for slot, ref in self.running.items()}
        ready, _ = self.ray.wait(list(slots), num_returns=1, timeout=timeout)
        for ref in ready:
            del self.running[slots[ref]]
            try:
                self.ray.get(ref)
            except self.ray.exceptions.RayTaskError as e:  # the worker raised: the error itself, not Ray's wrapper
                raise e.cause from None
            except self.ray.exceptions.RayError:
                pass  # the worker died (killed, out of memory): the search retries its candidate

    def stop(self) -> None:
        for ref in self.running.values():
            self.ray.cancel(ref)  # KeyboardInterrupt in a running task; a pending one never starts
        self.ray.wait(list(self.running.values()), num_returns=len(self.running), timeout=STOP_WAIT_S)
        self.running.clear()
