"""Secrets in transcripts are replaced by a marker of their kind, counted, and JSON stays JSON."""

from __future__ import annotations

import json

import pytest

from traceproof.trajectories.redact import Redactor

GITHUB = "ghp_" + "A1b2C3d4" * 5
GOOGLE = "AIza" + ("Sy9_x-" * 6)[:35]


@pytest.mark.parametrize(
    ("text", "redacted", "kind"),
    [
        (
            "key sk-ant-api03-Zx9_aB-cD4eF5gH6iJ7 end",
            "key [REDACTED:anthropic_key] end",
            "anthropic",
        ),
        ("use sk-proj-abcdefghijklmnopqrstuv12 now", "use [REDACTED:openai_key] now", "openai"),
        ("slack xoxb-1234567890-abcdefghij", "slack [REDACTED:slack_token]", "slack"),
        (f"git push https://x {GITHUB}", "git push https://x [REDACTED:github_token]", "github"),
        ("pat github_pat_11ABCDEFG0123456789_abcdef", "pat [REDACTED:github_token]", "github pat"),
        ("id AKIAIOSFODNN7EXAMPLE.", "id [REDACTED:aws_access_key].", "aws"),
        (f"maps {GOOGLE}", "maps [REDACTED:google_api_key]", "google"),
        (
            "curl -H 'Authorization: Bearer eyJhbGciOi.J9abc.defXYZ'",
            "curl -H 'Authorization: Bearer [REDACTED:bearer_token]'",
            "bearer",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n"
            "-----END OPENSSH PRIVATE KEY-----\nok",
            "[REDACTED:private_key]\nok",
            "pem",
        ),
        (
            "DATABASE_URL=postgres://app:hunter2x@db:5432/app",
            "DATABASE_URL=postgres://app:[REDACTED:url_password]@db:5432/app",
            "url password",
        ),
        ("export STRIPE_SECRET=rk_live_51abc", "export STRIPE_SECRET=[REDACTED:assignment]", "env"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG",
            "aws_secret_access_key = [REDACTED:assignment]",
            "cloud",
        ),
    ],
)
def test_each_kind_of_secret_is_replaced_and_counted(text: str, redacted: str, kind: str) -> None:
    redact = Redactor()
    assert redact(text) == redacted, kind
    assert redact.count == 1


@pytest.mark.parametrize(
    "text",
    [
        "total_tokens: 43179",
        "API_KEY = os.environ['ANTHROPIC_API_KEY']",
        "token = $GITHUB_TOKEN",
        "token = Phoenix.Token.sign(socket, project.id)",
        "api_key: fetch_key()",
        "params: { _csrf_token: csrfToken }",
        "https://github.com/org/repo.git",
        "the sk- prefix is OpenAI's",
        "a café ☕ and a ghp_ prefix",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    redact = Redactor()
    assert redact(text) == text
    assert redact.count == 0


def test_a_string_holding_json_text_stays_valid_json_with_its_escapes() -> None:
    inner = json.dumps(
        {"config": 'PASSWORD="s3cr3t-value"', "key": "sk-ant-api03-abcdefghijklmnop"}
    )
    record = {"type": "user", "content": [{"type": "tool_result", "content": inner}]}
    redact = Redactor()
    out = redact.value(json.loads(json.dumps(record)))
    text = out["content"][0]["content"]
    assert json.loads(text) == {
        "config": 'PASSWORD="[REDACTED:assignment]"',
        "key": "[REDACTED:anthropic_key]",
    }
    assert redact.count == 2
    # And the record itself, once more as JSON text, still parses to the same shape.
    assert json.loads(json.dumps(out))["type"] == "user"


def test_json_escaped_assignment_keeps_its_backslashes() -> None:
    text = 'echo "{\\"token\\": \\"abcdef123456\\"}"'
    redact = Redactor()
    assert redact(text) == 'echo "{\\"token\\": \\"[REDACTED:assignment]\\"}"'


def test_keys_are_redacted_and_the_shape_is_kept() -> None:
    redact = Redactor()
    value = {
        "sk-ant-api03-abcdefghijklmnopqr": [1, None, True, {"a": "sk-ant-api03-zzzzzzzzzzzzzzzzzz"}]
    }
    assert redact.value(value) == {
        "[REDACTED:anthropic_key]": [1, None, True, {"a": "[REDACTED:anthropic_key]"}]
    }
    assert redact.count == 2


def test_disabled_redaction_passes_everything_and_counts_nothing() -> None:
    redact = Redactor(enabled=False)
    assert redact("sk-ant-api03-abcdefghijklmnopqr") == "sk-ant-api03-abcdefghijklmnopqr"
    assert redact.value({"k": "AKIAIOSFODNN7EXAMPLE"}) == {"k": "AKIAIOSFODNN7EXAMPLE"}
    assert redact.count == 0


def test_a_secret_seen_twice_is_counted_twice() -> None:
    redact = Redactor()
    short = "AKIAIOSFODNN7EXAMPLE"
    assert redact.value([short, short, {"k": short}]) == ["[REDACTED:aws_access_key]"] * 2 + [
        {"k": "[REDACTED:aws_access_key]"}
    ]
    assert redact.count == 3


@pytest.mark.parametrize(
    "text",
    [
        "export API_\u212aEY=abc123def456",  # the Kelvin sign lowers to k
        "PR\u0130VATE_KEY=abc123def456",  # U+0130, which Python's (?i) matches with i
        "ap\u0131_key: 'abc123def456'",  # U+0131 (dotless i)
        "x" * 5000 + " PASSWORD=hunter2x9 " + "y" * 5000,
    ],
)
def test_the_fast_scans_miss_nothing_the_rules_match(text: str) -> None:
    """The RE2 scans run before the rules: where a rule matches, redaction happens as it would
    with the rules alone, case folding of non-ASCII letters included."""
    from traceproof.trajectories import redact

    found = next(p for k, _, p in redact._COMPILED if k == "assignment").search(text)
    assert found is not None
    redactor = Redactor()
    out = redactor(text)
    assert redactor.count >= 1
    assert "[REDACTED:assignment]" in out
    assert found.group("secret") not in out
