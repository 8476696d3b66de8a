"""traceproof.toml's [annotations.NAME] tables: parsed into configs, refused with
[invalid_config] naming the file, table and key; judges imply a categorical config."""

from __future__ import annotations

from pathlib import Path

import pytest

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.annotations import (
    AnnotationConfig,
    ConfigKind,
    Direction,
    LabelChoice,
    config_summary,
)
from traceproof.evals.config import load_config, parse_config

JUDGE = """
[evaluators.correctness]
kind = "judge"
rubric = "Is {output} correct?"
labels = { pass = 1.0, fail = 0.0 }
insufficient_evidence = true
"""


def parsed(text: str) -> dict[str, AnnotationConfig]:
    return parse_config(text, root=Path(".")).annotations


def refusal(text: str) -> str:
    with pytest.raises(TraceproofError) as info:
        parse_config(text, root=Path("."))
    assert info.value.code == ErrorCode.INVALID_CONFIG
    return info.value.message


def test_categorical_continuous_and_freeform_tables_become_configs() -> None:
    configs = parsed("""
[annotations.correctness]
kind = "categorical"
labels = { pass = 1.0, fail = 0 }
direction = "maximize"
description = "the answer is right"

[annotations.tone]
kind = "continuous"
min = 0
max = 1.5
direction = "MINIMIZE"

[annotations.notes]
kind = "freeform"

[annotations.verdict]
labels = ["yes", "no"]   # kind implied by labels

[annotations.latency_ok]
max = 2000               # kind implied by a bound: continuous, no lower bound
""")  # fmt: skip
    assert configs["correctness"] == AnnotationConfig(
        name="correctness",
        kind=ConfigKind.CATEGORICAL,
        labels=(LabelChoice("pass", 1.0), LabelChoice("fail", 0.0)),
        direction=Direction.MAXIMIZE,
        description="the answer is right",
    )
    assert configs["tone"] == AnnotationConfig(
        name="tone",
        kind=ConfigKind.CONTINUOUS,
        lower_bound=0.0,
        upper_bound=1.5,
        direction=Direction.MINIMIZE,
    )
    assert configs["notes"].kind is ConfigKind.FREEFORM
    assert configs["verdict"].labels == (LabelChoice("yes"), LabelChoice("no"))
    assert (configs["latency_ok"].lower_bound, configs["latency_ok"].upper_bound) == (None, 2000)
    assert config_summary(configs["correctness"]) == "categorical pass=1|fail=0, maximize"
    assert config_summary(configs["tone"]) == "continuous 0..1.5, minimize"
    assert config_summary(configs["latency_ok"]) == "continuous ..2000"


@pytest.mark.parametrize(
    ("table", "where", "says"),
    [
        ('kind = "categorical"', "annotations.x.labels:", "missing"),
        ('kind = "label"\nlabels = ["a"]', "annotations.x.kind:", "'label' is not a kind"),
        ('description = "no kind"', "annotations.x.kind:", "missing"),
        ('labels = ["a"]\nlables = ["b"]', "annotations.x.lables:", "unknown key"),
        ("labels = []", "annotations.x.labels:", "is empty"),
        ('labels = "pass"', "annotations.x.labels:", "must be a list"),
        ('labels = ["pass", "pass"]', "annotations.x.labels:", "repeats 'pass'"),
        ('labels = ["pass", 1]', "annotations.x.labels:", "1 is not a label"),
        ('labels = ["", "fail"]', "annotations.x.labels:", "'' is not a label"),
        ('labels = { pass = "high" }', "annotations.x.labels.pass:", "not a finite number"),
        ("labels = { pass = true }", "annotations.x.labels.pass:", "not a finite number"),
        ("labels = { pass = nan }", "annotations.x.labels.pass:", "not a finite number"),
        ('kind = "continuous"\nmin = "0"', "annotations.x.min:", "not a finite number"),
        ("min = 0\nmax = inf", "annotations.x.max:", "not a finite number"),
        ("min = 2\nmax = 1", "annotations.x:", "min 2 is above max 1"),
        ('labels = ["a"]\nmin = 0', "annotations.x.min:", "only a continuous config"),
        ('kind = "freeform"\nlabels = ["a"]', "annotations.x.labels:", "only a categorical"),
        ('labels = ["a"]\ndirection = "up"', "annotations.x.direction:", "'up' is not a dir"),
        ('labels = ["a"]\ndescription = 3', "annotations.x.description:", "must be a string"),
    ],
)
def test_a_bad_annotations_table_is_refused_naming_the_file_table_and_key(
    table: str, where: str, says: str
) -> None:
    message = refusal(f"[annotations.x]\n{table}\n")
    assert message.startswith(f"traceproof.toml: {where}"), message
    assert says in message
    assert message.endswith("Fix the file and try again.")


def test_annotations_must_be_tables_with_plain_names(tmp_path: Path) -> None:
    assert "annotations.x: must be a table" in refusal('[annotations]\nx = "categorical"\n')
    assert "names use letters" in refusal('[annotations."has space"]\nkind = "freeform"\n')
    path = tmp_path / "elsewhere.toml"
    path.write_text("[annotations.x]\nkind = 'freeform'\ncolour = 1\n")
    with pytest.raises(TraceproofError) as info:
        load_config(path)
    assert info.value.message.startswith(f"{path}: annotations.x.colour: unknown key")


def test_a_judge_implies_a_categorical_config_with_its_labels_and_scores() -> None:
    project = parse_config(JUDGE, root=Path("."))
    assert project.implied == {"correctness"}
    assert project.annotations["correctness"].labels == (
        LabelChoice("pass", 1.0),
        LabelChoice("fail", 0.0),
        LabelChoice("insufficient_evidence", None),
    )
    assert project.annotations["correctness"].kind is ConfigKind.CATEGORICAL


def test_a_declared_config_wins_over_the_judge_but_must_allow_its_labels() -> None:
    declared = parse_config(
        JUDGE + "[annotations.correctness]\nlabels = { pass = 1.0, fail = 0.0, "
        'insufficient_evidence = 0.5 }\ndirection = "maximize"\n',
        root=Path("."),
    )
    assert declared.implied == frozenset()
    assert declared.annotations["correctness"].direction is Direction.MAXIMIZE
    message = refusal(JUDGE + '[annotations.correctness]\nlabels = ["pass", "fail"]\n')
    assert message.startswith("traceproof.toml: annotations.correctness.labels:")
    assert "'insufficient_evidence'" in message
    bounds = refusal(JUDGE + "[annotations.correctness]\nmin = 0.5\nmax = 1\n")
    assert bounds.startswith("traceproof.toml: annotations.correctness:")
    assert "'fail' with score 0" in bounds
    freeform = parse_config(
        JUDGE + '[annotations.correctness]\nkind = "freeform"\n', root=Path(".")
    )
    assert freeform.annotations["correctness"].kind is ConfigKind.FREEFORM


def test_a_judge_table_that_does_not_validate_implies_nothing() -> None:
    project = parse_config('[evaluators.j]\nkind = "judge"\nlabels = ["a"]\n', root=Path("."))
    assert project.annotations == {} and "j" in project.evaluators
