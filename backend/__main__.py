"""``python -m touchup.backend`` is the same as the ``touchup`` command."""

import sys

from .cli import main

sys.exit(main())
