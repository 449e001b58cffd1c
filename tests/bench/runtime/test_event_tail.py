"""EventTail: a launcher forwards each whole event once, as it is written, and still reads the events a signal's
clean-up removed the folder of (issue 37)."""

from __future__ import annotations

import pytest

from detbench.bench.runtime.protocol import EventLog, EventTail, encode


def test_each_whole_event_is_forwarded_once_and_a_torn_line_waits(tmp_path):
    path, seen = tmp_path / "events.jsonl", []
    tail = EventTail(path, seen.append)
    log = EventLog(path)
    log.phase("a", "set-up")
    assert tail.poll() == path.stat().st_size and [e["phase"] for e in seen] == ["set-up"]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("library noise\n" + encode("phase", cell="a", phase="round 0")[:12])  # a line being written
    tail.poll()
    assert len(seen) == 1
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(encode("phase", cell="a", phase="round 0")[12:] + "\n")
    tail.poll()
    tail.poll()
    assert [e["phase"] for e in seen] == ["set-up", "round 0"]


def test_events_written_before_the_file_was_removed_are_still_read(tmp_path):
    path, seen = tmp_path / "events.jsonl", []
    tail = EventTail(path, seen.append)
    EventLog(path).phase("a", "round 3")
    path.unlink()  # what detbench.envcheck.isolate's signal clean-up does to the worker's folder
    tail.poll()
    tail.close()
    assert [e["phase"] for e in seen] == ["round 3"]


def test_an_interrupted_listener_gets_the_event_again_on_the_next_poll(tmp_path):
    path, seen = tmp_path / "events.jsonl", []

    def flaky(event):
        seen.append(event["phase"])
        if len(seen) == 1:
            raise KeyboardInterrupt

    tail = EventTail(path, flaky)
    EventLog(path).phase("a", "round 0")
    with pytest.raises(KeyboardInterrupt):
        tail.poll()
    tail.poll()
    assert seen == ["round 0", "round 0"]
