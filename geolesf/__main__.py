"""``python -m geolesf``: the ``geolesf`` command."""

import sys

from geolesf.cli.main import main

sys.exit(main())
