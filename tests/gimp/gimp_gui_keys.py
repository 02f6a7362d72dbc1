"""Keyboard helpers for the GIMP GUI drivers (they run INSIDE GIMP, under Xvfb): xdotool, and
Ctrl+Z pressed in GIMP's image window as a user would. The harness copies this file beside the
driver; a driver imports it from there."""

import subprocess
import time


def xdotool(*args, timeout=30):
    done = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=timeout)
    return done.stdout.strip()


def undo_with_keyboard(image):
    """Press Ctrl+Z in GIMP's image window, as a user would, and wait for the stack to change."""
    before = len(image.get_layers())
    for window in xdotool("search", "--onlyvisible", "--name", "GIMP").splitlines():
        xdotool("windowfocus", "--sync", window)
        xdotool("key", "--clearmodifiers", "ctrl+z")
        for _ in range(20):
            time.sleep(0.25)
            if len(image.get_layers()) != before:
                return window
    return None
