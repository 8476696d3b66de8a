"""``python -m support_agent``: one question in, one JSON answer out.

    python -m support_agent "Where is order 20417?"        # the question as an argument
    echo '{"question": "..."}' | python -m support_agent   # or JSON on stdin (a command task)
    python -m support_agent --file dataset.jsonl           # every line's "input", one trace each

The answer is ``{"answer": "..."}`` on stdout (with ``--file``, one ``{"input", "output"}``
line per question). Every span is exported before the process exits. Exit status 2 when the
input is not a question.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from support_agent.agent import BadInput, SupportAgent
from support_agent.tracing import parent_context, tracing


def _inputs(path: Path) -> list[Any]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}:{n}: not JSON ({exc})") from None
        items.append(row["input"] if isinstance(row, dict) and "input" in row else row)
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m support_agent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("question", nargs="?", help="the question (default: JSON on stdin)")
    parser.add_argument("--file", type=Path, help="JSONL of inputs (or of {input: ...} rows)")
    args = parser.parse_args(argv)
    try:
        if args.file is not None:
            batch = _inputs(args.file)
        elif args.question is not None:
            batch = [{"question": args.question}]
        else:
            text = sys.stdin.read()
            try:
                batch = [json.loads(text)]
            except json.JSONDecodeError:
                batch = [text.strip()]
        with tracing() as tracer:
            agent = SupportAgent(tracer)
            for item in batch:
                output = agent.answer(item, parent_context())
                line = {"input": item, "output": output} if args.file is not None else output
                print(json.dumps(line, ensure_ascii=False), flush=True)
    except BadInput as exc:
        print(f"support_agent: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
