"""The LLM client through the real anthropic SDK over an httpx2 mock transport."""

from __future__ import annotations

import asyncio
import threading
import typing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import anthropic
import httpx2
import pytest
from anthropic._data import DEPRECATED_MODELS
from anthropic.types.model_param import ModelParam

from tests.conftest import wait_until
from tests.evals.anthropic_mock import FakeAnthropic, Status, message
from traceproof.errors import ErrorCode
from traceproof.evals.llm import DEFAULT_MODEL, LLMClient, LLMError, Tool, retry_after_seconds
from traceproof.settings import Settings

TOOL = Tool(
    name="record_judgment",
    description="Record it.",
    input_schema={"type": "object", "properties": {"label": {"type": "string"}}},
)
ANSWER = {"explanation": "fine", "evidence": [], "label": "pass"}


def call(client: LLMClient, **options: typing.Any) -> typing.Any:
    return client.call_tool(
        system="judge", messages=[{"role": "user", "content": "x"}], tool=TOOL, **options
    )


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_IDENTITY_TOKEN",
        "ANTHROPIC_IDENTITY_TOKEN_FILE",
        "ANTHROPIC_FEDERATION_RULE_ID",
        "ANTHROPIC_ORGANIZATION_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_the_default_model_is_one_the_sdk_lists_and_does_not_deprecate() -> None:
    listed = typing.get_args(typing.get_args(ModelParam)[0])
    assert DEFAULT_MODEL in listed
    assert DEFAULT_MODEL not in DEPRECATED_MODELS
    assert Settings().llm_model == DEFAULT_MODEL


def test_a_call_forces_the_one_tool_and_returns_its_input_with_tokens_and_cost() -> None:
    fake = FakeAnthropic(message(ANSWER, input_tokens=1200, output_tokens=150))
    client, waits = fake.client()
    result = call(client, max_tokens=300, effort="low")
    assert result.answer == ANSWER
    body = fake.requests[0]
    assert body["model"] == DEFAULT_MODEL
    assert body["tools"] == [TOOL.param()]
    assert body["tool_choice"] == {"type": "tool", "name": "record_judgment"}
    assert body["max_tokens"] == 300 and body["output_config"] == {"effort": "low"}
    assert (result.usage.input_tokens, result.usage.output_tokens) == (1200, 150)
    assert result.cost_usd == pytest.approx(1200 * 3 / 1e6 + 150 * 15 / 1e6)
    assert result.cost_note is None
    assert result.attempts == 1 and waits == []
    assert "sk-test" in (
        fake.headers[0].get("x-api-key", "") + fake.headers[0].get("authorization", "")
    )


def test_an_unknown_model_has_no_cost_and_says_how_to_set_one() -> None:
    fake = FakeAnthropic(message(ANSWER, model="claude-fable-5-2"))
    client, _ = fake.client(model="claude-fable-5-2")
    result = call(client)
    assert result.cost_usd is None
    assert result.cost_note is not None and "TRACEPROOF_LLM_PRICES" in result.cost_note
    assert fake.requests[0]["model"] == "claude-fable-5-2"


def test_a_price_setting_overrides_the_table() -> None:
    fake = FakeAnthropic(
        message(ANSWER, model="claude-fable-5-2", input_tokens=1000, output_tokens=0)
    )
    settings = Settings(llm_prices={"claude-fable": (10.0, 50.0)})
    client, _ = fake.client(settings, model="claude-fable-5-2")
    assert call(client).cost_usd == pytest.approx(1000 * 10 / 1e6)


def test_429_then_success_waits_what_retry_after_asks() -> None:
    fake = FakeAnthropic(Status(429, {"retry-after": "3"}), ANSWER)
    client, waits = fake.client()
    result = call(client)
    assert result.answer == ANSWER
    assert result.attempts == 2
    assert waits == [3.0]
    assert len(fake.requests) == 2


def test_overloaded_and_5xx_are_retried_with_growing_jittered_backoff() -> None:
    fake = FakeAnthropic(Status(529), Status(500), Status(503), ANSWER)
    settings = Settings(llm_retry_base_seconds=1.0, llm_max_retries=4)
    client, waits = fake.client(settings)
    assert call(client).attempts == 4
    assert len(waits) == 3
    for attempt, wait in enumerate(waits):
        assert 0.5 * 2**attempt <= wait <= 2**attempt


def test_retry_after_is_capped_by_the_longest_wait_setting() -> None:
    fake = FakeAnthropic(Status(429, {"retry-after": "600"}), ANSWER)
    client, waits = fake.client(Settings(llm_retry_max_seconds=5))
    call(client)
    assert waits == [5.0]


def test_a_lost_connection_is_retried() -> None:
    calls = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx2.ConnectError("refused", request=request)
        return httpx2.Response(200, json=message(ANSWER))

    waits: list[float] = []
    client = LLMClient(
        api_key="k",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        sleep=waits.append,
    )
    assert call(client).attempts == 2
    assert len(waits) == 1


def test_retries_run_out_with_llm_failed() -> None:
    fake = FakeAnthropic(default=Status(529))
    client, waits = fake.client(Settings(llm_max_retries=2))
    with pytest.raises(LLMError) as raised:
        call(client)
    assert raised.value.code == ErrorCode.LLM_FAILED
    assert len(fake.requests) == 3 and len(waits) == 2


