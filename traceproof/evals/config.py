"""The project config file, ``traceproof.toml``: the evaluators (and tasks) a project declares.

Tool calls name evaluators; only this file says what they run. It lives at the project root
(the directory the server or the CLI starts in; ``--config`` points elsewhere, and then the
file's own directory is the root)::

    [evaluators.mentions_refund]
    kind = "builtin"            # optional when `evaluator` is given
    evaluator = "contains"
    value = ["refund"]          # the evaluator's parameters, beside it

    [evaluators.polite]
    kind = "code"               # optional when `function` is given
    function = "evals.checks:polite"
    python = ".venv/bin/python" # default: the interpreter traceproof runs on
    cwd = "."                   # default: the project root
    timeout = 30                # seconds per batch; default: setting eval_code_timeout_seconds

    [evaluators.helpful]
    kind = "judge"              # defined by traceproof.evals.judge; kept raw here

    [tasks.answer]              # the experiments' tasks; kept raw here

    [annotations.correctness]   # what annotations named correctness may say
    kind = "categorical"        # optional when `labels` is given
    labels = {pass = 1.0, fail = 0.0}  # or a list, ["pass", "fail"] (no scores)
    direction = "maximize"      # or "minimize"; default none

    [annotations.tone]
    kind = "continuous"         # optional when `min` or `max` is given
    min = 0
    max = 1

    [annotations.notes]
    kind = "freeform"

    [trajectories.actions.verify]  # action rules for coding-agent steps (see
    tools = ["run_checks"]         # traceproof.trajectories.actions)
    commands = ['^\\./scripts/check']

A judge (``kind = "judge"``) implies a categorical config for the annotations it writes (named
as the judge): its labels (``insufficient_evidence`` too when allowed) with their scores, unless
an ``[annotations.NAME]`` table of that name is declared; a declared categorical config must
then allow every label of the judge, and a continuous one every score (else the judge's own
verdicts would be refused). A judge table that does not validate implies nothing (the judge
itself is refused when it runs).

Every definition has a ``content_hash`` (SHA-256 of its table as sorted JSON, ``description``
left out, plus the built-in's behaviour version or, for code, the SHA-256 of the module's source
file when it is found under the root) and a ``version`` (the hash's first 12 hex digits):
annotations record it, so re-running an unchanged evaluator is recognisable.

Errors are :class:`~traceproof.errors.TraceproofError` with code ``invalid_config``
(``[invalid_config] traceproof.toml: evaluators.x: unknown evaluator 'contain'; known: ...``)
or ``unknown_evaluator``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.annotations import (
    NAME_MAX_CHARS,
    AnnotationConfig,
    ConfigKind,
    Direction,
    InvalidAnnotation,
    LabelChoice,
)
from traceproof.evals.builtin import BUILTINS
from traceproof.evals.checks import Params
from traceproof.trajectories.actions import ActionRules, InvalidRules

__all__ = [
    "CONFIG_FILE",
    "BuiltinEvaluatorConfig",
    "CodeEvaluatorConfig",
    "EvaluatorDefinition",
    "JudgeConfig",
    "ProjectConfig",
    "TaskConfig",
    "load_config",
    "parse_config",
]

CONFIG_FILE = "traceproof.toml"
_SECTIONS = ("evaluators", "tasks", "annotations", "trajectories")
_FUNCTION = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
#: Keys of an evaluator table that are not a built-in's parameters.
_BUILTIN_KEYS = frozenset({"kind", "evaluator", "description"})


class _Definition(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    description: str | None = None
    table: dict[str, Any] = Field(description="The table as written in the file.")
    content_hash: str
    version: str

    @property
    def annotator(self) -> str:
        """``name@version``: what an annotation written by this evaluator records."""
        return f"{self.name}@{self.version}"


class BuiltinEvaluatorConfig(_Definition):
    kind: Literal["builtin"] = "builtin"
    evaluator: str
    params: Params


class CodeEvaluatorConfig(_Definition):
    kind: Literal["code"] = "code"
    function: str
    python: Path | None = Field(default=None, description="Interpreter; None: sys.executable.")
    cwd: Path
    timeout: float | None = None
    source: Path | None = Field(default=None, description="The module's file, when found.")


class JudgeConfig(_Definition):
    """An LLM judge's table, kept raw: :mod:`traceproof.evals.judge` defines its fields."""

    kind: Literal["judge"] = "judge"


