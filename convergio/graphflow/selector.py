"""Speaker selection for team steps (group chats): the composite score of the reference document.

::

    composite = expertise*0.25 + phase_relevance*0.20 + complexity_handling*0.15
              + collaboration*0.15 + performance*0.10 + recency*0.10 + urgency*0.05

This module runs inside Temporal workflow code, so it is pure and deterministic: no I/O,
no clock, no randomness, no iteration over unordered collections where order matters,
and it imports only the standard library, pydantic and :mod:`convergio.agents.definition`.
The AutoGen adapter lives in :mod:`convergio.graphflow.autogen_selector`.

Every factor is a number in ``[0, 1]``; see :func:`score_candidates` for their definitions.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from convergio.agents.definition import MISSION_PHASES, AgentDefinition, MissionPhase

__all__ = [
    "DOMAIN_SYNONYMS",
    "PHASE_KEYWORDS",
    "ConversationState",
    "ScoreBreakdown",
    "SelectionWeights",
    "detect_phase",
    "effective_phase",
    "score_candidates",
    "select_speaker",
    "stem",
    "text_domains",
]

# --- data ------------------------------------------------------------------------------------


class SelectionWeights(BaseModel):
    """Weights of the seven factors; each non-negative, together summing to 1 (± 1e-6)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expertise: float = Field(default=0.25, ge=0.0)
    phase: float = Field(default=0.20, ge=0.0)
    complexity: float = Field(default=0.15, ge=0.0)
    collaboration: float = Field(default=0.15, ge=0.0)
    performance: float = Field(default=0.10, ge=0.0)
    recency: float = Field(default=0.10, ge=0.0)
    urgency: float = Field(default=0.05, ge=0.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SelectionWeights:
        values = (
            self.expertise,
            self.phase,
            self.complexity,
            self.collaboration,
            self.performance,
            self.recency,
            self.urgency,
        )
        if not all(math.isfinite(v) for v in values):
            raise ValueError("selection weights must be finite numbers")
        total = math.fsum(values)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"selection weights must sum to 1 (± 1e-6), got {total!r}")
        return self


class ConversationState(BaseModel):
    """What the selector knows about the conversation so far."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(description="The team step's instruction/task text.")
    phase: MissionPhase | None = Field(
        default=None, description="Current mission phase; None: detected from the topic's keywords."
    )
    complexity: int = Field(default=3, ge=1, le=5, description="Task complexity, 1–5.")
    urgency: float = Field(default=0.0, ge=0.0, le=1.0, description="How urgent the step is, 0–1.")
    speakers: list[str] = Field(default_factory=list, description="Names of speakers so far, in order.")
    last_message: str = Field(default="", description="Text of the last message; counts toward expertise.")


class ScoreBreakdown(BaseModel):
    """One candidate's factors (each in [0, 1]) and their weighted sum ``total``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    expertise: float = Field(ge=0.0, le=1.0)
    phase: float = Field(ge=0.0, le=1.0)
    complexity: float = Field(ge=0.0, le=1.0)
    collaboration: float = Field(ge=0.0, le=1.0)
    performance: float = Field(ge=0.0, le=1.0)
    recency: float = Field(ge=0.0, le=1.0)
    urgency: float = Field(ge=0.0, le=1.0)
    total: float = Field(ge=0.0)


# --- words, stems and domains ---------------------------------------------------------------

# Tried in this order, longest first; stripping repeats until nothing matches.
_SUFFIXES: tuple[str, ...] = (
    "ational",
    "ations",
    "ation",
    "ments",
    "ment",
    "ings",
    "ing",
    "ical",
    "ially",
    "ial",
    "ally",
    "ies",
    "ers",
    "er",
    "ed",
    "es",
    "al",
    "ic",
    "s",
    "e",
    "y",
)
_MIN_STEM = 3
_WORD = re.compile(r"[a-z]+")


