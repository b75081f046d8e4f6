"""The benchmarks count the CPU of every broker process they started (issue 15: the JVM too)."""

from __future__ import annotations


def test_bench_counts_the_brokers_cpu_by_pid() -> None:
    import os

    from bench import common

    assert common.CpuWindow().cores()["broker"] is None, "no broker started: nothing to count"

    common.BROKER_PIDS[:] = [os.getpid()]
    try:
        assert common.CpuWindow().cores()["broker"] is not None
    finally:
        common.BROKER_PIDS[:] = []
