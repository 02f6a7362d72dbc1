"""``python -m touchup.backend`` is the same as the ``touchup`` command."""

import sys

from .app.cli import main

sys.exit(main())