@functools.lru_cache(maxsize=16384)
def stem(word: str) -> str:
    """A crude, deterministic stem: lower-case, letters only, common suffixes stripped
    repeatedly while at least three letters remain ("financial"/"finance" → "financ",
    "strategy"/"strategic"/"strategies" → "strateg", "costs" → "cost"). A trailing "ss"
    is kept ("process" stays "process"). Not linguistics: just enough to match word forms."""
    word = "".join(_WORD.findall(word.lower()))
    for _ in range(4):
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
                if suffix == "s" and word.endswith("ss"):
                    continue
                word = word[: -len(suffix)]
                break
        else:
            return word
    return word


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# Common business words → expertise domains (domains are lower-case identifiers, as in
# AgentDefinition.expertise). Keys are stemmed at import time, in this fixed order.
DOMAIN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "finance": (
        "finance", "financial", "revenue", "cost", "npv", "irr", "margin", "budget", "cash",
        "profit", "roi", "investment", "capital", "ebitda", "valuation", "forecast",
    ),
    "market": (
        "market", "competitor", "competition", "customer", "segment", "demand", "share",
        "trend", "consumer",
    ),
    "risk": (
        "risk", "compliance", "regulation", "regulatory", "threat", "legal", "audit",
        "security", "liability",
    ),
    "go_to_market": ("launch", "campaign", "pricing", "price", "channel", "sales", "promotion", "brand"),
    "operations": (
        "operations", "operational", "process", "supply", "delivery", "staffing", "logistics",
        "capacity", "workflow", "inventory",
    ),
    "strategy": ("strategy", "strategic", "vision", "positioning", "roadmap", "growth", "objective"),
    "performance": ("kpi", "metric", "performance", "okr", "dashboard", "benchmark"),
}


def _build_stem_domains() -> dict[str, tuple[str, ...]]:
    table: dict[str, list[str]] = {}
    for domain, words in DOMAIN_SYNONYMS.items():
        # A domain name is a key itself when it is one word ("finance", not "go_to_market").
        for word in (domain, *words) if domain.isalpha() else words:
            domains = table.setdefault(stem(word), [])
            if domain not in domains:
                domains.append(domain)
    return {key: tuple(value) for key, value in table.items()}


_STEM_DOMAINS: dict[str, tuple[str, ...]] = _build_stem_domains()


