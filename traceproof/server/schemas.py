"""What ``tools/list`` and ``tools/call`` send, kept small without changing what they mean.

Every agent turn pays for ``tools/list``, and every answer is paid once more. Pydantic's
schemas carry noise a model does not need: ``title`` beside every property, ``anyOf [T, null]``
around every optional parameter, ``"default": null``. Answers carry fields that are null or
empty. Here both go, by one rule on each side so that the output schema still validates every
answer a strict client receives:

- input schemas: titles dropped, ``anyOf [T, null]`` becomes ``T`` (not sending a parameter is
  how a client says "none"; traceproof still accepts an explicit ``null``), defaults that
  say nothing (``null``, ``false``, ``[]``), ``type`` beside a string ``enum`` and
  ``minLength: 1`` dropped (the arguments are still validated by the function's own types);
- answers (:func:`trimmed`): a field of a result model that is ``None``, ``[]`` or ``{}`` is
  left out, at every level of the result's own models (never inside data: a jq output, a SQL
  cell or a span attribute stays exactly as it is, nulls included);
- output schemas: titles and defaults dropped, ``anyOf [T, null]`` becomes ``T``, and such a
  property, or one holding an array or an object, is no longer required (it may be left out).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_NAME_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties"})
_VALUES = frozenset({"default", "const", "enum", "examples"})
_NULL = {"type": "null"}


def without_titles(schema: Any) -> Any:
    """A JSON schema without its ``title`` keywords (a property *named* title stays)."""
    if isinstance(schema, list):
        return [without_titles(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _NAME_MAPS and isinstance(value, dict):
            kept[key] = {name: without_titles(sub) for name, sub in value.items()}
        elif key in _VALUES:
            kept[key] = value
        else:
            kept[key] = without_titles(value)
    return kept


def _without_null(prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``prop`` with ``anyOf [T, null]`` folded into ``T``; whether it allowed null."""
    branches = prop.get("anyOf")
    if not (isinstance(branches, list) and len(branches) == 2 and _NULL in branches):
        return dict(prop), False
    (other,) = [b for b in branches if b != _NULL]
    folded = {k: v for k, v in prop.items() if k != "anyOf"}
    return {**other, **folded}, True


def _object_schemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema itself and every model definition in ``$defs``."""
    return [schema, *[d for d in (schema.get("$defs") or {}).values() if isinstance(d, dict)]]


def compact_input(schema: dict[str, Any]) -> dict[str, Any]:
    """An input schema as a model should read it (see the module docstring)."""
    schema = without_titles(schema)
    for node in _object_schemas(schema):
        properties = node.get("properties") or {}
        for name, given in list(properties.items()):
            prop, _ = _without_null(given)
            if "default" in prop and prop["default"] in (None, False, [], {}):
                del prop["default"]  # what leaving the parameter out means anyway
            if "enum" in prop and prop.get("type") == "string":
                del prop["type"]  # the values say it
            if prop.get("minLength") == 1:
                del prop["minLength"]  # still refused: traceproof validates the arguments
            properties[name] = prop
    return schema


def _may_be_empty(prop: dict[str, Any]) -> bool:
    """Whether :func:`trimmed` may leave the property out (a nested result model, ``$ref``,
    is sent even when all its own fields are left out)."""
    kind = prop.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    kinds += [branch.get("type") for branch in prop.get("anyOf") or [] if isinstance(branch, dict)]
    return bool({"array", "object", "null"} & set(kinds))


def compact_output(schema: dict[str, Any]) -> dict[str, Any]:
    """An output schema that validates :func:`trimmed` answers (see the module docstring)."""
    schema = without_titles(schema)
    for node in _object_schemas(schema):
        properties = node.get("properties") or {}
        optional: set[str] = set()
        for name, given in list(properties.items()):
            prop, nullable = _without_null(given)
            prop.pop("default", None)
            if nullable or _may_be_empty(prop):
                optional.add(name)
            properties[name] = prop
        if "required" in node:
            required = [name for name in node["required"] if name not in optional]
            if required:
                node["required"] = required
            else:
                del node["required"]
    return schema


def trimmed(result: BaseModel) -> dict[str, Any]:
    """``result`` as JSON data (by alias), without its null and empty fields."""
    data: dict[str, Any] = result.model_dump(mode="json", by_alias=True)
    _trim(result, data)
    return data


def _trim(model: BaseModel, data: dict[str, Any]) -> None:
    for name, info in type(model).model_fields.items():
        key = info.alias or name
        if key not in data:
            continue
        value = getattr(model, name)
        if value is None or (isinstance(value, list | tuple | dict) and not value):
            del data[key]
        elif isinstance(value, BaseModel) and isinstance(data[key], dict):
            _trim(value, data[key])
        elif isinstance(value, list | tuple) and isinstance(data[key], list):
            for item, dumped in zip(value, data[key], strict=False):
                if isinstance(item, BaseModel) and isinstance(dumped, dict):
                    _trim(item, dumped)
        elif isinstance(value, dict) and isinstance(data[key], dict):
            for item_key, item in value.items():
                dumped = data[key].get(str(item_key))
                if isinstance(item, BaseModel) and isinstance(dumped, dict):
                    _trim(item, dumped)