EvaluatorDefinition = BuiltinEvaluatorConfig | CodeEvaluatorConfig | JudgeConfig


class TaskConfig(BaseModel):
    """A ``[tasks.NAME]`` table, kept raw for the experiments (next issue)."""

    model_config = ConfigDict(frozen=True)

    name: str
    table: dict[str, Any]


class ProjectConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path | None = Field(description="The file read; None when the project has none.")
    root: Path
    evaluators: dict[str, EvaluatorDefinition] = Field(default_factory=dict)
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)
    annotations: dict[str, AnnotationConfig] = Field(
        default_factory=dict,
        description="Annotation configs by name: the [annotations.NAME] tables, and those the "
        "judges imply (see implied).",
    )
    implied: frozenset[str] = Field(
        default=frozenset(), description="Names of annotations whose config a judge implies."
    )
    trajectories: dict[str, Any] = Field(
        default_factory=dict, description="The [trajectories] table (action rules), validated."
    )

    def action_rules(self) -> ActionRules:
        """The project's ``[trajectories.actions]`` rules (none: the built-in ones only)."""
        return ActionRules.from_table(self.trajectories.get("actions", {}))

    def evaluator(self, name: str) -> EvaluatorDefinition:
        """The evaluator ``name``, or ``[unknown_evaluator]`` listing those declared."""
        try:
            return self.evaluators[name]
        except KeyError:
            where = self.path.name if self.path else f"{CONFIG_FILE} (none in {self.root})"
            known = ", ".join(self.evaluators) or "none"
            raise TraceproofError(
                f"No evaluator {name!r} in {where}; declared: {known}. Add an "
                f"[evaluators.{name}] table to {CONFIG_FILE} (built-ins: {', '.join(BUILTINS)}).",
                code=ErrorCode.UNKNOWN_EVALUATOR,
            ) from None


def _invalid(source: str, where: str, detail: str) -> TraceproofError:
    return TraceproofError(
        f"{source}: {where}: {detail}. Fix the file and try again.", code=ErrorCode.INVALID_CONFIG
    )


def _digest(data: Any) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


