"""``python -m astrosr``: the same as the ``astrosr`` command."""
import sys

from .cli import main

sys.exit(main())
