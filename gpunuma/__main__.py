"""``python -m gpunuma``: the same as the ``gpunuma`` console script."""

import sys

from gpunuma.cli import main

sys.exit(main())
