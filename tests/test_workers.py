"""workers: a stop that lands while C code has called back into Python (XGBoost's data iterator does) is
swallowed there by Python, which prints "Exception ignored"; the worker must stop all the same, quietly."""
import _thread
import ctypes
import os
import signal
import sys
import time

import pytest

from correctsweep.workers import ProcessWorkers, RayWorkers

LIMIT_S = 60


def stopped_inside_a_c_callback(stop) -> None:
    """C's qsort calls back into Python, which is stopped there, as a stop from outside could land; then
    plain Python work until stopped."""
    def compare(a, b):
        stop()
        sum(range(100_000))  # bytecode after the stop: where its handler runs, inside the callback
        return 0

    compare_c = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(compare)
    values = (ctypes.c_int * 2)(2, 1)
    ctypes.CDLL(None).qsort(values, len(values), ctypes.sizeof(ctypes.c_int), compare_c)
    deadline = time.monotonic() + LIMIT_S
    while time.monotonic() < deadline:
        time.sleep(0.01)
    raise AssertionError("the stop was lost in the callback")


def sigterm(_):
    """What ProcessWorkers.stop sends."""
    stopped_inside_a_c_callback(lambda: os.kill(os.getpid(), signal.SIGTERM))


def ray_cancel(_):
    """How ray.cancel interrupts a running task."""
    stopped_inside_a_c_callback(_thread.interrupt_main)


@pytest.mark.slow  # a spawned process imports the package afresh
def test_a_process_worker_stopped_inside_a_c_callback_stops_quietly(capfd):
    pool = ProcessWorkers(sigterm)
    pool.start(0, None)
    process, _ = pool.running[0]
    try:
        pool.wait(LIMIT_S + 60)  # raises the AssertionError of a lost stop
        assert not pool.running and process.exitcode == 0
    finally:
        pool.stop()
    assert "Exception ignored" not in capfd.readouterr().err


def test_a_ray_worker_cancelled_inside_a_c_callback_stops(shared_ray):
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/
    pool = RayWorkers(ray_cancel, cpus=1)
    pool.start(0, None)
    task = pool.running[0]
    try:
        ready, _ = ray.wait([task], timeout=LIMIT_S + 60)
        assert ready
        with pytest.raises(ray.exceptions.TaskCancelledError):  # not the AssertionError of a lost stop
            ray.get(task)
    finally:
        ray.cancel(task, force=True)
