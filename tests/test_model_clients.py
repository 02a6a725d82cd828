"""CONVERGIO_MODEL → an AutoGen client, and one-line errors that name the setting."""

from __future__ import annotations

import pytest
from autogen_ext.models.anthropic import AnthropicChatCompletionClient
from autogen_ext.models.ollama import OllamaChatCompletionClient
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient, OpenAIChatCompletionClient

from convergio.agents.models import ModelConfigError, build_model_client, parse_model_setting
from convergio.agents.offline import OfflineChatCompletionClient
from convergio.settings import Settings


def make_settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_offline_is_the_default() -> None:
    settings = make_settings()
    assert settings.model == "offline"
    assert isinstance(build_model_client(settings), OfflineChatCompletionClient)


@pytest.mark.parametrize(
    ("value", "extra", "expected_type", "model"),
    [
        ("openai:gpt-4o-mini", {"openai_api_key": "sk-test"}, OpenAIChatCompletionClient, "gpt-4o-mini"),
        (
            "azure:my-deployment",
            {"azure_openai_endpoint": "https://example.openai.azure.com", "azure_openai_api_key": "k"},
            AzureOpenAIChatCompletionClient,
            "my-deployment",
        ),
        ("anthropic:claude-3-5-haiku-20241022", {"anthropic_api_key": "k"}, AnthropicChatCompletionClient,
         "claude-3-5-haiku-20241022"),
        ("ollama:llama3.2", {}, OllamaChatCompletionClient, "llama3.2"),
        ("ollama:my-own-finetune", {}, OllamaChatCompletionClient, "my-own-finetune"),
        ("openai-compatible:http://127.0.0.1:8080/v1#smollm2", {}, OpenAIChatCompletionClient, "smollm2"),
    ],
)
def test_each_provider_builds_its_client(
    value: str, extra: dict[str, str], expected_type: type, model: str
) -> None:
    client = build_model_client(make_settings(model=value, **extra))
    assert isinstance(client, expected_type)
    assert parse_model_setting(value).model == model
    assert client.model_info["family"]  # capability table present: agents can use it


def test_openai_compatible_keeps_base_url() -> None:
    spec = parse_model_setting("openai-compatible:http://127.0.0.1:8080/v1#smollm2")
    assert spec.base_url == "http://127.0.0.1:8080/v1"
    assert spec.label == "openai-compatible:smollm2"


@pytest.mark.parametrize(
    ("value", "extra", "named"),
    [
        ("gpt4", {}, "CONVERGIO_MODEL"),
        ("mistral:large", {}, "CONVERGIO_MODEL"),
        ("openai:", {}, "CONVERGIO_MODEL"),
        ("openai-compatible:localhost#m", {}, "CONVERGIO_MODEL"),
        ("openai-compatible:http://x/v1", {}, "CONVERGIO_MODEL"),
        ("openai:gpt-4o-mini", {}, "CONVERGIO_OPENAI_API_KEY"),
        ("azure:dep", {"azure_openai_api_key": "k"}, "CONVERGIO_AZURE_OPENAI_ENDPOINT"),
        ("azure:dep", {"azure_openai_endpoint": "https://e"}, "CONVERGIO_AZURE_OPENAI_API_KEY"),
        ("anthropic:claude-3-5-haiku-20241022", {}, "CONVERGIO_ANTHROPIC_API_KEY"),
    ],
)
def test_misconfiguration_names_the_setting(value: str, extra: dict[str, str], named: str) -> None:
    with pytest.raises(ModelConfigError) as error:
        build_model_client(make_settings(model=value, **extra))
    message = str(error.value)
    assert named in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "extra"),
    [
        ("openai:gpt-4o-mini", {"openai_api_key": "sk-test"}),
        ("openai-compatible:http://127.0.0.1:8080/v1#smollm2", {}),
        ("azure:my-deployment",
         {"azure_openai_endpoint": "https://x.openai.azure.com", "azure_openai_api_key": "k"}),
    ],
)
def test_streamed_turns_ask_for_their_token_usage(value: str, extra: dict[str, str]) -> None:
    """Turns stream, and OpenAI-style APIs report a streamed answer's usage only when asked:
    without it every turn was priced at $0 and no budget ever bound. Plain calls (the guardian's
    classifier) must not carry it: the API refuses stream_options without streaming."""
    from convergio.agents.metered_client import stream_create_args

    client = build_model_client(make_settings(model=value, **extra))
    assert "stream_options" not in client.dump_component().config
    assert stream_create_args(client, {"temperature": 0}) == {
        "temperature": 0, "stream_options": {"include_usage": True}
    }
    own = {"stream_options": {"include_usage": False}}
    assert stream_create_args(client, own) == own  # a caller's own choice stands
    assert stream_create_args(OfflineChatCompletionClient(), {}) == {}


