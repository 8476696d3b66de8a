"""Built-in evaluators on text, JSON, numbers and span facts: pass, fail, parameters, errors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.evals.conftest import judge, text_target
from traceproof.evals.builtin import BUILTINS, reference_markdown
from traceproof.evals.target import EvalTarget


def test_exact_match_compares_with_the_value_or_the_expected_output() -> None:
    assert judge("exact_match", text_target(" Paris\n"), value="Paris").label == "pass"
    assert judge("exact_match", text_target("paris"), value="Paris").label == "fail"
    assert (
        judge("exact_match", text_target("paris"), value="Paris", case_sensitive=False).score == 1
    )
    strict = judge("exact_match", text_target(" Paris"), value="Paris", strip=False)
    assert (strict.label, strict.score) == ("fail", 0.0)
    assert strict.explanation == "output is ' Paris', expected 'Paris'"
    with_expected = text_target("42", expected="42")
    assert judge("exact_match", with_expected).label == "pass"


def test_exact_match_without_anything_to_compare_is_an_error_not_a_fail() -> None:
    result = judge("exact_match", text_target("42"))
    assert (result.label, result.score) == (None, None)
    assert result.error is not None and result.error.startswith("cannot_evaluate: no value")


def test_a_missing_field_is_an_error_for_that_target() -> None:
    result = judge("contains", text_target(None), value="x")
    assert result.error == "cannot_evaluate: the target has no output"


def test_contains_all_any_and_the_share_found_as_score() -> None:
    target = text_target("Your refund of $74.99 is on its way")
    both = judge("contains", target, value=["REFUND", "$74.99"])
    assert (both.label, both.score) == ("pass", 1.0)
    half = judge("contains", target, value=["refund", "replacement"])
    assert (half.label, half.score) == ("fail", 0.5)
    assert half.explanation == "output lacks 'replacement'"
    assert judge("contains", target, value=["refund", "replacement"], match="any").label == "pass"
    assert judge("contains", target, value="REFUND", case_sensitive=True).label == "fail"


def test_not_contains_passes_only_when_no_text_appears() -> None:
    target = text_target("Internal note: customer is angry")
    assert judge("not_contains", target, value=["password", "ssn"]).label == "pass"
    leaked = judge("not_contains", target, value=["internal note", "ssn"])
    assert (leaked.label, leaked.score) == ("fail", 0.5)
    assert leaked.explanation == "output contains 'internal note'"


def test_contains_refuses_empty_texts() -> None:
    with pytest.raises(ValidationError):
        BUILTINS["contains"].params.model_validate({"value": []})
    with pytest.raises(ValidationError):
        BUILTINS["contains"].params.model_validate({"value": ""})


def test_regex_search_full_match_negate_and_case() -> None:
    target = text_target("tracking number 1Z0A3F and more")
    found = judge("regex", target, pattern=r"1Z[0-9A-F]+")
    assert (found.label, found.explanation) == ("pass", "output matches /1Z[0-9A-F]+/ at '1Z0A3F'")
    assert judge("regex", target, pattern=r"1Z[0-9A-F]+", full_match=True).label == "fail"
    assert judge("regex", target, pattern="TRACKING").label == "fail"
    assert judge("regex", target, pattern="TRACKING", case_sensitive=False).label == "pass"
    assert judge("regex", target, pattern=r"\bssn\b", negate=True).label == "pass"


def test_regex_refuses_a_pattern_re2_cannot_run() -> None:
    with pytest.raises(ValidationError, match="not an RE2 pattern"):
        BUILTINS["regex"].params.model_validate({"pattern": r"(a)\1"})


def test_regex_stays_linear_on_a_catastrophic_pattern() -> None:
    # (a+)+$ backtracks for ever in Python's re on this text; RE2 answers at once.
    result = judge("regex", text_target("a" * 50_000 + "b"), pattern=r"^(a+)+$")
    assert result.label == "fail"


def test_json_valid_and_its_type() -> None:
    assert judge("json_valid", text_target('{"a": 1}')).label == "pass"
    broken = judge("json_valid", text_target('{"a": 1'))
    assert broken.label == "fail" and broken.explanation is not None
    assert broken.explanation.startswith("output is not JSON")
    assert judge("json_valid", text_target("[1, 2]"), type="object").label == "fail"
    assert judge("json_valid", text_target("[1, 2]"), type="array").label == "pass"


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
    "required": ["order_id", "amount"],
}


def test_json_schema_names_the_first_violation_and_where() -> None:
    ok = judge("json_schema", text_target('{"order_id": "NW-1", "amount": 3.5}'), schema=SCHEMA)
    assert ok.label == "pass"
    bad = judge("json_schema", text_target('{"order_id": "NW-1", "amount": -2}'), schema=SCHEMA)
    assert bad.label == "fail"
    assert bad.explanation == "output at amount: -2 is less than the minimum of 0"
    missing = judge("json_schema", text_target('{"order_id": 7}'), schema=SCHEMA)
    assert missing.explanation is not None and "(+1 more)" in missing.explanation
    assert judge("json_schema", text_target("nope"), schema=SCHEMA).label == "fail"


def test_json_schema_refuses_an_invalid_schema() -> None:
    with pytest.raises(ValidationError, match="not a valid JSON Schema"):
        BUILTINS["json_schema"].params.model_validate({"schema": {"type": "objekt"}})


def test_json_equal_ignores_key_order_not_list_order() -> None:
    target = text_target('{"b": [1, 2], "a": {"y": 1, "x": "z"}}')
    same = {"a": {"x": "z", "y": 1}, "b": [1, 2]}
    assert judge("json_equal", target, value=same).label == "pass"
    swapped = judge("json_equal", target, value={"a": {"x": "z", "y": 1}, "b": [2, 1]})
    assert (swapped.label, swapped.explanation) == ("fail", "/b/0 is '1', expected '2'")
    extra = judge("json_equal", target, value={"a": {"x": "z"}, "b": [1, 2]})
    assert extra.explanation == "/a/y unexpected"
    ignoring = judge("json_equal", target, value={"a": {"x": "z"}, "b": [1, 2]}, ignore_keys=["y"])
    assert ignoring.label == "pass"


def test_json_equal_compares_with_expected_text_and_keeps_types_apart() -> None:
    assert judge("json_equal", text_target('{"n": 1}', expected='{"n": 1.0}')).label == "pass"
    assert judge("json_equal", text_target('{"n": true}', expected='{"n": 1}')).label == "fail"
    assert judge("json_equal", text_target('{"n": "1"}', expected={"n": 1})).label == "fail"
    assert judge("json_equal", text_target('"Paris"', expected="Paris")).label == "pass"
    not_json = judge("json_equal", text_target("Paris", expected="Paris"))
    assert not_json.label == "fail" and (not_json.explanation or "").startswith("output is not")


def test_numeric_close_tolerances_and_extraction() -> None:
    assert judge("numeric_close", text_target("3.14159"), value=3.1416, abs_tol=1e-3).score == 1
    far = judge("numeric_close", text_target("3.2"), value=3.1416, abs_tol=1e-3)
    assert far.label == "fail" and far.explanation == "output 3.2 differs from 3.1416 by 0.0584"
    assert judge("numeric_close", text_target("105"), value=100, rel_tol=0.05).label == "pass"
    assert judge("numeric_close", text_target("about 99 items"), value=100).label == "fail"
    sentence = text_target("about 99.5 items", expected="100")
    assert judge("numeric_close", sentence, extract=True, abs_tol=1).label == "pass"
    assert judge("numeric_close", text_target("nan"), value=1).label == "fail"


def span_target(**span: Any) -> EvalTarget:
    return EvalTarget(kind="span", id="s1", span=span, trace=[span], span_id="s1")


def test_latency_under_reads_the_span_latency() -> None:
    fast = judge("latency_under", span_target(latency_ms=420.0), max_ms=1000)
    assert (fast.label, fast.explanation) == ("pass", "420 ms < 1,000 ms")
    slow = judge("latency_under", span_target(latency_ms=9219.0), max_ms=1000)
    assert (slow.label, slow.explanation) == ("fail", "9,219 ms ≥ 1,000 ms")
    assert judge("latency_under", span_target(), max_ms=1000).error is not None
    with pytest.raises(ValidationError):
        BUILTINS["latency_under"].params.model_validate({"max_ms": 0})


def test_token_budget_needs_a_limit_and_checks_each() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        BUILTINS["token_budget"].params.model_validate({})
    llm = span_target(span_kind="LLM", prompt_tokens=900, completion_tokens=200, total_tokens=1100)
    assert judge("token_budget", llm, max_total=2000).label == "pass"
    over = judge("token_budget", llm, max_total=1000, max_completion=100)
    assert over.label == "fail"
    assert over.explanation == "total 1,100 > 1,000; completion 200 > 100 tokens over 1 span"


def test_no_error_reports_the_first_error_span() -> None:
    ok = span_target(status="OK", name="x", span_id="s1")
    assert judge("no_error", ok).label == "pass"
    error = {"status_message": "OrderNotFound: no order", "error_type": "OrderNotFound"}
    bad = span_target(status="ERROR", name="lookup_order", span_id="s1", **error)
    failed = judge("no_error", bad)
    assert failed.label == "fail"
    assert failed.explanation == (
        "1 error span; first 'lookup_order' (s1): 'OrderNotFound: no order'"
    )
    assert judge("no_error", bad, ignore_types=["OrderNotFound"]).label == "pass"


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        BUILTINS["contains"].params.model_validate({"value": "x", "vale": "y"})


def test_fields_reach_metadata_attributes_columns_and_json_paths() -> None:
    target = EvalTarget(
        kind="span",
        id="s1",
        output='{"answer": {"city": "Paris"}}',
        metadata={"intent": "refund"},
        span={"model": "gpt-4.1", "attributes": {"llm": {"provider": "openai"}}},
    )
    assert judge("exact_match", target, field="output.answer.city", value="Paris").score == 1
    assert judge("exact_match", target, field="metadata.intent", value="refund").score == 1
    assert judge("exact_match", target, field="model", value="gpt-4.1").score == 1
    assert judge("contains", target, field="attributes.llm.provider", value="open").score == 1


def test_every_builtin_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert reference_markdown() in readme, "regenerate the README evaluators reference"
    assert len(BUILTINS) == 16
