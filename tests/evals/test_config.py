"""traceproof.toml: evaluator tables validated on load, clear [invalid_config] errors, hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.config import (
    BuiltinEvaluatorConfig,
    CodeEvaluatorConfig,
    JudgeConfig,
    load_config,
    parse_config,
)


def write(root: Path, text: str) -> Path:
    path = root / "traceproof.toml"
    path.write_text(text)
    return path


def refused(root: Path, text: str) -> TraceproofError:
    write(root, text)
    with pytest.raises(TraceproofError) as info:
        load_config(root=root)
    return info.value


def test_a_project_without_a_config_file_has_no_evaluators(tmp_path: Path) -> None:
    config = load_config(root=tmp_path)
    assert (config.path, config.evaluators, config.tasks) == (None, {}, {})
    with pytest.raises(TraceproofError) as info:
        config.evaluator("polite")
    assert info.value.code == ErrorCode.UNKNOWN_EVALUATOR


def test_an_explicit_config_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(TraceproofError) as info:
        load_config(tmp_path / "elsewhere.toml")
    assert info.value.code == ErrorCode.INVALID_CONFIG


def test_builtin_tables_carry_validated_parameters(tmp_path: Path) -> None:
    write(tmp_path, """
[evaluators.mentions_refund]
kind = "builtin"
evaluator = "contains"
value = ["refund", "$"]
description = "the answer talks about the refund"

[evaluators.valid_json]
evaluator = "json_schema"
schema = { type = "object", required = ["order_id"] }
""")  # fmt: skip
    config = load_config(root=tmp_path)
    refund = config.evaluator("mentions_refund")
    assert isinstance(refund, BuiltinEvaluatorConfig)
    assert refund.evaluator == "contains"
    assert refund.params.model_dump()["value"] == ["refund", "$"]
    assert refund.description == "the answer talks about the refund"
    assert refund.version == refund.content_hash[:12]
    assert refund.annotator == f"mentions_refund@{refund.version}"
    assert config.evaluator("valid_json").kind == "builtin"  # kind inferred from `evaluator`
    assert config.path == tmp_path / "traceproof.toml"


def test_the_content_hash_ignores_key_order_and_description_not_parameters(
    tmp_path: Path,
) -> None:
    def version(body: str) -> str:
        return parse_config(f"[evaluators.e]\n{body}", root=tmp_path).evaluators["e"].content_hash

    base = version('evaluator = "regex"\npattern = "a+"\nfull_match = true')
    assert version('full_match = true\npattern = "a+"\nevaluator = "regex"') == base
    assert (
        version('evaluator = "regex"\npattern = "a+"\nfull_match = true\ndescription = "x"') == base
    )
    assert version('evaluator = "regex"\npattern = "a+"\nfull_match = false') != base


def test_an_unknown_evaluator_names_the_known_ones(tmp_path: Path) -> None:
    error = refused(tmp_path, '[evaluators.x]\nkind = "builtin"\nevaluator = "contain"')
    assert error.code == ErrorCode.INVALID_CONFIG
    assert str(error).startswith(
        "[invalid_config] traceproof.toml: evaluators.x: unknown evaluator 'contain'; "
        "known: exact_match, contains, not_contains, regex,"
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('evaluator = "contains"', "evaluators.x.value: Field required"),
        ('evaluator = "contains"\nvalue = "a"\nvalu = "b"', "evaluators.x.valu: Extra inputs"),
        ('evaluator = "regex"\npattern = "(a)\\\\1"', "not an RE2 pattern"),
        ('evaluator = "latency_under"\nmax_ms = -1', "evaluators.x.max_ms"),
        ('kind = "llm"', "evaluators.x.kind: 'llm' is not a kind; known: builtin, code, judge"),
        ("description = 'no kind'", "evaluators.x.kind: missing"),
        ('kind = "code"\nfunction = "no_colon"', "write it as module:function"),
        ('function = "m:f"\ntimeout = 0', "evaluators.x.timeout"),
        ('function = "m:f"\npython = "nowhere/python"', "evaluators.x.python:"),
        ('function = "m:f"\ncwd = "missing-dir"', "evaluators.x.cwd:"),
        ('function = "m:f"\nargv = ["rm"]', "evaluators.x.argv: Extra inputs"),
    ],
)
def test_invalid_evaluator_tables_are_refused_saying_where(
    tmp_path: Path, body: str, needle: str
) -> None:
    error = refused(tmp_path, f"[evaluators.x]\n{body}\n")
    assert error.code == ErrorCode.INVALID_CONFIG
    assert needle in str(error)


def test_toml_syntax_and_unknown_sections_are_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, "[evaluators.x\n").code == ErrorCode.INVALID_CONFIG
    typo = refused(tmp_path, '[evaluator.x]\nevaluator = "contains"\n')
    assert "evaluator: unknown section; known: evaluators, tasks" in str(typo)
    assert refused(tmp_path, "evaluators = 3\n").code == ErrorCode.INVALID_CONFIG


def test_judge_and_task_tables_are_kept_raw(tmp_path: Path) -> None:
    write(tmp_path, """
