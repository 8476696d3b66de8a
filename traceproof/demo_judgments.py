"""The demo's judgments: people's labels, an LLM judge's verdicts and its calibration.

On top of the demo's traces (:mod:`traceproof.demo`) a reviewer labelled the first
:data:`LABELLED_TRACES` turns ``resolved``: ``pass`` or ``fail`` (annotator kind ``HUMAN``,
annotator ``demo-reviewer``), and the judge :data:`DEMO_JUDGE` (also named ``resolved``) judged
them. Its verdicts are made by the real judge code (:func:`traceproof.evals.judge.judge` through
:class:`~traceproof.evals.llm.LLMClient` and the ``anthropic`` SDK) over an ``httpx2`` mock
transport that replays recorded answers: no network, no key, the same verdicts every time.
:func:`traceproof.tools.calibrate.run_calibration` writes them as ``LLM`` annotations, records
the judge's definition in the store (so ``calibrate_judge(judge="resolved", human="resolved")``
finds it without a traceproof.toml) and stores the calibration.

The judge and the reviewer disagree on two turns: an escalation to a supervisor (the reviewer:
the right call; the judge: nothing resolved) and a cheerful "Good news" about a delayed parcel
(the reviewer: misleading; the judge: resolved). The calibration passes the default thresholds.
Loading the demo again adds nothing (same annotations, same calibration id).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator

import httpx2

from traceproof.demo import DEMO_PROJECT
from traceproof.errors import TraceproofError
from traceproof.evals.annotations import (
    AnnotationConfig,
    AnnotationInput,
    AnnotatorKind,
    ConfigKind,
    Direction,
    LabelChoice,
    TargetKind,
)
from traceproof.evals.judge import TOOL_NAME, JudgeDefinition
from traceproof.evals.llm import LLMClient
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.annotations import get_configs, set_config, write_annotations

__all__ = ["DEMO_HUMAN", "DEMO_JUDGE", "LABELLED_TRACES", "load_demo_judgments"]

#: Turns (traces, in start order) the reviewer labelled.
LABELLED_TRACES = 30
#: The name of the reviewer's labels.
DEMO_HUMAN = "resolved"
REVIEWER = "demo-reviewer"

DEMO_JUDGE = JudgeDefinition(
    name="resolved",
    description="Did the support agent's final answer resolve the customer's request?",
    rubric=(
        "You review a customer-support assistant. The customer wrote:\n<question>{input}"
        "</question>\nThe assistant's final answer:\n<answer>{output}</answer>\n\n"
        "Label pass when the answer resolves the request or gives a concrete, truthful next "
        "step; label fail when it leaves the customer without a resolution, contradicts "
        "itself, or reports an error."
    ),
    labels=("fail", "pass"),
    scores={"fail": 0.0, "pass": 1.0},
    positive_label="fail",
    model="claude-sonnet-5-5",
    max_tokens=512,
)

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _human(output: str, status: str) -> tuple[str, str]:
    """The reviewer's label and why, for a turn's final answer."""
    if status == "ERROR":
        return "fail", "The turn failed; the customer only got an apology."
    if "Good news" in output and "delayed" in output:
        return "fail", "Calls a delayed parcel good news: misleading."
    if "couldn't find" in output:
        return "fail", "The order lookup failed and the agent gave up instead of retrying."
    if "supervisor" in output:
        return "pass", "Refund above the limit: escalating to a supervisor is the policy."
    return "pass", "Answers the request with the order's facts."


def _recorded(output: str) -> tuple[str, str]:
    """The judge's recorded answer (label, explanation) for a final answer."""
    if "something went wrong" in output:
        return "fail", "The answer reports an internal error and resolves nothing."
    if "couldn't find" in output:
        return "fail", "The assistant could not find the order; the request stays open."
    if "supervisor" in output:
        return "fail", "The refund is only escalated; the customer leaves without one."
    return "pass", "The answer resolves the request with concrete details."


