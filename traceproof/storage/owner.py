"""Who owns a store: a small JSON file beside the DuckDB file, written by a serving process.

DuckDB's lock error names only a PID. A server also records its command and URL here so that a
second process can say exactly what holds the store and where to reach it. The file is advisory:
it is trusted only when its PID matches the lock holder and that process is alive.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Owner:
    pid: int
    command: str
    url: str | None


def owner_path(db: Path) -> Path:
    return db.with_name(db.name + ".owner.json")


def write(db: Path, command: str, url: str | None) -> None:
    path = owner_path(db)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(Owner(os.getpid(), command, url))))
    tmp.replace(path)


def clear(db: Path) -> None:
    found = read(db)
    if found is not None and found.pid == os.getpid():
        owner_path(db).unlink(missing_ok=True)


def read(db: Path) -> Owner | None:
    """The recorded owner, if the file exists, parses, and its process is alive."""
    try:
        data = json.loads(owner_path(db).read_text())
        found = Owner(int(data["pid"]), str(data["command"]), data.get("url"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return found
