"""Small Claude Code transcripts written the way Claude Code writes them (for the tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SESSION = "5e55a0b1-0000-4000-8000-000000000001"
START = datetime(2026, 2, 10, 21, 0, 0, tzinfo=UTC)


@dataclass
class Transcript:
    """Builds records in order; each new record's parent is the last one unless told."""

    session: str = SESSION
    start: datetime = START
    agent_id: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    last: str | None = None
    seconds: int = 0

    def _base(self, kind: str, uuid: str, parent: str | None) -> dict[str, Any]:
        self.seconds += 1
        record: dict[str, Any] = {
            "parentUuid": parent,
            "isSidechain": self.agent_id is not None,
            "userType": "external",
            "cwd": "/home/USER/projects/shop",
            "sessionId": self.session,
            "version": "2.1.39",
            "gitBranch": "main",
            "type": kind,
            "uuid": uuid,
            "timestamp": (self.start + timedelta(seconds=self.seconds))
            .isoformat()
            .replace("+00:00", "Z"),
        }
        if self.agent_id is not None:
            record["agentId"] = self.agent_id
        return record

    def add(self, record: dict[str, Any]) -> str:
        self.records.append(record)
        self.last = record.get("uuid", self.last)
        return str(record.get("uuid"))

    def prompt(self, uuid: str, text: str, parent: str | None = "") -> str:
        record = self._base("user", uuid, self.last if parent == "" else parent)
        record["message"] = {"role": "user", "content": text}
        return self.add(record)

    def assistant(
        self,
        uuid: str,
        message_id: str,
        block: dict[str, Any],
        *,
        output_tokens: int = 10,
        parent: str | None = "",
        model: str = "claude-opus-4-6",
    ) -> str:
        record = self._base("assistant", uuid, self.last if parent == "" else parent)
        record["requestId"] = "req_" + message_id
        record["message"] = {
            "model": model,
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "content": [block],
            "stop_reason": None,
            "usage": {
                "input_tokens": 3,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 1000,
                "output_tokens": output_tokens,
            },
        }
        return self.add(record)

    def result(
        self,
        uuid: str,
        tool_use_id: str,
        text: str,
        *,
        error: bool = False,
        detail: Any = None,
        parent: str | None = "",
    ) -> str:
        record = self._base("user", uuid, self.last if parent == "" else parent)
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": text}
        if error:
            block["is_error"] = True
        record["message"] = {"role": "user", "content": [block]}
        if detail is not None:
            record["toolUseResult"] = detail
        return self.add(record)

    def system(self, uuid: str, subtype: str, **fields: Any) -> str:
        record = self._base("system", uuid, self.last)
        record["subtype"] = subtype
        record.update(fields)
        return self.add(record)

    def lines(self) -> list[str]:
        return [json.dumps(r) for r in self.records]

    def write(self, path: Path, *, tail: str = "") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines()) + "\n" + tail, encoding="utf-8")
        return path


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(tool_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": arguments}


def basic_session() -> Transcript:
    """Two turns: a Bash call that fails and a Read, then a follow-up question."""
    t = Transcript()
    t.add(
        {
            "type": "file-history-snapshot",
            "messageId": "m0",
            "snapshot": {"trackedFileBackups": {}},
            "isSnapshotUpdate": False,
        }
    )
    t.last = None
    t.prompt("u1", "why does the checkout test fail? my key is sk-ant-api03-abcdefghijklmnopqr")
    t.assistant("a1", "msg_1", text("Let me run the tests."))
    t.assistant(
        "a2", "msg_1", tool_use("toolu_1", "Bash", {"command": "pytest -q"}), output_tokens=40
    )
    t.result("r1", "toolu_1", "Exit code 1\n1 failed", error=True, detail="Error: Exit code 1")
    t.assistant("a3", "msg_2", tool_use("toolu_2", "Read", {"file_path": "/src/checkout.py"}))
    t.result("r2", "toolu_2", "def total(): ...", detail={"type": "text"})
    t.assistant("a4", "msg_3", text("The total ignores the discount."), output_tokens=25)
    t.system("s1", "turn_duration", durationMs=12000)
    t.prompt("u2", "fix it")
    t.assistant("a5", "msg_4", text("Done."))
    t.system("s2", "stop_hook_summary", hookCount=0)
    return t
