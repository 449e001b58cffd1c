"""Where cells run: the launchers (inline, process, torchrun, a long-lived A/B side) with their one supervisor
and progress protocol, the worker and rank entry points, and the cell session (build, time, assemble)."""
