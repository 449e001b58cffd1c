"""Result history: every run in one SQLite file (:mod:`detbench.reports.history.store`), steps and between-run bands per
cell (:mod:`detbench.reports.history.analysis`), a run judged against them and the largest moves
(:mod:`detbench.reports.history.trends`), the report's trend section (:mod:`detbench.reports.history.view`) and the
``detbench-history`` command (:mod:`detbench.reports.history.cli`). docs/history.md has the schema and plain SQL
queries."""
