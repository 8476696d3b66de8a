"""Dataset files and the chat export.

Files: JSON Lines (one object per line: ``input`` and optional ``expected``, ``metadata``,
``split``, ``source_trace_id``, ``source_span_id``, ``id``) and CSV (a header row with the same
names; ``input``, ``expected`` and ``metadata`` cells hold JSON text, an empty cell is none). A
file is checked whole before anything is stored: :class:`FileError` names the line.

Chat export (:func:`chat_record`): an LLM span as a fine-tuning record, ``{"messages": [{"role",
"content", "tool_calls"?, "tool_call_id"?, "name"?}], "tools"?}`` from OpenInference
``llm.input_messages.*`` then ``llm.output_messages.*`` (tool calls as ``{"id", "type":
"function", "function": {"name", "arguments"}}``, arguments as JSON text), ``llm.tools.*``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

import orjson

from traceproof.errors import ErrorCode
from traceproof.experiments.datasets import (
    EXAMPLE_KEYS,
    DatasetError,
    Example,
    FileError,
    example_from,
    parse_json_text,
)

__all__ = ["Format", "chat_record", "file_format", "read_examples", "write_csv", "write_jsonl"]


Format = Literal["jsonl", "csv"]


def file_format(path: str) -> Format:
    lowered = path.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith(".csv"):
        return "csv"
    raise DatasetError(
        f"{path}: not a .jsonl or .csv file. Name it FILE.jsonl (one JSON object per line) or "
        "FILE.csv (a header row; input, expected, metadata cells hold JSON).",
        code=ErrorCode.UNSUPPORTED_FORMAT,
    )


def read_examples(text: str, fmt: Format, path: str = "<input>") -> list[Example]:
    """Every example of a file's text, or :class:`FileError` at the first bad line. A UTF-8
    byte order mark at its start (Excel writes one) is not part of the first line."""
    text = text.removeprefix("\ufeff")
    return list(_read_jsonl(text, path) if fmt == "jsonl" else _read_csv(text, path))


def _read_jsonl(text: str, path: str) -> Iterator[Example]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            reason = str(exc).split(": line ")[0]  # the position is within the line
            raise FileError(path, number, f"not JSON ({reason})") from None
        if not isinstance(item, dict):
            raise FileError(path, number, "not a JSON object")
        try:
            yield example_from(item)
        except DatasetError as exc:
            raise FileError(path, number, exc.message) from None


def _read_csv(text: str, path: str) -> Iterator[Example]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise FileError(path, 1, f"not CSV ({exc})") from None
    names = [h.strip() for h in header]
    unknown = [n for n in names if n not in EXAMPLE_KEYS]
    if unknown or "input" not in names or len(set(names)) < len(names):
        raise FileError(
            path,
            1,
            "the header must name an input column and only these columns, once each: "
            + ", ".join(EXAMPLE_KEYS),
        )
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise FileError(path, reader.line_num, f"not CSV ({exc})") from None
        number = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            raise FileError(path, number, f"{len(cells)} cells; the header has {len(names)}")
        item: dict[str, Any] = {}
        for name, cell in zip(names, cells, strict=True):
            if cell == "":
                continue
            if name in ("input", "expected", "metadata"):
                try:
                    item[name] = orjson.loads(cell)
                except orjson.JSONDecodeError:
                    raise FileError(
                        path,
                        number,
                        f"the {name} cell is not JSON (write text as a JSON string, with "
                        'double quotes: "hello")',
                    ) from None
            else:
                item[name] = cell
        try:
            yield example_from(item)
        except DatasetError as exc:
            raise FileError(path, number, exc.message) from None


def write_jsonl(examples: Iterable[Mapping[str, Any]], out: io.TextIOBase | Any) -> int:
    """Examples (``as_dict`` rows) as JSON Lines; how many were written."""
    count = 0
    for row in examples:
        out.write(orjson.dumps({k: v for k, v in row.items() if v is not None}).decode() + "\n")
        count += 1
    return count


def write_csv(examples: Iterable[Mapping[str, Any]], out: io.TextIOBase | Any) -> int:
    """Examples as CSV: a header of :data:`EXAMPLE_KEYS`, JSON text in the JSON cells."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXAMPLE_KEYS)
    count = 0
    for row in examples:
        cells = []
        for key in EXAMPLE_KEYS:
            value = row.get(key)
            if value is None:
                cells.append("")
            elif key in ("input", "expected", "metadata"):
                cells.append(orjson.dumps(value).decode())
            else:
                cells.append(str(value))
        writer.writerow(cells)
        count += 1
    return count


# -- chat fine-tuning export --------------------------------------------------------------------


def chat_record(document: Mapping[str, Any]) -> dict[str, Any] | None:
    """A span document as a chat fine-tuning record, or None when it holds no messages."""
    attributes = document.get("attributes")
    if isinstance(attributes, str):
        attributes = parse_json_text(attributes)
    llm = attributes.get("llm") if isinstance(attributes, dict) else None
    if not isinstance(llm, dict):
        return None
    messages = [
        m
        for key in ("input_messages", "output_messages")
        for m in map(_chat_message, _listed(llm.get(key)))
        if m is not None
    ]
    if not messages:
        return None
    record: dict[str, Any] = {"messages": messages}
    tools = [_tool_schema(t) for t in _listed(llm.get("tools"))]
    if any(t is not None for t in tools):
        record["tools"] = [t for t in tools if t is not None]
    return record


def _listed(value: Any) -> list[Any]:
    """An OpenInference list: an array, or an object of index keys (``{"0": …}``)."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and all(k.isdigit() for k in value):
        return [value[k] for k in sorted(value, key=int)]
    return []


def _chat_message(entry: Any) -> dict[str, Any] | None:
    message = entry.get("message") if isinstance(entry, dict) else None
    if not isinstance(message, dict) or not message.get("role"):
        return None
    out: dict[str, Any] = {"role": str(message["role"])}
    content = message.get("content")
    if content is None:
        parts = [
            p.get("message_content", {}).get("text")
            for p in _listed(message.get("contents"))
            if isinstance(p, dict)
        ]
        texts = [t for t in parts if isinstance(t, str)]
        content = "".join(texts) if texts else None
    calls = [c for c in map(_tool_call, _listed(message.get("tool_calls"))) if c is not None]
    if content is not None:
        out["content"] = content if isinstance(content, str) else orjson.dumps(content).decode()
    elif not calls:
        out["content"] = ""
    if calls:
        out["tool_calls"] = calls
    for key in ("tool_call_id", "name"):
        if isinstance(message.get(key), str):
            out[key] = message[key]
    return out


def _tool_call(entry: Any) -> dict[str, Any] | None:
    call = entry.get("tool_call") if isinstance(entry, dict) else None
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        return None
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
    out: dict[str, Any] = {
        "type": "function",
        "function": {"name": str(function["name"]), "arguments": arguments},
    }
    if isinstance(call, dict) and call.get("id") is not None:
        out = {"id": str(call["id"]), **out}
    return out


def _tool_schema(entry: Any) -> Any:
    tool = entry.get("tool") if isinstance(entry, dict) else None
    schema = tool.get("json_schema") if isinstance(tool, dict) else None
    return parse_json_text(schema) if schema is not None else None