def test_a_bad_request_is_not_retried() -> None:
    fake = FakeAnthropic(Status(400), ANSWER)
    client, waits = fake.client()
    with pytest.raises(LLMError) as raised:
        call(client)
    assert raised.value.code == ErrorCode.LLM_FAILED
    assert len(fake.requests) == 1 and waits == []


def test_a_refused_key_is_llm_unavailable() -> None:
    fake = FakeAnthropic(Status(401), ANSWER)
    client, _ = fake.client()
    with pytest.raises(LLMError) as raised:
        call(client)
    assert raised.value.code == ErrorCode.LLM_UNAVAILABLE
    assert len(fake.requests) == 1


def test_an_answer_without_the_tool_call_is_malformed_and_still_counted() -> None:
    fake = FakeAnthropic(message(None, text="I think it passes.", output_tokens=9))
    client, _ = fake.client()
    with pytest.raises(LLMError) as raised:
        call(client)
    assert raised.value.code == ErrorCode.LLM_MALFORMED
    usage = raised.value.usage
    assert usage is not None and usage.usage.output_tokens == 9 and usage.cost_usd is not None


@pytest.mark.usefixtures("no_credentials")
def test_without_a_key_the_client_says_what_to_set() -> None:
    with pytest.raises(LLMError) as raised:
        LLMClient(http_client=httpx2.Client(transport=FakeAnthropic().transport()))
    assert raised.value.code == ErrorCode.LLM_UNAVAILABLE
    assert "ANTHROPIC_API_KEY" in str(raised.value)


@pytest.mark.usefixtures("no_credentials")
def test_the_key_and_base_url_come_from_the_environment_as_the_sdk_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-from-env")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://gateway.local:8080/anthropic")
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=message(ANSWER))

    client = LLMClient(http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    call(client)
    assert str(seen[0].url) == "http://gateway.local:8080/anthropic/v1/messages"
    assert "sk-from-env" in seen[0].headers.get(
        "x-api-key", seen[0].headers.get("authorization", "")
    )


def test_concurrent_calls_are_bounded_by_the_concurrency_setting() -> None:
    release = threading.Event()
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def handler(request: httpx2.Request) -> httpx2.Response:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        release.wait(30)
        with lock:
            state["now"] -= 1
        return httpx2.Response(200, json=message(ANSWER))

    client = LLMClient(
        Settings(llm_concurrency=2),
        api_key="k",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    threads = [threading.Thread(target=call, args=(client,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    wait_until(lambda: state["now"] == 2, what="two calls in flight")
    release.set()
    for thread in threads:
        thread.join(30)
    assert state["most"] == 2


def test_the_async_client_retries_with_its_own_injected_sleep() -> None:
    fake = FakeAnthropic(Status(529, {"retry-after-ms": "250"}), ANSWER)
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    client = LLMClient(
        api_key="k",
        async_http_client=httpx2.AsyncClient(transport=fake.transport()),
        async_sleep=record,
    )

    async def run() -> typing.Any:
        return await client.acall_tool(
            system="judge", messages=[{"role": "user", "content": "x"}], tool=TOOL
        )

    result = asyncio.run(run())
    assert result.answer == ANSWER and result.attempts == 2
    assert waits == [0.25]


def test_retry_after_reads_seconds_milliseconds_and_http_dates() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    wait = retry_after_seconds({"retry-after": later})
    assert wait is not None and 25 <= wait <= 30
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_the_sdk_s_own_retries_are_off() -> None:
    client, _ = FakeAnthropic().client()
    assert client._client().max_retries == 0
    assert isinstance(client._client(), anthropic.Anthropic)


def test_each_call_has_the_timeout_setting_and_a_timeout_is_retried_then_fails() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        raise httpx2.ReadTimeout("slow", request=request)

    waits: list[float] = []
    client = LLMClient(
        Settings(llm_timeout_seconds=7.5, llm_max_retries=1),
        api_key="k",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        sleep=waits.append,
    )
    with pytest.raises(LLMError) as raised:
        call(client)
    assert raised.value.code == ErrorCode.LLM_FAILED
    assert "timed out" in str(raised.value)
    assert len(seen) == 2 and len(waits) == 1
    assert seen[0].extensions["timeout"]["read"] == 7.5


def test_an_answer_that_is_not_a_message_is_malformed_and_says_where_to_look() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, text="<html>a login page</html>")

    client = LLMClient(
        api_key="k", http_client=httpx2.Client(transport=httpx2.MockTransport(handler))
    )
    with pytest.raises(LLMError) as raised:
        call(client)
    assert raised.value.code == ErrorCode.LLM_MALFORMED
    assert "ANTHROPIC_BASE_URL" in str(raised.value) and "login page" in str(raised.value)


def test_the_sdk_client_is_built_once_and_reused_across_threads() -> None:
    client, _ = FakeAnthropic(default=ANSWER).client()
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(client._client())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(seen) == 8 and all(sdk is seen[0] for sdk in seen)
    assert all(call(client).answer == ANSWER for _ in range(3))
    assert client._client() is seen[0]
