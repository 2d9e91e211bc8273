"""Where the node spends its CPU while forwarding: py-spy on the node under forwarding load.

    pip install py-spy
    python bench/profile_node.py [--viewers 64] [--seconds 20] [--out /tmp/node-profile.txt]

Same setup as bench/forwarding.py (one VP8 publisher, one decoding viewer, N load
viewers). py-spy samples only while the node holds the GIL (``--gil``): on a
2-core loopback box the node is often preempted inside ``sendto`` when a viewer
wakes up, and a wall-clock profile would blame ``sendto`` for that waiting. So
this shows user-space CPU; the kernel side (mostly ``sendto``) is the node's
system time, printed alongside. Prints the hottest functions by self and by
inclusive share of samples; the raw stacks (flamegraph.pl input) go to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import sys

from _harness import Server
from forwarding import Setup

TOP = 25


def summarize(raw_path: str) -> str:
    """Top functions by self and inclusive share of the samples in py-spy's raw output."""
    own, inclusive = collections.Counter(), collections.Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, count = line.rstrip().rsplit(" ", 1)
            frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
            total += int(count)
            own[frames[-1]] += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
    lines = [f"{total} samples holding the GIL", "", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(TOP)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(TOP * 2)
              if n < total]  # leave out the frames every stack has
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=64, help="load viewers")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--out", default="/tmp/node-profile.txt", help="raw stacks")
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy not found: pip install py-spy")
    setup = Setup(Server.node())
    try:
        await setup.start(idle_window=0)
        await setup.add_load_viewers(args.viewers)
        await asyncio.sleep(1.0)
        user0, sys0 = setup.server.cpu()
        spy = await asyncio.create_subprocess_exec(
            "py-spy", "record", "--pid", str(setup.server.pid), "--gil", "--rate", "250",
            "--duration", str(args.seconds), "--format", "raw", "--output", args.out,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        if await spy.wait():
            sys.exit("py-spy failed (it needs ptrace: run as root or with CAP_SYS_PTRACE)")
        user1, sys1 = setup.server.cpu()
    finally:
        await setup.stop()
    print(f"node CPU over {args.seconds} s with {args.viewers} load viewers + 1 decoding: "
          f"user {100 * (user1 - user0) / args.seconds:.1f}%, "
          f"system {100 * (sys1 - sys0) / args.seconds:.1f}%\n")
    print(summarize(args.out))
    print(f"\nraw stacks: {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
