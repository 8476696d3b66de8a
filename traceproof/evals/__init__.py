"""Judgment: annotations, evaluators, the LLM judge, calibration and error categories.

Domain code only: no DuckDB (that is :mod:`traceproof.storage`) and no MCP (that is
:mod:`traceproof.server`). Each module is imported directly (``from traceproof.evals.annotations
import AnnotationInput``); this package re-exports nothing, so helpers working on different
modules never edit the same file.

- :mod:`traceproof.evals.annotations` the annotation model (targets, annotator kinds), annotation
  configs and the checks every write passes before it reaches the store.
"""
