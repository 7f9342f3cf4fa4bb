"""`python -m transferlab.sweep_report <sweep dir>` (see `cli.py`)."""

import sys

from transferlab.sweep_report.cli import main

sys.exit(main())
