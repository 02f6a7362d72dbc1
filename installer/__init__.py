"""``touchup install`` / ``uninstall`` / ``doctor``: put the plugins into Krita and GIMP 3.

The plugins ship inside this distribution as package data (``touchup.plugin_krita``,
``touchup.plugin_gimp``); installing copies them into the editors' user plugin folders with a
private copy of ``touchup.shared`` (and, where the editor's own Python lacks them, pyzmq and
msgpack built for that Python), and records every file and setting it wrote in a manifest so
that ``uninstall`` can remove exactly those and nothing else.
"""
