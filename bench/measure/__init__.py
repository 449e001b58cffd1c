"""Trackers used around a timed block (timing, memory, FLOPs, telemetry, all-reduce waits); they know no cells."""
