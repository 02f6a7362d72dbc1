"""Makes a source checkout importable as ``touchup`` without installing it.

The repository's top-level folders (``shared/``, ``backend/``, ``installer/``, the plugins) are
the subpackages of ``touchup``; an installed wheel maps them the same way (see pyproject.toml).
Tools and tests run from the repository root therefore import ``touchup.backend...`` with or
without an install. This file is not part of the wheel.
"""

import os

__path__ = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
