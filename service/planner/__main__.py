"""`python -m service.planner`: the same as `rill plan`."""

import sys

from service.planner.cli import main

sys.exit(main())
