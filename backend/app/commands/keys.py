"""``touchup keys``: CurveZMQ keys for serving other machines.

``init`` creates the server's key pair once. ``add NAME --endpoint tcp://HOST:PORT`` creates a
key pair for one user, puts its public half in the allow-list folder and writes the user's
connection file (endpoint, server key, the user's key pair) to hand over like a password.
``list`` shows who may connect; ``revoke NAME`` deletes a key, refusing that user from the next
connection on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="CurveZMQ keys: the server's, and one per user (connection files)")
    p.add_argument("--config", help="TOML config file (default: the user config dir's config.toml)")
    p.add_argument("--keys-dir", help="keys folder (default: the config's keys_dir, else <config dir>/keys)")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("init", help="create the server key pair (kept if it exists)")
    add = actions.add_parser("add", help="create a user's key pair and connection file")
    add.add_argument("name", help="user or machine name (letters, digits, . _ -)")
    add.add_argument("--endpoint", required=True, help="address users reach the backend at, tcp://HOST:PORT")
    add.add_argument(
        "-o", "--output", help="connection file to write (default: NAME.touchup in the keys folder)"
    )
    actions.add_parser("list", help="list the users allowed to connect")
    revoke = actions.add_parser("revoke", help="delete a user's key: refused from the next connection on")
    revoke.add_argument("name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...config import load_config
    from ...server.auth import KeyError_, KeyStore, keys_dir

    try:
        config = load_config(args.config, {"keys_dir": args.keys_dir})
        store = KeyStore(keys_dir(config))
        if args.action == "init":
            public = store.init_server()
            print(f"server key in {store.root} (public key {public.decode()})")
            print("start the backend with: touchup serve --listen tcp://0.0.0.0:57361 --curve")
        elif args.action == "add":
            store.init_server()
            conn = store.add_client(args.name, args.endpoint)
            out = Path(args.output) if args.output else store.root / "connections" / f"{args.name}.touchup"
            conn.save(out)
            print(f"{args.name} may connect; their connection file: {out}")
            print("hand it over privately: it holds their secret key")
        elif args.action == "list":
            names = sorted(store.allowed().values())
            print("\n".join(names) if names else f"no client keys in {store.clients}")
        elif args.action == "revoke":
            if not store.revoke(args.name):
                print(f"touchup keys: no key named {args.name!r}", file=sys.stderr)
                return 1
            print(f"{args.name} revoked: refused from their next connection on")
    except (KeyError_, OSError, ValueError) as exc:
        print(f"touchup keys: {exc}", file=sys.stderr)
        return 2
    return 0
