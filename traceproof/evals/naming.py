"""Error clusters named by an LLM: a few mutually exclusive categories over the fingerprints.

The deterministic clusters (:mod:`traceproof.evals.clusters`) say *which* errors are the same;
an LLM can say what they are about and put the ones that share a cause together
(``carrier timeouts``, ``refund limits``). :func:`name_clusters` sends the largest
:data:`MAX_CLUSTERS` clusters (fingerprint, count, type and template, a few example messages,
all clipped) through :class:`traceproof.evals.llm.LLMClient` with one forced tool call, whose
answer is a list of categories: a name, a description and the fingerprints that belong to it.

The answer is checked, not trusted: every fingerprint sent must be in exactly one category, no
category may be empty or repeat a name, and there are at most :data:`MAX_CATEGORIES`. An answer
that breaks any of this raises ``[llm_malformed]``; without a credential the client raises
``[llm_unavailable]``, the judge's message. Clusters past :data:`MAX_CLUSTERS` are not sent and
keep their fingerprint as their category.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from traceproof.errors import ErrorCode
from traceproof.evals.clusters import Cluster
from traceproof.evals.llm import CallResult, LLMClient, LLMError, Tool

#: The largest clusters sent to the model (the rest keep their fingerprint).
MAX_CLUSTERS = 60
#: Most categories an answer may have.
MAX_CATEGORIES = 8
#: Longest category name.
NAME_CHARS = 60
#: Characters of a template and of each example message in the prompt; examples per cluster.
TEMPLATE_CHARS, EXAMPLE_CHARS, EXAMPLES = 300, 160, 2
#: The forced tool's name.
TOOL_NAME = "record_error_categories"

SYSTEM = (
    "You sort the errors of an AI application into categories. Each input line is one "
    "cluster of identical errors: its fingerprint, how many errors it holds, its error type "
    "and message template (variable parts read <placeholder>), then example messages. Group "
    f"the clusters into at most {MAX_CATEGORIES} mutually exclusive categories by their cause, "
    "each with a short lower-case name (a few words, what failed) and a one-sentence "
    "description. Every fingerprint goes in exactly one category. Answer only through the "
    f"{TOOL_NAME} tool."
)


@dataclass(frozen=True)
class Category:
    """A named set of clusters, by fingerprint."""

    name: str
    description: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Naming:
    """What the model answered, checked, and what the call cost."""

    categories: list[Category]
    call: CallResult

    def by_key(self) -> dict[str, Category]:
        """Fingerprint → its category."""
        return {key: category for category in self.categories for key in category.keys}


def tool(keys: Sequence[str]) -> Tool:
    """The forced tool: categories whose clusters are an enum of the fingerprints sent."""
    return Tool(
        name=TOOL_NAME,
        description="Record the categories of the error clusters.",
        input_schema={
            "type": "object",
            "properties": {
                "categories": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_CATEGORIES,
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "maxLength": NAME_CHARS},
                            "description": {"type": "string"},
                            "clusters": {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "string", "enum": list(keys)},
                            },
                        },
                        "required": ["name", "description", "clusters"],
                    },
                }
            },
            "required": ["categories"],
        },
    )


def _clipped(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def prompt(clusters: Sequence[Cluster]) -> str:
    """One line per cluster, then its examples (clipped)."""
    lines = []
    for item in clusters:
        head = f"{item.error_type}: {item.template}" if item.error_type else item.template
        lines.append(f"- {item.key} ({item.count} errors) {_clipped(head, TEMPLATE_CHARS)}")
        for example in item.examples[:EXAMPLES]:
            lines.append(f"    e.g. {_clipped(example.message, EXAMPLE_CHARS)}")
    return "Error clusters:\n" + "\n".join(lines)


def name_clusters(client: LLMClient, clusters: Sequence[Cluster]) -> Naming:
    """Categories for the largest :data:`MAX_CLUSTERS` of ``clusters`` (see the module's
    docstring); raises :class:`LLMError`."""
    shown = list(clusters[:MAX_CLUSTERS])
    keys = [item.key for item in shown]
    call = client.call_tool(
        system=SYSTEM,
        messages=[{"role": "user", "content": prompt(shown)}],
        tool=tool(keys),
        max_tokens=400 + 40 * len(keys),
    )
    return Naming(parse(call.answer or {}, keys, call), call)


def parse(answer: dict[str, Any], keys: Sequence[str], call: CallResult) -> list[Category]:
    """The categories of ``answer``, checked against the fingerprints sent (``keys``)."""

    def malformed(why: str) -> LLMError:
        return LLMError(
            f"The LLM's categories are malformed: {why}. Call again (the answer varies), or "
            "call without llm for the deterministic clusters.",
            code=ErrorCode.LLM_MALFORMED,
            usage=call,
        )

    raw = answer.get("categories")
    if not isinstance(raw, list) or not raw:
        raise malformed("no list of categories")
    if len(raw) > MAX_CATEGORIES:
        raise malformed(f"{len(raw)} categories, more than {MAX_CATEGORIES}")
    known = set(keys)
    seen: dict[str, str] = {}
    names: set[str] = set()
    out: list[Category] = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise malformed("a category that is not an object")
        name, description, members = (
            entry.get("name"),
            entry.get("description"),
            entry.get("clusters"),
        )
        if not isinstance(name, str) or not name.strip() or len(name) > NAME_CHARS:
            raise malformed(f"a category name that is not 1 to {NAME_CHARS} characters")
        name = " ".join(name.split())
        if name in names:
            raise malformed(f"the name {name!r} twice")
        names.add(name)
        if not isinstance(members, list) or not members:
            raise malformed(f"category {name!r} holds no cluster")
        for key in members:
            if not isinstance(key, str) or key not in known:
                raise malformed(f"category {name!r} names an unknown cluster {str(key)[:40]!r}")
            if key in seen:
                raise malformed(f"cluster {key} is in both {seen[key]!r} and {name!r}")
            seen[key] = name
        text = description if isinstance(description, str) else ""
        out.append(Category(name, " ".join(text.split())[:300], tuple(members)))
    missing = [key for key in keys if key not in seen]
    if missing:
        raise malformed(f"{len(missing)} clusters in no category ({', '.join(missing[:3])}…)")
    return out
