"""Annotation configs: what each annotation name may hold (categorical labels, a score
range, a direction), one row per name in ``annotation_configs``. :func:`set_config` stores one,
:func:`set_configs` a whole set (traceproof.toml, ``traceproof annotation-config``) in one
transaction; :func:`get_configs` reads them; :func:`outside_config` counts the stored
annotations a config would refuse. :mod:`traceproof.storage.annotations` checks every write
against them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from traceproof.evals.annotations import (
    AnnotationConfig,
    ConfigKind,
    Direction,
    LabelChoice,
)
from traceproof.storage.reader import Reader

if TYPE_CHECKING:
    from traceproof.storage.store import Store


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _config_of(row: tuple[Any, ...]) -> AnnotationConfig:
    name, kind, labels, low, high, direction, description = row
    choices = tuple(
        LabelChoice(str(c["label"]), None if c.get("score") is None else float(c["score"]))
        for c in (orjson.loads(labels) if labels else [])
    )
    return AnnotationConfig(
        name=name,
        kind=ConfigKind(kind),
        labels=choices,
        lower_bound=low,
        upper_bound=high,
        direction=Direction(direction),
        description=description,
    )


_CONFIG_COLUMNS = "name, kind, labels, lower_bound, upper_bound, direction, description"


def _configs(cursor: duckdb.DuckDBPyConnection, names: set[str]) -> dict[str, AnnotationConfig]:
    if not names:
        return {}
    rows = cursor.execute(
        f"SELECT {_CONFIG_COLUMNS} FROM annotation_configs WHERE list_contains(?, name)",
        [sorted(names)],
    ).fetchall()
    return {row[0]: _config_of(row) for row in rows}


def set_config(store: Store, config: AnnotationConfig) -> None:
    """Store ``config`` (replacing one of the same name). Annotations already written are not
    checked again; later writes are."""
    labels = orjson.dumps([{"label": c.label, "score": c.score} for c in config.labels]).decode()

    def run(cursor: duckdb.DuckDBPyConnection) -> None:
        now = _now()
        created = cursor.execute(
            "SELECT created_at FROM annotation_configs WHERE name = ?", [config.name]
        ).fetchone()
        cursor.execute("DELETE FROM annotation_configs WHERE name = ?", [config.name])
        cursor.execute(
            "INSERT INTO annotation_configs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                config.name,
                str(config.kind),
                labels if config.kind is ConfigKind.CATEGORICAL else None,
                config.lower_bound,
                config.upper_bound,
                str(config.direction),
                config.description,
                created[0] if created else now,
                now,
            ],
        )

    store.run_write(run)


def get_configs(reader: Reader, names: Sequence[str] | None = None) -> dict[str, AnnotationConfig]:
    """Stored configs by name (all of them when ``names`` is None)."""
    sql = f"SELECT {_CONFIG_COLUMNS} FROM annotation_configs"
    params: list[Any] = []
    if names is not None:
        sql += " WHERE list_contains(?, name)"
        params.append(list(names))
    return {row[0]: _config_of(row) for row in reader.rows(sql + " ORDER BY name", params)}


# -- configs, in bulk (traceproof.toml, `traceproof annotation-config`) -------------------------


@dataclass(frozen=True)
class ConfigChanges:
    """What :func:`set_configs` and :func:`delete_configs` did, by name."""

    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def set_configs(
    store: Store, configs: Sequence[AnnotationConfig], *, remove: Sequence[str] = ()
) -> ConfigChanges:
    """Store ``configs`` and delete the configs named in ``remove``, as one transaction on the
    writer: all of it or none. A config equal to the stored one is left as it is (its
    ``updated_at`` too), so applying the same file again writes nothing. Annotations already
    written are not checked again; later writes are."""
    wanted = {config.name: config for config in configs}

    def run(cursor: duckdb.DuckDBPyConnection) -> ConfigChanges:
        now = _now()
        names = sorted({*wanted, *remove})
        stored = {
            row[0]: (_config_of(row[:7]), row[7])
            for row in cursor.execute(
                f"SELECT {_CONFIG_COLUMNS}, created_at FROM annotation_configs "
                "WHERE list_contains(?, name)",
                [names],
            ).fetchall()
        }
        changed, unchanged = [], []
        for name, config in wanted.items():
            old = stored.get(name)
            if old is not None and old[0].as_dict() == config.as_dict():
                unchanged.append(name)
                continue
            labels = orjson.dumps([{"label": c.label, "score": c.score} for c in config.labels])
            cursor.execute("DELETE FROM annotation_configs WHERE name = ?", [name])
            cursor.execute(
                "INSERT INTO annotation_configs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    name,
                    str(config.kind),
                    labels.decode() if config.kind is ConfigKind.CATEGORICAL else None,
                    config.lower_bound,
                    config.upper_bound,
                    str(config.direction),
                    config.description,
                    old[1] if old is not None else now,
                    now,
                ],
            )
            changed.append(name)
        removed = [n for n in dict.fromkeys(remove) if n in stored and n not in wanted]
        if removed:
            cursor.execute("DELETE FROM annotation_configs WHERE list_contains(?, name)", [removed])
        return ConfigChanges(tuple(changed), tuple(unchanged), tuple(removed))

    if not wanted and not remove:
        return ConfigChanges()
    return store.run_write(run)


#: An annotation that gives a label or a score (what a config constrains).
_SAYS = "(label IS NOT NULL OR score IS NOT NULL)"


def outside_config(reader: Reader, config: AnnotationConfig) -> int:
    """How many current annotations named ``config.name`` it would refuse (written before it
    was set, or under another config)."""
    if config.kind is ConfigKind.FREEFORM:
        return 0
    if config.kind is ConfigKind.CATEGORICAL:
        return int(
            reader.scalar(
                f"SELECT count(*) FROM annotations WHERE name = ? AND {_SAYS} AND (label IS "
                "NULL OR NOT list_contains(?, label))",
                [config.name, [c.label for c in config.labels]],
            )
            or 0
        )
    low = -math.inf if config.lower_bound is None else config.lower_bound
    high = math.inf if config.upper_bound is None else config.upper_bound
    return int(
        reader.scalar(
            f"SELECT count(*) FROM annotations WHERE name = ? AND {_SAYS} AND (score IS NULL "
            "OR score < ? OR score > ?)",
            [config.name, low, high],
        )
        or 0
    )
