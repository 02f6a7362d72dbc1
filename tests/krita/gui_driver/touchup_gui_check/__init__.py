"""Test driver loaded as a second Krita plugin: once the main window exists, it drives the
Touchup plugin through the real menu actions and docker, saves a screenshot of the docker,
writes its findings to ``TOUCHUP_KRITA_RESULTS`` and quits Krita. ``TOUCHUP_KRITA_CHECKS=variants``
runs the variants loop (``variants.py``) instead of the general checks (``driver.py``)."""

import os

from krita import Krita

if os.environ.get("TOUCHUP_KRITA_CHECKS") == "variants":
    from .variants import VariantsDriver as Driver
else:
    from .driver import Driver

Krita.instance().addExtension(Driver(Krita.instance()))
