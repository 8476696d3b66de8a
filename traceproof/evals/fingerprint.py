"""Error fingerprints: the same failure gets the same key, whatever ids, times or sizes it names.

A fingerprint is made of three parts, all deterministic:

- the error type (``TimeoutError``; taken from a leading ``SomethingError:`` of the message when
  the span names none);
- the message *template*: the message with its variable parts replaced by placeholders, in one
  left-to-right pass of one RE2 pattern (linear time on any input, so a hostile message cannot
  stall the call): ``<url>``, ``<email>``, ``<uuid>``, ``<datetime>``, ``<time>``, ``<ip>``,
  ``<host>``, ``<path>``, ``<hash>`` (32/40/64/128 hex digits), ``<hex>`` (other hex ids with a
  digit), ``<duration>`` (``10.8s``, ``250 ms``), ``<num>`` and quoted values (``'<str>'``,
  ``"<str>"``); the rest of the text is kept, so ``request to https://a.example/x timed out
  after 10.8s`` reads ``request to <url> timed out after <duration>``;
- the top frames of its stack trace (``exception.stacktrace``; Python tracebacks, innermost
  last, and JavaScript ``at fn (file:line:col)`` stacks, innermost first), as ``file:function``
  without line or column numbers, so a line added above the failing call does not split a group.

:func:`fingerprint` returns them with a short stable ``key`` (a hash of the three).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import re2  # type: ignore[import-untyped]

#: Characters of a message that are read; the rest is cut before the template is made.
MESSAGE_CHARS: Final = 2000
#: Stack frames (innermost first) that are part of a fingerprint.
TOP_FRAMES: Final = 3

_HEX = "[0-9a-fA-F]"
_TLDS = (
    "com|net|org|io|dev|ai|app|cloud|co|me|info|biz|us|uk|de|fr|eu|jp|cn|in|ru|br|au|ca|nl|"
    "internal|local|localdomain|localhost|svc|cluster|lan|corp|example|test"
)
_DURATION_UNITS = (
    "ns|nanoseconds?|us|µs|microseconds?|ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|"
    "h|hrs?|hours?|d|days?"
)


def _hex_with_digit() -> str:
    """A word of at least 8 hex digits holding at least one decimal digit (so ``deadbeef``,
    ``accede``… stay words), without look-ahead: split on where its first decimal digit is."""
    letters, tail = "[a-fA-F]", _HEX
    forms = [f"{letters}{{{k}}}[0-9]{tail}{{{7 - k},}}" for k in range(7)]
    forms.append(f"{letters}{{7,}}[0-9]{tail}*")
    return rf"\b(?:0x{_HEX}+|{'|'.join(forms)})\b"


@dataclass(frozen=True)
class Rule:
    """One kind of variable part: an RE2 pattern, its placeholder, and a text it cannot match
    without (a pass is skipped when the message lacks it; ``None``: always run)."""

    name: str
    pattern: str
    placeholder: str
    needs: str | None


#: The variable parts, replaced one kind after the other, in this order: URLs before hosts and
#: paths, UUIDs and date-times before hex ids and numbers, durations before numbers, quoted
#: values last (a quoted value becomes one placeholder whatever it held). After the number pass
#: no decimal digit is left, which is what lets :func:`template_sql` read messages with every
#: digit turned into ``0`` (far fewer distinct texts) and still make the same templates.
RULES: Final[tuple[Rule, ...]] = (
    Rule("url", r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,15}://[^\s'\"<>()\[\]{}]+", "<url>", "://"),
    Rule("email", r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+", "<email>", "@"),
    Rule(
        "uuid",
        rf"\b{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}\b",
        "<uuid>",
        "-",
    ),
    Rule(
        "datetime",
        r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
        r"(?:Z|[+\-]\d{2}:?\d{2})?)?\b",
        "<datetime>",
        "-",
    ),
    Rule("time", r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b", "<time>", ":"),
    Rule("ip", r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b", "<ip>", "."),
    Rule(
        "ip6",
        rf"\b(?:{_HEX}{{1,4}}:){{7}}{_HEX}{{1,4}}\b"
        rf"|\b(?:{_HEX}{{1,4}}:){{1,6}}:(?:{_HEX}{{1,4}}(?::{_HEX}{{1,4}}){{0,5}})?"
        rf"|::{_HEX}{{1,4}}(?::{_HEX}{{1,4}}){{0,6}}\b",
        "<ip>",
        ":",
    ),
    Rule(
        "host",
        rf"\b(?:[a-zA-Z0-9\-]+\.)+(?:{_TLDS})(?::\d{{1,5}})?\b|\blocalhost:\d{{1,5}}\b",
        "<host>",
        ".",
    ),
    Rule("path", r"(?:~|\.{1,2}|\b[\w.\-]+)?(?:/[\w.@%+~\-]+){2,}/?", "<path>", "/"),
    Rule("winpath", r"(?:\b[A-Za-z]:\\|\\\\)[^\s'\"<>|*?]+", "<path>", "\\"),
    Rule(
        "hash",
        "|".join(rf"\b{_HEX}{{{n}}}\b" for n in (128, 64, 40, 32)),
        "<hash>",
        "0",
    ),
    Rule("hex", _hex_with_digit(), "<hex>", "0"),
    Rule("duration", rf"\b\d+(?:\.\d+)?\s?(?:{_DURATION_UNITS})\b", "<duration>", "0"),
    Rule("num", r"\d+(?:[.,]\d+)*", "<num>", "0"),
    Rule("squote", r"\B'[^'\n]{1,200}'\B", "'<str>'", "'"),
    Rule("dquote", r'\B"[^"\n]{1,200}"\B', '"<str>"', '"'),
)
_COMPILED: Final = tuple((re2.compile(rule.pattern), rule) for rule in RULES)


@dataclass(frozen=True)
class Fingerprint:
    """What makes two errors the same: their type, message template and top frames."""

    key: str
    error_type: str | None
    template: str
    frames: tuple[str, ...]

    @property
    def title(self) -> str:
        """``Type: template`` (the template alone when there is no type)."""
        return f"{self.error_type}: {self.template}" if self.error_type else self.template


_ZEROS: Final = str.maketrans("123456789", "000000000")
_SPACES = re2.compile(r"\s+")
#: A message that names its own type, as status messages often do: ``TimeoutError: …``.
_TYPE_PREFIX = re2.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Failure|Fault|Timeout|Denied|NotFound|Exceeded))"
    r":\s+"
)


def shape(message: str | None) -> str:
    """What a template is made from: the message's first :data:`MESSAGE_CHARS` characters with
    every digit turned into ``0``. Templates hold no digit, so this loses nothing, and many
    messages that differ only in their numbers share one shape (templated once)."""
    return (message or "")[:MESSAGE_CHARS].translate(_ZEROS)


def template(message: str | None) -> str:
    """``message`` with its variable parts replaced by placeholders, whitespace collapsed."""
    text = shape(message)
    for pattern, rule in _COMPILED:
        if rule.needs is None or rule.needs in text:
            text = str(pattern.sub(rule.placeholder, text))
    return str(_SPACES.sub(" ", text)).strip(" ")


def shape_sql(column: str) -> str:
    """DuckDB SQL for :func:`shape` of the text column ``column``."""
    return f"translate(left(coalesce({column}, ''), {MESSAGE_CHARS}), '123456789', '000000000')"


def template_query(source: str, column: str = "shape") -> str:
    """A DuckDB query over ``source`` (a table, or a subquery in parentheses with an alias)
    answering ``(column, template)``: the same template :func:`template` makes, from the shape
    in ``column`` (RE2 on both sides, the same rules in the same order). One subquery per rule,
    so each pass is skipped on rows lacking its text without repeating the expression."""
    sql = f"SELECT {column}, {column} AS t FROM {source}"
    for rule in RULES:
        pattern = rule.pattern.replace("'", "''")
        placeholder = rule.placeholder.replace("'", "''")
        replaced = f"regexp_replace(t, '{pattern}', '{placeholder}', 'g')"
        if rule.needs is not None:
            needs = rule.needs.replace("'", "''")
            replaced = f"CASE WHEN contains(t, '{needs}') THEN {replaced} ELSE t END"
        sql = f"SELECT {column}, {replaced} AS t FROM ({sql})"
    return f"SELECT {column}, trim(regexp_replace(t, '\\s+', ' ', 'g')) AS template FROM ({sql})"


def strip_type(error_type: str | None, message: str | None) -> str:
    """``message`` without a leading ``Type: `` that repeats ``error_type`` (status messages
    such as ``TimeoutError: upstream timed out`` name their type first)."""
    message = message or ""
    if error_type and message.startswith(f"{error_type}: "):
        return message[len(error_type) + 2 :]
    return message


def split_type(error_type: str | None, text: str) -> tuple[str | None, str]:
    """The error's type and the rest of ``text`` (a template): when the span names no type, a
    leading ``SomethingError: `` of the text is taken as it."""
    if error_type:
        return error_type, text
    found = _TYPE_PREFIX.match(text)
    if found:
        return found.group(1), text[found.end() :]
    return None, text


def top_frames(stack: str | None, count: int = TOP_FRAMES) -> tuple[str, ...]:
    """The innermost ``count`` frames of a Python or JavaScript stack trace, innermost first,
    as ``file:function`` (the file's last two path parts; no line or column numbers)."""
    if not stack:
        return ()
    python: list[str] = []
    javascript: list[str] = []
    for raw in stack.splitlines():
        line = raw.strip()
        if line.startswith('File "'):
            end = line.find('"', 6)
            if end < 0:
                continue
            where = line.rfind(", in ")
            function = line[where + 5 :].strip() if where > end else "?"
            python.append(f"{_short_path(line[6:end])}:{function}")
        elif line.startswith("at ") and len(javascript) < count:
            javascript.append(_js_frame(line[3:].strip()))
    if python:
        return tuple(reversed(python[-count:]))
    return tuple(javascript[:count])


def _short_path(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:]) if parts else path


