"""`python -m leanbert.cli` runs the `leanbert` program."""

import sys

from leanbert.cli import main

sys.exit(main())
