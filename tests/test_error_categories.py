"""categorize_errors beyond the clusters: save=true (error_category annotations on every error
span, read back by aggregate, search_spans and sql over MCP), annotation=NAME (a judge's
failing verdicts clustered by explanation), and llm=true (categories named by the LLM through
the real anthropic client over an httpx2 mock transport), and the CLI's options for them."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mcp import Client
from mcp_types import CallToolResult, TextContent

from tests.evals.anthropic_mock import FakeAnthropic, message
from tests.tools.test_spans import add_spans, failure
from traceproof.cli import cli
from traceproof.errors import ErrorCode
from traceproof.evals.annotations import (
    AnnotationConfig,
    AnnotationInput,
    AnnotatorKind,
    ConfigKind,
    LabelChoice,
    TargetKind,
)
from traceproof.evals.llm import LLMClient, LLMError
from traceproof.evals.naming import MAX_CATEGORIES, TOOL_NAME
from traceproof.server.mcp import create_mcp_server
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.annotations import set_config, write_annotations
from traceproof.tools import errors as errors_tool
from traceproof.tools.errors import ANNOTATOR, CATEGORY_NAME, categorize_errors

SPAN = TargetKind.SPAN


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def structured(answer: CallToolResult) -> dict[str, Any]:
    assert not answer.is_error, answer.content
    assert answer.structured_content is not None
    return dict(answer.structured_content)


def error_text(answer: CallToolResult) -> str:
    (block,) = answer.content
    assert answer.is_error and isinstance(block, TextContent)
    return block.text


def saved_rows(store: Store) -> list[dict[str, Any]]:
    with store.reader() as reader:
        return reader.dicts(
            "SELECT * FROM annotations WHERE name = ? ORDER BY span_id", [CATEGORY_NAME]
        )


def written(answer: dict[str, Any]) -> dict[str, int]:
    saved = answer["saved"]
    assert not saved["confirm_needed"]
    return {k: saved[k] for k in ("matched", "created", "updated", "unchanged")}


def error_span_ids(store: Store) -> set[str]:
    with store.reader() as reader:
        rows = reader.rows("SELECT span_id FROM spans WHERE status = 'ERROR'")
    return {row[0] for row in rows}


# -- save=true ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_save_writes_every_error_span_s_category_which_the_other_tools_read(
    demo_store: Store,
) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        asked = structured(await client.call_tool("categorize_errors", {"save": True}))
        written_before_confirm = len(saved_rows(demo_store))
        first = structured(
            await client.call_tool("categorize_errors", {"save": True, "confirm": True})
        )
        again = structured(
            await client.call_tool("categorize_errors", {"save": True, "confirm": True})
        )
        clusters = {c["fingerprint"]: c for c in first["clusters"]}
        biggest = first["clusters"][0]
        grouped = structured(
            await client.call_tool(
                "aggregate", {"group_by": ["annotation.error_category"], "where": "status='ERROR'"}
            )
        )
        found = structured(
            await client.call_tool(
                "search_spans",
                {"where": f"annotation.error_category = '{biggest['fingerprint']}'", "limit": 50},
            )
        )
        table = structured(
            await client.call_tool(
                "sql",
                {
                    "query": "SELECT label, count(*) AS n FROM annotations "
                    "WHERE name = 'error_category' GROUP BY label ORDER BY n DESC, label"
                },
            )
        )
    # 22 errors is over the confirm setting (20): the first call only says how many.
    assert asked["saved"]["confirm_needed"] and asked["saved"]["matched"] == 22
    assert "confirm=true" in asked["note"] and written_before_confirm == 0
    assert written(first) == {"matched": 22, "created": 22, "updated": 0, "unchanged": 0}
    assert written(again) == {"matched": 22, "created": 0, "updated": 0, "unchanged": 22}
    rows = saved_rows(demo_store)
    # Every error span, not only the examples; merged near-duplicates (the 3 timeout variants)
    # under their cluster's fingerprint.
    assert {r["span_id"] for r in rows} == error_span_ids(demo_store) and len(rows) == 22
    assert Counter(r["label"] for r in rows) == {k: c["count"] for k, c in clusters.items()}
    assert clusters[biggest["fingerprint"]]["variants"] == 3
    for row in rows:
        item = clusters[row["label"]]
        assert row["explanation"] == item["template"]
        assert json.loads(row["metadata"]) == {
            "fingerprint": item["fingerprint"],
            "error_type": item["error_type"],
        }
        assert (row["annotator_kind"], row["annotator"], row["version"]) == ("CODE", ANNOTATOR, 1)
    assert {tuple(r) for r in grouped["rows"]} == {(k, c["count"]) for k, c in clusters.items()}
    assert len(found["spans"]) == biggest["count"] == 7
    assert {s["span_id"] for s in found["spans"]} <= error_span_ids(demo_store)
    assert sorted(tuple(r) for r in table["rows"]) == sorted(
        (c["fingerprint"], c["count"]) for c in first["clusters"]
    )
    with demo_store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM annotation_history") == 0


def test_save_follows_the_filters_and_updates_what_changed(
    demo_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    only = categorize_errors(demo_store, where="error_type = 'OrderNotFound'", save=True)
    assert only.saved is not None and only.saved.created == 6 == only.errors
    assert {r["label"] for r in saved_rows(demo_store)} == {only.clusters[0].fingerprint}
    # Without merging, the three timeout variants are three clusters: their 7 spans change.
    categorize_errors(demo_store, save=True, confirm=True)
    monkeypatch.setattr(demo_store.settings, "errors_merge_similarity", 1.01)
    split = categorize_errors(demo_store, save=True, confirm=True)
    assert split.saved is not None
    assert (split.saved.updated, split.saved.unchanged, split.saved.created) == (7, 15, 0)
    assert len({r["label"] for r in saved_rows(demo_store)}) == split.total_clusters == 8
    with demo_store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM annotation_history") == 7


def test_save_with_no_errors_writes_nothing(store: Store) -> None:
    add_spans(store, [{"span_id": "ok", "name": "fine", "attributes": {}}])
    result = categorize_errors(store, save=True)
    assert result.errors == 0 and result.saved is not None and result.saved.matched == 0
    assert saved_rows(store) == []


# -- annotation=NAME ---------------------------------------------------------------------------

CITED = "The answer cites order NW-{n} which is not in the retrieved context."
TONE = "Tone was curt: it told user-{n} to 'read the FAQ' instead of answering."


def llm_span_ids(store: Store) -> list[tuple[str, str]]:
    with store.reader() as reader:
        rows = reader.rows(
            "SELECT span_id, trace_id FROM spans WHERE span_kind = 'LLM' "
            "ORDER BY start_time, span_id LIMIT 12"
        )
    return [(row[0], row[1]) for row in rows]


def judge(store: Store, name: str = "correctness", failing: str = "fail") -> list[str]:
    """Verdicts on 12 LLM spans: 5 + 3 failures of two kinds, 4 passes; a person overrides
    one of the judge's failures. Returns the span ids of the 7 failures that stand."""
    spans = llm_span_ids(store)
    items = []
    for i, (span, trace) in enumerate(spans):
        if i < 5:
            label, text = failing, CITED.format(n=1000 + i)
        elif i < 8:
            label, text = failing, TONE.format(n=i)
        else:
            label, text = "pass", "Grounded and polite."
        items.append(
            AnnotationInput(SPAN, span, name, label=label, explanation=text, trace_id=trace,
                            annotator_kind=AnnotatorKind.LLM, annotator="judge@1")
        )  # fmt: skip
    overridden, trace = spans[0]
    items.append(
        AnnotationInput(SPAN, overridden, name, label="pass", explanation="It is in the context.",
                        trace_id=trace, annotator="alice")
    )  # fmt: skip
    write_annotations(store, items)
    return [span for span, _ in spans[1:8]]


