"""``traceproof annotation-config``: list, set and remove the annotation configs of a store.

A config says what annotations of a name may say (see :mod:`traceproof.evals.annotations`).
The project's ``traceproof.toml`` declares most of them (``[annotations.NAME]``, and the labels
of its judges); this command lists what the store holds, sets or removes a config for a name
the file does not declare (a name it declares is the file's: edit the file), and applies the
file on demand. On the store itself, or through the server holding it (its
``/api/v1/annotation-configs``). Registers itself on the ``traceproof`` group when
:mod:`traceproof.cli` imports it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from traceproof.cli import _fail, _settings, _store_or_remote, cli, config_option, db_option
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.annotations import (
    AnnotationConfig,
    ConfigKind,
    Direction,
    InvalidAnnotation,
    LabelChoice,
    config_summary,
)
from traceproof.evals.config import ProjectConfig
from traceproof.remote import RemoteStore
from traceproof.storage import Store


def _label(text: str) -> LabelChoice:
    """``pass=1`` (a label and its score) or ``pass`` (no score)."""
    label, eq, score = text.partition("=")
    if not label.strip():
        raise click.BadParameter(f"{text!r} has no label; write LABEL or LABEL=SCORE.")
    if not eq:
        return LabelChoice(label)
    try:
        value = float(score)
    except ValueError:
        raise click.BadParameter(f"{text!r}: {score!r} is not a number.") from None
    if not math.isfinite(value):
        raise click.BadParameter(f"{text!r}: the score must be a finite number.")
    return LabelChoice(label, value)


def _bound(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _from_options(
    name: str,
    labels: tuple[str, ...],
    categorical: bool,
    continuous: tuple[float, float] | None,
    freeform: bool,
    direction: str | None,
    description: str | None,
) -> AnnotationConfig:
    chosen = [categorical, continuous is not None, freeform]
    if sum(chosen) != 1:
        raise click.UsageError(
            "Give one of --categorical LABEL=SCORE..., --continuous MIN MAX, --freeform "
            "(or --remove)."
        )
    if labels and not categorical:
        raise click.UsageError(f"Labels ({' '.join(labels)}) go with --categorical only.")
    kind = (
        ConfigKind.CATEGORICAL
        if categorical
        else ConfigKind.CONTINUOUS
        if continuous is not None
        else ConfigKind.FREEFORM
    )
    low, high = continuous if continuous is not None else (math.inf, math.inf)
    return AnnotationConfig(
        name=name,
        kind=kind,
        labels=tuple(_label(text) for text in labels),
        lower_bound=_bound(low) if continuous is not None else None,
        upper_bound=_bound(high) if continuous is not None else None,
        direction=Direction((direction or "none").upper()),
        description=description,
    )


def _source(name: str, project: ProjectConfig) -> str:
    if name in project.implied:
        return "judge"
    if name in project.annotations:
        return project.path.name if project.path is not None else "traceproof.toml"
    return "set"


def _stored(store: Store | RemoteStore) -> dict[str, AnnotationConfig]:
    from traceproof.storage.annotations import get_configs

    if isinstance(store, RemoteStore):
        return store.annotation_configs()
    with store.reader() as reader:
        return get_configs(reader)


def _declared_here(name: str, project: ProjectConfig) -> TraceproofError:
    where = f"the judge evaluators.{name}" if name in project.implied else f"[annotations.{name}]"
    file = project.path or "traceproof.toml"
    return TraceproofError(
        f"{file} declares the config of {name!r} ({where}); the file's config is applied at "
        "every server start and CLI write, so a config set here would not last. Edit the file "
        "instead (then `traceproof annotation-config --apply`, or restart the server).",
        code=ErrorCode.INVALID_ARGUMENT,
    )


@cli.command("annotation-config")
@click.argument("labels", nargs=-1)
@db_option
@click.option("--name", default=None, help="The annotation name to set or remove a config for.")
@click.option("--categorical", is_flag=True, help="Labels (LABEL or LABEL=SCORE) follow.")
@click.option(
    "--continuous", type=float, nargs=2, default=None, metavar="MIN MAX", help="Score bounds."
)
@click.option("--freeform", is_flag=True, help="Anything goes (documents the name).")
@click.option(
    "--direction",
    type=click.Choice(["maximize", "minimize", "none"], case_sensitive=False),
    default=None,
    help="Which way is better (default none).",
)
@click.option("--description", default=None, help="What the annotation means.")
@click.option("--remove", is_flag=True, help="Remove the config of --name.")
@click.option("--apply", "apply_file", is_flag=True, help="Store traceproof.toml's configs now.")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def annotation_config(
    labels: tuple[str, ...],
    db: Path | None,
    name: str | None,
    categorical: bool,
    continuous: tuple[float, float] | None,
    freeform: bool,
    direction: str | None,
    description: str | None,
    remove: bool,
    apply_file: bool,
    config: Path | None,
    as_json: bool,
) -> None:
    """List the annotation configs of the store; set one (--name N --categorical pass=1 fail=0 |
    --continuous MIN MAX | --freeform), remove one (--name N --remove), or apply traceproof.toml
    (--apply)."""
    from traceproof.projectconfig import project_config
    from traceproof.storage.annotations import ConfigChanges, outside_config, set_configs

    setting = categorical or continuous is not None or freeform
    if (setting or remove) and name is None:
        raise click.UsageError("--name says which annotation's config to set or remove.")
    if name is not None and not (setting or remove):
        raise click.UsageError(
            "Say what to do with --name: --categorical LABEL=SCORE..., --continuous MIN MAX, "
            "--freeform or --remove."
        )
    if setting and remove:
        raise click.UsageError("--remove takes no config options.")
    settings = _settings(db, config=config)
    try:
        project = project_config(settings)
        new = None
        if setting and name is not None:
            new = _from_options(
                name, labels, categorical, continuous, freeform, direction, description
            )
        if name is not None and name in project.annotations:
            raise _declared_here(name, project)
        writes = setting or remove or apply_file
        changes = ConfigChanges()
        outside = 0
        with _store_or_remote(settings, create=writes) as store:
            if writes:
                configs = [*project.annotations.values(), *([new] if new else [])]
                removed = [name] if remove and name is not None else []
                if isinstance(store, RemoteStore):
                    changes = store.set_annotation_configs(configs, remove=removed)
                else:
                    changes = set_configs(store, configs, remove=removed)
                    if new is not None:
                        with store.reader() as reader:
                            outside = outside_config(reader, new)
            stored = _stored(store)
    except InvalidAnnotation as exc:
        _fail(TraceproofError(exc.message, code=ErrorCode.INVALID_ARGUMENT))
        return
    except TraceproofError as exc:
        _fail(exc)
        return
    if remove and name is not None and name not in changes.removed:
        _fail(
            TraceproofError(
                f"No config named {name!r} in the store; nothing removed. Run `traceproof "
                "annotation-config` to list them.",
                code=ErrorCode.NOT_FOUND,
            )
        )
        return
    pending = [n for n, c in project.annotations.items() if stored.get(n) != c]
    rows = [
        c.as_dict() | {"summary": config_summary(c), "source": _source(c.name, project)}
        for c in stored.values()
    ]
    result: dict[str, Any] = {"configs": rows}
    if writes:
        result |= {
            "changed": list(changes.changed),
            "removed": list(changes.removed),
        }
    if outside:
        result["outside_config"] = outside
    if pending:
        result["not_applied"] = sorted(pending)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    _print(result, name, Console())


def _print(result: dict[str, Any], name: str | None, out: Console) -> None:
    from traceproof.cli_render import render_table

    def say(text: str) -> None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)

    if result.get("changed"):
        say(f"Stored: {', '.join(result['changed'])}.")
    if result.get("removed"):
        say(f"Removed: {', '.join(result['removed'])}.")
    if result.get("outside_config"):
        say(
            f"{result['outside_config']:,} stored annotations of {name!r} do not fit the new "
            "config (written before it; they stay, later writes are checked)."
        )
    if not result["configs"]:
        say(
            "No annotation configs in the store: annotations of any name may say anything. "
            "Declare them in traceproof.toml ([annotations.NAME]) or set one with --name."
        )
    else:
        rows = [
            [c["name"], c["summary"], c["source"], c["description"] or ""]
            for c in result["configs"]
        ]
        render_table(["name", "config", "source", "description"], rows, out, frozenset({0, 3}))
    if result.get("not_applied"):
        say(
            f"traceproof.toml declares configs the store does not hold yet: "
            f"{', '.join(result['not_applied'])} (stored at the next server start or CLI write, "
            "or now with --apply)."
        )