def _replay(request: httpx2.Request) -> httpx2.Response:
    """The Messages API answer recorded for this request: a forced tool call whose label
    follows from the answer under review."""
    body = json.loads(request.content)
    prompt = body["messages"][0]["content"]
    prompt = prompt if isinstance(prompt, str) else prompt[0]["text"]
    found = _ANSWER.search(prompt)
    output = found.group(1) if found else ""
    label, explanation = _recorded(output)
    quote = output.split(". ")[0][:160]
    tool_input = {
        "explanation": explanation,
        "evidence": [{"quote": quote, "span_id": None}] if quote else [],
        "label": label,
    }
    message = {
        "id": "msg_demo",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", DEMO_JUDGE.model),
        "content": [
            {"type": "tool_use", "id": "toolu_demo", "name": TOOL_NAME, "input": tool_input}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": len(prompt) // 4, "output_tokens": 60},
    }
    return httpx2.Response(200, json=message)


#: What ``resolved`` may say: pass or fail, scored 1 and 0, higher is better.
DEMO_CONFIG = AnnotationConfig(
    name=DEMO_HUMAN,
    kind=ConfigKind.CATEGORICAL,
    labels=(LabelChoice("pass", 1.0), LabelChoice("fail", 0.0)),
    direction=Direction.MAXIMIZE,
    description="Did the turn resolve the customer's request?",
)

#: Where the replayed judge "calls": no host (``.invalid`` never resolves), nothing leaves.
REPLAY_URL = "http://recorded-demo.invalid"


def replay_client(settings: Settings) -> LLMClient:
    """An LLM client whose provider is the recorded answers (no network, no key needed)."""
    return LLMClient(
        settings,
        api_key="demo-replay",
        base_url=REPLAY_URL,
        http_client=httpx2.Client(transport=httpx2.MockTransport(_replay), base_url=REPLAY_URL),
    )


@contextlib.contextmanager
def _quiet_replay() -> Iterator[None]:
    """No ``httpx2`` request lines while the recorded answers are replayed: they would read as
    calls to a live provider."""
    logger = logging.getLogger("httpx2")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_demo_judgments(store: Store) -> int:
    """Write the reviewer's labels, the judge's verdicts and the calibration (see the module
    docstring); returns the labels written (0 when the store holds them already)."""
    from traceproof.tools.calibrate import run_calibration

    with store.reader() as reader:
        turns = reader.rows(
            "SELECT t.trace_id, s.status, coalesce(s.output_value, '') FROM trace_index t "
            "JOIN spans s ON s.project = t.project AND s.trace_id = t.trace_id "
            "AND s.parent_span_id IS NULL WHERE t.project = ? "
            "ORDER BY t.start_time, t.trace_id LIMIT ?",
            [DEMO_PROJECT, LABELLED_TRACES],
        )
    items: list[AnnotationInput] = []
    for trace_id, status, output in turns:
        label, why = _human(str(output), str(status))
        items.append(
            AnnotationInput(
                target_kind=TargetKind.TRACE,
                target_id=trace_id,
                name=DEMO_HUMAN,
                label=label,
                score=DEMO_JUDGE.score_of(label),
                explanation=why,
                annotator_kind=AnnotatorKind.HUMAN,
                annotator=REVIEWER,
                project=DEMO_PROJECT,
            )
        )
    if not items:
        return 0
    with store.reader() as reader:
        configured = get_configs(reader, [DEMO_HUMAN])
    if not configured:  # a project's own [annotations.resolved] stays as it is
        set_config(store, DEMO_CONFIG)
    written = write_annotations(store, items)
    # Settings may refuse it (calibration_min_pairs above the labels): then labels only.
    with contextlib.suppress(TraceproofError), _quiet_replay():
        run_calibration(
            store,
            DEMO_JUDGE,
            DEMO_HUMAN,
            target_kind=TargetKind.TRACE,
            client=replay_client,
            calibration_id=f"demo-{DEMO_JUDGE.definition_hash.removeprefix('sha256:')}",
        )
    return written.created
