"""`python -m service` is the `rill` command."""

import sys

from service.cli import main

sys.exit(main())
