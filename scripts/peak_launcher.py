"""Starts one command from a process that holds no data and reports its time and peak memory.

Run by `scripts/measure.py` as `python -I -S peak_launcher.py SPEC_JSON`; prints one JSON
line. On Linux a child's `ru_maxrss` includes the high-water mark of the memory it ran in
before `exec`: started straight from the benchmark (which holds about 1 GB of generated
data), every command would "peak" at the benchmark's size. Started from here, the floor is
this interpreter's 10 MB, so it imports only a few standard modules.
"""

import json
import os
import signal
import sys
import threading
import time

SAMPLE_SECONDS = 0.05


def high_water_kib(pid: int) -> int | None:
    """VmHWM of a live process (its own peak since exec), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def sample_until(pid: int, done: threading.Event, peak: list[int]) -> None:
    """Keep the largest VmHWM seen every SAMPLE_SECONDS: a cross-check of wait4's figure."""
    while not done.is_set():
        seen = high_water_kib(pid)
        if seen is not None and seen > peak[0]:
            peak[0] = seen
        done.wait(SAMPLE_SECONDS)


def output_actions(spec: dict[str, object]) -> list[tuple[int, int, str, int, int]]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    return [
        (os.POSIX_SPAWN_OPEN, fd, str(spec[name] or os.devnull), flags, 0o644)
        for fd, name in ((1, "stdout"), (2, "stderr"))
    ]


def main() -> int:
    spec = json.loads(sys.argv[1])
    os.chdir(spec["cwd"])
    argv = [str(arg) for arg in spec["argv"]]
    started = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, spec["env"], file_actions=output_actions(spec))
    # Ctrl-C reaches the whole process group; the command decides what it means, we wait.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: os.kill(pid, number))
    done, sampled = threading.Event(), [0]
    sampler = threading.Thread(target=sample_until, args=(pid, done, sampled), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(pid, 0)  # a forwarded signal does not interrupt it (PEP 475)
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    result = {
        "seconds": elapsed,
        "exit_code": os.waitstatus_to_exitcode(status),
        "peak_kib": usage.ru_maxrss,
        "sampled_peak_kib": sampled[0] or None,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