def _js_frame(text: str) -> str:
    """``fn (file:line:col)`` or ``file:line:col`` as ``file:fn`` without numbers."""
    function = "?"
    location = text
    if text.endswith(")") and " (" in text:
        function, _, location = text[:-1].rpartition(" (")
        function = function.removeprefix("async ").strip() or "?"
    location = location.removeprefix("file://")
    # drop :line:col (or :line) at the end
    for _ in range(2):
        head, colon, tail = location.rpartition(":")
        if colon and tail.isdigit():
            location = head
    return f"{_short_path(location)}:{function}"


#: The frame lines of a stack trace (Python ``File "…", line N, in f``; JavaScript ``at …``).
_FRAME_LINES = r'(?m)^[ \t]*(?:File "[^"\n]*", line [0-9]+, in [^\n]*|at [^\n]*)$'


def frames_sql(column: str) -> str:
    """DuckDB SQL reducing the stack trace in ``column`` to its frame lines without line or
    column numbers: what :func:`top_frames` reads (it gives the same frames from this text as
    from the whole trace), and a grouping key that no longer holds the message or the line
    numbers a trace repeats."""
    lines = f"array_to_string(regexp_extract_all({column}, '{_FRAME_LINES}'), chr(10))"
    python = f"regexp_replace({lines}, ', line [0-9]+,', ', line 0,', 'g')"
    return f"regexp_replace({python}, ':[0-9]+', ':0', 'g')"


def fingerprint(
    error_type: str | None, message: str | None, stack: str | None = None
) -> Fingerprint:
    """The fingerprint of one error."""
    return make(error_type, template(strip_type(error_type, message)), top_frames(stack))


def make(error_type: str | None, text: str, frames: tuple[str, ...]) -> Fingerprint:
    """The fingerprint of a type, a template already made (by :func:`template` or
    :func:`template_query`) and top frames."""
    kind, text = split_type(error_type or None, text)
    return Fingerprint(key(kind, text, frames), kind, text, frames)


def key(error_type: str | None, text: str, frames: tuple[str, ...]) -> str:
    """16 hex digits naming a type, a template and frames (a hash: stable across runs)."""
    digest = hashlib.blake2b(digest_size=8)
    for part in (error_type or "", text, *frames):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def tokens(text: str) -> list[str]:
    """A template's words, for comparing templates (placeholders are single words)."""
    return text.split(" ") if text else []
