"""Run a module under cProfile switched on and off by signals, one profile file per window.

``python -m benchmarks.profiled PREFIX MODULE [ARGS...]`` runs ``python -m MODULE ARGS...``;
SIGUSR1 starts profiling the main thread (the event loop's), SIGUSR2 stops it and writes
``PREFIX-<n>.prof`` (n = 1, 2, …). Times are the thread's CPU time (``time.thread_time``), not
the wall clock: on a shared machine the wall clock charges other processes' turns (and waits in
``epoll``) to whatever function was running. A benchmark profiles one phase of a long-lived
process this way (benchmarks/bench_real_agents.py ``--profile``), not its start-up.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType


def main() -> None:
    prefix, module, *args = sys.argv[1:]
    profiler: cProfile.Profile | None = None
    windows = 0

    def start(_signum: int, _frame: FrameType | None) -> None:
        nonlocal profiler
        if profiler is None:
            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal profiler, windows
        if profiler is not None:
            profiler.disable()
            windows += 1
            profiler.dump_stats(f"{prefix}-{windows}.prof")
            profiler = None

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
