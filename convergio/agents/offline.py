"""A deterministic, offline ``ChatCompletionClient`` for agents, demos and tests.

It is NOT a language model. It answers by quoting its prompt: the system message gives
the role, the last user message is the task, and everything else (earlier messages,
tool calls and tool results) is material from which ``offline_writer`` picks the
sentences most relevant to each section. It never invents text. It calls an offered tool
only when the task names it and gives its arguments, and only before any tool answered
(see ``offline_tools``).

Token counts are real cl100k_base counts (via ``convergio.agents.tokens``), so context
limits, truncation and usage accounting behave like a hosted model's, without network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from autogen_core import EVENT_LOGGER_NAME, CancellationToken, Component, FunctionCall
from autogen_core.logging import LLMCallEvent, LLMStreamEndEvent
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,  # deprecated, but still an abstract property of the base class
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, Field
from typing_extensions import Self

from convergio.agents import tokens
from convergio.agents.offline_tools import plan_tool_calls
from convergio.agents.offline_writer import is_review_request, write_grounded_answer, write_review

event_logger = logging.getLogger(EVENT_LOGGER_NAME)

# Like OpenAI's chat format: each message costs a few tokens beyond its text.
TOKENS_PER_MESSAGE = 3
ToolChoice = Tool | Literal["auto", "required", "none"]


class OfflineClientConfig(BaseModel):
    """Declarative configuration of :class:`OfflineChatCompletionClient`."""

    model: str = Field(default="convergio-offline", description="Name reported in results and logs.")
    context_window: int = Field(default=128000, ge=1, description="Largest prompt accepted, in tokens.")
    max_output_tokens: int = Field(
        default=800, ge=16, description="Answers longer than this are cut (finish_reason 'length')."
    )
    chunk_size_tokens: int = Field(default=8, ge=1, description="Tokens per chunk when streaming.")
    latency_ms: int = Field(
        default=0, ge=0, le=60_000, description="Simulated time to answer, to behave like a hosted model in demos."
    )


@dataclass(frozen=True)
class Prompt:
    """A conversation reduced to what the writer needs."""

    role: str
    task: str
    material: str


class OfflineChatCompletionClient(ChatCompletionClient, Component[OfflineClientConfig]):
    """Answers from its prompt alone: role from the system message, task from the last user
    message, sentences from the rest. Same messages in, same answer out, byte for byte.

    Example::

        agent = AssistantAgent("cfo", model_client=OfflineChatCompletionClient(),
                               system_message="You are the CFO of Acme.")
        result = await agent.run(task="Assess Q3. Sections: Revenue, Costs.")
    """

    component_type = "model"
    component_config_schema = OfflineClientConfig
    component_provider_override = "convergio.agents.offline.OfflineChatCompletionClient"

    def __init__(
        self,
        model: str = "convergio-offline",
        *,
        context_window: int = 128000,
        max_output_tokens: int = 800,
        chunk_size_tokens: int = 8,
        latency_ms: int = 0,
    ) -> None:
        self._config = OfflineClientConfig(
            model=model,
            context_window=context_window,
            max_output_tokens=max_output_tokens,
            chunk_size_tokens=chunk_size_tokens,
            latency_ms=latency_ms,
        )
        tokens.get_encoding()  # load the tokenizer now, so a broken install fails here
        self._last_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    # --- ChatCompletionClient ----------------------------------------------------------

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: ToolChoice = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """Write the answer in one piece (or the tool calls the task asks for)."""
        _raise_if_cancelled(cancellation_token)
        await self._simulate_latency()
        result = self._complete(messages, tools, tool_choice, json_output, extra_create_args)
        self._record_usage(result.usage)
        event_logger.info(
            LLMCallEvent(
                messages=[message.model_dump() for message in messages],
                response=result.model_dump(),
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
            )
        )
        return result

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: ToolChoice = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Yield the answer in chunks of about ``chunk_size_tokens`` tokens, then the result.

        The chunks join to exactly ``result.content``. Cancelling the token stops the
        stream with ``asyncio.CancelledError``; usage is recorded only for finished streams.
        """
        _raise_if_cancelled(cancellation_token)
        await self._simulate_latency()
        result = self._complete(messages, tools, tool_choice, json_output, extra_create_args)
        chunks = tokens.chunk_text_by_tokens(result.content, self._config.chunk_size_tokens) if isinstance(
            result.content, str
        ) else []  # tool calls come whole, in the result
        for chunk in chunks:
            _raise_if_cancelled(cancellation_token)
            yield chunk
            await asyncio.sleep(0)  # let other tasks (and cancellation) run between chunks
        _raise_if_cancelled(cancellation_token)
        self._record_usage(result.usage)
        event_logger.info(
            LLMStreamEndEvent(
                response=result.model_dump(),
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
            )
        )
        yield result

    async def close(self) -> None:
        """Nothing to release: no connections, no files."""

    def actual_usage(self) -> RequestUsage:
        """Usage of the most recent completed call."""
        return RequestUsage(self._last_usage.prompt_tokens, self._last_usage.completion_tokens)

    def total_usage(self) -> RequestUsage:
        """Usage summed over all completed calls of this client."""
        return RequestUsage(self._total_usage.prompt_tokens, self._total_usage.completion_tokens)

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """cl100k_base tokens of every message's text plus a fixed overhead per message,
        plus the JSON of each tool schema (a hosted model would be sent those too)."""
        message_tokens = sum(TOKENS_PER_MESSAGE + tokens.count_tokens(message_text(m)) for m in messages)
        tool_tokens = sum(tokens.count_tokens(_tool_schema_json(tool)) for tool in tools)
        return message_tokens + tool_tokens

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        return self._config.context_window - self.count_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[override]
        warnings.warn("capabilities is deprecated, use model_info instead", DeprecationWarning, stacklevel=2)
        return ModelCapabilities(  # type: ignore[typeddict-item]
            vision=False, function_calling=True, json_output=True
        )

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(
            vision=False,
            function_calling=True,
            json_output=True,
            family="unknown",
            structured_output=False,
            multiple_system_messages=True,
        )

    # --- Component -----------------------------------------------------------------------

    def _to_config(self) -> OfflineClientConfig:
        return self._config.model_copy()

    @classmethod
    def _from_config(cls, config: OfflineClientConfig) -> Self:
        return cls(**config.model_dump())

    # --- internals -----------------------------------------------------------------------

    async def _simulate_latency(self) -> None:
        if self._config.latency_ms:
            await asyncio.sleep(self._config.latency_ms / 1000)

    def _complete(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: ToolChoice,
        json_output: bool | type[BaseModel] | None,
        extra_create_args: Mapping[str, Any],
    ) -> CreateResult:
        """Validate the request, write the answer and fit it into the output limit."""
        _reject_structured_output(json_output)
        _reject_forced_tool_call(tool_choice)
        prompt_tokens = self.count_tokens(messages, tools=tools)
        self._ensure_fits_context(prompt_tokens)
        prompt = split_prompt(messages)
        answered = any(isinstance(message, FunctionExecutionResultMessage) for message in messages)
        may_call = tools and tool_choice != "none" and not answered
        calls = plan_tool_calls(prompt.task, tools) if may_call else []
        if calls:
            return CreateResult(
                finish_reason="function_calls",
                content=calls,
                usage=RequestUsage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=sum(tokens.count_tokens(call.name + call.arguments) for call in calls),
                ),
                cached=False,
            )
        if is_review_request(prompt.task):
            answer = write_review(prompt.task)
        else:
            answer = write_grounded_answer(prompt.role, prompt.task, prompt.material)
        limit = self._output_limit(extra_create_args)
        if json_output is True:
            content, completion_tokens, truncated = _fit_json_answer(answer, limit)
        else:
            content, completion_tokens, truncated = _fit_text_answer(answer, limit)
        return CreateResult(
            finish_reason="length" if truncated else "stop",
            content=content,
            usage=RequestUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            cached=False,
        )

    def _ensure_fits_context(self, prompt_tokens: int) -> None:
        """A hosted model rejects an over-long prompt; so do we, with the numbers."""
        window = self._config.context_window
        if prompt_tokens > window:
            raise ValueError(
                f"The prompt has {prompt_tokens} tokens but model {self._config.model!r} has a context "
                f"window of {window} tokens. Shorten the conversation, e.g. with a "
                "BufferedChatCompletionContext or TokenLimitedChatCompletionContext."
            )

    def _output_limit(self, extra_create_args: Mapping[str, Any]) -> int:
        """``max_tokens``/``max_completion_tokens`` of a call override the configured limit."""
        for key in ("max_completion_tokens", "max_tokens"):
            value = extra_create_args.get(key)
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"{key} must be a positive integer, got {value!r}")
                return value
        return self._config.max_output_tokens

    def _record_usage(self, usage: RequestUsage) -> None:
        self._last_usage = usage
        self._total_usage = RequestUsage(
            prompt_tokens=self._total_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total_usage.completion_tokens + usage.completion_tokens,
        )


