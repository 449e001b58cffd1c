import sys

from reports.history.cli import main

sys.exit(main())
