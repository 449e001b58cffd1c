"""``python -m detbench.reports`` is ``detbench-report``."""

from detbench.reports.cli import main

raise SystemExit(main())