def _pydantic_detail(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{prefix}{'.' + loc if loc else ''}: {message}")
    return "; ".join(parts)


def load_config(path: Path | None = None, *, root: Path | None = None) -> ProjectConfig:
    """The project's config: ``path`` (``--config``; must exist), else ``traceproof.toml`` in
    ``root`` (default: the working directory), else an empty config."""
    if path is None:
        base = (root or Path.cwd()).resolve()
        candidate = base / CONFIG_FILE
        if not candidate.is_file():
            return ProjectConfig(path=None, root=base)
        path, source = candidate, CONFIG_FILE
    else:
        path = path.resolve()
        source = str(path)
        if not path.is_file():
            raise TraceproofError(
                f"{source}: no such file. Pass the path of an existing traceproof.toml.",
                code=ErrorCode.INVALID_CONFIG,
            )
        base = (root or path.parent).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _invalid(source, "file", f"cannot be read ({exc})") from None
    return parse_config(text, source=source, root=base, path=path)


def parse_config(
    text: str, *, source: str = CONFIG_FILE, root: Path, path: Path | None = None
) -> ProjectConfig:
    """``text`` as a project config; ``source`` names the file in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _invalid(source, "file", f"not valid TOML ({exc})") from None
    unknown = [k for k in data if k not in _SECTIONS]
    if unknown:
        raise _invalid(source, unknown[0], f"unknown section; known: {', '.join(_SECTIONS)}")
    trajectories = _trajectories(data.get("trajectories", {}), source)
    evaluators: dict[str, EvaluatorDefinition] = {}
    for name, table in _tables(data, "evaluators", source).items():
        evaluators[name] = _evaluator(name, table, source, root)
    tasks = {n: TaskConfig(name=n, table=t) for n, t in _tables(data, "tasks", source).items()}
    annotations = {
        n: _annotation_config(n, t, source) for n, t in _tables(data, "annotations", source).items()
    }
    implied = _judge_configs(evaluators, annotations, source)
    return ProjectConfig(
        path=path,
        root=root,
        evaluators=evaluators,
        tasks=tasks,
        annotations=annotations | implied,
        implied=frozenset(implied),
        trajectories=trajectories,
    )


def _trajectories(raw: Any, source: str) -> dict[str, Any]:
    """``[trajectories]``: only ``[trajectories.actions.ACTION]`` tables (action rules)."""
    if not isinstance(raw, dict):
        raise _invalid(source, "trajectories", "must be a table ([trajectories.actions])")
    for key in raw:
        if key != "actions":
            raise _invalid(source, f"trajectories.{key}", "unknown key; known: actions")
    actions = raw.get("actions", {})
    if not isinstance(actions, dict):
        raise _invalid(source, "trajectories.actions", "must be tables ([trajectories.actions.X])")
    try:
        ActionRules.from_table(actions)
    except InvalidRules as exc:
        where, _, detail = str(exc).partition(": ")
        raise _invalid(source, where, detail) from None
    return raw


def _tables(data: dict[str, Any], section: str, source: str) -> dict[str, dict[str, Any]]:
    raw = data.get(section, {})
    if not isinstance(raw, dict):
        raise _invalid(source, section, f"must be tables ([{section}.NAME])")
    for name, table in raw.items():
        if not _NAME.match(name):
            raise _invalid(source, f"{section}.{name}", "names use letters, digits, _ . -")
        if not isinstance(table, dict):
            raise _invalid(source, f"{section}.{name}", f"must be a table ([{section}.{name}])")
    return raw


def _kind(table: dict[str, Any]) -> Any:
    if "kind" in table:
        return table["kind"]
    if "evaluator" in table:
        return "builtin"
    if "function" in table:
        return "code"
    return None


def _evaluator(name: str, table: dict[str, Any], source: str, root: Path) -> EvaluatorDefinition:
    where = f"evaluators.{name}"
    kind = _kind(table)
    description = table.get("description")
    if description is not None and not isinstance(description, str):
        raise _invalid(source, f"{where}.description", "must be a string")
    hashed = {k: v for k, v in table.items() if k != "description"}
    if kind == "builtin":
        return _builtin(name, table, hashed, source, where)
    if kind == "code":
        return _code(name, table, hashed, source, where, root)
    if kind == "judge":
        digest = _digest({"kind": "judge", "table": hashed})
        return JudgeConfig(
            name=name,
            description=description,
            table=table,
            content_hash=digest,
            version=digest[:12],
        )
    raise _invalid(
        source, f"{where}.kind", f"{kind!r} is not a kind; known: builtin, code, judge"
        if kind is not None else "missing; set kind = \"builtin\", \"code\" or \"judge\""
    )  # fmt: skip


def _builtin(
    name: str, table: dict[str, Any], hashed: dict[str, Any], source: str, where: str
) -> BuiltinEvaluatorConfig:
    evaluator = table.get("evaluator")
    if not isinstance(evaluator, str):
        raise _invalid(source, f"{where}.evaluator", f"missing; known: {', '.join(BUILTINS)}")
    builtin = BUILTINS.get(evaluator)
    if builtin is None:
        raise _invalid(
            source, where, f"unknown evaluator {evaluator!r}; known: {', '.join(BUILTINS)}"
        )
    params = {k: v for k, v in table.items() if k not in _BUILTIN_KEYS}
    try:
        validated = builtin.params.model_validate(params)
    except ValidationError as exc:
        raise _invalid(source, where, _pydantic_detail(exc, where)) from None
    digest = _digest({"kind": "builtin", "table": hashed, "behaviour": builtin.version})
    return BuiltinEvaluatorConfig(
        name=name,
        description=table.get("description"),
        table=table,
        evaluator=evaluator,
        params=validated,
        content_hash=digest,
        version=digest[:12],
    )


class _CodeTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["code"] = "code"
    description: str | None = None
    function: str = Field(pattern=_FUNCTION.pattern)
    python: str | None = Field(default=None, min_length=1)
    cwd: str | None = Field(default=None, min_length=1)
    timeout: float | None = Field(default=None, gt=0)


def _code(
    name: str, table: dict[str, Any], hashed: dict[str, Any], source: str, where: str, root: Path
) -> CodeEvaluatorConfig:
    try:
        code = _CodeTable.model_validate(table)
    except ValidationError as exc:
        detail = _pydantic_detail(exc, where)
        if any(e["loc"] == ("function",) for e in exc.errors()):
            detail += " (write it as module:function, e.g. evals.checks:polite)"
        raise _invalid(source, where, detail) from None
    cwd = (root / code.cwd).resolve() if code.cwd else root
    if not cwd.is_dir():
        raise _invalid(source, f"{where}.cwd", f"{cwd} is not a directory")
    python = None
    if code.python is not None:
        found = shutil.which(code.python) if os.sep not in code.python else None
        python = Path(found or code.python).expanduser()
        python = python if python.is_absolute() else (root / python)
        if not python.exists():
            raise _invalid(source, f"{where}.python", f"{python} does not exist")
    module_file = _module_file(code.function.split(":")[0], cwd)
    source_hash = (
        hashlib.sha256(module_file.read_bytes()).hexdigest() if module_file else "unresolved"
    )
    digest = _digest({"kind": "code", "table": hashed, "source": source_hash})
    return CodeEvaluatorConfig(
        name=name,
        description=code.description,
        table=table,
        function=code.function,
        python=python,
        cwd=cwd,
        timeout=code.timeout,
        source=module_file,
        content_hash=digest,
        version=digest[:12],
    )


def _module_file(module: str, cwd: Path) -> Path | None:
    """The source file of ``module`` under ``cwd`` (or ``cwd/src``) without importing it."""
    rel = Path(*module.split("."))
    for base in (cwd, cwd / "src"):
        for candidate in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


# -- [annotations.NAME] -----------------------------------------------------------------------

_ANNOTATION_KEYS = ("kind", "labels", "min", "max", "direction", "description")
_CONFIG_KINDS = {"categorical": ConfigKind.CATEGORICAL, "continuous": ConfigKind.CONTINUOUS,
                 "freeform": ConfigKind.FREEFORM}  # fmt: skip
_DIRECTIONS = {"maximize": Direction.MAXIMIZE, "minimize": Direction.MINIMIZE,
               "none": Direction.NONE}  # fmt: skip


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not one (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _annotation_config(name: str, table: dict[str, Any], source: str) -> AnnotationConfig:
    """An ``[annotations.NAME]`` table as a config; ``[invalid_config]`` naming the key."""
    where = f"annotations.{name}"
    unknown = [k for k in table if k not in _ANNOTATION_KEYS]
    if unknown:
        raise _invalid(
            source, f"{where}.{unknown[0]}", f"unknown key; known: {', '.join(_ANNOTATION_KEYS)}"
        )
    kind_text = table.get("kind")
    if kind_text is None:
        if "labels" in table:
            kind_text = "categorical"
        elif "min" in table or "max" in table:
            kind_text = "continuous"
        else:
            raise _invalid(
                source, f"{where}.kind", 'missing; set kind = "categorical", "continuous" or '
                '"freeform"'
            )  # fmt: skip
    kind = _CONFIG_KINDS.get(kind_text.lower()) if isinstance(kind_text, str) else None
    if kind is None:
        raise _invalid(
            source,
            f"{where}.kind",
            f"{kind_text!r} is not a kind; known: {', '.join(_CONFIG_KINDS)}",
        )
    direction_text = table.get("direction", "none")
    direction = _DIRECTIONS.get(direction_text.lower()) if isinstance(direction_text, str) else None
    if direction is None:
        raise _invalid(
            source, f"{where}.direction", f"{direction_text!r} is not a direction; known: "
            "maximize, minimize, none"
        )  # fmt: skip
    description = table.get("description")
    if description is not None and not isinstance(description, str):
        raise _invalid(source, f"{where}.description", "must be a string")
    labels: tuple[LabelChoice, ...] = ()
    low = high = None
    if kind is ConfigKind.CATEGORICAL:
        labels = _labels(table.get("labels"), source, f"{where}.labels")
    elif "labels" in table:
        raise _invalid(
            source, f"{where}.labels", f"only a categorical config has labels ({kind_text})"
        )
    for key in ("min", "max"):
        if key not in table:
            continue
        if kind is not ConfigKind.CONTINUOUS:
            raise _invalid(
                source, f"{where}.{key}", f"only a continuous config has bounds ({kind_text})"
            )
        value = _number(table[key])
        if value is None:
            raise _invalid(source, f"{where}.{key}", f"{table[key]!r} is not a finite number")
        low, high = (value, high) if key == "min" else (low, value)
    if low is not None and high is not None and low > high:
        raise _invalid(source, where, f"min {low:g} is above max {high:g}")
    return AnnotationConfig(
        name=name,
        kind=kind,
        labels=labels,
        lower_bound=low,
        upper_bound=high,
        direction=direction,
        description=description,
    )


def _labels(raw: Any, source: str, where: str) -> tuple[LabelChoice, ...]:
    """``["pass", "fail"]`` or ``{pass = 1.0, fail = 0.0}`` as label choices."""
    if raw is None:
        raise _invalid(
            source, where, 'missing; a categorical config lists its labels: labels = ["pass", '
            '"fail"] or labels = {pass = 1.0, fail = 0.0}'
        )  # fmt: skip
    if isinstance(raw, dict):
        pairs: list[tuple[Any, Any]] = list(raw.items())
    elif isinstance(raw, list):
        pairs = [(label, None) for label in raw]
    else:
        raise _invalid(source, where, "must be a list of labels or a table of label = score")
    if not pairs:
        raise _invalid(source, where, "is empty; give at least one label")
    choices: list[LabelChoice] = []
    for label, given in pairs:
        if not isinstance(label, str) or not label.strip() or len(label) > NAME_MAX_CHARS:
            raise _invalid(
                source, where, f"{label!r} is not a label (a non-empty string of at most "
                f"{NAME_MAX_CHARS} characters)"
            )  # fmt: skip
        score = None
        if given is not None:
            score = _number(given)
            if score is None:
                raise _invalid(source, f"{where}.{label}", f"{given!r} is not a finite number")
        choices.append(LabelChoice(label, score))
    names = [c.label for c in choices]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise _invalid(source, where, f"repeats {', '.join(map(repr, repeated))}")
    return tuple(choices)


def _judge_configs(
    evaluators: dict[str, EvaluatorDefinition],
    declared: dict[str, AnnotationConfig],
    source: str,
) -> dict[str, AnnotationConfig]:
    """The categorical configs the judges imply for the names no table declares; and a check
    that a declared config allows what its judge answers."""
    from traceproof.evals.judge import JudgeDefinition  # the judge's own parsing (lazy: heavy)

    implied: dict[str, AnnotationConfig] = {}
    for name, definition in evaluators.items():
        if not isinstance(definition, JudgeConfig):
            continue
        try:
            judge = JudgeDefinition.from_config(name, definition.table)
        except (TraceproofError, ValueError, TypeError):
            continue  # refused when it runs, with the judge's own message
        choices = tuple(LabelChoice(label, judge.score_of(label)) for label in judge.all_labels)
        config = declared.get(name)
        if config is None:
            try:
                implied[name] = AnnotationConfig(
                    name=name,
                    kind=ConfigKind.CATEGORICAL,
                    labels=choices,
                    description=f"the labels of the judge evaluators.{name}",
                )
            except InvalidAnnotation:
                continue
            continue
        _check_judge_fits(config, choices, source)
    return implied


def _check_judge_fits(
    config: AnnotationConfig, choices: tuple[LabelChoice, ...], source: str
) -> None:
    where = f"annotations.{config.name}"
    judge = f"the judge evaluators.{config.name}"
    if config.kind is ConfigKind.CATEGORICAL:
        allowed = {c.label for c in config.labels}
        missing = [c.label for c in choices if c.label not in allowed]
        if missing:
            raise _invalid(
                source, f"{where}.labels", f"{judge} answers {', '.join(map(repr, missing))}, "
                "which this config does not allow; add the label(s), or remove the table (the "
                "judge's labels then apply)"
            )  # fmt: skip
    elif config.kind is ConfigKind.CONTINUOUS:
        low, high = config.lower_bound, config.upper_bound
        for choice in choices:
            score = choice.score
            fits = score is not None and (low is None or score >= low)
            if not fits or (high is not None and score is not None and score > high):
                raise _invalid(
                    source, where, f"{judge} answers {choice.label!r} with "
                    f"{'no score' if score is None else f'score {score:g}'}, which this config "
                    f"({config.allowed()}) refuses; widen the bounds, or make it categorical"
                )  # fmt: skip
