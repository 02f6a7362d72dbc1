"""``touchup`` subcommands, one module each. Every module exposes ``register(subparsers)``,
which adds its parser(s) and sets ``func`` to a callable taking the parsed args and returning
an exit code. Modules import heavy libraries inside their functions so ``touchup --help``
stays fast."""

#: Module names (relative to this package), in the order ``--help`` lists them.
COMMAND_MODULES = [
    "serve",
    "refine",
    "client",
    "keys",
    "example",
    "models",
    "bench",
    "eval",
    "install",
    "tray",
]
