"""Run a command-line entry point under cProfile with a CPU-time clock (not wall time:
on a shared box a wall-clock profile blames whatever waited for the CPU).

    python bench/_profiled.py OUT.pstats -m unbroken node ...
    python bench/_profiled.py OUT.pstats bench/restore.py agent load ...

The profile is written when the program returns (the node does on SIGTERM).
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time
from pathlib import Path


def main() -> None:
    out, target, *rest = sys.argv[1:]
    profile = cProfile.Profile(time.process_time)
    if target == "-m":
        module, *rest = rest
        sys.argv = [module, *rest]
        run = lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)  # noqa
    else:
        sys.argv = [target, *rest]
        sys.path.insert(0, str(Path(target).resolve().parent))
        run = lambda: runpy.run_path(target, run_name="__main__")  # noqa: E731
    try:
        profile.runcall(run)
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
