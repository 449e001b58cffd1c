"""``python -m reports`` is ``detbench-report``."""

from reports.cli import main

raise SystemExit(main())
