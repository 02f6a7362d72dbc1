"""Test driver loaded as a second Krita plugin: once the main window exists, it drives the
Touchup plugin through the real menu actions and docker, saves a screenshot of the docker,
writes its findings to ``TOUCHUP_KRITA_RESULTS`` and quits Krita."""

from krita import Krita

from .driver import Driver

Krita.instance().addExtension(Driver(Krita.instance()))
