"""The Krita plugin, shipped as package data: ``touchup_krita.desktop`` plus the ``touchup_krita``
folder are copied into Krita's ``pykrita`` resource folder by the installer."""
