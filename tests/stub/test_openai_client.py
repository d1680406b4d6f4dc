"""The official ``openai`` client talks to the stub as to OpenAI: plain, streamed, errors, retries."""

from __future__ import annotations

import openai
import pytest

from llm_stub import StubServer
from tests.stub.helpers import apply_reply, chat_body

FILES: dict[str, str | None] = {"src/calc.py": "def add(a, b):\n    return a - b\n"}
TODO = 'replace "a - b" with "a + b" in file src/calc.py'
EXPECTED = {"src/calc.py": "def add(a, b):\n    return a + b\n"}


def test_plain_completion(stub: StubServer) -> None:
    with openai.OpenAI(base_url=stub.url, api_key="anything", max_retries=0) as client:
        completion = client.chat.completions.create(**chat_body(TODO, FILES))
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    content = completion.choices[0].message.content
    assert content is not None and apply_reply(content, FILES) == EXPECTED
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_streamed_completion(stub: StubServer) -> None:
    with openai.OpenAI(base_url=stub.url, api_key="anything", max_retries=0) as client:
        stream = client.chat.completions.create(
            **chat_body(TODO, FILES), stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert apply_reply(text, FILES) == EXPECTED
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_async_client_streams(stub: StubServer) -> None:
    async with openai.AsyncOpenAI(base_url=stub.url, api_key="anything", max_retries=0) as client:
        stream = await client.chat.completions.create(**chat_body('say "streamed"'), stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        models = [m.id async for m in client.models.list()]
    assert text == "streamed"
    assert models == ["stub-coder"]


def test_errors_map_to_openai_exceptions(stub: StubServer) -> None:
    with openai.OpenAI(base_url=stub.url, api_key="anything", max_retries=0) as client:
        stub.queue_faults(["429"])
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(**chat_body('say "x"'))
        assert limited.value.code == "rate_limit_exceeded"
        assert limited.value.response.headers["retry-after"] == "1"
        stub.queue_faults(["quota"])
        with pytest.raises(openai.RateLimitError) as quota:
            client.chat.completions.create(**chat_body('say "x"'))
        assert quota.value.code == "insufficient_quota"
        stub.queue_faults(["500"])
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(**chat_body('say "x"'))
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="stub-coder", messages=[])
        assert bad.value.param == "messages"


def test_client_retries_through_scripted_faults(stub: StubServer) -> None:
    stub.set_options(retry_after_s=0.05)
    stub.queue_faults(["429", "500", "reset"])
    with openai.OpenAI(base_url=stub.url, api_key="anything", max_retries=3) as client:
        completion = client.chat.completions.create(**chat_body('say "after retries"'))
    assert completion.choices[0].message.content == "after retries"
    stats = stub.stats()
    assert stats["by_fault"] == {"429": 1, "500": 1, "reset": 1}
    assert stats["requests_total"] == 4