def test_an_annotation_s_failing_verdicts_are_clustered_by_their_explanations(
    demo_store: Store,
) -> None:
    failing = judge(demo_store)
    result = categorize_errors(demo_store, annotation="correctness")
    assert result.labels == ["fail"] and result.errors == 7  # the person's pass wins
    assert [(c.error_type, c.template, c.count) for c in result.clusters] == [
        ("correctness=fail", "The answer cites order NW-<num> which is not in the retrieved "
         "context.", 4),
        ("correctness=fail", "Tone was curt: it told user-<num> to '<str>' instead of answering.",
         3),
    ]  # fmt: skip
    assert {e.span_id for c in result.clusters for e in c.examples} <= set(failing)
    assert result.clusters[0].span_names and result.clusters[0].traces >= 1
    passes = categorize_errors(demo_store, annotation="correctness=pass")
    assert passes.labels == ["pass"] and passes.errors == 5
    both = categorize_errors(demo_store, annotation="correctness=pass|fail")
    assert both.errors == 12 and both.labels == ["pass", "fail"]
    assert categorize_errors(demo_store, annotation="correctness=").labels == ["fail"]
    # The shared filters choose the targets: a span name no judged span has.
    assert categorize_errors(demo_store, annotation="correctness", name="nothing").errors == 0


