"""`python -m saeflow ...` is the `saeflow` command."""

import sys

from saeflow.cli import main

sys.exit(main())
