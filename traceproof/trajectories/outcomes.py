"""What a tool call's output says: the exit code it reports, and a test run's summary.

Exit codes in the forms Claude Code (``Exit code 1``), Codex (``Process exited with code 1``,
``"exit_code": 1``) and OpenHands (``[Command finished with exit code 1]``) write them; test
summaries of pytest, go test, cargo, jest, vitest, mocha, unittest, ExUnit and RSpec; and the
findings of linters and type checkers that report failure only in their output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["LINT_FAIL", "RunSummary", "exit_code", "run_summary"]

_EXIT = re.compile(
    r"(?:exit(?:ed)? (?:with )?code:?\s*|\"exit_code\":\s*|exit status\s+|"
    r"Process exited with code\s+|\[Command finished with exit code\s+)(-?\d+)",
    re.I,
)
_PYTEST = re.compile(
    r"(?:^|[=\s])(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b"
)
_PYTEST_LINE = re.compile(
    r"^[=\s]*(?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)"
    r"(?:, )?)+.*(?:in [\d.]+s|=)",
    re.M,
)
_CARGO = re.compile(r"test result: (ok|FAILED)\. (\d+) passed; (\d+) failed")
_JEST = re.compile(r"^\s*Tests:?\s+(.*)$", re.M)
_COUNT = re.compile(r"(\d+) (passed|failed|failing|passing|todo|skipped|total)")
_MOCHA = re.compile(r"^\s*(\d+) (passing|failing)\b", re.M)
_UNITTEST = re.compile(r"^Ran (\d+) tests? in [\d.]+s\s*\n+\s*(OK|FAILED)(?: \(([^)]*)\))?", re.M)
#: ExUnit (``12 tests, 1 failure``) and RSpec (``10 examples, 2 failures``).
_EXUNIT = re.compile(
    r"^\s*(?:(\d+) doctests?, )?(\d+) (?:tests?|examples?|properties), (\d+) failures?", re.M
)
_GO_OK = re.compile(r"^ok\s+\S+", re.M)
_GO_FAIL = re.compile(r"^(?:FAIL\s+\S+|FAIL$|--- FAIL:)", re.M)
_GO_CASE = re.compile(r"^\s*--- (PASS|FAIL):", re.M)
LINT_FAIL = re.compile(
    r"Found \d+ errors?|error TS\d+|✖ \d+ problems?|\d+ errors? found|would reformat|"
    r"^[^\s:]+:\d+:\d+: [A-Z]+\d+ |found [1-9]\d* [a-z ]*(?:issues?|suggestions?)\b|"
    r"done \(warnings were emitted\)",
    re.M,
)


@dataclass(slots=True)
class RunSummary:
    """What a test run's output says: counts when it gives them, and whether it failed."""

    passed: int | None
    failed: int | None
    verdict_failed: bool


def exit_code(output: str) -> int | None:
    """The exit code the output reports (Claude Code, Codex, OpenHands forms), else None."""
    for part in (output[:400], output[-400:]):
        m = _EXIT.search(part)
        if m:
            return int(m.group(1))
    return None


def run_summary(output: str) -> RunSummary | None:
    """Passed and failed counts from a test runner's summary (pytest, go test, cargo, jest,
    vitest, mocha, unittest); None when the output has none."""
    m_cargo = _CARGO.findall(output)
    if m_cargo:
        failed = sum(int(f) for _, _, f in m_cargo)
        verdict = failed > 0 or any(v == "FAILED" for v, _, _ in m_cargo)
        return RunSummary(sum(int(p) for _, p, _ in m_cargo), failed, verdict)
    lines = _PYTEST_LINE.findall(output)
    if lines:
        counts = dict.fromkeys(("passed", "failed", "error"), 0)
        for n, word in _PYTEST.findall(lines[-1]):
            key = "error" if word.startswith("error") else word
            if key in counts:
                counts[key] += int(n)
        failed = counts["failed"] + counts["error"]
        return RunSummary(counts["passed"], failed, failed > 0)
    jest = _JEST.findall(output)
    if jest:
        counts = {word: int(n) for n, word in _COUNT.findall(jest[-1])}
        if counts:
            failed = counts.get("failed", 0)
            return RunSummary(counts.get("passed", 0), failed, failed > 0)
    mocha = {word: int(n) for n, word in _MOCHA.findall(output)}
    if mocha:
        failed = mocha.get("failing", 0)
        return RunSummary(mocha.get("passing", 0), failed, failed > 0)
    unit = _UNITTEST.findall(output)
    if unit:
        ran, verdict, detail = unit[-1]
        failed = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", detail))
        return RunSummary(int(ran) - failed, failed, verdict == "FAILED")
    exunit = _EXUNIT.findall(output)
    if exunit:
        doctests, tests, failures = exunit[-1]
        total, failed = int(doctests or 0) + int(tests), int(failures)
        return RunSummary(total - failed, failed, failed > 0)
    cases = _GO_CASE.findall(output)
    if cases:
        failed = cases.count("FAIL")
        return RunSummary(cases.count("PASS"), failed, failed > 0 or bool(_GO_FAIL.search(output)))
    if _GO_FAIL.search(output):
        return RunSummary(None, None, True)
    if _GO_OK.search(output):
        return RunSummary(None, None, False)
    return None
