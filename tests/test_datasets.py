"""Datasets: content-hash ids, append-only versions, extraction from spans (path, jq,
annotation), splits, JSONL/CSV files, chat export; the four tools over the real MCP client; the
``traceproof dataset`` commands. Real stores throughout (the demo store for spans)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mcp import Client

from traceproof.cli import cli
from traceproof.errors import TraceproofError
from traceproof.evals.annotations import AnnotationInput, AnnotatorKind, TargetKind
from traceproof.experiments.dataset_files import chat_record, read_examples, write_csv, write_jsonl
from traceproof.experiments.datasets import (
    DatasetError,
    Example,
    FileError,
    Source,
    SplitRule,
    example_id,
)
from traceproof.server.mcp import create_mcp_server
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage import datasets as storage
from traceproof.storage.annotations import write_annotations
from traceproof.tools import datasets as tools


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


LATE_LLM = "span_kind = 'LLM' AND project = 'demo' AND start_time >= '2026-11-01 14:00:00'"
LLM_WITH_TOOL_CALL = "span_kind = 'LLM' AND output_mime_type = 'application/json'"


async def call(store: Store, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    async with Client(create_mcp_server(store)) as client:
        result = await client.call_tool(name, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == result.structured_content
    return result.structured_content


async def error_of(store: Store, name: str, arguments: dict[str, Any]) -> str:
    async with Client(create_mcp_server(store)) as client:
        result = await client.call_tool(name, arguments)
    assert result.is_error
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


# -- the example model --------------------------------------------------------------------------


def test_an_examples_id_is_the_hash_of_its_input_and_expected_output_only() -> None:
    one = Example(input={"b": 1, "a": [1, 2]}, expected="x", metadata={"k": 1}, split="train")
    same = Example(input={"a": [1, 2], "b": 1}, expected="x", source_span_id="s")
    other = Example(input={"a": [1, 2], "b": 1}, expected="y")
    assert one.id == same.id == example_id({"a": [1, 2], "b": 1}, "x")
    assert len(one.id) == 16 and int(one.id, 16) >= 0
    assert other.id != one.id
    with pytest.raises(DatasetError):
        Example(input=None)


def test_hash_splits_are_deterministic_by_id_and_follow_the_weights() -> None:
    rule = SplitRule.parse("hash:train=0.8,test=0.2")
    examples = [Example(input={"n": n}) for n in range(2000)]
    first = [rule.split_of(e.id) for e in examples]
    again = [SplitRule.parse("hash: train = 0.8, test = 0.2").split_of(e.id) for e in examples]
    assert first == again  # the same id lands in the same bucket
    counts = Counter(first)
    assert set(counts) == {"train", "test"}
    assert 1500 < counts["train"] < 1700
    named = SplitRule.parse("holdout")
    own = Example(input=1, split="dev")
    plain = Example(input=2)
    named.apply([own, plain])
    assert (own.split, plain.split) == ("dev", "holdout")
    for bad in ("hash:train=x", "hash:a=0,b=0", "hash:a=0.5,a=0.5", "two words"):
        with pytest.raises(DatasetError):
            SplitRule.parse(bad)


def test_hash_split_weights_must_sum_to_one() -> None:
    for bad in ("hash:train=0.8,test=0.3", "hash:train=4,test=1", "hash:train=0.5"):
        with pytest.raises(DatasetError) as caught:
            SplitRule.parse(bad)
        assert str(caught.value.code) == "invalid_argument"
        assert "not 1" in caught.value.message
    # A float sum a hair off 1 is still 1.
    assert SplitRule.parse("hash:a=0.7,b=0.2,c=0.1").buckets == (("a", 0.7), ("b", 0.2), ("c", 0.1))
    assert SplitRule.parse("hash:all=1").split_of("f" * 16) == "all"


def test_sources_parse_paths_jq_and_annotations() -> None:
    assert Source.parse("input.value").segments == ("input_value",)
    assert Source.parse("input.value.messages.0").segments == ("input_value", "messages", "0")
    assert Source.parse("llm.input_messages").segments == ("attributes", "llm", "input_messages")
    assert Source.parse("attributes.llm.model_name").segments == ("attributes", "llm", "model_name")
    assert Source.parse("jq:.name | ascii_upcase").text == ".name | ascii_upcase"
    fix = Source.parse("annotation:fix.metadata.answer")
    assert (fix.kind, fix.annotation, fix.segments) == ("annotation", "fix", ("metadata", "answer"))
    assert Source.parse("annotation:fix").segments == ("label",)
    for bad in ("jq:", "annotation:fix.nope", "a..b", ""):
        with pytest.raises(DatasetError):
            Source.parse(bad)


# -- files --------------------------------------------------------------------------------------


def test_jsonl_and_csv_round_trip_every_field(tmp_path: Path) -> None:
    examples = [
        Example(input={"q": 'a, "quoted"\nline'}, expected=["x", 1], metadata={"m": True}),
        Example(input="plain", split="test", source_trace_id="t1", source_span_id="s1"),
        Example(input=3.5, expected={"nested": {"k": None}}),
    ]
    rows = [e.as_dict() for e in examples]
    for fmt, write in (("jsonl", write_jsonl), ("csv", write_csv)):
        path = tmp_path / f"out.{fmt}"
        with path.open("w", encoding="utf-8", newline="") as out:
            assert write(rows, out) == 3
        back = read_examples(path.read_text(encoding="utf-8"), fmt, str(path))  # type: ignore[arg-type]
        assert [e.as_dict() for e in back] == rows, fmt


@pytest.mark.parametrize(
    ("fmt", "text", "line"),
    [
        ("jsonl", '{"input": 1}\n\n{"input": }\n', 3),
        ("jsonl", '{"input": 1}\n[1, 2]\n', 2),
        ("jsonl", '{"input": 1}\n{"expected": 2}\n', 2),
        ("jsonl", '{"input": 1}\n{"input": 1, "output": 2}\n', 2),
        ("csv", "input,expected\n1,2\nhello,3\n", 3),
        ("csv", 'input,expected\n1,2\n"{""a"": 1}",2,3\n', 3),
        ("csv", "input,answer\n1,2\n", 1),
        ("csv", 'input,metadata\n"multi\nline",1\n', 3),
    ],
)
def test_a_bad_file_is_refused_with_its_line_number(fmt: str, text: str, line: int) -> None:
    with pytest.raises(FileError) as caught:
        read_examples(text, fmt, "data")  # type: ignore[arg-type]
    assert caught.value.line == line
    assert f"data line {line}:" in str(caught.value)
    assert str(caught.value.code) == "invalid_input"


# -- storage: dedupe and versions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("csv", 'input,expected\n"""a""","""b"""\n'),
        ("jsonl", '{"input": "a", "expected": "b"}\n'),
    ],
)
def test_a_files_utf8_byte_order_mark_is_not_part_of_its_first_line(fmt: str, text: str) -> None:
    (example,) = read_examples("\ufeff" + text, fmt)  # type: ignore[arg-type]
    assert (example.input, example.expected) == ("a", "b")


def test_duplicates_by_content_are_counted_not_stored(store: Store) -> None:
    given = [Example(input="a"), Example(input="a", metadata={"x": 1}), Example(input="b")]
    first = storage.create_dataset(store, "d", given)
    assert (first.version, first.added, first.duplicates, first.examples) == (1, 2, 1, 2)
    again = storage.add_examples(store, first.id, [Example(input="b"), Example(input="c")])
    assert (again.version, again.added, again.duplicates, again.examples) == (2, 1, 1, 3)
    nothing = storage.add_examples(store, first.id, [Example(input="c")])
    assert (nothing.changed, nothing.version, nothing.duplicates) == (False, 2, 1)
    with store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM dataset_examples") == 3
        assert reader.scalar("SELECT count(*) FROM dataset_versions") == 2


def test_versions_are_append_only_and_old_ones_stay_readable(store: Store) -> None:
    a, b, c = Example(input="a"), Example(input="b"), Example(input="c")
    made = storage.create_dataset(store, "d", [a, b])
    changed = storage.add_examples(store, made.id, [c], remove=[a.id])
    assert (changed.version, changed.added, changed.removed, changed.examples) == (2, 1, 1, 2)
    back = storage.add_examples(store, made.id, [a])  # a removed example can come back
    assert (back.version, back.added, back.examples) == (3, 1, 3)
    with store.reader() as reader:
        ids = {
            v: [r["id"] for r in storage.dataset_examples(reader, made.id, v)] for v in (1, 2, 3)
        }
        newest = storage.dataset_examples(reader, made.id)
        found = storage.resolve_dataset(reader, "d")
        page = storage.dataset_examples(reader, made.id, 3, offset=1, limit=1)
    assert set(ids[1]) == {a.id, b.id}
    assert set(ids[2]) == {b.id, c.id}
    assert set(ids[3]) == {a.id, b.id, c.id}
    assert [r["id"] for r in newest] == ids[3]
    assert page == [newest[1]]
    assert (found["version"], found["versions"], found["examples"]) == (3, 3, 3)
    with pytest.raises(TraceproofError) as missing:
        storage.add_examples(store, made.id, remove=["0" * 16])
    assert str(missing.value.code) == "not_found"
    with store.reader() as reader:
        assert storage.resolve_dataset(reader, "d")["version"] == 3  # nothing changed


def test_a_name_that_exists_and_an_unknown_dataset_are_clear_errors(store: Store) -> None:
    storage.create_dataset(store, "known")
    with pytest.raises(storage.DatasetExists) as exists:
        storage.create_dataset(store, "known")
    assert "add_examples" in exists.value.message
    with store.reader() as reader, pytest.raises(TraceproofError) as unknown:
        storage.resolve_dataset(reader, "nope")
    assert str(unknown.value.code) == "not_found"
    assert "'known'" in unknown.value.message


# -- extraction from spans ----------------------------------------------------------------------


def test_examples_come_from_span_paths_jq_and_a_persons_annotation(demo_store: Store) -> None:
    with demo_store.reader() as reader:
        spans = reader.rows(
            f"SELECT trace_id, span_id, model, output_value FROM spans WHERE {LLM_WITH_TOOL_CALL} "
            "ORDER BY start_time DESC, span_id LIMIT 3"
        )
    fixed = spans[0]
    person = AnnotationInput(
        name="fix",
        target_kind=TargetKind.SPAN,
        target_id=fixed[1],
        trace_id=fixed[0],
        label="corrected",
        explanation="The right answer is: free returns within 30 days.",
        annotator_kind=AnnotatorKind.HUMAN,
    )
    on_trace = AnnotationInput(
        name="fix",
        target_kind=TargetKind.TRACE,
        target_id=spans[1][0],
        explanation="Ask for the order number first.",
        annotator_kind=AnnotatorKind.HUMAN,
    )
    write_annotations(demo_store, [person, on_trace])
    function = ".attributes.llm.output_messages[0].message.tool_calls[0].tool_call.function"
    made = tools.create_dataset(
        demo_store,
        name="llm",
        ids=[s[1] for s in spans],
        sources={
            "input": "input.value.messages",
            "expected": "annotation:fix.explanation",
            "model": "model",
            "tool": f"jq:{function}.name",
            "roles": "jq:.attributes.llm.input_messages[].message.role",
        },
        split="train",
    )
    assert (made.added, made.examples, made.skipped) == (3, 3, 0)
    with demo_store.reader() as reader:
        rows = storage.dataset_examples(reader, made.id)
    by_span = {r["source_span_id"]: r for r in rows}
    first = by_span[fixed[1]]
    assert first["expected"] == "The right answer is: free returns within 30 days."
    assert first["source_trace_id"] == fixed[0]
    assert isinstance(first["input"], list) and first["input"][0]["role"] == "system"
    for _, span_id, model, output in spans:
        row = by_span[span_id]
        assert row["metadata"]["model"] == model
        assert row["metadata"]["tool"] == json.loads(output)["tool_calls"][0]["name"]
        assert row["metadata"]["roles"][:2] == ["system", "user"]  # several outputs: an array
        assert row["split"] == "train"
        assert row["id"] == example_id(row["input"], row["expected"])
    assert by_span[spans[1][1]]["expected"] == "Ask for the order number first."  # its trace's
    if spans[2][0] not in (fixed[0], spans[1][0]):
        assert by_span[spans[2][1]]["expected"] is None  # no annotation: no expected output
    with demo_store.reader() as reader:
        assert storage.resolve_dataset(reader, "llm")["project"] == "demo"


def test_spans_without_the_input_are_skipped_and_a_bad_program_is_invalid_jq(
    demo_store: Store,
) -> None:
    made = tools.create_dataset(
        demo_store,
        name="tools",
        where="span_kind = 'TOOL'",
        sources={"input": "tool.parameters.properties.amount"},
    )
    with demo_store.reader() as reader:
        total, with_it = reader.rows(
            "SELECT count(*), count(json_extract(attributes, '$.tool.parameters.properties."
            "amount')) FROM spans WHERE span_kind = 'TOOL'"
        )[0]
    assert 0 < with_it < total
    assert made.skipped == total - with_it
    assert made.note is not None and (
        f"The input source 'tool.parameters.properties.amount' gave no value for "
        f"{total - with_it} of the {total} spans: they were skipped." in made.note
    )
    assert (made.added, made.duplicates) == (1, with_it - 1)  # the same schema each time
    with pytest.raises(TraceproofError) as bad:
        tools.create_dataset(
            demo_store, name="bad", where="span_kind = 'TOOL'", sources={"input": "jq:.["}
        )
    assert str(bad.value.code) == "invalid_jq"
    with demo_store.reader() as reader:
        assert [r["name"] for r in storage.list_datasets(reader)] == ["tools"]


def test_a_source_that_gives_nothing_for_every_span_is_refused_and_names_it(
    demo_store: Store,
) -> None:
    for sources in (
        {"input": "nosuch.path"},
        {"expected": "jq:.nosuch"},
        {"input": "input.value", "model": "attributes.nosuch"},
    ):
        with pytest.raises(TraceproofError) as caught:
            tools.create_dataset(demo_store, name="x", where="span_kind = 'LLM'", sources=sources)
        assert str(caught.value.code) == "invalid_argument"
        (source,) = [v for k, v in sources.items() if "nosuch" in v]
        assert repr(source) in caught.value.message
        assert "nothing was stored" in caught.value.message
    with demo_store.reader() as reader:
        assert storage.list_datasets(reader) == []  # nothing created: the name is free
    made = tools.create_dataset(demo_store, name="x", where="span_kind = 'LLM'")
    with pytest.raises(TraceproofError) as caught:
        tools.add_examples(
            demo_store, dataset="x", where="span_kind = 'TOOL'", sources={"input": "nosuch"}
        )
    assert str(caught.value.code) == "invalid_argument" and "'nosuch'" in caught.value.message
    with demo_store.reader() as reader:
        assert storage.resolve_dataset(reader, "x")["id"] == made.id
        assert storage.list_datasets(reader)[0]["version"] == 1  # no new version


# -- chat export --------------------------------------------------------------------------------


def test_an_llm_span_becomes_a_chat_record_with_its_tool_calls(demo_store: Store) -> None:
    from traceproof.tools.jqtool import span_document
    from traceproof.tools.spandoc import SELECT_COLUMNS

    with demo_store.reader() as reader:
        (row,) = reader.dicts(
            f"SELECT {SELECT_COLUMNS} FROM spans WHERE {LLM_WITH_TOOL_CALL} "
            "ORDER BY start_time, span_id LIMIT 1"
        )
    record = chat_record(span_document(row))
    assert record is not None
    messages = record["messages"]
    assert messages[0]["role"] == "system"
    assert {"role", "content"} <= set(messages[1])
    last = messages[-1]
    assert last["role"] == "assistant"
    (tool_call,) = last["tool_calls"]
    assert tool_call["type"] == "function"
    assert tool_call["function"]["name"] == row["tool_name"] or tool_call["function"]["name"]
    assert json.loads(tool_call["function"]["arguments"]) == json.loads(
        json.loads(row["output_value"])["tool_calls"][0]["arguments"]
    )
    assert chat_record({"attributes": {"tool": {"name": "x"}}}) is None


def test_chat_messages_keep_tool_call_ids_tool_results_and_tools() -> None:
    document = {
        "attributes": {
            "llm": {
                "input_messages": [
                    {"message": {"role": "user", "contents": [
                        {"message_content": {"type": "text", "text": "Where is "}},
                        {"message_content": {"type": "text", "text": "my order?"}},
                    ]}},
                    {"message": {"role": "assistant", "tool_calls": [
                        {"tool_call": {"id": "c1", "function": {"name": "get_order",
                                                                 "arguments": {"id": 7}}}}
                    ]}},
                    {"message": {"role": "tool", "tool_call_id": "c1", "content": "shipped"}},
                ],
                "output_messages": [{"message": {"role": "assistant", "content": "Shipped."}}],
                "tools": [{"tool": {"json_schema": '{"type": "function", "name": "get_order"}'}}],
            }
        }
    }  # fmt: skip
    record = chat_record(document)
    assert record == {
        "messages": [
            {"role": "user", "content": "Where is my order?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_order", "arguments": '{"id":7}'},
                    }
                ],
            },
            {"role": "tool", "content": "shipped", "tool_call_id": "c1"},
            {"role": "assistant", "content": "Shipped."},
        ],
        "tools": [{"type": "function", "name": "get_order"}],
    }


# -- the tools over MCP -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_dataset_tool_answers_over_mcp_within_its_budget(demo_store: Store) -> None:
    made = await call(
        demo_store,
        "create_dataset",
        {
            "name": "llm",
            "where": LATE_LLM,
            "sources": {"expected": "output.value"},
            "split": "hash:train=0.8,test=0.2",
        },
    )
    with demo_store.reader() as reader:
        late = reader.scalar(f"SELECT count(*) FROM spans WHERE {LATE_LLM}")
    assert 20 < late < 100
    assert (made["version"], made["added"] + made["duplicates"]) == (1, late)
    assert len(made["example_ids"]) == tools.IDS_SHOWN
    assert "note" not in made
    added = await call(
        demo_store,
        "add_examples",
        {
            "dataset": "llm",
            "examples": [
                {"input": "hi", "expected": "hello"},
                {"input": "hi", "expected": "hello"},
            ],
            "remove": made["example_ids"][:3],
        },
    )
    assert (added["version"], added["added"], added["duplicates"], added["removed"]) == (2, 1, 1, 3)
    listed = await call(demo_store, "list_datasets", {})
    assert [(d["name"], d["version"], d["examples"]) for d in listed["datasets"]] == [
        ("llm", 2, made["examples"] - 2)
    ]
    seen: list[str] = []
    arguments: dict[str, Any] = {"dataset": "llm", "version": 1, "max_chars": 4000}
    while True:
        page = await call(demo_store, "get_dataset", arguments)
        assert len(json.dumps(page, separators=(",", ":"), ensure_ascii=False)) <= 4000
        seen += [r["id"] for r in page["rows"]]
        if not page.get("next_cursor"):
            break
        assert page["truncated"] and page["next_call"]
        arguments["cursor"] = page["next_cursor"]
    assert page["clipped"] >= 0
    assert len(seen) == len(set(seen)) == made["examples"]
    first = await call(demo_store, "get_dataset", {"dataset": made["id"], "max_chars": 1000})
    clipped = [r["input"] for r in first["rows"] if "…[clipped: " in str(r["input"])]
    assert clipped and "FROM dataset_examples WHERE dataset_id" in clipped[0]
    assert first["clipped"] >= 1
    test_split = await call(demo_store, "get_dataset", {"dataset": "llm", "split": "test"})
    assert {r["split"] for r in test_split["rows"]} == {"test"}
    whole = await call(demo_store, "get_dataset", {"dataset": "llm"})
    assert test_split["examples"] == page_splits(whole)["test"]


def page_splits(page: dict[str, Any]) -> dict[str, int]:
    splits: dict[str, int] = page["splits"]
    return splits


@pytest.mark.anyio
async def test_tool_errors_say_what_to_do(demo_store: Store) -> None:
    await call(demo_store, "create_dataset", {"name": "one", "examples": [{"input": 1}]})
    exists = await error_of(demo_store, "create_dataset", {"name": "one", "examples": []})
    assert exists.startswith("[invalid_argument]") and "add_examples" in exists
    unknown = await error_of(demo_store, "get_dataset", {"dataset": "two"})
    assert unknown.startswith("[not_found]") and "'one'" in unknown
    bad_span = await error_of(demo_store, "create_dataset", {"name": "x", "ids": ["f" * 16]})
    assert bad_span.startswith("[unknown_span]")
    bad_source = await error_of(
        demo_store, "create_dataset", {"name": "x", "where": "true", "sources": {"input": "nope"}}
    )
    assert bad_source.startswith("[invalid_argument]") and "input.value" in bad_source
    wrong = {"dataset": "one", "examples": [{"output": 1}]}
    bad_example = await error_of(demo_store, "add_examples", wrong)
    assert bad_example.startswith("[invalid_argument]")
    bad_version = await error_of(demo_store, "get_dataset", {"dataset": "one", "version": 5})
    assert bad_version.startswith("[not_found]")
    nothing = await error_of(demo_store, "add_examples", {"dataset": "one"})
    assert nothing.startswith("[invalid_argument]")
    no_match = await error_of(demo_store, "add_examples", {"dataset": "one", "where": "false"})
    assert no_match.startswith("[invalid_argument]") and "No span matches where" in no_match
    with demo_store.reader() as reader:
        assert storage.resolve_dataset(reader, "one")["version"] == 1


# -- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def demo_copy(demo_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_db, path)
    return path


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_the_dataset_commands_create_export_import_list_and_show(
    demo_copy: Path, tmp_path: Path
) -> None:
    db = ("--db", demo_copy)
    with Store.open(demo_copy, Settings(db=demo_copy)) as store, store.reader() as reader:
        ids = [r[0] for r in reader.rows(
            f"SELECT span_id FROM spans WHERE {LLM_WITH_TOOL_CALL} ORDER BY span_id LIMIT 12"
        )]  # fmt: skip
    chosen = [word for span_id in ids for word in ("--ids", span_id)]
    made = run("dataset", "create", "calls", *db, *chosen, "--project", "demo", "--expected",
               "output.value", "--metadata", "model=model", "--json")  # fmt: skip
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["added"] == 12
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"calls.{fmt}"
        exported = run("dataset", "export", "calls", *db, "--format", fmt, "-o", out)
        assert exported.exit_code == 0, exported.output
        imported = run("dataset", "import", f"from-{fmt}", out, *db, "--json")
        assert imported.exit_code == 0, imported.output
        assert json.loads(imported.output)["added"] == 12
        again = run("dataset", "import", f"from-{fmt}", out, *db, "--add", "--json")
        assert json.loads(again.output)["duplicates"] == 12
    with Store.open(demo_copy, Settings(db=demo_copy)) as store, store.reader() as reader:
        found = {
            name: sorted(
                r["id"]
                for r in storage.dataset_examples(
                    reader, storage.resolve_dataset(reader, name)["id"]
                )
            )
            for name in ("calls", "from-jsonl", "from-csv")
        }
    assert found["calls"] == found["from-jsonl"] == found["from-csv"]
    chat = tmp_path / "chat.jsonl"
    assert run("dataset", "export", "calls", *db, "--format", "chat", "-o", chat).exit_code == 0
    records = [json.loads(line) for line in chat.read_text().splitlines()]
    assert len(records) == 12
    assert all(r["messages"][-1]["tool_calls"] for r in records)
    spans = run("dataset", "export", "--spans", *db, "--where", "span_kind = 'LLM'", "--limit", 3)
    assert spans.exit_code == 0
    assert len([line for line in spans.stdout.splitlines() if line.startswith("{")]) == 3
    listed = run("dataset", "list", *db, "--json")
    assert {d["name"] for d in json.loads(listed.output)["datasets"]} == {
        "calls",
        "from-jsonl",
        "from-csv",
    }
    shown = run("dataset", "show", "calls", *db)
    assert shown.exit_code == 0 and "version 1 of 1: 12 examples" in shown.output


def test_importing_a_bad_file_names_the_line_and_stores_nothing(
    demo_copy: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": 1}\n{"input": 2}\n{"input": 3,}\n')
    result = run("dataset", "import", "bad", bad, "--db", demo_copy)
    assert result.exit_code == 1
    assert "bad.jsonl line 3:" in result.output and "nothing was imported" in result.output
    with Store.open(demo_copy, Settings(db=demo_copy)) as store, store.reader() as reader:
        assert storage.list_datasets(reader) == []
    wrong = tmp_path / "data.txt"
    wrong.write_text("x")
    assert "[unsupported_format]" in run("dataset", "import", "w", wrong, "--db", demo_copy).output


def test_import_in_a_fresh_project_creates_its_store_and_a_taken_name_suggests_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRACEPROOF_DB", raising=False)
    sheet = tmp_path / "cases.csv"
    # As Excel saves "CSV UTF-8": a byte order mark first.
    sheet.write_text('input,expected\n"""a""","""a"""\n', encoding="utf-8-sig")
    made = CliRunner().invoke(cli, ["dataset", "import", "d1", str(sheet)])
    assert made.exit_code == 0, made.output
    assert "version 1: 1 example; added 1, 0 duplicates" in made.output
    store = tmp_path / ".traceproof" / "traceproof.duckdb"
    assert store.exists()  # made as `traceproof ingest` makes it
    again = CliRunner().invoke(cli, ["dataset", "import", "d1", str(sheet)])
    assert again.exit_code == 1
    said = " ".join(again.stderr.split())
    assert said.startswith("error: [invalid_argument] A dataset named 'd1' exists")
    assert f"traceproof dataset import d1 {sheet} --add" in said
    assert "dataset add" not in said.replace("dataset import", "")
    added = CliRunner().invoke(cli, ["dataset", "import", "d1", str(sheet), "--add"])
    assert added.exit_code == 0 and "1 duplicate" in added.output
    with Store.open(store, Settings(db=store)) as opened, opened.reader() as reader:
        assert [d["name"] for d in storage.list_datasets(reader)] == ["d1"]


def test_a_read_command_in_a_fresh_project_names_the_commands_that_make_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRACEPROOF_DB", raising=False)
    listed = CliRunner().invoke(cli, ["dataset", "list"])
    assert listed.exit_code == 1
    said = " ".join(listed.stderr.split())
    assert "[not_found]" in said and "traceproof dataset import NAME FILE" in said
    assert "traceproof serve" in said and "traceproof ingest FILE" in said
    assert list(tmp_path.iterdir()) == []  # reading made nothing


def test_the_dataset_commands_work_through_a_server_that_holds_the_store(
    demo_copy: Path, tmp_path: Path
) -> None:
    from tests.conftest import ServeProcess

    server = ServeProcess(demo_copy)
    try:
        db = ("--db", demo_copy)
        made = run("dataset", "create", "late", *db, "--where", LATE_LLM, "--json")
        assert made.exit_code == 0, made.output
        count = json.loads(made.output)["examples"]
        rows = tmp_path / "rows.jsonl"
        rows.write_text('{"input": "a", "expected": "b"}\n{"input": "c"}\n')
        imported = run("dataset", "import", "late", rows, *db, "--add", "--json")
        assert json.loads(imported.output)["version"] == 2
        out = tmp_path / "late.jsonl"
        exported = run("dataset", "export", "late", *db, "-o", out)
        assert exported.exit_code == 0, exported.output
        lines = out.read_text().splitlines()
        assert len(lines) == count + 2
        assert {"input": "c", "id": Example(input="c").id} in [json.loads(x) for x in lines]
        old = run("dataset", "export", "late", *db, "--version", "1", "-o", out)
        assert old.exit_code == 0 and len(out.read_text().splitlines()) == count
        chat = run("dataset", "export", "late", *db, "--format", "chat")
        assert chat.exit_code == 1 and "[not_available]" in chat.output
        listed = json.loads(run("dataset", "list", *db, "--json").output)
        assert [(d["name"], d["version"]) for d in listed["datasets"]] == [("late", 2)]
    finally:
        server.stop()