def test_saving_an_annotation_s_clusters_writes_on_its_targets_beside_the_span_errors(
    demo_store: Store,
) -> None:
    failing = judge(demo_store)
    errors = categorize_errors(demo_store, save=True, confirm=True)
    verdicts = categorize_errors(demo_store, annotation="correctness", save=True)
    assert verdicts.saved is not None and verdicts.saved.created == 7  # 7 <= confirm setting
    rows = saved_rows(demo_store)
    mine = [r for r in rows if r["identifier"] == "correctness"]
    assert sorted(r["span_id"] for r in mine) == sorted(failing)
    assert {r["label"] for r in mine} == {c.fingerprint for c in verdicts.clusters}
    assert len(rows) - len(mine) == errors.errors == 22


def test_the_failing_labels_come_from_the_config_then_the_words_then_the_scores(
    demo_store: Store,
) -> None:
    judge(demo_store, "quality", failing="poor")
    # No config, no failing word, no scores: it cannot tell, and says what to pass.
    refused = failure(lambda: categorize_errors(demo_store, annotation="quality"))
    assert refused.code == ErrorCode.INVALID_ARGUMENT and "'poor'" in refused.message
    set_config(
        demo_store,
        AnnotationConfig(
            "quality",
            ConfigKind.CATEGORICAL,
            (LabelChoice("good", 1.0), LabelChoice("pass", 0.8), LabelChoice("poor", 0.0)),
        ),
    )
    assert categorize_errors(demo_store, annotation="quality").labels == ["poor"]
    judge(demo_store, "verdict", failing="incorrect")
    assert categorize_errors(demo_store, annotation="verdict").labels == ["incorrect"]
    spans = llm_span_ids(demo_store)
    write_annotations(
        demo_store,
        [
            AnnotationInput(SPAN, span, "stars", label=f"{1 + i % 3} stars", score=1 + i % 3,
                            explanation=f"scored {i}", trace_id=trace)
            for i, (span, trace) in enumerate(spans)
        ],
    )  # fmt: skip
    lowest = categorize_errors(demo_store, annotation="stars")
    assert lowest.labels == ["1 stars"] and lowest.errors == 4
    unknown = failure(lambda: categorize_errors(demo_store, annotation="nothing"))
    assert unknown.code == ErrorCode.INVALID_ARGUMENT


# -- llm=true ----------------------------------------------------------------------------------


def tool_answer(tool_input: dict[str, Any] | None) -> dict[str, Any]:
    """A Messages API answer calling the naming tool with ``tool_input``."""
    body = message(None)
    if tool_input is not None:
        body["content"] = [
            {"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": tool_input}
        ]
        body["stop_reason"] = "tool_use"
    return body


def sent_keys(request: dict[str, Any]) -> list[str]:
    schema = request["tools"][0]["input_schema"]
    keys = schema["properties"]["categories"]["items"]["properties"]["clusters"]["items"]
    return list(keys["enum"])


def by_type(demo_store: Store) -> dict[str, list[str]]:
    """The demo's cluster fingerprints by what they are about."""
    about: dict[str, list[str]] = {"timeouts": [], "orders": [], "refunds": []}
    for item in categorize_errors(demo_store).clusters:
        if "Timeout" in item.template or item.error_type == "TimeoutError":
            about["timeouts"].append(item.fingerprint)
        elif item.error_type and item.error_type.startswith("Order"):
            about["orders"].append(item.fingerprint)
        else:
            about["refunds"].append(item.fingerprint)
    return about


def three_categories(keys: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "categories": [
            {"name": "carrier timeouts", "description": "Tracking APIs too slow.",
             "clusters": keys["timeouts"]},
            {"name": "order state", "description": "Orders missing or shipped.",
             "clusters": keys["orders"]},
            {"name": "refund limits", "description": "Refunds over the limit.",
             "clusters": keys["refunds"]},
        ]
    }  # fmt: skip


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeAnthropic]:
    """Installs a FakeAnthropic as the provider of categorize_errors' LLM client."""

    def install(*replies: Any) -> FakeAnthropic:
        fake = FakeAnthropic(*replies)

        def client(settings: Settings) -> LLMClient:
            return fake.client(settings)[0]

        monkeypatch.setattr(errors_tool, "llm_client", client)
        return fake

    return install


