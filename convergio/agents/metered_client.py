"""A wrapper that reports every completed model call, whatever the provider.

AutoGen agents hide the raw ``CreateResult`` (finish reason, usage); wrapping the
client is how the activity learns them, and it is the hook per-turn cost tracking
subscribes to.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,  # type: ignore[attr-defined]
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from convergio.agents.tokens import count_tokens

CallListener = Callable[[CreateResult], None]
logger = logging.getLogger(__name__)


# Servers (by base URL) that refused ``stream_options``: their streams are not asked for usage
# again in this process (the answer is counted by our estimate instead).
_NO_STREAM_USAGE: set[str] = set()


def _base_url(client: ChatCompletionClient) -> str:
    return str(getattr(client, "_raw_config", {}).get("base_url") or "")


def stream_create_args(client: ChatCompletionClient, extra: Mapping[str, Any]) -> Mapping[str, Any]:
    """OpenAI-style APIs (OpenAI, Azure, OpenAI-compatible servers) report a streamed answer's
    token usage only when asked; without it every streamed turn was priced at $0 and no budget
    bound. Asked on streamed calls only: a plain call with ``stream_options`` is refused."""
    openai = sys.modules.get("autogen_ext.models.openai")  # not imported: not an OpenAI client
    if openai is None or "stream_options" in extra:
        return extra
    if not isinstance(client, openai.BaseOpenAIChatCompletionClient) or _base_url(client) in _NO_STREAM_USAGE:
        return extra
    return {**extra, "stream_options": {"include_usage": True}}


def _refused_stream_options(error: Exception) -> bool:
    """An OpenAI-compatible server (an older llama.cpp or LM Studio, a strict proxy) that does
    not know ``stream_options`` answers 400 naming it, before any token is generated."""
    openai = sys.modules.get("openai")
    return (
        openai is not None and isinstance(error, openai.BadRequestError) and "stream_options" in str(error)
    )


class MeteredChatCompletionClient(ChatCompletionClient):
    """Delegates to ``inner`` and keeps each call's ``CreateResult`` in ``results``."""

    def __init__(self, inner: ChatCompletionClient, listeners: Sequence[CallListener] = ()) -> None:
        self.inner = inner
        self.results: list[CreateResult] = []
        self._listeners = list(listeners)

    def _record(
        self, result: CreateResult, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]
    ) -> None:
        if result.usage.prompt_tokens == 0 and result.usage.completion_tokens == 0:
            result = result.model_copy(update={"usage": self._estimated_usage(result, messages, tools)})
        self.results.append(result)
        for listener in self._listeners:
            listener(result)

    def _estimated_usage(
        self, result: CreateResult, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]
    ) -> RequestUsage:
        """A provider that reports no usage (some stream without it) is counted by our own
        estimate: a call that costs nothing on paper would never meet a budget."""
        try:
            prompt = self.inner.count_tokens(messages, tools=tools)
        except Exception:  # noqa: BLE001 - a client that cannot count: count the text
            prompt = sum(count_tokens(str(message.content)) for message in messages)
        completion = count_tokens(str(result.content)) if result.content else 0
        if prompt or completion:
            logger.warning("model reported no usage; counted %d+%d tokens by estimate", prompt, completion)
        return RequestUsage(prompt_tokens=prompt, completion_tokens=completion)

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        result = await self.inner.create(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )
        self._record(result, messages, tools)
        return result

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        create_args = stream_create_args(self.inner, extra_create_args)
        calls = functools.partial(
            self._stream, messages, tools=tools, tool_choice=tool_choice, json_output=json_output,
            cancellation_token=cancellation_token,
        )
        started = False
        try:
            async for item in calls(create_args):
                started = True
                yield item
            return
        except Exception as error:
            if started or create_args is extra_create_args or not _refused_stream_options(error):
                raise
        server = _base_url(self.inner)
        _NO_STREAM_USAGE.add(server)
        logger.warning("%s refused stream_options: streamed answers are counted by estimate", server)
        async for item in calls(extra_create_args):
            yield item

    async def _stream(
        self,
        messages: Sequence[LLMMessage],
        extra_create_args: Mapping[str, Any],
        *,
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
        cancellation_token: CancellationToken | None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        received: list[str] = []
        finished = False
        try:
            async for item in self.inner.create_stream(
                messages, tools=tools, tool_choice=tool_choice, json_output=json_output,
                extra_create_args=extra_create_args, cancellation_token=cancellation_token,
            ):
                if isinstance(item, CreateResult):
                    finished = True
                    self._record(item, messages, tools)
                else:
                    received.append(item)
                yield item
        finally:
            if received and not finished:
                self._record_cut_stream("".join(received), messages, tools)

    def _record_cut_stream(
        self, text: str, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]
    ) -> None:
        """A stream cut off after it began (the connection dropped, the turn timed out or was
        cancelled) never reports usage, yet the provider bills the prompt and what it generated:
        count both by estimate, so that the failed attempt is settled at that cost."""
        partial = CreateResult(finish_reason="unknown", content=text, usage=RequestUsage(0, 0), cached=False)
        self._record(partial, messages, tools)

    async def close(self) -> None:
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self.inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self.inner.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self.inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[valid-type]
        return self.inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        return self.inner.model_info
