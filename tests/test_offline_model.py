"""The offline model client, its answer writer and offline tiktoken support."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import ModelClientStreamingChunkEvent, TextMessage
from autogen_core import CancellationToken, FunctionCall, Image
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from PIL import Image as PILImage
from pydantic import BaseModel

from convergio.agents.offline import OfflineChatCompletionClient, message_text
from convergio.agents.offline_writer import (
    extract_requested_sections,
    split_sentences,
    write_grounded_answer,
)
from convergio.agents.tokens import aliased_encodings, count_tokens, install_offline_tiktoken_cache

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

REVENUE_SENTENCE = "Revenue grew 12% to $4.2M in the third quarter."
HIRING_SENTENCE = "We hired five engineers and hiring continues next month."
CFO_SYSTEM = "You are the Chief Financial Officer of Acme. Be concise."


BOARD_TASK = "Review the quarter for the board. Sections: Hiring and Revenue."
CFO_HEADER = "**Chief Financial Officer of Acme** — perspective on: "


def board_messages(task: str = BOARD_TASK) -> list[LLMMessage]:
    material = f"{REVENUE_SENTENCE} [source: q3-report] The office plants were watered. {HIRING_SENTENCE}"
    return [
        SystemMessage(content=CFO_SYSTEM),
        UserMessage(content=material, source="analyst"),
        UserMessage(content=task, source="user"),
    ]


def sections_of(answer: str) -> dict[str, str]:
    """``{"Revenue": body, ...}`` in the order of the ``## `` headings."""
    parts = answer.split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in parts}