# --- reading messages ----------------------------------------------------------------------


def split_prompt(messages: Sequence[LLMMessage]) -> Prompt:
    """System messages -> role; last user message -> task; all other messages -> material."""
    role = "\n\n".join(m.content for m in messages if isinstance(m, SystemMessage))
    last_user = max((i for i, m in enumerate(messages) if isinstance(m, UserMessage)), default=None)
    task = message_text(messages[last_user]) if last_user is not None else ""
    material = "\n\n".join(
        text
        for i, message in enumerate(messages)
        if i != last_user and not isinstance(message, SystemMessage)
        for text in [message_text(message)]
        if text.strip()
    )
    return Prompt(role=role, task=task, material=material)


def message_text(message: LLMMessage) -> str:
    """The text of any message: str parts of multimodal content, tool call arguments and
    tool results included; images are skipped (this client has no vision)."""
    if isinstance(message, SystemMessage):
        return message.content
    if isinstance(message, UserMessage):
        if isinstance(message.content, str):
            return message.content
        return "\n\n".join(part for part in message.content if isinstance(part, str))
    if isinstance(message, AssistantMessage):
        if isinstance(message.content, str):
            return message.content
        return "\n\n".join(function_call_text(call) for call in message.content)
    if isinstance(message, FunctionExecutionResultMessage):
        return "\n\n".join(result.content for result in message.content)
    raise TypeError(f"unsupported message type {type(message).__name__}")


