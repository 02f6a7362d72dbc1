"""The desktop application around the backend: the ``touchup`` CLI, its commands, the tray.

Nothing in the job runtime imports from here; the app starts and talks to the runtime.
"""