@functools.lru_cache(maxsize=1024)
def text_domains(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(stems, domains) of a text: the stems of its words, and the domains those stems map
    to through :data:`DOMAIN_SYNONYMS`. Cached: a team step scores the same messages every turn."""
    stems = frozenset(stem(word) for word in _words(text))
    domains = frozenset(domain for s in stems for domain in _STEM_DOMAINS.get(s, ()))
    return stems, domains


def _expertise_matches(item: str, stems: frozenset[str], domains: frozenset[str]) -> bool:
    """Does one expertise domain of an agent appear in the text (given its stems/domains)?

    It does if the item is a domain the text maps to ("finance" ← "npv"); if the item is a
    single word, also if its stem is in the text or its own synonym domains are ("revenue"
    ← "margin"); if it has several words ("supply_chain"), if all their stems are in the text.
    """
    words = _words(item)
    if not words:
        return False
    if "_".join(words) in domains:
        return True
    item_stems = [stem(word) for word in words]
    if len(item_stems) == 1:
        only = item_stems[0]
        return only in stems or any(d in domains for d in _STEM_DOMAINS.get(only, ()))
    return all(s in stems for s in item_stems)


# --- phases ------------------------------------------------------------------------------------

# Word prefixes (lower case) that suggest each phase.
PHASE_KEYWORDS: dict[MissionPhase, tuple[str, ...]] = {
    "discovery": ("research", "discover", "explor", "investigat"),
    "analysis": ("analy", "assess", "evaluat"),
    "strategy": ("strateg", "plan"),
    "execution": ("implement", "execut", "launch", "rollout", "deploy"),
    "monitoring": ("monitor", "track", "kpi", "measur"),
}


def detect_phase(text: str) -> MissionPhase | None:
    """The phase whose keyword prefixes occur most often among the text's words; ties go to
    the earlier phase in :data:`MISSION_PHASES`; None when no keyword occurs."""
    words = _words(text)
    best: MissionPhase | None = None
    best_count = 0
    for phase in MISSION_PHASES:
        prefixes = PHASE_KEYWORDS[phase]
        count = sum(1 for word in words if word.startswith(prefixes))
        if count > best_count:
            best, best_count = phase, count
    return best


def effective_phase(state: ConversationState) -> MissionPhase | None:
    """``state.phase`` if given, else the phase detected from ``state.topic``."""
    return state.phase if state.phase is not None else detect_phase(state.topic)


# --- scoring -----------------------------------------------------------------------------------


def _check_candidates(candidates: Sequence[AgentDefinition]) -> None:
    if not candidates:
        raise ValueError("there must be at least one candidate speaker")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique, got {names}")


def score_candidates(
    candidates: Sequence[AgentDefinition],
    state: ConversationState,
    weights: SelectionWeights = SelectionWeights(),
) -> list[ScoreBreakdown]:
    """Score every candidate; best first, ties kept in candidate order.

    Factors, each in [0, 1]:

    - **expertise**: matched expertise domains / max(1, min(3, number of domains)), capped
      at 1, where a domain matches if it occurs in the topic + last message (word stems and
      the :data:`DOMAIN_SYNONYMS` table; see :func:`_expertise_matches`). An agent with no
      expertise listed gets 0.
    - **phase**: 1.0 if the phase (given, or detected from the topic) is in ``agent.phases``;
      0.5 if the agent lists no phases or no phase is known; else 0.0.
    - **complexity**: ``1 - max(0, state.complexity - agent.complexity) / 4``: an agent rated
      at or above the task's complexity gets 1.
    - **collaboration**: 1.0 if the last speaker is in ``agent.collaborators``, or the last
      speaker is a candidate that lists this agent; 0.5 if no one has spoken; else 0.0.
    - **performance**: ``agent.performance``.
    - **recency**: 1.0 if the agent has never spoken; else turns since it last spoke divided
      by the number of candidates, capped at 1 (the last speaker gets 0).
    - **urgency**: ``state.urgency`` if ``agent.fast_response`` else 0.0.

    ``total`` is the weighted sum of the factors. Sorting compares totals rounded to 9
    decimals, so sums that differ only by float rounding count as ties.
    """
    _check_candidates(candidates)
    stems, domains = text_domains(f"{state.topic}\n{state.last_message}")
    phase = effective_phase(state)
    by_name = {c.name: c for c in candidates}
    last_speaker = state.speakers[-1] if state.speakers else None
    last_turn: dict[str, int] = {name: i for i, name in enumerate(state.speakers)}
    n_turns = len(state.speakers)

    scored: list[tuple[int, ScoreBreakdown]] = []
    for index, agent in enumerate(candidates):
        # expertise
        if agent.expertise:
            matched = sum(1 for item in agent.expertise if _expertise_matches(item, stems, domains))
            expertise = min(1.0, matched / max(1, min(3, len(agent.expertise))))
        else:
            expertise = 0.0
        # phase relevance
        if phase is None or not agent.phases:
            phase_score = 0.5
        else:
            phase_score = 1.0 if phase in agent.phases else 0.0
        # complexity handling
        complexity = 1.0 - max(0, state.complexity - agent.complexity) / 4
        # collaboration
        if last_speaker is None:
            collaboration = 0.5
        else:
            previous = by_name.get(last_speaker)
            works_with = last_speaker in agent.collaborators or (
                previous is not None and agent.name in previous.collaborators
            )
            collaboration = 1.0 if works_with else 0.0
        # recency
        if agent.name not in last_turn:
            recency = 1.0
        else:
            since = n_turns - 1 - last_turn[agent.name]
            recency = min(1.0, since / len(candidates))
        # urgency
        urgency = state.urgency if agent.fast_response else 0.0

        total = math.fsum(
            (
                weights.expertise * expertise,
                weights.phase * phase_score,
                weights.complexity * complexity,
                weights.collaboration * collaboration,
                weights.performance * agent.performance,
                weights.recency * recency,
                weights.urgency * urgency,
            )
        )
        breakdown = ScoreBreakdown(
            agent=agent.name,
            expertise=expertise,
            phase=phase_score,
            complexity=complexity,
            collaboration=collaboration,
            performance=agent.performance,
            recency=recency,
            urgency=urgency,
            total=total,
        )
        scored.append((index, breakdown))

    scored.sort(key=lambda item: (-round(item[1].total, 9), item[0]))
    return [breakdown for _, breakdown in scored]


def select_speaker(
    candidates: Sequence[AgentDefinition],
    state: ConversationState,
    weights: SelectionWeights = SelectionWeights(),
    *,
    allow_repeat_speaker: bool = False,
) -> ScoreBreakdown:
    """The best-scoring candidate (ties: the earlier one in ``candidates``).

    Unless ``allow_repeat_speaker``, the last speaker is excluded, except when it is the only
    candidate. Recency still divides by the full number of candidates.
    """
    ranking = score_candidates(candidates, state, weights)
    if not allow_repeat_speaker and state.speakers and len(candidates) > 1:
        last = state.speakers[-1]
        others = [b for b in ranking if b.agent != last]
        if others:
            return others[0]
    return ranking[0]
