"""``python -m weightspectra`` runs the command-line tool."""

import sys

from weightspectra.cli import main

sys.exit(main())
