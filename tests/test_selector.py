"""The speaker selector of team steps: composite score, factors, and the AutoGen adapter."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import BaseChatMessage
from autogen_agentchat.teams import SelectorGroupChat
from pydantic import ValidationError

from convergio.agents.definition import AgentDefinition
from convergio.agents.offline import OfflineChatCompletionClient
from convergio.graphflow import selector as selector_module
from convergio.graphflow.autogen_selector import conversation_state, make_selector_func
from convergio.graphflow.selector import (
    ConversationState,
    ScoreBreakdown,
    SelectionWeights,
    detect_phase,
    score_candidates,
    select_speaker,
    stem,
)


def agent(name: str, **fields: object) -> AgentDefinition:
    fields.setdefault("role", name.replace("_", " ").title())
    fields.setdefault("system_message", f"You are the {name} of Acme Corp.")
    return AgentDefinition(name=name, **fields)  # type: ignore[arg-type]


CFO = agent(
    "cfo",
    expertise=["finance", "risk"],
    phases=["analysis", "strategy"],
    complexity=5,
    collaborators=["strategist"],
    performance=0.9,
)
STRATEGIST = agent(
    "strategist",
    expertise=["strategy", "market"],
    phases=["strategy"],
    complexity=5,
    collaborators=["cfo"],
    performance=0.9,
)
MARKET_ANALYST = agent(
    "market_analyst",
    expertise=["market", "performance"],
    phases=["discovery", "analysis"],
    complexity=4,
    performance=0.8,
    fast_response=True,
)


def by_agent(breakdowns: list[ScoreBreakdown]) -> dict[str, ScoreBreakdown]:
    return {b.agent: b for b in breakdowns}


# --- weights -----------------------------------------------------------------------------------


def test_default_weights_are_the_reference_documents() -> None:
    w = SelectionWeights()
    assert (w.expertise, w.phase, w.complexity, w.collaboration, w.performance, w.recency, w.urgency) == (
        0.25,
        0.20,
        0.15,
        0.15,
        0.10,
        0.10,
        0.05,
    )


def test_weights_must_sum_to_one() -> None:
    with pytest.raises(ValidationError, match="sum to 1"):
        SelectionWeights(expertise=0.5)
    with pytest.raises(ValidationError, match="sum to 1"):
        SelectionWeights(urgency=0.0)
    # Within tolerance, and a valid re-weighting.
    SelectionWeights(urgency=0.05 + 5e-7)
    SelectionWeights(expertise=0.30, urgency=0.0)


def test_weights_must_be_non_negative() -> None:
    with pytest.raises(ValidationError):
        SelectionWeights(expertise=0.35, urgency=-0.05)


def test_models_are_frozen() -> None:
    state = ConversationState(topic="x")
    with pytest.raises(ValidationError):
        state.topic = "y"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SelectionWeights().expertise = 1.0  # type: ignore[misc]


# --- expertise ----------------------------------------------------------------------------------


def test_stem_matches_word_forms() -> None:
    assert stem("financial") == stem("finance") == stem("Financially") == "financ"
    assert stem("strategy") == stem("strategic") == stem("strategies")
    assert stem("costs") == "cost"
    assert stem("process") == stem("processes") == "process"


def test_finance_topic_picks_the_finance_agent_over_the_strategist() -> None:
    state = ConversationState(topic="Compute the NPV, IRR, cash margins and budget of the new plant.")
    ranking = score_candidates([STRATEGIST, CFO], state)
    scores = by_agent(ranking)
    assert scores["cfo"].expertise == 0.5  # finance matched, risk not: 1 of 2 domains
    assert scores["strategist"].expertise == 0.0
    assert ranking[0].agent == "cfo"
    assert select_speaker([STRATEGIST, CFO], state).agent == "cfo"


def test_strategy_topic_picks_the_strategist() -> None:
    state = ConversationState(topic="Define the vision, positioning and roadmap against competitors.")
    assert select_speaker([CFO, STRATEGIST], state).agent == "strategist"


def test_last_message_words_count_toward_expertise() -> None:
    topic = "Prepare the board memo."
    without = by_agent(score_candidates([CFO], ConversationState(topic=topic)))["cfo"]
    with_msg = by_agent(
        score_candidates([CFO], ConversationState(topic=topic, last_message="Regulatory threats loom."))
    )["cfo"]
    assert without.expertise == 0.0
    assert with_msg.expertise == 0.5  # risk ← regulatory / threats


def test_expertise_is_capped_and_counts_at_most_three_domains() -> None:
    polymath = agent("polymath", expertise=["finance", "risk", "market", "strategy", "operations"])
    state = ConversationState(topic="Revenue, compliance risk and customer segments.")
    assert by_agent(score_candidates([polymath], state))["polymath"].expertise == 1.0
    state = ConversationState(topic="Revenue only.")
    assert by_agent(score_candidates([polymath], state))["polymath"].expertise == pytest.approx(1 / 3)
    nobody = agent("nobody")
    assert by_agent(score_candidates([nobody], state))["nobody"].expertise == 0.0


# --- phase --------------------------------------------------------------------------------------


SCOUT = agent("scout", expertise=["market"], phases=["discovery"])
BUILDER = agent("builder", expertise=["market"], phases=["execution"])


def test_phase_changes_the_winner() -> None:
    def winner(**state: object) -> str:
        return select_speaker([SCOUT, BUILDER], ConversationState(**state)).agent  # type: ignore[arg-type]

    topic = "Work on the customer segment."
    assert winner(topic=topic, phase="discovery") == "scout"
    assert winner(topic=topic, phase="execution") == "builder"
    # Same when the phase is detected from the topic's keywords.
    assert winner(topic="Research the customer segment.") == "scout"
    assert winner(topic="Implement the customer launch.") == "builder"


def test_phase_relevance_values_and_detection() -> None:
    generalist = agent("generalist", expertise=["market"])
    scores = by_agent(
        score_candidates([SCOUT, BUILDER, generalist], ConversationState(topic="x", phase="discovery"))
    )
    assert (scores["scout"].phase, scores["builder"].phase, scores["generalist"].phase) == (1.0, 0.0, 0.5)
    unknown = by_agent(score_candidates([SCOUT, BUILDER], ConversationState(topic="Hello there.")))
    assert unknown["scout"].phase == unknown["builder"].phase == 0.5
    assert detect_phase("Research and discover new markets") == "discovery"
    assert detect_phase("Analyze the churn") == "analysis"
    assert detect_phase("Plan the strategy for 2026") == "strategy"
    assert detect_phase("Execute and launch the campaign") == "execution"
    assert detect_phase("Monitor and track the KPIs") == "monitoring"
    assert detect_phase("Say hello") is None


# --- complexity, collaboration, performance ------------------------------------------------------


def test_complexity_handling() -> None:
    junior = agent("junior", complexity=2)
    senior = agent("senior", complexity=5)
    scores = by_agent(score_candidates([junior, senior], ConversationState(topic="x", complexity=5)))
    assert scores["junior"].complexity == 0.25
    assert scores["senior"].complexity == 1.0
    easy = by_agent(score_candidates([junior, senior], ConversationState(topic="x", complexity=1)))
    assert easy["junior"].complexity == easy["senior"].complexity == 1.0


def test_collaboration_both_directions() -> None:
    loner = agent("loner")
    candidates = [CFO, STRATEGIST, MARKET_ANALYST, loner]
    fresh = by_agent(score_candidates(candidates, ConversationState(topic="x")))
    assert {b.collaboration for b in fresh.values()} == {0.5}
    after_cfo = by_agent(score_candidates(candidates, ConversationState(topic="x", speakers=["cfo"])))
    assert after_cfo["strategist"].collaboration == 1.0
    assert after_cfo["market_analyst"].collaboration == 0.0
    # The analyst lists nobody, but a last speaker who lists it counts too.
    fan = agent("fan", collaborators=["market_analyst"])
    after_fan = by_agent(
        score_candidates([MARKET_ANALYST, fan, loner], ConversationState(topic="x", speakers=["fan"]))
    )
    assert after_fan["market_analyst"].collaboration == 1.0
    assert after_fan["loner"].collaboration == 0.0


# --- recency and repeat speakers --------------------------------------------------------------


def test_recency_values() -> None:
    a, b, c = agent("a"), agent("b"), agent("c")
    state = ConversationState(topic="x", speakers=["a", "b", "a", "c"])
    scores = by_agent(score_candidates([a, b, c], state))
    assert scores["c"].recency == 0.0  # spoke last
    assert scores["a"].recency == pytest.approx(1 / 3)  # one turn since
    assert scores["b"].recency == pytest.approx(2 / 3)  # two turns since
    assert by_agent(score_candidates([a, b, c, agent("d")], state))["d"].recency == 1.0


def test_recency_rotates_speakers() -> None:
    candidates = [agent("a"), agent("b"), agent("c")]
    speakers: list[str] = []
    for _ in range(7):
        speakers.append(select_speaker(candidates, ConversationState(topic="x", speakers=speakers)).agent)
    assert speakers == ["a", "b", "c", "a", "b", "c", "a"]


def test_no_repeat_speaker_even_for_a_dominant_expert() -> None:
    expert = agent("expert", expertise=["finance"], phases=["analysis"], complexity=5, performance=1.0)
    weak = [agent(name, performance=0.0, complexity=1) for name in ("weak_one", "weak_two")]
    candidates = [expert, *weak]
    state = ConversationState(topic="Analyze revenue and cost.", phase="analysis", complexity=5)
    speakers: list[str] = []
    for _ in range(6):
        speakers.append(
            select_speaker(candidates, state.model_copy(update={"speakers": list(speakers)})).agent
        )
    assert all(x != y for x, y in zip(speakers, speakers[1:], strict=False))
    assert speakers[0] == "expert"
    assert speakers.count("expert") == 3  # every other turn
    # With repeats allowed the expert keeps the floor despite zero recency.
    repeat = select_speaker(
        candidates, state.model_copy(update={"speakers": ["expert"]}), allow_repeat_speaker=True
    )
    assert repeat.agent == "expert"
    assert repeat.recency == 0.0


def test_only_candidate_may_repeat() -> None:
    solo = agent("solo")
    state = ConversationState(topic="x", speakers=["solo"])
    assert select_speaker([solo], state).agent == "solo"


def test_invalid_candidates() -> None:
    with pytest.raises(ValueError, match="at least one"):
        select_speaker([], ConversationState(topic="x"))
    with pytest.raises(ValueError, match="unique"):
        score_candidates([agent("a"), agent("a")], ConversationState(topic="x"))


# --- urgency -------------------------------------------------------------------------------------


def test_urgency_favours_fast_agents_only_when_urgent() -> None:
    slow = agent("slow", fast_response=False)
    fast = agent("fast", fast_response=True)
    calm = score_candidates([slow, fast], ConversationState(topic="x", urgency=0.0))
    assert calm[0].agent == "slow"  # a tie: list order decides
    assert calm[0].total == calm[1].total
    assert {b.urgency for b in calm} == {0.0}
    urgent = score_candidates([slow, fast], ConversationState(topic="x", urgency=0.8))
    assert urgent[0].agent == "fast"
    assert by_agent(urgent)["fast"].urgency == 0.8
    assert by_agent(urgent)["slow"].urgency == 0.0
    assert urgent[0].total - urgent[1].total == pytest.approx(0.05 * 0.8)


# --- determinism, ties and totals -----------------------------------------------------------------


def test_deterministic() -> None:
    candidates = [CFO, STRATEGIST, MARKET_ANALYST]
    state = ConversationState(
        topic="Analyze revenue and competitor pricing.",
        urgency=0.3,
        complexity=4,
        speakers=["cfo", "market_analyst"],
        last_message="Margins fell 3%.",
    )
    first = score_candidates(candidates, state)
    second = score_candidates(list(candidates), ConversationState.model_validate(state.model_dump()))
    assert first == second
    assert [b.model_dump() for b in first] == [b.model_dump() for b in second]
    assert select_speaker(candidates, state) == select_speaker(candidates, state)


def test_ties_broken_by_candidate_order() -> None:
    a, b, c = agent("a"), agent("b"), agent("c")
    state = ConversationState(topic="x")
    assert [s.agent for s in score_candidates([a, b, c], state)] == ["a", "b", "c"]
    assert [s.agent for s in score_candidates([c, a, b], state)] == ["c", "a", "b"]
    assert select_speaker([b, c, a], state).agent == "b"


def test_total_is_the_weighted_sum_and_ranking_is_sorted() -> None:
    weights = SelectionWeights(
        expertise=0.4, phase=0.1, complexity=0.1, collaboration=0.1, performance=0.1, recency=0.1, urgency=0.1
    )
    state = ConversationState(
        topic="Analyze revenue and customer demand.",
        complexity=5,
        urgency=0.6,
        speakers=["strategist"],
        last_message="Churn is rising.",
    )
    ranking = score_candidates([CFO, STRATEGIST, MARKET_ANALYST], state, weights)
    for b in ranking:
        expected = (
            0.4 * b.expertise
            + 0.1 * b.phase
            + 0.1 * b.complexity
            + 0.1 * b.collaboration
            + 0.1 * b.performance
            + 0.1 * b.recency
            + 0.1 * b.urgency
        )
        assert b.total == pytest.approx(expected, abs=1e-12)
        factors = ("expertise", "phase", "complexity", "collaboration", "performance", "recency", "urgency")
        assert all(0.0 <= getattr(b, factor) <= 1.0 for factor in factors)
    assert [b.total for b in ranking] == sorted((b.total for b in ranking), reverse=True)
    analyst = by_agent(ranking)["market_analyst"]
    assert (analyst.expertise, analyst.phase, analyst.complexity) == (0.5, 1.0, 0.75)
    assert analyst.collaboration == 0.0
    assert (analyst.performance, analyst.recency, analyst.urgency) == (0.8, 1.0, 0.6)
    assert math.isclose(analyst.total, 0.4 * 0.5 + 0.1 * (1.0 + 0.75 + 0.0 + 0.8 + 1.0 + 0.6))
    # Default weights give a different total for the same factors.
    default = by_agent(score_candidates([CFO, STRATEGIST, MARKET_ANALYST], state))["market_analyst"]
    expected_default = 0.25 * 0.5 + 0.2 * 1.0 + 0.15 * 0.75 + 0.15 * 0.0 + 0.1 * 0.8 + 0.1 * 1.0 + 0.05 * 0.6
    assert default.total == pytest.approx(expected_default)


def test_selector_module_is_workflow_safe() -> None:
    """Only stdlib, pydantic and the definition module; nothing non-deterministic."""
    source = Path(selector_module.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    allowed = {"__future__", "functools", "math", "re", "collections.abc", "pydantic", "convergio.agents.definition"}
    assert imported <= allowed


# --- AutoGen --------------------------------------------------------------------------------------


TEAM_TASK = (
    "Analyze the revenue, cost and margin outlook, the competitor threat and the customer "
    "segments for the Q3 launch. Sections: Finance, Market, Risk."
)


async def test_selector_group_chat_follows_select_speaker() -> None:
    definitions = [CFO, STRATEGIST, MARKET_ANALYST]
    participants = [
        AssistantAgent(d.name, model_client=OfflineChatCompletionClient(), system_message=d.system_message)
        for d in definitions
    ]
    team = SelectorGroupChat(
        participants,
        model_client=OfflineChatCompletionClient(),
        selector_func=make_selector_func(definitions, topic=TEAM_TASK, complexity=4),
        max_turns=4,
    )
    result = await team.run(task=TEAM_TASK)

    chat = [m for m in result.messages if isinstance(m, BaseChatMessage)]
    assert chat[0].source == "user"
    turns = [m for m in chat if m.source != "user"]
    actual = [m.source for m in turns]
    assert len(actual) == 4
    assert all(x != y for x, y in zip(actual, actual[1:], strict=False))

    # Replay the transcript step by step through the pure selector.
    predicted: list[str] = []
    last_message = TEAM_TASK
    for i, message in enumerate(turns):
        state = ConversationState(
            topic=TEAM_TASK, complexity=4, speakers=actual[:i], last_message=last_message
        )
        predicted.append(select_speaker(definitions, state).agent)
        last_message = message.to_text()
    assert predicted == actual
    # The first turn depends on the task alone: analysis phase, finance + risk words.
    assert actual[0] == "cfo"

    # The adapter's view of the final thread matches the transcript.
    final = conversation_state(definitions, result.messages, topic=TEAM_TASK)
    assert final.speakers == actual
    assert final.last_message == turns[-1].to_text()


def test_adapter_ignores_user_and_strangers() -> None:
    from autogen_agentchat.messages import TextMessage

    definitions = [CFO, STRATEGIST, MARKET_ANALYST]
    thread = [
        TextMessage(source="user", content="Budget review."),
        TextMessage(source="cfo", content="Costs are up."),
        TextMessage(source="observer", content="Competitor news."),
    ]
    state = conversation_state(definitions, thread, topic="Budget review.")
    assert state.speakers == ["cfo"]
    assert state.last_message == "Competitor news."
    func = make_selector_func(definitions, topic="Budget review.")
    assert func(thread) == select_speaker(definitions, state).agent
    assert func(thread) != "cfo"