@pytest.mark.anyio
async def test_the_llm_names_a_few_categories_and_save_labels_with_their_names(
    demo_store: Store, fake_llm: Callable[..., FakeAnthropic]
) -> None:
    keys = by_type(demo_store)
    assert [len(v) for v in keys.values()] == [2, 2, 2]
    categorize_errors(demo_store, save=True, confirm=True)  # fingerprints first
    fake = fake_llm(tool_answer(three_categories(keys)), tool_answer(three_categories(keys)))
    async with Client(create_mcp_server(demo_store)) as client:
        named = structured(await client.call_tool("categorize_errors", {"llm": True}))
        saved = structured(
            await client.call_tool(
                "categorize_errors", {"llm": True, "save": True, "confirm": True}
            )
        )
    # Largest first, with their clusters; every cluster says its category.
    assert [(c["name"], c["count"], sorted(c["clusters"])) for c in named["categories"]] == [
        ("order state", 10, sorted(keys["orders"])),
        ("carrier timeouts", 8, sorted(keys["timeouts"])),
        ("refund limits", 4, sorted(keys["refunds"])),
    ]
    counts = {c["name"]: c["count"] for c in named["categories"]}
    names = {"orders": "order state", "timeouts": "carrier timeouts", "refunds": "refund limits"}
    assert {c["fingerprint"]: c["category"] for c in named["clusters"]} == {
        key: names[about] for about, members in keys.items() for key in members
    }
    assert named["llm_cost_usd"] > 0
    request = fake.requests[0]
    assert request["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert sorted(sent_keys(request)) == sorted(k for v in keys.values() for k in v)
    prompt = request["messages"][0]["content"]
    assert "tracking API did not respond within <duration>" in prompt and "(7 errors)" in prompt
    # save with llm: the labels are the category names, updated in place (history kept).
    assert written(saved) == {"matched": 22, "created": 0, "updated": 22, "unchanged": 0}
    rows = saved_rows(demo_store)
    assert Counter(r["label"] for r in rows) == counts
    assert {json.loads(r["metadata"])["named_by"] for r in rows} == {"claude-sonnet-5-5"}


def malformed_answers(keys: list[str]) -> list[dict[str, Any]]:
    one = {"name": "all", "description": "d", "clusters": keys}
    return [
        {"categories": [{**one, "clusters": keys[:-1]}]},  # a cluster left out
        {"categories": [one, {**one, "name": "again", "clusters": keys[:1]}]},  # one twice
        {"categories": [{**one, "clusters": [*keys, "0123456789abcdef"]}]},  # unknown
        {"categories": [one, {**one, "name": "all"}]},  # a name twice
        {"categories": [{**one, "name": "x" * 80}]},  # a name too long
        {"categories": [{**one, "name": f"c{i}", "clusters": keys[:1]} for i in range(9)]},
        {"categories": "all of them"},
        {},
    ]


def test_a_malformed_answer_is_llm_malformed_and_writes_nothing(
    demo_store: Store, fake_llm: Callable[..., FakeAnthropic]
) -> None:
    keys = [c.fingerprint for c in categorize_errors(demo_store).clusters]
    answers = malformed_answers(keys)
    assert MAX_CATEGORIES < 9
    fake_llm(*[tool_answer(a) for a in answers], tool_answer(None))
    for _ in [*answers, None]:
        with pytest.raises(LLMError) as raised:
            categorize_errors(demo_store, llm=True, save=True, confirm=True)
        assert raised.value.code == ErrorCode.LLM_MALFORMED
    assert saved_rows(demo_store) == []


@pytest.mark.anyio
async def test_without_a_key_llm_answers_llm_unavailable_as_the_judge_does(
    demo_store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE",
                 "ANTHROPIC_IDENTITY_TOKEN", "ANTHROPIC_IDENTITY_TOKEN_FILE",
                 "ANTHROPIC_FEDERATION_RULE_ID", "ANTHROPIC_ORGANIZATION_ID"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    async with Client(create_mcp_server(demo_store)) as client:
        answer = await client.call_tool("categorize_errors", {"llm": True, "save": True})
    text = error_text(answer)
    assert text.startswith("[llm_unavailable] ") and "ANTHROPIC_API_KEY" in text
    assert saved_rows(demo_store) == []


# -- the CLI -----------------------------------------------------------------------------------


def test_the_errors_command_saves_with_confirm_and_clusters_an_annotation(
    demo_db: Path, tmp_path: Path
) -> None:
    db = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_db, db)
    with Store.open(db, Settings(db=db)) as store:
        judge(store)
    runner = CliRunner()

    def run(*args: str) -> dict[str, Any]:
        result = runner.invoke(cli, ["errors", "--db", str(db), *args, "--json"])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    assert run("--save")["saved"]["confirm_needed"] is True
    assert run("--save", "--confirm")["saved"]["created"] == 22
    clustered = run("--annotation", "correctness", "--label", "fail", "--label", "pass")
    assert clustered["labels"] == ["fail", "pass"] and clustered["errors"] == 12
    refused = runner.invoke(cli, ["errors", "--db", str(db), "--label", "fail"])
    assert refused.exit_code == 1 and "[invalid_argument]" in refused.output
