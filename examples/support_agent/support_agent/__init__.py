"""A small customer-support agent, traced with OpenTelemetry and OpenInference conventions.

It answers questions about orders (``lookup_order``), refunds (``refund``) and the shop's
policies (``search_docs``) with a scripted model in place of an LLM: deterministic, no API key.
Entry points: ``python -m support_agent "question"`` (or JSON on stdin) and
:func:`support_agent.task.run`.
"""
