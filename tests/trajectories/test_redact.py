"""Secrets in transcripts are replaced by a marker of their kind, counted, and JSON stays JSON."""

from __future__ import annotations

import json
import random

import orjson
import pytest

from traceproof.trajectories.redact import Redactor, may_hold_secret

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


# What surrounds secrets in JSON text: separators, JSON's escapes once encoded, Unicode
# whitespace and letters, the rules' prefixes where no secret follows.
_PIECES = [
    "sk-",
    "ghp_",
    "AKIA",
    "Bearer",
    "://",
    "http",
    "user",
    ":",
    "@",
    "/",
    "\\",
    '"',
    "'",
    "=",
    " ",
    "\t",
    "\n",
    "\b",
    "\f",
    "\x1c",
    "\u00a0",
    "\u2003",
    "é",
    "☕",
    ",",
    ";",
    "(",
    ")",
    "[",
    "]",
    "{",
    "$",
    "os.",
    "[REDACTED:",
    "12345678",
    "token",
    "x9",
    ".",
    "-",
    "_",
]
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#: Letters Python's (?i) matches with ASCII ones: a rule's name may be spelled with them.
_FOLDS = {"s": "\u017f", "k": "\u212a", "i": "\u0131", "I": "\u0130"}
_NAMES = [
    "secret",
    "TOKEN",
    "passwd",
    "password",
    "api_key",
    "API-KEY",
    "apikey",
    "access_key",
    "private-key",
    "credentials",
    "AccountKey",
]


def _run(rng: random.Random, chars: str, least: int) -> str:
    """About ``least`` characters of ``chars``: a rule's least count, a little under or over."""
    return "".join(rng.choice(chars) for _ in range(max(1, least + rng.randint(-3, 4))))


def _candidate(rng: random.Random) -> str:
    """Text shaped like one rule's match, near its edges (counts, separators, escapes)."""
    ws = rng.choice([" ", "\t", "\n", "\f", "\u00a0", "\u2003", "  "])
    quote = rng.choice(["", '"', "'", '\\"', "\\'"])
    kind = rng.randrange(6)
    if kind == 0:
        prefix, least = rng.choice(
            [
                ("sk-", 20),
                ("sk-ant-", 16),
                ("sk-proj-", 20),
                ("xoxb-", 10),
                ("ghp_", 30),
                ("github_pat_", 22),
                ("AKIA", 16),
                ("ASIA", 16),
                ("AIza", 35),
            ]
        )
        return prefix + _run(rng, _ALNUM.upper() if prefix[0] == "A" else _ALNUM + "_-", least)
    if kind == 1:
        token = _run(rng, _ALNUM + "._~+/-", 16)
        return rng.choice(["Bearer", "bearer", "BEARER"]) + ws + token + rng.choice(["", "=="])
    if kind == 2:
        secret = _run(rng, _ALNUM + "/\b:", 6)
        return (
            rng.choice(["postgres", "https", "s3"])
            + "://"
            + _run(rng, _ALNUM, 4)
            + ":"
            + (secret + "@db" + rng.choice(["", ":5432", "/x"]))
        )
    if kind == 3:
        name = "".join(
            _FOLDS[c] if c in _FOLDS and rng.random() < 0.2 else c for c in rng.choice(_NAMES)
        )
        sep = rng.choice(["", " ", "\t"]) + rng.choice("=:") + rng.choice(["", " ", "\t"])
        chars = rng.choice([_ALNUM + "/\b.é", "abcxyz0123456789", "0123456789"])
        value = _run(rng, chars, 8)
        return (
            rng.choice(["", "export ", "MY_"])
            + name
            + rng.choice(["", "_ID", "2"])
            + (quote + sep + quote + value + rng.choice(["", quote, ")", ".x", ";"]))
        )
    if kind == 4:
        body = _run(rng, _ALNUM + "+/=\n", 20)
        return (
            "-----BEGIN RSA PRIVATE KEY-----"
            + ws
            + body
            + rng.choice(["", "-----END RSA PRIVATE KEY-----"])
        )
    return rng.choice(_PIECES)


def _fuzz_text(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.5:
            out.append(_candidate(rng))
        elif roll < 0.75:
            out.append(rng.choice(_PIECES))
        else:
            out.append(_run(rng, _ALNUM, 6))
    return "".join(out)


def _fuzz_value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth < 3 and roll < 0.25:
        return {_fuzz_text(rng): _fuzz_value(rng, depth + 1) for _ in range(rng.randint(1, 3))}
    if depth < 3 and roll < 0.4:
        return [_fuzz_value(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    if roll < 0.45:
        return rng.choice([1, 2.5, None, True])
    return _fuzz_text(rng)


def _encodings(value: object, rng: random.Random) -> list[bytes]:
    """The JSON texts of ``value`` as encoders write them: orjson, json with and without
    ensure_ascii, JSON's optional ``\\/`` escape, whitespace between tokens."""
    texts = [
        orjson.dumps(value),
        json.dumps(value).encode(),
        json.dumps(value, ensure_ascii=False, indent=rng.choice([None, 1])).encode(),
    ]
    escaped = json.dumps(value, ensure_ascii=False).replace("/", "\\/").encode()
    return [*texts, escaped]


def test_the_line_scan_finds_every_text_that_the_rules_redact_something_in() -> None:
    """:func:`may_hold_secret` may say yes to a text with nothing to redact, never no to one
    with something: seeded fuzzing of JSON values made of secrets' pieces, each encoded the
    ways JSON encoders write it. ``value_of`` then redacts exactly as ``value`` does."""
    rng = random.Random(20261203)
    redacted = skipped = 0
    for _ in range(4000):
        value = _fuzz_value(rng)
        if not isinstance(value, dict):
            value = {"k": value}
        expected = Redactor()
        want = expected.value(value)
        for text in _encodings(value, rng):
            parsed = json.loads(text)
            assert parsed == value
            found = Redactor()
            assert found.value_of(text, parsed) == want, text
            assert found.count == expected.count, text
            if expected.count:
                redacted += 1
                assert may_hold_secret(text), text
            elif not may_hold_secret(text):
                skipped += 1
    # The fuzzing reaches both sides: texts with secrets, and texts the scan lets through.
    assert redacted > 2000 and skipped > 2000, (redacted, skipped)


def test_the_line_scan_passes_ordinary_transcript_lines() -> None:
    """What makes the scan pay: a transcript's ordinary lines (token counts, paths, URLs
    without passwords, code) need no walk."""
    lines = [
        b'{"type":"assistant","message":{"usage":{"input_tokens":3,"cache_read_input_tokens'
        b'":26512,"output_tokens":1204}}}',
        b'{"type":"user","cwd":"/home/u/app","content":"see https://github.com/org/repo.git"}',
        b'{"content":"if (!token) { return api_key ? 1 : 0; }\\n"}',
    ]
    assert [may_hold_secret(line) for line in lines] == [False, False, False]
    assert may_hold_secret(b'{"content":"export API_KEY=abc123def456"}')
    assert may_hold_secret(b'{"content":"caf\\u00e9"}')  # an escape: walked to be sure
