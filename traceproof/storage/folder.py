"""The folder of a store: created with the store, and kept out of git in the default layout.

The default store is ``.traceproof/traceproof.duckdb`` in the project an agent works on, so a
``git add .`` would commit a database and its write-ahead log. When :func:`make_store_folder`
creates a folder named ``.traceproof`` it writes ``.traceproof/.gitignore`` containing ``*``
(the folder then ignores itself, with no change to the project's own ``.gitignore``). It never
writes into a folder that already existed, nor over a file that is there.
"""

from __future__ import annotations

from pathlib import Path

#: Name of the folder of the default store layout.
STORE_FOLDER = ".traceproof"


def make_store_folder(db_path: Path) -> None:
    """Create the folder holding ``db_path`` (and its parents) if needed."""
    folder = db_path.parent
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if not created or folder.name != STORE_FOLDER:
        return
    try:
        with (folder / ".gitignore").open("x", encoding="utf-8") as ignore:
            ignore.write("*\n")
    except OSError:  # there already (a race with another process), or not writable: harmless
        pass
