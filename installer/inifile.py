"""Setting one key in an INI-style file (Krita's ``kritarc``) without rewriting the rest.

``kritarc`` is written by Qt's QSettings and holds hundreds of the user's settings. Parsing
and re-serialising it (configparser) would change key case, spacing and escaping of lines we
have no business touching, so only the one line of our key is edited, added or removed.
"""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")


def _find(lines: list[str], section: str, key: str) -> tuple[int | None, int | None, int | None]:
    """(section header index, key line index, index after the section's last line)."""
    header = key_line = None
    end = None
    current = None
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m:
            if current == section:
                end = i
                break
            current = m.group("name").strip()
            if current == section and header is None:
                header = i
            continue
        if current == section and "=" in line and line.split("=", 1)[0].strip() == key:
            key_line = i
    if header is not None and end is None:
        end = len(lines)
    return header, key_line, end


def get_value(path: Path, section: str, key: str) -> str | None:
    """The raw value of ``key`` in ``[section]``, or None when absent (or the file is)."""
    if not path.exists():
        return None
    lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    _h, key_line, _e = _find(lines, section, key)
    return None if key_line is None else lines[key_line].split("=", 1)[1].strip()


def set_value(path: Path, section: str, key: str, value: str | None) -> None:
    """Set ``key=value`` in ``[section]`` (``value`` None: remove the key; an emptied section
    that we would leave behind is removed too, so an install+uninstall leaves no trace)."""
    text = path.read_text(encoding="utf-8", errors="surrogateescape") if path.exists() else ""
    lines = text.splitlines()
    header, key_line, end = _find(lines, section, key)
    if value is None:
        if key_line is None:
            return
        del lines[key_line]
        header, _k, end = _find(lines, section, key)
        if header is not None and end is not None:
            body = [ln for ln in lines[header + 1 : end] if ln.strip()]
            if not body:
                del lines[header:end]
    elif key_line is not None:
        lines[key_line] = f"{key}={value}"
    elif header is not None and end is not None:
        insert_at = end
        while insert_at > header + 1 and not lines[insert_at - 1].strip():
            insert_at -= 1
        lines.insert(insert_at, f"{key}={value}")
    else:
        if lines and lines[-1].strip():
            lines.append("")
        lines += [f"[{section}]", f"{key}={value}"]
    out = "\n".join(lines)
    if out and not out.endswith("\n"):
        out += "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out, encoding="utf-8", errors="surrogateescape")
