"""The one LLM client of traceproof: the judge, LLM error naming and adjudication all call it.

It wraps ``anthropic.Anthropic`` / ``AsyncAnthropic`` and adds what each caller would otherwise
write again: the model setting, retries with exponential backoff and jitter on 429, 529
(overloaded), 5xx and lost connections (``Retry-After`` honoured), a time limit per call,
bounded concurrency, token and cost accounting per call, and the forced-tool-call answer shape
(one tool, ``tool_choice`` naming it, its input returned as a dict). The SDK builds and sends
the request and raises on its status; the answer is read from the response's JSON as plain
data (``with_raw_response``: building the SDK's response models was a third of a call's CPU).
Each SDK client is built once per :class:`LLMClient` and reused, with its connection pool.

Credentials and the endpoint are the SDK's business: ``ANTHROPIC_API_KEY`` (or
``ANTHROPIC_AUTH_TOKEN``, a profile) and ``ANTHROPIC_BASE_URL`` are read by ``anthropic`` itself,
so a gateway or a local proxy works unchanged. Without any credential the client raises
``[llm_unavailable]`` saying what to set.

Errors (all :class:`LLMError`, a :class:`~traceproof.errors.TraceproofError`):

- ``llm_unavailable``: no credential, or the provider refused it (401/403).
- ``llm_failed``: the call failed after its retries, or was refused (400, 404, ...).
- ``llm_malformed``: the model answered without the forced tool call (or the caller found its
  input outside the schema); ``usage`` still says what the call cost.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar

import anthropic
import httpx2
import orjson

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.settings import Settings

__all__ = [
    "DEFAULT_MODEL",
    "PRICES",
    "CallResult",
    "LLMClient",
    "LLMError",
    "Price",
    "Tool",
    "Usage",
    "price_for",
]

#: A current model that the installed SDK lists and does not warn about (``Settings.llm_model``
#: is the setting; this is its default).
DEFAULT_MODEL = "claude-sonnet-5-5"

#: USD per million (input, output) tokens.
Price = tuple[float, float]

#: Prices by model-name prefix, the longest prefix winning. Cache writes cost 1.25x input, cache
#: reads 0.1x input. ``Settings.llm_prices`` overrides (by exact name or prefix).
PRICES: dict[str, Price] = {
    "claude-opus-4-0": (15.0, 75.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4": (5.0, 25.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-sonnet": (3.0, 15.0),
    "claude-haiku-4": (1.0, 5.0),
    "claude-haiku-5": (1.0, 5.0),
}

CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.1

_RETRIED_STATUS = frozenset({408, 409, 429})
_REFUSED_KEY_STATUS = frozenset({401, 403})

#: How much effort the model puts into an answer (the SDK's ``output_config.effort``; this
#: SDK's Messages API has no sampling temperature).
Effort = Literal["low", "medium", "high", "xhigh", "max"]
Sleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]
_SDK = TypeVar("_SDK", anthropic.Anthropic, anthropic.AsyncAnthropic)


class LLMError(TraceproofError):
    """An LLM call that gave no usable answer; ``usage`` is set when the provider answered."""

    def __init__(self, message: str, *, code: ErrorCode, usage: CallResult | None = None) -> None:
        super().__init__(message, code=code)
        self.usage = usage


@dataclass(frozen=True)
class Tool:
    """The one tool the model must call: its input is the answer."""

    name: str
    description: str
    input_schema: dict[str, Any]

    def param(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }


@dataclass(frozen=True)
class Usage:
    """Tokens of one call, as the provider counted them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0


@dataclass
class CallResult:
    """One answered call: the tool's input (None when the model did not call it) and its
    accounting. ``latency_ms`` covers every attempt and every wait between them."""

    answer: dict[str, Any] | None
    model: str
    usage: Usage
    cost_usd: float | None
    cost_note: str | None
    latency_ms: float
    attempts: int
    stop_reason: str | None = None
    text: str = ""
    notes: list[str] = field(default_factory=list)