[evaluators.helpful]
kind = "judge"
model = "claude-sonnet-4-5"
labels = ["helpful", "unhelpful"]

[tasks.answer]
function = "app.run:answer"
""")  # fmt: skip
    config = load_config(root=tmp_path)
    judge = config.evaluator("helpful")
    assert isinstance(judge, JudgeConfig)
    assert judge.table["labels"] == ["helpful", "unhelpful"]
    assert len(judge.content_hash) == 64
    assert config.tasks["answer"].table == {"function": "app.run:answer"}


def test_a_code_evaluator_hash_follows_its_source_file(tmp_path: Path) -> None:
    (tmp_path / "evals").mkdir()
    module = tmp_path / "evals" / "checks.py"
    module.write_text("def polite(output):\n    return True\n")
    write(tmp_path, '[evaluators.polite]\nfunction = "evals.checks:polite"\ntimeout = 5\n')
    first = load_config(root=tmp_path).evaluator("polite")
    assert isinstance(first, CodeEvaluatorConfig)
    assert (first.source, first.cwd, first.timeout, first.python) == (
        module, tmp_path.resolve(), 5.0, None
    )  # fmt: skip
    module.write_text("def polite(output):\n    return False\n")
    second = load_config(root=tmp_path).evaluator("polite")
    assert second.content_hash != first.content_hash


def test_a_config_elsewhere_takes_its_own_folder_as_the_root(tmp_path: Path) -> None:
    other = tmp_path / "project"
    other.mkdir()
    path = write(other, '[evaluators.e]\nfunction = "m:f"\n')
    config = load_config(path)
    assert config.root == other.resolve()
    definition = config.evaluator("e")
    assert isinstance(definition, CodeEvaluatorConfig) and definition.cwd == other.resolve()
    broken = write(other, "[evaluators.e]\nevaluator = 'nope'\n")
    with pytest.raises(TraceproofError) as info:
        load_config(broken)
    assert str(info.value).startswith(f"[invalid_config] {broken.resolve()}: evaluators.e:")


def test_trajectory_action_rules_are_read_and_checked(tmp_path: Path) -> None:
    write(tmp_path, """
[trajectories.actions.verify]
tools = ["run_checks"]
commands = ['^\\./scripts/check\\b']
""")  # fmt: skip
    rules = load_config(root=tmp_path).action_rules()
    assert rules.tools == {"run_checks": "verify"}
    assert [(a, p.pattern) for a, p in rules.commands] == [("verify", r"^\./scripts/check\b")]
    assert load_config(root=tmp_path / "none").action_rules().tools == {}
    bad = refused(tmp_path, "[trajectories.actions.testing]\ntools = ['x']\n")
    assert bad.code == ErrorCode.INVALID_CONFIG
    assert "trajectories.actions.testing: unknown action; known: localize" in str(bad)
    assert "trajectories.labels" in str(refused(tmp_path, "[trajectories.labels]\nx = 1\n"))
