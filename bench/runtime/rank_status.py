"""Where each rank of a torchrun group is: ``<EVENTS>.ranks/rank<R>.json`` (pid, phase, cell), replaced atomically
at each change, so a launcher that has to kill a hung group can say which rank stopped where, and find ranks that
left torchrun's process tree."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

# in the order a rank passes them
PHASES = ("starting", "init", "set_up", "warm_up", "timed", "gather", "done", "failed")


class StatusFile:
    """``<RESULT>.ranks/rank<R>.json``: this rank's pid, phase and cell, replaced atomically at each change."""

    def __init__(self, result_path: Path, rank: int) -> None:
        self.path = Path(f"{result_path}.ranks", f"rank{rank}.json")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rank = rank

    def set(self, phase: str, cell_id: str | None = None) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps({"rank": self.rank, "pid": os.getpid(), "phase": phase, "cell_id": cell_id,
                                       "host": socket.gethostname(), "t": time.time()}), encoding="utf-8")
        os.replace(partial, self.path)


def rank_statuses(events_path: str | Path) -> dict[int, dict[str, Any]]:
    """Rank -> its last status (pid, phase, cell), from the ranks' status files beside the events file."""
    statuses = {}
    for path in Path(f"{events_path}.ranks").glob("rank*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        statuses[int(data["rank"])] = data
    return statuses
