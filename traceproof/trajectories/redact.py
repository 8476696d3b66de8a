"""Secret redaction for imported transcripts.

A transcript holds whatever the agent saw: ``.env`` files it read, tokens in commands it ran,
keys pasted into prompts. Imports redact them by default (``traceproof ingest --no-redact``
keeps them). Each secret becomes ``[REDACTED:<kind>]``; :attr:`Redactor.count` says how many
were replaced.

Redaction works on parsed values, never on raw lines: :meth:`Redactor.value` walks a JSON value
and redacts each string (keys too), so the value keeps its shape and its JSON stays valid. The
marker holds no quote and no backslash, and a secret's match stops at quotes and backslashes,
so a string that itself holds JSON text (a tool's output, say) stays valid JSON as well.

Kinds: ``anthropic_key`` (``sk-ant-``), ``openai_key`` (``sk-``, ``sk-proj-``),
``slack_token`` (``xoxb-`` …), ``github_token`` (``ghp_`` …, ``github_pat_``),
``aws_access_key`` (``AKIA``/``ASIA``), ``google_api_key`` (``AIza``), ``bearer_token``
(``Authorization: Bearer …``), ``private_key`` (PEM blocks), ``url_password``
(``scheme://user:password@host``), ``assignment`` (``.env``-style ``NAME=value`` where the name
says secret, token, password, key or credential; also cloud credentials such as
``aws_secret_access_key = …`` and ``AccountKey=…``).
"""

from __future__ import annotations

import re
from typing import Any

#: (kind, pattern); the group named ``secret`` (or the whole match) is replaced.
_PATTERNS: list[tuple[str, str]] = [
    (
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----"
        r"|[A-Za-z0-9+/=\s]*)",
    ),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("bearer_token", r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/\-]{16,}=*)"),
    (
        "url_password",
        r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s/:@\"'\\]{1,256}:(?P<secret>[^\s@/\"'\\]{1,256})@",
    ),
    (
        "assignment",
        r"(?i)\b[A-Z0-9_.\-]*(?:secret|token|passw(?:or)?d|passwd|api[_\-]?key|access[_\-]?key"
        r"|private[_\-]?key|credentials?|account[_\-]?key)[A-Z0-9_]*"
        r"(?:\\?[\"'])?[ \t]*[=:][ \t]*(?:\\?[\"'])?"
        r"(?P<secret>(?!\$|\[REDACTED|os\.|process\.|self\.|settings\.|config\.|getenv)"
        r"(?=[^\s\"'\\,;&|(){}<>\[\]]*[A-Za-z])[^\s\"'\\,;&|(){}<>\[\]]{6,})",
    ),
]

_COMBINED = re.compile(
    "|".join(
        f"(?P<k{i}>{pattern.replace('(?P<secret>', f'(?P<s{i}>').replace('(?i)', '')})"
        for i, (_, pattern) in enumerate(_PATTERNS)
    ),
    re.IGNORECASE | re.DOTALL,
)
# Case matters for the key prefixes; the combined pattern is case-insensitive (bearer,
# assignment names), so matches of case-sensitive kinds are checked again.
_EXACT = {
    i: re.compile(pattern, re.DOTALL)
    for i, (kind, pattern) in enumerate(_PATTERNS)
    if "(?i)" not in pattern
}
_KINDS = [kind for kind, _ in _PATTERNS]
# Cheap pre-check: a string with none of these cannot hold a secret.
_HINT = re.compile(
    r"(?i)sk-|xox|gh[pousr]_|github_pat_|akia|asia|aiza|bearer|private key|://|"
    r"secret|token|passw|api.?key|access.?key|credential|account.?key"
)


class Redactor:
    """The :class:`~traceproof.trajectories.common.Redact` implementation; ``enabled=False``
    passes everything through (``--no-redact``) and counts nothing."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.count = 0

    def __call__(self, text: str) -> str:
        if not self.enabled or len(text) < 8 or _HINT.search(text) is None:
            return text
        return _COMBINED.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        index = next(i for i in range(len(_KINDS)) if match.group(f"k{i}") is not None)
        whole = match.group(0)
        exact = _EXACT.get(index)
        if exact is not None and exact.fullmatch(whole) is None:
            return whole
        marker = f"[REDACTED:{_KINDS[index]}]"
        self.count += 1
        secret = match.group(f"s{index}") if f"s{index}" in _COMBINED.groupindex else None
        if secret is None:
            return marker
        start, end = match.span(f"s{index}")
        offset = match.start()
        return whole[: start - offset] + marker + whole[end - offset :]

    def value(self, value: Any) -> Any:
        """``value`` with every string in it redacted (keys too); same shape."""
        if not self.enabled:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value
