"""The GIMP 3 plug-in, shipped as package data.

GIMP runs plug-ins as separate programs from its own ``plug-ins`` folders, so nothing here is
imported by the backend: the installer copies the ``touchup-refine`` folder into GIMP's profile
and puts a copy of ``touchup.shared`` (plus pyzmq/msgpack when GIMP's Python lacks them) into
``touchup-refine/lib``.
"""
