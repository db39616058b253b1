"""``python -m sslspatial.cli``: the ``sslspatial`` command without the console script."""

import sys

from . import main

sys.exit(main())
