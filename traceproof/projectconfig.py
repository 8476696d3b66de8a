"""The project config file applied to a store: the annotation configs of ``traceproof.toml``.

The configs a project declares (``[annotations.NAME]``) and those its judges imply are the
source of truth: ``traceproof serve`` and ``traceproof mcp`` store them when they start, and the
CLI's writes (``annotate``, ``ingest`` of eval results) store them before they write, on the
store itself or through the server that holds it. They go through the store's single writer
in one transaction; a config equal to the stored one is left alone, so applying an unchanged
file writes nothing. A config set another way (``traceproof annotation-config``) stays until
it is replaced or removed; a name the file declares is the file's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from traceproof.evals.config import ProjectConfig, load_config
from traceproof.settings import Settings
from traceproof.storage.annotations import ConfigChanges, set_configs

if TYPE_CHECKING:
    from traceproof.remote import RemoteStore
    from traceproof.storage import Store


def project_config(settings: Settings) -> ProjectConfig:
    """``settings.config`` (``--config``, ``TRACEPROOF_CONFIG``), else ``traceproof.toml`` in the
    working directory, else an empty config; ``[invalid_config]`` when the file is wrong."""
    return load_config(settings.config)


def apply_annotation_configs(
    store: Store | RemoteStore, project: ProjectConfig
) -> ConfigChanges | None:
    """Store the project's annotation configs (None when it declares none)."""
    from traceproof.remote import RemoteStore

    if not project.annotations:
        return None
    configs = list(project.annotations.values())
    if isinstance(store, RemoteStore):
        return store.set_annotation_configs(configs)
    return set_configs(store, configs)


def describe(project: ProjectConfig, changes: ConfigChanges) -> str:
    """``annotation configs from traceproof.toml: correctness, tone (1 changed)``."""
    source = project.path.name if project.path is not None else "traceproof.toml"
    names = ", ".join(sorted(project.annotations))
    return (
        f"annotation configs from {source}: {names} "
        f"({len(changes.changed)} changed, {len(changes.unchanged)} unchanged)"
    )
