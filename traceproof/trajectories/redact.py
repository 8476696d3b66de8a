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
from functools import partial
from typing import Any

import re2  # type: ignore[import-untyped]

#: (kind, substrings one of which a match must hold (lowercase), pattern); the group named
#: ``secret`` (or the whole match) is replaced. Applied in this order, each only to text that
#: holds one of its substrings (a literal test is far cheaper than any regex).
_RULES: list[tuple[str, tuple[str, ...], str]] = [
    (
        "private_key",
        ("private key",),
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----"
        r"|[A-Za-z0-9+/=\s]*)",
    ),
    ("anthropic_key", ("sk-ant-",), r"\bsk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openai_key", ("sk-",), r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    ("slack_token", ("xox",), r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    (
        "github_token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})",
    ),
    ("aws_access_key", ("akia", "asia"), r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("google_api_key", ("aiza",), r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("bearer_token", ("bearer",), r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/\-]{16,}=*)"),
    (
        "url_password",
        ("://",),
        r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s/:@\"'\\]{1,256}:(?P<secret>[^\s@/\"'\\]{1,256})@",
    ),
    (
        "assignment",
        ("secret", "token", "passw", "key", "credential"),
        r"(?i)(?:secret|token|passw(?:or)?d|passwd|api[_\-]?key|access[_\-]?key"
        r"|private[_\-]?key|credentials?|account[_\-]?key)[A-Z0-9_]*"
        r"(?:\\?[\"'])?[ \t]*[=:][ \t]*(?:\\?[\"'])?"
        r"(?P<secret>(?!\$|\[REDACTED|os\.|process\.|self\.|settings\.|config\.|getenv)"
        # a letter, and a digit or 20 characters (not a plain word such as csrfToken); not a
        # call (``token = Token.sign(...)``)
        r"(?=[^\s\"'\\,;&|(){}<>\[\]]*[A-Za-z])"
        r"(?=[^\s\"'\\,;&|(){}<>\[\]]*[0-9]|[^\s\"'\\,;&|(){}<>\[\]]{20})"
        r"[^\s\"'\\,;&|(){}<>\[\]]{6,})(?![(\w.])",
    ),
]
_COMPILED = [(kind, hints, re.compile(pattern, re.DOTALL)) for kind, hints, pattern in _RULES]
_HINTS = tuple(dict.fromkeys(h for _, hints, _ in _RULES for h in hints))
#: The same hints for RE2, case-insensitive on the text itself: it finds every hint that
#: ``text.lower()`` holds (the only non-ASCII characters that lower to ASCII are the Kelvin
#: sign, which RE2 folds with k, and U+0130, which lowers to i plus a combining dot, so it ends
#: no hint), without making the lowered copy; text it finds nothing in is left as it is.
_HINT_RE2 = re2.compile("(?i)" + "|".join(re.escape(h) for h in _HINTS))
#: A superset of what the ``assignment`` rule matches, without its lookarounds, for RE2: a
#: linear scan ~25x faster than Python's on long text; the rule runs only where it finds one.
#: RE2 does not fold U+0130 and U+0131 (dotted, dotless i) with ``i`` as Python does: spelled out.
_ASSIGNMENT_HINT = re2.compile(
    r"(?i)(?:secret|token|passw(?:or)?d|passwd|ap[iİı][_\-]?key|access[_\-]?key"
    r"|pr[iİı]vate[_\-]?key|credent[iİı]als?|account[_\-]?key)[A-Z0-9_İı]*"
    r"(?:\\?[\"'])?[ \t]*[=:][ \t]*(?:\\?[\"'])?[^\s\"'\\,;&|(){}<>\[\]]{6}"
)
#: A superset of what the ``url_password`` rule matches, for RE2 (no ``\b``; RE2's ``\s`` is
#: ASCII only, so its negated classes allow more): the rule runs only where it finds one.
_URL_PASSWORD_HINT = re2.compile(
    r"[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s/:@\"'\\]{1,256}:[^\s@/\"'\\]{1,256}@"
)
_PREFILTERS = {"assignment": _ASSIGNMENT_HINT, "url_password": _URL_PASSWORD_HINT}


def _line_scan() -> Any:
    """One RE2 scan of a raw JSON text (bytes, Latin-1: a byte is a character) that finds
    something wherever a rule could match in one of the text's strings once decoded.

    Each rule's part is a superset of the rule, written for the encoded text: no ``\\b``
    (a decoded newline is ``\\n`` in the text, a letter before the match), JSON's escapes
    where decoding could make a character the rule accepts (``\\/`` is ``/``, ``\\b`` a
    backspace, ``\\t`` a tab, ``\\"`` a quote), any non-ASCII byte where the rule accepts
    non-ASCII characters (Unicode whitespace for ``\\s``), counted repetitions shortened to
    their least count (RE2's DFA stays small), and of the ``assignment`` rule's lookarounds
    only the letter its value must hold. Texts the parts could miss a match in are found by
    the first alternative: a ``\\u`` escape (it can spell any character), a NUL (a text in
    UTF-16 or UTF-32, which ``json.loads`` accepts), and the four non-ASCII letters that
    Python's ``(?i)`` matches with ASCII ones (U+0130, U+0131, U+017F, U+212A in UTF-8).
    ``tests/trajectories/test_redact.py`` fuzzes it against the rules (seeded).
    """
    unsure = rb"\\u|\x00|\xc4[\xb0\xb1]|\xc5\xbf|\xe2\x84\xaa"
    # An assignment's value: 6 or more characters of its class (decoded, ``\\/`` is / and
    # ``\\b`` a backspace, both in the class), one of them a letter.
    char = rb"(?:[^\s\"'\\,;&|(){}<>\[\]]|\\/|\\b)"
    value = (
        b"|".join(char * before + rb"[A-Za-z]" + char * (5 - before) for before in range(6))
        + b"|"
        + char * 6
        + char
        + b"*[A-Za-z]"
    )
    parts = [
        unsure,
        rb"PRIVATE KEY-----",
        rb"sk-[A-Za-z0-9_\-]{20}",  # openai_key, and anthropic_key (sk-ant- + 16)
        rb"xox[abposr]-[A-Za-z0-9\-]{10}",
        rb"gh[pousr]_[A-Za-z0-9]{30}|github_pat_[A-Za-z0-9_]{22}",
        rb"(?:AKIA|ASIA)[0-9A-Z]{16}",
        rb"AIza[0-9A-Za-z_\-]{35}",
        rb"(?i:bearer)(?:\s|\\[a-z]|[\x80-\xff])+(?:[A-Za-z0-9._~+/\-]|\\/){16}",
        rb"[a-zA-Z0-9+.\-]:(?:/|\\/){2}(?:[^\s/:@\"'\\]|\\b)+:(?:[^\s@/\"'\\]|\\b)+@",
        rb"(?i:secret|token|passw(?:or)?d|passwd|api[_\-]?key|access[_\-]?key"
        rb"|private[_\-]?key|credentials?|account[_\-]?key)[A-Za-z0-9_]*"
        rb"(?:\\{0,3}[\"'])?(?:[ ]|\\t)*[=:](?:[ ]|\\t)*(?:\\{0,3}[\"'])?"
        rb"(?:" + value + rb")",
    ]
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    return re2.compile(b"|".join(parts), options=options)


_LINE_SCAN = _line_scan()


def may_hold_secret(text: bytes) -> bool:
    """False when no string of the JSON text ``text`` (a transcript's line as read) can hold
    a secret, so parsing it and walking the value would redact nothing; one linear scan."""
    return _LINE_SCAN.search(text) is not None


#: Short strings recur (keys, types, ids): their answers are remembered, up to this many.
_MEMO_SIZE = 50_000
_MEMO_CHARS = 64


class Redactor:
    """The :class:`~traceproof.trajectories.common.Redact` implementation; ``enabled=False``
    passes everything through (``--no-redact``) and counts nothing."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.count = 0
        self._memo: dict[str, tuple[str, int]] = {}

    def __call__(self, text: str) -> str:
        if not self.enabled or len(text) < 8:
            return text
        if len(text) <= _MEMO_CHARS:
            known = self._memo.get(text)
            if known is not None:
                self.count += known[1]
                return known[0]
            before = self.count
            result = self._redact(text)
            if len(self._memo) < _MEMO_SIZE:
                self._memo[text] = (result, self.count - before)
            return result
        return self._redact(text)

    def _redact(self, text: str) -> str:
        if _HINT_RE2.search(text) is None:
            return text
        # No second test of the hints on ``low``: a rule runs only where one of its own hints
        # is in ``low``, so text that holds none is returned unchanged by the loop anyway.
        low = text.lower()
        for kind, hints, pattern in _COMPILED:
            for hint in hints:  # a loop, not any(): this runs for every rule of most texts
                if hint in low:
                    break
            else:
                continue
            prefilter = _PREFILTERS.get(kind)
            if prefilter is not None and prefilter.search(text) is None:
                continue
            text = pattern.sub(partial(self._replace, kind=kind), text)
        return text

    def _replace(self, match: re.Match[str], kind: str) -> str:
        self.count += 1
        marker = f"[REDACTED:{kind}]"
        if "secret" not in match.re.groupindex:
            return marker
        whole = match.group(0)
        start, end = match.span("secret")
        offset = match.start()
        return whole[: start - offset] + marker + whole[end - offset :]

    def value(self, value: Any) -> Any:
        """``value`` with every string in it redacted (keys too); same shape."""
        if not self.enabled:
            return value
        return self._walk(value)

    def value_of(self, text: bytes, value: Any) -> Any:
        """``value`` parsed from the JSON text ``text``, redacted as :meth:`value` does; when
        the text cannot hold a secret (:func:`may_hold_secret`) it is returned as it is,
        without a walk: most lines of a transcript hold none."""
        if not self.enabled or not may_hold_secret(text):
            return value
        return self._walk(value)

    def _key(self, key: Any) -> Any:
        return self(key) if isinstance(key, str) else key

    def _walk(self, value: Any) -> Any:
        kind = type(value)
        # Exact types first (what JSON parsers make); strings under 8 characters unchanged and
        # remembered short strings answered without a call: the walk visits every value of
        # every record.
        if kind is str:
            if len(value) < 8:
                return value
            known = self._memo.get(value)
            if known is None:
                return self(value)
            self.count += known[1]
            return known[0]
        if kind is dict:
            walk = self._walk
            memo = self._memo
            out = {}
            for key, item in value.items():
                k, v = key, item
                if type(key) is str:
                    if len(key) >= 8:
                        known = memo.get(key)
                        if known is None:
                            k = self(key)
                        else:
                            self.count += known[1]
                            k = known[0]
                else:
                    k = self._key(key)
                kv = type(item)
                if kv is str:
                    if len(item) >= 8:
                        known = memo.get(item)
                        if known is None:
                            v = self(item)
                        else:
                            self.count += known[1]
                            v = known[0]
                elif kv is not int and kv is not bool and item is not None:
                    v = walk(item)
                out[k] = v
            return out
        if kind is list:
            walk = self._walk
            return [v if type(v) is int or v is None else walk(v) for v in value]
        if kind in (int, float, bool) or value is None:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(k) if isinstance(k, str) else k: self._walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        return value