def price_for(model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``model``: an override by exact name, else the longest matching prefix of
    the overrides, else of :data:`PRICES`; None when nothing matches."""
    overrides = overrides or {}
    if model in overrides:
        return overrides[model]
    for table in (overrides, PRICES):
        matches = [prefix for prefix in table if model.startswith(prefix)]
        if matches:
            return table[max(matches, key=len)]
    return None


def cost(
    model: str, usage: Usage, overrides: Mapping[str, Price] | None
) -> tuple[float | None, str | None]:
    price = price_for(model, overrides)
    if price is None:
        return None, (
            f"No price known for model {model!r}: cost not counted. Set TRACEPROOF_LLM_PRICES "
            f'(e.g. {{"{model}": [3, 15]}}, USD per million input and output tokens).'
        )
    per_in, per_out = price[0] / 1e6, price[1] / 1e6
    total = (
        usage.input_tokens * per_in
        + usage.output_tokens * per_out
        + usage.cache_write_tokens * per_in * CACHE_WRITE_FACTOR
        + usage.cache_read_tokens * per_in * CACHE_READ_FACTOR
    )
    return round(total, 8), None


class LLMClient:
    """Calls one model with one forced tool, sync or async, within the settings' limits.

    ``sleep`` / ``async_sleep`` are how retries wait (tests pass recorders: no real sleeping);
    ``http_client`` / ``async_http_client`` are handed to the SDK (tests pass an
    ``httpx2.MockTransport``). ``api_key`` and ``base_url`` default to what the SDK reads from
    the environment.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        http_client: httpx2.Client | None = None,
        async_http_client: httpx2.AsyncClient | None = None,
        sleep: Sleep = time.sleep,
        async_sleep: AsyncSleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.model = model or self.settings.llm_model
        self._api_key, self._base_url = api_key, base_url
        self._http_client, self._async_http_client = http_client, async_http_client
        self._sleep, self._async_sleep = sleep, async_sleep
        self._rng = rng or random.Random()
        self._sync: anthropic.Anthropic | None = None
        self._async: anthropic.AsyncAnthropic | None = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.settings.llm_concurrency)
        self._async_slots: dict[int, asyncio.Semaphore] = {}
        self.prices: dict[str, Price] = dict(self.settings.llm_prices)
        # Fail now, not on the first target, when no credential is set.
        if async_http_client is not None and http_client is None:
            self._aclient()
        else:
            self._client()

    # -- the SDK clients ----------------------------------------------------------------------

    def _client(self) -> anthropic.Anthropic:
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self._sdk(anthropic.Anthropic, self._http_client)
                client = self._sync
        return client

    def _aclient(self) -> anthropic.AsyncAnthropic:
        client = self._async
        if client is None:
            with self._lock:
                if self._async is None:
                    self._async = self._sdk(anthropic.AsyncAnthropic, self._async_http_client)
                client = self._async
        return client

    def _sdk(
        self, kind: type[_SDK], http_client: httpx2.Client | httpx2.AsyncClient | None
    ) -> _SDK:
        """One SDK client (built once per kind, then reused with its connection pool)."""
        options: dict[str, Any] = {
            "max_retries": 0,  # ours: with an injectable sleep and the settings' limits
            "timeout": self.settings.llm_timeout_seconds,
            "http_client": http_client,
        }
        if self._api_key is not None:
            options["api_key"] = self._api_key
        if self._base_url is not None:
            options["base_url"] = self._base_url
        try:
            client = kind(**options)
        except anthropic.CredentialsError as error:
            raise _no_credential(error) from None
        if client.api_key is None and client.auth_token is None and client.credentials is None:
            raise LLMError(
                f"No credential for the LLM provider. {_SET_KEY}", code=ErrorCode.LLM_UNAVAILABLE
            )
        return client

    def _async_semaphore(self) -> asyncio.Semaphore:
        loop = id(asyncio.get_running_loop())
        slots = self._async_slots.get(loop)
        if slots is None:
            slots = self._async_slots[loop] = asyncio.Semaphore(self.settings.llm_concurrency)
        return slots

    # -- calls --------------------------------------------------------------------------------

    def _request(
        self,
        system: str,
        messages: list[dict[str, Any]],
        tool: Tool,
        max_tokens: int,
        effort: Effort | None,
        model: str | None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model or self.model,
            "max_tokens": max_tokens,
            "system": system,
            "messages": messages,
            "tools": [tool.param()],
            "tool_choice": {"type": "tool", "name": tool.name},
        }
        if effort is not None:
            request["output_config"] = {"effort": effort}
        return request

    def call_tool(
        self,
        *,
        system: str,
        messages: list[dict[str, Any]],
        tool: Tool,
        max_tokens: int = 1024,
        effort: Effort | None = None,
        model: str | None = None,
    ) -> CallResult:
        """One forced tool call; raises :class:`LLMError` (with ``usage`` when answered)."""
        request = self._request(system, messages, tool, max_tokens, effort, model)
        messages_api = self._client().messages.with_raw_response
        started = time.perf_counter()
        attempt = 0
        with self._slots:
            while True:
                attempt += 1
                try:
                    body = messages_api.create(**request).read()
                except (anthropic.CredentialsError, anthropic.APIError) as error:
                    self._sleep(self._wait_or_raise(error, attempt))
                    continue
                return self._result(body, tool, request["model"], started, attempt)

    async def acall_tool(
        self,
        *,
        system: str,
        messages: list[dict[str, Any]],
        tool: Tool,
        max_tokens: int = 1024,
        effort: Effort | None = None,
        model: str | None = None,
    ) -> CallResult:
        """:meth:`call_tool` for an event loop."""
        request = self._request(system, messages, tool, max_tokens, effort, model)
        messages_api = self._aclient().messages.with_raw_response
        started = time.perf_counter()
        attempt = 0
        async with self._async_semaphore():
            while True:
                attempt += 1
                try:
                    body = await (await messages_api.create(**request)).read()
                except (anthropic.CredentialsError, anthropic.APIError) as error:
                    await self._async_sleep(self._wait_or_raise(error, attempt))
                    continue
                return self._result(body, tool, request["model"], started, attempt)

    def _wait_or_raise(self, error: Exception, attempt: int) -> float:
        """Seconds to wait before retrying after ``error``; raises the :class:`LLMError` it
        becomes when it is not retried."""
        if isinstance(error, anthropic.CredentialsError):
            raise _no_credential(error) from None
        assert isinstance(error, anthropic.APIError)
        wait = self._retry_wait(error, attempt)
        if wait is None:
            raise _failure(error, attempt) from error
        return wait

    def _retry_wait(self, error: anthropic.APIError, attempt: int) -> float | None:
        """Seconds to wait before retrying after ``error``, or None when it is not retried."""
        if attempt > self.settings.llm_max_retries:
            return None
        if isinstance(error, anthropic.APIStatusError):
            status = error.status_code
            if status not in _RETRIED_STATUS and status < 500:
                return None
            after = retry_after_seconds(error.response.headers)
        elif isinstance(error, anthropic.APIConnectionError):
            after = None
        else:
            return None
        ceiling = self.settings.llm_retry_max_seconds
        if after is not None:
            return min(after, ceiling)
        backoff: float = min(ceiling, self.settings.llm_retry_base_seconds * 2.0 ** (attempt - 1))
        return backoff * (0.5 + self._rng.random() / 2)  # jitter: half to all of the backoff

    def _result(
        self, body: bytes, tool: Tool, model: str, started: float, attempts: int
    ) -> CallResult:
        """The call's answer from the Messages API's JSON, read as plain data."""
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            raise LLMError(
                f"The LLM provider answered with something other than a message "
                f"({_short(body[:200].decode(errors='replace'))!r}). Check ANTHROPIC_BASE_URL "
                "points at the Messages API (or a proxy of it), then call again.",
                code=ErrorCode.LLM_MALFORMED,
            )
        raw = message.get("usage") or {}
        usage = Usage(
            input_tokens=raw.get("input_tokens") or 0,
            output_tokens=raw.get("output_tokens") or 0,
            cache_write_tokens=raw.get("cache_creation_input_tokens") or 0,
            cache_read_tokens=raw.get("cache_read_input_tokens") or 0,
        )
        answered_model = message.get("model") or model
        usd, note = cost(answered_model, usage, self.prices)
        answer: dict[str, Any] | None = None
        texts: list[str] = []
        for block in message.get("content") or ():
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "tool_use" and block.get("name") == tool.name and answer is None:
                answer = block["input"] if isinstance(block.get("input"), dict) else None
            elif kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
        stop_reason = message.get("stop_reason")
        result = CallResult(
            answer=answer,
            model=answered_model,
            usage=usage,
            cost_usd=usd,
            cost_note=note,
            latency_ms=(time.perf_counter() - started) * 1000,
            attempts=attempts,
            stop_reason=stop_reason,
            text="".join(texts),
            notes=[note] if note else [],
        )
        if answer is None:
            raise LLMError(
                f"The model answered without calling the tool {tool.name!r} "
                f"(stop reason {stop_reason!r}). Retry, or raise the judge's max_tokens "
                "if the answer was cut.",
                code=ErrorCode.LLM_MALFORMED,
                usage=result,
            )
        return result


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds a ``retry-after-ms`` or ``retry-after`` header (seconds or an HTTP date) asks
    to wait; None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_SET_KEY = (
    "Set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for a gateway or a local proxy), then call "
    "again."
)


def _no_credential(error: Exception) -> LLMError:
    return LLMError(
        f"No usable credential for the LLM provider ({_short(str(error))}). {_SET_KEY}",
        code=ErrorCode.LLM_UNAVAILABLE,
    )


def _failure(error: anthropic.APIError, attempts: int) -> LLMError:
    tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        detail = _short(error.message)
        if status in _REFUSED_KEY_STATUS:
            return LLMError(
                f"The LLM provider refused the credential ({status}: {detail}). Check "
                "ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL), then call again.",
                code=ErrorCode.LLM_UNAVAILABLE,
            )
        return LLMError(
            f"The LLM call failed{tries} ({status}: {detail}). Retry later, or check the "
            "model name and the request size.",
            code=ErrorCode.LLM_FAILED,
        )
    kind = "timed out" if isinstance(error, anthropic.APITimeoutError) else "got no answer"
    return LLMError(
        f"The LLM call {kind}{tries}. Check ANTHROPIC_BASE_URL and the network, or raise "
        "TRACEPROOF_LLM_TIMEOUT_SECONDS.",
        code=ErrorCode.LLM_FAILED,
    )


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