def function_call_text(call: FunctionCall) -> str:
    """The argument values of a tool call as plain text, e.g. ``{"query": "Q3"}`` -> ``Q3``."""
    try:
        arguments = json.loads(call.arguments)
    except (TypeError, ValueError):
        return call.arguments
    return "\n".join(_leaf_values(arguments))


def _leaf_values(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaf_values(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaf_values(item)]
    return [] if value is None else [str(value)]


def _tool_schema_json(tool: Tool | ToolSchema) -> str:
    """A tool's schema as sent to a model; its tokens count towards the prompt."""
    schema = tool.schema if isinstance(tool, Tool) else tool
    return json.dumps(schema, sort_keys=True)


# --- request checks and output limits -------------------------------------------------------


def _raise_if_cancelled(cancellation_token: CancellationToken | None) -> None:
    if cancellation_token is not None and cancellation_token.is_cancelled():
        raise asyncio.CancelledError("the offline completion was cancelled")


def _reject_structured_output(json_output: bool | type[BaseModel] | None) -> None:
    if isinstance(json_output, type) and issubclass(json_output, BaseModel):
        raise ValueError(
            "the offline client does not support structured output (json_output as a pydantic "
            f"model, here {json_output.__name__}): it cannot fill arbitrary fields from its prompt. "
            "Use json_output=True for a {'answer': ...} object, or a real model client."
        )


def _reject_forced_tool_call(tool_choice: ToolChoice) -> None:
    """A tool is called only when the task asks for it, so a request that demands one cannot be honoured."""
    if tool_choice not in ("auto", "none"):
        raise ValueError(
            "the offline client calls a tool only when the task names it with its arguments, so "
            f"tool_choice must be 'auto' or 'none', got {tool_choice!r}"
        )


def _fit_text_answer(answer: str, limit: int) -> tuple[str, int, bool]:
    """(content, completion tokens, truncated) with the answer cut to ``limit`` tokens."""
    answer_tokens = tokens.count_tokens(answer)
    if answer_tokens <= limit:
        return answer, answer_tokens, False
    content, kept = tokens.truncate_to_tokens(answer, limit)
    return content, kept, True


def _fit_json_answer(answer: str, limit: int) -> tuple[str, int, bool]:
    """Like :func:`_fit_text_answer`, but the result stays a valid ``{"answer": ...}`` object:
    the answer text is shortened until the serialized object fits in ``limit`` tokens."""
    document = json.dumps({"answer": answer}, ensure_ascii=False)
    document_tokens = tokens.count_tokens(document)
    if document_tokens <= limit:
        return document, document_tokens, False
    keep = tokens.count_tokens(answer) - (document_tokens - limit)
    while keep > 0:
        shortened, _ = tokens.truncate_to_tokens(answer, keep)
        document = json.dumps({"answer": shortened}, ensure_ascii=False)
        document_tokens = tokens.count_tokens(document)
        if document_tokens <= limit:
            return document, document_tokens, True
        keep -= document_tokens - limit
    document = json.dumps({"answer": ""})
    return document, tokens.count_tokens(document), True