async def test_a_call_reported_without_usage_is_counted_by_estimate() -> None:
    """A provider that reports zero tokens for an answer is counted by our own estimate (AutoGen's
    scripted client, told to report none)."""
    from autogen_core.models import CreateResult, RequestUsage, UserMessage
    from autogen_ext.models.replay import ReplayChatCompletionClient

    from convergio.agents.metered_client import MeteredChatCompletionClient

    answer = "Payback comes in year three, when the Munich office breaks even."
    silent = CreateResult(finish_reason="stop", content=answer, usage=RequestUsage(0, 0), cached=False)
    client = MeteredChatCompletionClient(ReplayChatCompletionClient([silent, silent]))
    messages = [UserMessage(content="When does the Munich office pay back?", source="user")]
    await client.create(messages)
    async for _ in client.create_stream(messages):
        pass
    assert len(client.results) == 2
    for result in client.results:
        assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens >= 10


def _old_openai_compatible_server(requests: list[dict[str, object]]) -> object:
    """A chat-completions server of the kind that predates ``stream_options``: it refuses the
    field with a 400 and streams answers without usage. It writes down every request body."""
    import json

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def completions(request: Request) -> Response:
        body = await request.json()
        requests.append(body)
        if "stream_options" in body:
            error = "Unrecognized request argument supplied: stream_options"
            return JSONResponse({"error": {"message": error, "type": "invalid_request"}}, status_code=400)

        def chunk(delta: dict[str, str], finish: str | None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
            return f"data: {json.dumps({**data, 'choices': [choice]})}\n\n"

        async def stream():  # type: ignore[no-untyped-def]
            yield chunk({"role": "assistant", "content": "Payback comes "}, None)
            yield chunk({"content": "in year three."}, None)
            if body["messages"][-1]["content"].startswith("Cut"):
                raise ConnectionResetError("the server went away mid-answer")
            yield chunk({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


async def test_a_server_that_refuses_stream_options_still_streams_and_is_counted() -> None:
    """The first streamed call is refused for asking for usage; it is sent again without the
    field, the answer is counted by estimate, and later calls to that server do not ask again
    (before: every streamed turn on such a server failed). A stream the server cuts off
    mid-answer is counted by estimate too (before: not at all)."""
    import asyncio
    from typing import Any

    import openai
    import uvicorn
    from autogen_core.models import CreateResult, UserMessage

    from convergio.agents.metered_client import MeteredChatCompletionClient
    from convergio.stack.process import free_port

    requests: list[dict[str, object]] = []
    port = free_port()
    app: Any = _old_openai_compatible_server(requests)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the server did not start"
            await asyncio.sleep(0.05)
        setting = f"openai-compatible:http://127.0.0.1:{port}/v1#m"
        messages = [UserMessage(content="When does the Munich office pay back?", source="user")]
        for _ in range(2):
            client = MeteredChatCompletionClient(build_model_client(make_settings(model=setting), setting))
            items = [item async for item in client.create_stream(messages)]
            await client.close()
            result = items[-1]
            assert isinstance(result, CreateResult) and result.content == "Payback comes in year three."
            assert client.results[0].usage.completion_tokens > 0  # counted by estimate
        assert ["stream_options" in body for body in requests] == [True, False, False]

        # A stream cut off mid-answer reports no usage, yet was billed: it is counted by estimate.
        client = MeteredChatCompletionClient(build_model_client(make_settings(model=setting), setting))
        cut = [UserMessage(content="Cut off: when does the Munich office pay back?", source="user")]
        received = []
        with pytest.raises(openai.APIConnectionError):
            async for item in client.create_stream(cut):
                received.append(item)
        await client.close()
        assert "".join(received) == "Payback comes in year three."
        [counted] = client.results
        assert counted.finish_reason == "unknown" and counted.content == "Payback comes in year three."
        assert counted.usage.prompt_tokens > 0 and counted.usage.completion_tokens > 0
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)