def cl100k() -> tiktoken.Encoding:
    install_offline_tiktoken_cache()
    return tiktoken.get_encoding("cl100k_base")


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if tiktoken tries to fetch anything over HTTP."""
    original = tiktoken.load.read_file

    def refuse_urls(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise AssertionError(f"tiktoken tried to download {blobpath}")
        return original(blobpath)

    monkeypatch.setattr(tiktoken.load, "read_file", refuse_urls)


# --- tokens -----------------------------------------------------------------------------


def test_cache_uses_tiktokens_layout_and_sets_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_downloads: None
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    cache = install_offline_tiktoken_cache(tmp_path / "cache")
    assert cache == tmp_path / "cache"
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(cache)
    cached = cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == CL100K_SHA256
    assert install_offline_tiktoken_cache(tmp_path / "cache") == cache  # idempotent
    # tiktoken itself reads it from there, no download.
    assert tiktoken.load.read_file_cached(CL100K_URL, CL100K_SHA256) == cached.read_bytes()


def test_count_tokens_matches_tiktoken() -> None:
    text = "Revenue grew 12% <|endoftext|> in Q3."
    assert count_tokens(text) == len(cl100k().encode(text, disallowed_special=()))


def test_openai_client_counts_tokens_offline(no_downloads: None) -> None:
    install_offline_tiktoken_cache()
    messages: list[LLMMessage] = [UserMessage(content="hi there, how is revenue?", source="u")]
    gpt4o_mini = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test")
    gpt4 = OpenAIChatCompletionClient(model="gpt-4", api_key="sk-test")
    counted = gpt4o_mini.count_tokens(messages)
    assert counted > 0
    # o200k_base is not bundled: it is served by cl100k_base, and says so.
    assert "o200k_base" in aliased_encodings()
    assert tiktoken.encoding_for_model("gpt-4o-mini").name == "cl100k_base"
    assert counted == gpt4.count_tokens(messages)


# --- writer -----------------------------------------------------------------------------


def test_split_sentences_keeps_source_markers() -> None:
    text = (
        "Revenue grew 12%. [source: q3-report] Costs fell, e.g. travel. Dr. Lee left.\n"
        "Source: board-deck\n\n"
        "Source: hr.xlsx\n- We hired 5 engineers.\n- Attrition was 3% (source: hr).\n\n"
        "Outlook for Q4\nSource: plan.md\nGrowth slows in Q4."
    )
    assert split_sentences(text) == [
        "Revenue grew 12%. [source: q3-report]",
        "Costs fell, e.g. travel. [source: board-deck]",
        "Dr. Lee left. [source: board-deck]",
        "We hired 5 engineers. [source: hr.xlsx]",
        "Attrition was 3%. [source: hr]",
        "Outlook for Q4",
        "Growth slows in Q4. [source: plan.md]",
    ]


@pytest.mark.parametrize(
    ("instruction", "expected"),
    [
        ("Assess Q3. Sections: Revenue, Costs and Hiring.", ["Revenue", "Costs", "Hiring"]),
        ("Please include: Risks, Costs, and Next steps. Keep it short.", ["Risks", "Costs", "Next steps"]),
        ("Write the memo.\n## Outlook\n## Risks", ["Outlook", "Risks"]),
        ("Use the following sections:\n- Alpha\n- Beta\nThanks.", ["Alpha", "Beta"]),
        ('Write sections "Revenue" and "Hiring".', ["Revenue", "Hiring"]),
        ("Just assess the quarter.", []),
    ],
)
def test_extract_requested_sections(instruction: str, expected: list[str]) -> None:
    assert extract_requested_sections(instruction) == expected


def test_answer_names_role_and_uses_default_sections() -> None:
    material = f"{REVENUE_SENTENCE} Q3 was a good quarter."
    answer = write_grounded_answer(CFO_SYSTEM, "Assess the quarter.", material)
    assert answer.splitlines()[0] == CFO_HEADER + "Assess the quarter"
    assert list(sections_of(answer)) == ["Summary", "Key points", "Recommendation"]


def test_no_sentence_is_used_twice() -> None:
    material = " ".join(f"Revenue in region {n} grew by {n} percent." for n in range(10))
    answer = write_grounded_answer("CFO", "Sections: Revenue, Regional revenue, Growth.", material)
    bullets = [line for line in answer.splitlines() if line.startswith("- Revenue in region")]
    assert len(bullets) == len(set(bullets)) > 8
    assert "does not address this" not in answer  # every section got something


# --- client -----------------------------------------------------------------------------


async def test_same_input_gives_same_output() -> None:
    first = await OfflineChatCompletionClient().create(board_messages())
    second = await OfflineChatCompletionClient().create(board_messages())
    assert first.content == second.content
    assert first.usage == second.usage


def test_output_does_not_depend_on_hash_seed() -> None:
    script = (
        "import asyncio, sys; sys.path.insert(0, 'tests'); import test_offline_model as t\n"
        "from convergio.agents.offline import OfflineChatCompletionClient\n"
        "print(asyncio.run(OfflineChatCompletionClient().create(t.board_messages())).content)\n"
    )
    root = Path(__file__).resolve().parent.parent
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1 and "## Hiring" in outputs.pop()


async def test_requested_sections_in_order_with_relevant_sentences() -> None:
    result = await OfflineChatCompletionClient().create(board_messages())
    assert isinstance(result.content, str)
    assert result.finish_reason == "stop" and result.cached is False
    sections = sections_of(result.content)
    assert list(sections) == ["Hiring", "Revenue"]
    assert HIRING_SENTENCE in sections["Hiring"] and REVENUE_SENTENCE not in sections["Hiring"]
    assert f"{REVENUE_SENTENCE} [source: q3-report]" in sections["Revenue"]
    assert "plants" not in result.content
    assert result.content.startswith(CFO_HEADER + "Review the quarter for the board\n")


async def test_without_material_the_answer_says_so() -> None:
    messages: list[LLMMessage] = [
        SystemMessage(content="You are the CFO."),
        UserMessage(content="Should we raise prices next quarter? Margins are thin.", source="user"),
    ]
    result = await OfflineChatCompletionClient().create(messages)
    assert isinstance(result.content, str)
    assert "No supporting context was provided" in result.content
    assert "- Margins are thin." in result.content


async def test_usage_equals_tiktoken_counts() -> None:
    client = OfflineChatCompletionClient()
    messages = board_messages()
    encoding = cl100k()
    expected_prompt = sum(3 + len(encoding.encode(message_text(m))) for m in messages)
    first = await client.create(messages)
    assert isinstance(first.content, str)
    assert first.usage.prompt_tokens == expected_prompt == client.count_tokens(messages)
    assert first.usage.completion_tokens == len(encoding.encode(first.content))
    assert client.remaining_tokens(messages) == 128000 - expected_prompt
    second = await client.create(messages[:2])
    assert client.actual_usage() == second.usage
    total = client.total_usage()
    assert total.prompt_tokens == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert total.completion_tokens == first.usage.completion_tokens + second.usage.completion_tokens


async def test_stream_chunks_join_to_final_content() -> None:
    client = OfflineChatCompletionClient(chunk_size_tokens=5)
    items = [item async for item in client.create_stream(board_messages())]
    *chunks, final = items
    assert isinstance(final, CreateResult) and isinstance(final.content, str)
    assert all(isinstance(chunk, str) for chunk in chunks)
    assert "".join(chunks) == final.content  # type: ignore[arg-type]
    assert len(chunks) == -(-final.usage.completion_tokens // 5)
    assert final.content == (await client.create(board_messages())).content
    assert client.total_usage().completion_tokens == 2 * final.usage.completion_tokens


async def test_stream_stops_when_cancelled() -> None:
    token = CancellationToken()
    client = OfflineChatCompletionClient(chunk_size_tokens=2)
    stream = client.create_stream(board_messages(), cancellation_token=token)
    assert isinstance(await stream.__anext__(), str)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stream.__anext__()


async def test_truncation_is_reported_as_length() -> None:
    full = await OfflineChatCompletionClient().create(board_messages())
    assert isinstance(full.content, str)
    result = await OfflineChatCompletionClient(max_output_tokens=30).create(board_messages())
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 30
    assert result.content == cl100k().decode(cl100k().encode(full.content)[:30])
    assert full.content.startswith(result.content)


async def test_oversize_prompt_raises() -> None:
    client = OfflineChatCompletionClient(context_window=40)
    with pytest.raises(ValueError, match="context window of 40 tokens"):
        await client.create(board_messages())
    with pytest.raises(ValueError, match="context window"):
        async for _ in client.create_stream(board_messages()):
            pass


async def test_json_output_and_structured_output() -> None:
    client = OfflineChatCompletionClient()
    result = await client.create(board_messages(), json_output=True)
    assert isinstance(result.content, str)
    assert json.loads(result.content)["answer"] == (await client.create(board_messages())).content
    short = await client.create(board_messages(), json_output=True, extra_create_args={"max_tokens": 40})
    assert short.finish_reason == "length" and short.usage.completion_tokens <= 40
    assert isinstance(short.content, str) and json.loads(short.content)["answer"]

    class Verdict(BaseModel):
        approve: bool

    with pytest.raises(ValueError, match="does not support structured output"):
        await client.create(board_messages(), json_output=Verdict)


async def test_tool_results_and_other_message_kinds_are_material() -> None:
    def lookup(query: str) -> str:
        return query

    image = Image.from_pil(PILImage.new("RGB", (2, 2)))
    messages: list[LLMMessage] = [
        SystemMessage(content=CFO_SYSTEM),
        AssistantMessage(
            content=[FunctionCall(id="1", name="lookup", arguments='{"query": "hiring plan for 2025"}')],
            source="cfo",
        ),
        FunctionExecutionResultMessage(
            content=[
                FunctionExecutionResult(
                    content="Source: hr-plan\nThe hiring plan adds ten engineers in 2025.",
                    name="lookup",
                    call_id="1",
                )
            ]
        ),
        UserMessage(content=["Summarise the hiring outlook. Sections: Hiring.", image], source="user"),
    ]
    tool = FunctionTool(lookup, description="Look something up.")
    result = await OfflineChatCompletionClient().create(messages, tools=[tool])
    assert result.finish_reason == "stop" and isinstance(result.content, str)
    hiring = sections_of(result.content)["Hiring"]
    assert "The hiring plan adds ten engineers in 2025. [source: hr-plan]" in hiring
    assert "hiring plan for 2025" in hiring
    with pytest.raises(ValueError, match="calls a tool only when the task names it"):
        await OfflineChatCompletionClient().create(messages, tools=[tool], tool_choice="required")


FINANCIAL_TASK = (
    "Run financial_model with initial_investment: 1000000, cash flows = [300000, 400000, 500000, 600000] "
    "and a discount_rate of 0.1. Cover: Returns."
)


async def test_a_tool_is_called_when_the_task_names_it_with_its_arguments() -> None:
    from convergio.tools.registry import as_autogen_tool

    tool = as_autogen_tool("financial_model")
    client = OfflineChatCompletionClient()
    result = await client.create([UserMessage(content=FINANCIAL_TASK, source="user")], tools=[tool])
    assert result.finish_reason == "function_calls"
    arguments = {"initial_investment": 1000000, "cash_flows": [300000, 400000, 500000, 600000],
                 "discount_rate": 0.1}
    called = [(call.name, json.loads(call.arguments)) for call in result.content]
    assert called == [("financial_model", arguments)]
    assert result.usage.completion_tokens > 0
    # Streaming gives the same calls, whole, in the result (no text chunks).
    request = [UserMessage(content=FINANCIAL_TASK, source="user")]
    streamed = [item async for item in client.create_stream(request, tools=[tool])]
    assert len(streamed) == 1 and streamed[0].content == result.content
    # Not named, a required argument missing, tool_choice 'none', or the tool already answered: no call.
    without_rate = FINANCIAL_TASK.replace("discount_rate of 0.1", "sensible rate")
    answered = [
        UserMessage(content=FINANCIAL_TASK, source="user"),
        AssistantMessage(content=list(result.content), source="cfo"),
        FunctionExecutionResultMessage(content=[FunctionExecutionResult(
            content="NPV 362,000 at 10%; IRR 25.3%; payback 2.5 years", name="financial_model",
            call_id="call_1",
        )]),
    ]
    for messages, choice in [
        ([UserMessage(content="Assess the returns. Cover: Returns.", source="user")], "auto"),
        ([UserMessage(content=without_rate, source="user")], "auto"),
        ([UserMessage(content=FINANCIAL_TASK, source="user")], "none"),
        (answered, "auto"),
    ]:
        answer = await client.create(messages, tools=[tool], tool_choice=choice)
        assert answer.finish_reason == "stop" and isinstance(answer.content, str), messages


def test_component_round_trip() -> None:
    client = OfflineChatCompletionClient("board-offline", max_output_tokens=100, chunk_size_tokens=3)
    dumped = client.dump_component()
    assert dumped.provider == "convergio.agents.offline.OfflineChatCompletionClient"
    assert dumped.component_type == "model"
    loaded = ChatCompletionClient.load_component(dumped)
    assert isinstance(loaded, OfflineChatCompletionClient)
    assert loaded.dump_component().config == dumped.config
    assert loaded.model_info["function_calling"] is True and loaded.model_info["json_output"] is True


# --- AssistantAgent -----------------------------------------------------------------------


async def test_assistant_agent_run() -> None:
    agent = AssistantAgent("cfo", model_client=OfflineChatCompletionClient(), system_message=CFO_SYSTEM)
    result = await agent.run(task="Assess Q3. Sections: Revenue, Costs.")
    assert isinstance(result, TaskResult)
    last = result.messages[-1]
    assert isinstance(last, TextMessage) and last.source == "cfo"
    assert last.content.startswith(CFO_HEADER + "Assess Q3\n")
    assert list(sections_of(last.content)) == ["Revenue", "Costs"]


async def test_assistant_agent_run_stream() -> None:
    agent = AssistantAgent(
        "cfo", model_client=OfflineChatCompletionClient(), system_message=CFO_SYSTEM, model_client_stream=True
    )
    events = [event async for event in agent.run_stream(task="Assess Q3. Sections: Revenue, Costs.")]
    chunks = [event.content for event in events if isinstance(event, ModelClientStreamingChunkEvent)]
    result = events[-1]
    assert isinstance(result, TaskResult)
    final = result.messages[-1]
    assert isinstance(final, TextMessage)
    assert len(chunks) > 1 and "".join(chunks) == final.content


def test_offline_review_scores_form_deterministically() -> None:
    from convergio.agents.offline_writer import is_review_request, write_review
    from convergio.graphflow.quality import review_instruction, review_score

    long_body = " ".join(["Revenue grows steadily in every region we serve."] * 6)
    complete = f"## Summary\n{long_body}\n## Risks\n{long_body}"
    partial = f"## Summary\n{long_body}"
    task_complete = review_instruction("Memo", complete, ["Summary", "Risks"])
    task_partial = review_instruction("Memo", partial, ["Summary", "Risks"])
    assert is_review_request(task_complete) and not is_review_request("Write a memo. Cover: Summary.")
    assert review_score(write_review(task_complete)) == 10
    partial_review = write_review(task_partial)
    assert review_score(partial_review) == 5
    assert "Add a section 'Risks'" in partial_review
    assert write_review(task_partial) == partial_review


def test_a_revision_adds_the_sections_a_check_found_missing() -> None:
    from convergio.agents.offline_writer import write_grounded_answer

    task = "Write the memo. Cover: Summary."
    material = "Revenue grew 40%. Two competitors discount aggressively."
    assert "## Risks" not in write_grounded_answer("cfo", task, material)
    for fix in ("Fix: missing section 'Risks'", "Fix: reviewer score 5 below 8: 1. Add a section 'Risks'."):
        revised = write_grounded_answer("cfo", f"{task}\n\nRevise your previous answer. {fix}", material)
        assert sections_of(revised).keys() == {"Summary", "Risks"}


def test_a_rework_quotes_the_change_requests_it_was_given() -> None:
    task = "Write the memo. Cover: Summary."
    material = "Revenue grew 40%. Two competitors discount aggressively."
    assert "## Changes requested" not in write_grounded_answer("cfo", task, material)
    rework = (f"{task}\n\nChanges requested by Ada (executive): Add the Munich hiring plan.\n"
              "Revise your previous answer (the last message above) accordingly.")
    answer = write_grounded_answer("cfo", rework, material)
    assert sections_of(answer).keys() == {"Summary", "Changes requested"}
    assert answer.endswith("## Changes requested\n- Add the Munich hiring plan.")
