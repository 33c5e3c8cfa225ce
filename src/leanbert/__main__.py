"""`python -m leanbert` runs the `leanbert` program."""

import sys

from leanbert.cli import main

sys.exit(main())
