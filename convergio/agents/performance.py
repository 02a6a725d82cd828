"""An agent's performance from its record: the reviewer scores its answers got lately.

The speaker selector weighs an agent's ``performance`` (0.10 of the composite score). An
agent definition's value is where it starts; as the tenant's runs collect reviewer scores for
the agent's answers (the cost ledger's ``quality_score``), its record takes over part of the
weight, up to HISTORY_SHARE once it has FULL_RECORD scores in the last HISTORY_DAYS days.

Read when a run starts and pinned into the run's input with the agents, so a running workflow
never sees it change and replays the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from psycopg import AsyncConnection

from convergio.agents.definition import AgentDefinition

HISTORY_DAYS = 30
FULL_RECORD = 20
HISTORY_SHARE = 0.5


@dataclass(frozen=True)
class Record:
    average_score: float  # 0-10
    scored_answers: int


def blended(profile: float, record: Record | None) -> float:
    """The profile's performance moved towards the record, the more the more answers were scored."""
    if record is None or record.scored_answers == 0:
        return profile
    share = HISTORY_SHARE * min(1.0, record.scored_answers / FULL_RECORD)
    return round((1 - share) * profile + share * record.average_score / 10, 4)


async def records(conn: AsyncConnection, tenant: str, agents: list[str]) -> dict[str, Record]:
    """Each agent's reviewer scores in the tenant's runs of the last HISTORY_DAYS days."""
    cursor = await conn.execute(
        "SELECT agent, avg(quality_score)::float, count(quality_score) FROM cost_ledger"
        " WHERE tenant = %s AND agent = ANY(%s) AND quality_score IS NOT NULL"
        " AND created_at > now() - make_interval(days => %s) GROUP BY agent",
        (tenant, agents, HISTORY_DAYS),
    )
    return {agent: Record(average, count) for agent, average, count in await cursor.fetchall()}


async def with_records(
    conn: AsyncConnection, tenant: str, agents: Mapping[str, AgentDefinition]
) -> dict[str, AgentDefinition]:
    """The agents with their performance blended with their record (unchanged without one)."""
    found = await records(conn, tenant, list(agents))
    return {
        name: agent.model_copy(update={"performance": blended(agent.performance, found.get(name))})
        for name, agent in agents.items()
    }
