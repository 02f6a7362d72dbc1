"""``touchup`` subcommands, one module each. Every module exposes ``register(subparsers)``,
which adds its parser(s) and sets ``func`` to a callable taking the parsed args and returning
an exit code. Modules import heavy libraries inside their functions so ``touchup --help``
stays fast."""

#: Command modules, named from the ``touchup`` package down, in the order ``--help`` lists them.
#: Most live here; ``installer.commands`` (install, uninstall, doctor) lives with the installer,
#: which imports the backend: naming it here, not importing it, keeps that edge one-way.
COMMAND_MODULES = [
    "backend.app.commands.serve",
    "backend.app.commands.refine",
    "backend.app.commands.client",
    "backend.app.commands.keys",
    "backend.app.commands.example",
    "backend.app.commands.models",
    "backend.app.commands.bench",
    "backend.app.commands.eval",
    "installer.commands",
    "backend.app.commands.tray",
]
