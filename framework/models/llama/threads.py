"""How many threads llama.cpp gets: the graph's `threads:`, else $SYNTHLOOM_THREADS, else the CPUs this
process may use less those that other processes keep busy right now.

Why not simply every core: llama.cpp's threads meet at a barrier after every operation of a decode step and
spin while they wait, so a thread that another process has pushed off its core stalls all the others. On a
2-core machine kept busy by other jobs, 2 threads decoded some 25 times slower than 1 (issue 26). Why "right
now" rather than the load average: the 1-minute average still counts our own previous run for a minute after
it ended, so a second run started straight after the first would halve its own speed on an idle machine.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ...errors import ConfigError

ENV_VAR = "SYNTHLOOM_THREADS"
MAX_DEFAULT_THREADS = 8  # past this a 135M model gains nothing; more only adds barrier waits
_SAMPLES, _INTERVAL_S = 5, 0.02


def configured_threads(graph_setting: int | None) -> int | None:
    """The graph's `threads:` if it has one, else $SYNTHLOOM_THREADS, else None (then the engine measures
    `default_threads()` on its own thread, off the event loop)."""
    if graph_setting is not None:
        return graph_setting
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{ENV_VAR} must be a whole number of threads, 1 or more (it is {value!r}); "
                          f"unset it to let synthloom choose")
    return int(value)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or `taskset`'s limit, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads() -> int:
    """Usable CPUs minus other processes' runnable threads (the median of a few samples over ~0.1 s), at
    least 1 and at most MAX_DEFAULT_THREADS."""
    cpus = usable_cpus()
    busy = busy_elsewhere()
    return max(1, min(MAX_DEFAULT_THREADS, cpus - busy))


def busy_elsewhere() -> int:
    """Threads of other processes that are running or waiting for a CPU now: the kernel's `procs_running`
    less the running threads of this process. 0 where /proc is missing (not Linux)."""
    samples = []
    for index in range(_SAMPLES):
        if index:
            time.sleep(_INTERVAL_S)
        running = _procs_running()
        if running is None:
            return 0
        samples.append(max(0, running - _own_running_threads()))
    return sorted(samples)[len(samples) // 2]


def _procs_running() -> int | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("procs_running "):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _own_running_threads() -> int:
    """Threads of this process in state R (this one, reading, is always one of them)."""
    count = 0
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return 1
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        if stat[stat.rindex(")") + 2:].startswith("R"):
            count += 1
    return max(1, count)
