"""The architecture's import rules, read from the source with the standard library's ``ast``.

Data flows one way through the top-level folders, so their imports must too: a cycle between
two folders (the installer importing the backend while the backend's CLI imports the installer)
means neither can be understood, tested or shipped without the other. ``shared/`` is what both
editor plugins carry into the editor's own Python, so it may use nothing but the standard
library, pyzmq and msgpack. Every import counts, also one inside a function or under
``TYPE_CHECKING``: each is a dependency someone has to keep working.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("shared", "backend", "installer", "plugin_krita", "plugin_gimp")
SHARED_MAY_USE = {"msgpack", "zmq"}


def _modules() -> Iterator[tuple[Path, tuple[str, ...]]]:
    """Every Python file of the product with the package it belongs to (folder parts)."""
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            yield path, path.relative_to(REPO).parent.parts


def _imports(path: Path, package: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """The dotted name of every module ``path`` imports, relative imports made absolute within
    the repository (``touchup.backend.x`` is read as ``backend.x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _strip_root(tuple(alias.name.split(".")))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1
                if up > len(package):
                    raise AssertionError(f"{path}: relative import above the repository")
                base = package[: len(package) - up]
                if node.module:
                    yield (*base, *node.module.split("."))
                else:  # ``from . import x``: each name is a module of that package
                    yield from ((*base, alias.name) for alias in node.names)
            elif node.module:
                yield _strip_root(tuple(node.module.split(".")))


def _strip_root(name: tuple[str, ...]) -> tuple[str, ...]:
    return name[1:] if name[0] == "touchup" and len(name) > 1 else name


def _folder_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {folder: set() for folder in FOLDERS}
    for path, package in _modules():
        for name in _imports(path, package):
            if name[0] in FOLDERS and name[0] != package[0]:
                graph[package[0]].add(name[0])
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if node in trail:
            return [*trail[trail.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(graph[node]):
            found = visit(nxt, [*trail, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check below must be able to fail: a planted two-folder cycle is found."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_top_level_folders() -> None:
    graph = _folder_graph()
    print({k: sorted(v) for k, v in graph.items()})
    assert _cycle(graph) is None, f"import cycle between folders: {' -> '.join(_cycle(graph) or [])}"
    # The layering the README describes: the plugins and the backend build on shared/ only;
    # the installer sits on top (it installs the plugins and points them at the backend).
    assert graph["shared"] == set()
    assert graph["plugin_krita"] <= {"shared"} and graph["plugin_gimp"] <= {"shared"}
    assert "installer" not in graph["backend"]


def test_shared_uses_only_the_standard_library_msgpack_and_zmq() -> None:
    """What both plugins vendor into the editors' Python must import nothing else."""
    foreign = set()
    for path, package in _modules():
        if package[0] != "shared":
            continue
        for name in _imports(path, package):
            top = name[0]
            if top == "shared" or top in sys.stdlib_module_names or top in SHARED_MAY_USE:
                continue
            foreign.add(f"{path.relative_to(REPO)}: {'.'.join(name)}")
    assert not foreign, sorted(foreign)


def test_the_runtime_never_imports_the_app_or_the_tools() -> None:
    """Server, pipeline, engines and cluster are what a job runs through; the CLI, tray and
    benchmarks build on them, never the other way round. (``backend/__main__.py`` is the CLI's
    ``python -m`` entry, not part of the runtime.)"""
    wrong = []
    for path, package in _modules():
        if package[0] != "backend" or package[1:2] in (("app",), ("tools",)) or path.name == "__main__.py":
            continue
        for name in _imports(path, package):
            if name[:2] in (("backend", "app"), ("backend", "tools")):
                wrong.append(f"{path.relative_to(REPO)}: {'.'.join(name)}")
    assert not wrong, wrong
