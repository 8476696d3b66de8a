"""An Inspect AI ``.json`` log read one sample at a time.

A ``.json`` log is one ``EvalLog`` object whose ``samples`` array holds every sample: reading it
whole would hold the whole log in memory. :func:`top_level` walks the object's members instead,
decoding each value on its own (``json.JSONDecoder.raw_decode`` over a buffer that grows only
as far as the value needs) and each element of ``samples`` as its own value, so memory holds
the largest single sample, not the log.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import IO, Any

#: Bytes read at a time.
CHUNK = 1 << 20
_DECODER = json.JSONDecoder()
_SPACE = " \t\r\n"


class BadLog(ValueError):
    """What is not a JSON object (or is cut short), with where."""


class _Buffer:
    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        self.text = ""
        self.pos = 0
        self.eof = False
        self.consumed = 0  # characters dropped from the front (for error offsets)

    def more(self) -> bool:
        if self.eof:
            return False
        data = self.stream.read(max(CHUNK, len(self.text) - self.pos))
        if not data:
            self.eof = True
            self.text += self.decode(b"", final=True)
            return False
        if self.pos > CHUNK:
            self.consumed += self.pos
            self.text, self.pos = self.text[self.pos :], 0
        self.text += self.decode(data)
        return True

    def peek(self) -> str:
        """The next character that is not white space ('' at the end)."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _SPACE:
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def expect(self, allowed: str) -> str:
        found = self.peek()
        if not found or found not in allowed:
            where = "the end of the file" if not found else repr(found)
            raise BadLog(
                f"expected {' or '.join(repr(c) for c in allowed)} at character "
                f"{self.consumed + self.pos}, found {where}"
            )
        self.pos += 1
        return found

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                found, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                # A value the buffer ends inside: read on, unless the file ended.
                if self.more():
                    continue
                at = self.consumed + exc.pos
                raise BadLog(f"not JSON ({exc.msg} at character {at})") from None
            if end == len(self.text) and not isinstance(found, dict | list | str) and self.more():
                continue  # a number the buffer may have cut
            self.pos = end
            return found


def top_level(stream: IO[bytes]) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` per member of the log object, in file order, except ``samples``:
    ``("samples[]", sample)`` per element of it. Raises :class:`BadLog` where the file stops
    being a JSON object (everything before is yielded)."""
    buffer = _Buffer(stream)
    buffer.expect("{")
    if buffer.peek() == "}":
        return
    while True:
        key = buffer.value()
        if not isinstance(key, str):
            raise BadLog("an object key is not a string")
        buffer.expect(":")
        if key == "samples" and buffer.peek() == "[":
            buffer.expect("[")
            if buffer.peek() == "]":
                buffer.pos += 1
            else:
                while True:
                    yield "samples[]", buffer.value()
                    if buffer.expect(",]") == "]":
                        break
        else:
            yield key, buffer.value()
        if buffer.expect(",}") == "}":
            return
