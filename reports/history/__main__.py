import sys

from detbench.reports.history.cli import main

sys.exit(main())
