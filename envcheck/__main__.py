"""`python -m detbench.envcheck`."""

import sys

from detbench.envcheck.cli import main

sys.exit(main())
