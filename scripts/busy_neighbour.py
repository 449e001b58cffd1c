"""A noisy neighbour for gate experiments: one core busy for ``--on-s`` seconds, idle for ``--off-s``, repeated
until ``--for-s`` has passed or the process is ended (SIGTERM). A busy-loop, not a sleep, so the scheduler sees a
process that wants a whole core half of the time, as a neighbour's test run or a data loader would.

``python scripts/busy_neighbour.py --on-s 5 --off-s 5``
"""

from __future__ import annotations

import argparse
import signal
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--on-s", type=float, default=5.0)
    parser.add_argument("--off-s", type=float, default=5.0)
    parser.add_argument("--for-s", type=float, default=3600.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    end = time.monotonic() + args.for_s
    while time.monotonic() < end:
        busy_until = time.monotonic() + args.on_s
        while time.monotonic() < busy_until:
            pass
        time.sleep(args.off_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
