"""Result history: every run in one SQLite file (:mod:`reports.history.store`), steps and between-run bands per
cell (:mod:`reports.history.analysis`), a run judged against them and the largest moves
(:mod:`reports.history.trends`), the report's trend section (:mod:`reports.history.view`) and the
``detbench-history`` command (:mod:`reports.history.cli`). docs/history.md has the schema and plain SQL queries."""
