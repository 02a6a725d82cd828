"""Run one AutoGen ``AssistantAgent`` turn, exactly once per (workflow, step, turn).

The turn is recorded in Postgres before the activity completes; a retry after a worker
crash finds the record and returns it instead of paying for the model call again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from decimal import Decimal
from contextlib import aclosing
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import (
    BaseChatMessage,
    ModelClientStreamingChunkEvent,
    TextMessage,
    ToolCallRequestEvent,
)
from autogen_core import FunctionCall
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.tools import BaseTool
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
)
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from temporalio import activity
from temporalio.exceptions import ApplicationError

from convergio.agents.metered_client import MeteredChatCompletionClient
from convergio.agents.models import ModelConfigError, build_model_client, parse_model_setting
from convergio.agents.tokens import count_tokens
from convergio.contracts import AgentTurnInput, AgentTurnOutput, PromptPart, SecurityFinding, ToolCallRequest
from convergio.costs.budget import ReservationResult
from convergio.costs.metering import BudgetBusy, TurnMeter
from convergio.costs import ledger
from convergio.costs.pricing import TurnCost, emit
from convergio.security import store
from convergio.security.activity import ScreenInput, ScreenOutput, screen_input
from convergio.security.classifier import build_classifier
from convergio.security.guardian import DEFAULT_THRESHOLDS, ScreenRequest, Surface, redact, screen
from convergio.security.store import VerdictRecord
from convergio.events import EventBuffer, EventFactory, EventPublisher, listening_to_turn
from convergio.observability.logging import log_context
from convergio.observability.metrics import get_metrics
from convergio.observability.tracing import span
from convergio.settings import Settings


logger = logging.getLogger(__name__)

WITHHELD = "[withheld by the security guardian]"
# How long a turn waits for turns in flight to settle when they hold the rest of the budget.
BUDGET_BUSY_WAIT_S = 20.0


class AgentTurnActivities:
    """Activities with their dependencies injected by the worker (pool, Redis, settings)."""

    def __init__(
        self, settings: Settings, pool: AsyncConnectionPool, events: EventPublisher, meter: TurnMeter
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._events = events
        self._meter = meter
        self._classifier = build_classifier(settings)

    @activity.defn(name="run_agent_turn")
    async def run_agent_turn(self, turn: AgentTurnInput) -> AgentTurnOutput:
        request = turn.request
        with (
            log_context(
                workflow_id=turn.workflow_id, step_id=turn.step_id, tenant=request.tenant, agent=request.agent.name
            ),
            span(
                "agent.turn", agent=request.agent.name, step=turn.step_id, turn=turn.turn,
                workflow_id=turn.workflow_id, tenant=request.tenant,
            ) as current,
        ):
            started = time.monotonic()
            output = await self._run_turn(turn)
            current.set_attributes(
                {
                    "model": output.model,
                    "prompt_tokens": output.prompt_tokens,
                    "completion_tokens": output.completion_tokens,
                    "cost_usd": output.cost_usd,
                    "finish_reason": output.finish_reason,
                    "replayed_from_ledger": output.replayed_from_ledger,
                }
            )
            metrics = get_metrics()
            if output.budget_refused:
                current.set_attribute("budget_refused", output.budget_refused)
                metrics.record_error("budget_refused")
            elif not output.replayed_from_ledger:
                metrics.record_agent_turn(output.agent, output.model, time.monotonic() - started)
            logger.info(
                "agent turn finished: %s on %s, %d+%d tokens, $%s",
                output.agent, output.model, output.prompt_tokens, output.completion_tokens, output.cost_usd,
            )
            return output

    async def _run_turn(self, turn: AgentTurnInput) -> AgentTurnOutput:
        attempt = activity.info().attempt
        # Only a retry can find its turn already recorded (the first attempt never can).
        if attempt > 1:
            found = await self._recorded_turn(turn)
            if found is not None:
                recorded, recorded_by = found
                activity.logger.info("turn already recorded; not calling the model again")
                # The crash may have come before the live budget heard of the cost: commit it as
                # the attempt that recorded it (a no-op if that attempt did).
                usage = (recorded.prompt_tokens, recorded.completion_tokens)
                entry = self._meter.entry(turn, recorded.model, *usage)
                await self._meter.commit_entry(turn, entry, attempt=recorded_by)
                return recorded

        started = time.monotonic()
        request = turn.request
        model_setting = request.model or self._settings.model
        try:
            label = parse_model_setting(model_setting).label
            client = MeteredChatCompletionClient(build_model_client(self._settings, model_setting))
        except ModelConfigError as exc:
            raise ApplicationError(str(exc), type="ModelConfigError", non_retryable=True) from exc

        offered = turn.tools if client.model_info["function_calling"] else []  # tools the model may ask for
        findings: list[SecurityFinding] = []
        verdicts: list[VerdictRecord] = []  # written with the turn, in one transaction
        redactions: list[PromptPart] = []
        if turn.tool_rounds or turn.security_approved:
            # Later calls of an answer (tool rounds, or the call after a person approved a held
            # prompt): the first call screened the prompt and recorded the verdicts. The workflow
            # sends the prompt as written, so what that call redacted is redacted again, with the
            # same rules (no second verdict).
            redactions = _redact_again(turn)
        elif turn.security is not None:
            hold, redactions = await self._screen_prompt(turn, findings, verdicts)
            if hold is not None:
                await self._record(verdicts)
                return AgentTurnOutput(
                    agent=request.agent.name, model=label, content="", prompt_tokens=0, completion_tokens=0,
                    finish_reason="security", security_hold=hold, findings=findings,
                    prompt_redactions=redactions,
                )

        try:
            reservation = await self._reserve(turn, label, _prompt_tokens(turn, offered), attempt, verdicts)
            if reservation is not None and not reservation.granted:
                await self._record(verdicts)
                return AgentTurnOutput(
                    agent=request.agent.name, model=label, content="", prompt_tokens=0, completion_tokens=0,
                    finish_reason="budget", budget_refused=_refusal(reservation),
                )
            return await self._answer(
                turn, client, label, offered, findings, verdicts, redactions, started, attempt
            )
        except BaseException:
            # Whatever failed, the model calls this attempt finished were paid: count them in the
            # live budget now (the retry holds and commits its own cost), or free its hold.
            await asyncio.shield(self._settle_failed_attempt(turn, client, label, attempt))
            raise

    async def _reserve(
        self,
        turn: AgentTurnInput,
        label: str,
        prompt_tokens: int,
        attempt: int,
        verdicts: list[VerdictRecord],
    ) -> ReservationResult | None:
        """Hold the turn's estimated cost (None: not metered); traced as ``budget.reserve``."""
        with span("budget.reserve", model=label, tenant=turn.request.tenant) as reserve_span:
            try:
                reservation = await self._reserve_when_free(turn, label, prompt_tokens, attempt)
            except BudgetBusy as exc:
                reserve_span.set_attribute("granted", False)
                await self._record(verdicts)
                raise ApplicationError(str(exc), type="BudgetBusy") from exc  # retryable
            if reservation is not None:
                reserve_span.set_attributes(
                    {"granted": reservation.granted, "reason": str(reservation.reason),
                     "estimate_usd": float(reservation.estimate_usd)}
                )
                if reservation.remaining_daily is not None:
                    remaining = float(reservation.remaining_daily)
                    reserve_span.set_attribute("remaining_daily_usd", remaining)
                    get_metrics().set_budget_remaining(turn.request.tenant, remaining)
            return reservation

    async def _answer(
        self,
        turn: AgentTurnInput,
        client: MeteredChatCompletionClient,
        label: str,
        offered: list[str],
        findings: list[SecurityFinding],
        verdicts: list[VerdictRecord],
        redactions: list[PromptPart],
        started: float,
        attempt: int,
    ) -> AgentTurnOutput:
        """Call the model (streaming), screen the answer, record the turn and commit its cost."""
        request = turn.request
        event = EventFactory(turn.workflow_id, turn.step_id, request.agent.name)
        events = EventBuffer(self._events)
        events.add(event("turn_started", model=label))
        if turn.handoff_from:
            events.add(event("handoff", from_agent=turn.handoff_from, to_agent=request.agent.name))
        # An answer that will be screened is not shown live: its chunks wait until screening
        # decided what may be shown (a blocked secret must never reach the event stream).
        screens_output = turn.security is not None and "output" in turn.security.surfaces
        held_chunks: list[str] = []
        agent = _assistant(turn, client, offered)
        result: TaskResult | None = None
        requested: list[FunctionCall] = []
        heartbeat = asyncio.create_task(_heartbeat_while_running())
        try:
            # A model client's notices (e.g. a trimmed prompt) go on this turn's stream too.
            with listening_to_turn(lambda kind, data: events.add(event(kind, **data))):
                # After tool rounds the agent's context already ends with the tools' results.
                task = None if turn.tool_rounds else _task_messages(turn)
                async with aclosing(agent.run_stream(task=task)) as stream:
                    async for item in stream:
                        if isinstance(item, ModelClientStreamingChunkEvent):
                            if screens_output:
                                held_chunks.append(item.content)
                            else:
                                events.add(event("text_chunk", text=item.content))
                        elif isinstance(item, ToolCallRequestEvent):
                            # Stop before AutoGen runs the tools: the workflow runs each one as its
                            # own activity, then calls the model again (one model call per activity).
                            requested = list(item.content)
                            break
                        elif isinstance(item, TaskResult):
                            result = item
        except BaseException:
            await self._abandon(events, verdicts)
            raise
        finally:
            heartbeat.cancel()
            await client.close()

        calls = client.results
        prompt_tokens, completion_tokens = _usage(calls)
        try:
            output = AgentTurnOutput(
                agent=request.agent.name,
                model=label,
                content="" if requested else _final_answer(result, request.agent.name),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                finish_reason=str(calls[-1].finish_reason) if calls else "unknown",
                tool_calls=[ToolCallRequest(id=c.id, name=c.name, arguments=c.arguments) for c in requested],
                prompt_redactions=redactions,
            )
            await self._screen_answer(turn, output, findings, verdicts)
        except BaseException:
            await self._abandon(events, verdicts)
            raise
        output.findings = findings
        if screens_output and not requested:  # text a model wrote before its tool calls is not the answer
            if output.output_action in ("redact", "block"):
                held_chunks = [output.content]  # only the screened text is ever shown
            elif output.output_action == "approval":
                held_chunks = []  # a flagged answer is shown once a person has approved it
            for chunk in held_chunks:
                events.add(event("text_chunk", text=chunk))
        cost_entry = self._meter.entry(turn, label, output.prompt_tokens, output.completion_tokens)
        output.cost_usd = float(cost_entry.cost_usd)
        events.add(
            event(
                "turn_finished",
                model=label,
                prompt_tokens=output.prompt_tokens,
                completion_tokens=output.completion_tokens,
                finish_reason=output.finish_reason,
                cost_usd=str(cost_entry.cost_usd),
            )
        )

        async def count_then_announce() -> None:
            """Count the cost in the live budget, then tell watchers what the run has spent: the
            budget's count includes turns of parallel steps that finished meanwhile."""
            try:
                counted = await self._meter.commit_entry(turn, cost_entry, attempt=attempt)
                run_cost = (
                    counted.workflow_committed if counted is not None
                    else Decimal(repr(turn.run_cost_usd)) + cost_entry.cost_usd
                )
                turn_cost = str(cost_entry.cost_usd)
                events.add(event("cost_update", turn_cost_usd=turn_cost, run_cost_usd=f"{run_cost:.8f}"))
            finally:
                await events.close()

        # The durable record (Postgres, one statement) and the live budget with the last events
        # (Redis, idempotent by reservation) at once. A retry after a crash between them finds
        # the record and commits the budget again (a no-op if done).
        new_cost, _ = await asyncio.gather(
            self._record(
                verdicts, turn, output, cost_entry, response_s=time.monotonic() - started, attempt=attempt
            ),
            count_then_announce(),
        )
        if new_cost:
            emit(cost_entry)
        return output

    async def _abandon(self, events: EventBuffer, verdicts: list[VerdictRecord]) -> None:
        """A failed turn still flushes its events and logs the verdicts given so far."""
        await events.close()
        try:
            await self._record(verdicts)
        except Exception:  # noqa: BLE001 - never hide the turn's own error
            logger.exception("could not record the verdicts of a failed turn")

    async def _settle_failed_attempt(
        self, turn: AgentTurnInput, client: MeteredChatCompletionClient, label: str, attempt: int
    ) -> None:
        """Commit what a failed attempt's finished model calls cost under its own reservation
        id, or release its hold when it finished none. Had the attempt recorded the turn, this
        commit is the one it made (same id, same amount), so nothing is counted twice. The
        ledger only holds recorded turns: a paid attempt that failed is counted in the live
        budget, logged and counted in the cost metrics. A call cut off mid-stream is among the
        finished ones, counted by estimate (see ``MeteredChatCompletionClient``)."""
        calls = client.results
        try:
            if not calls:
                await self._meter.release(turn, attempt=attempt)
                return
            entry = self._meter.entry(turn, label, *_usage(calls))
            await self._meter.commit_entry(turn, entry, attempt=attempt)
            emit(entry)
            logger.warning(
                "turn %s/%s attempt %d failed after %d paid model call(s): $%s counted in the live budget",
                turn.step_id, turn.turn, attempt, len(calls), entry.cost_usd,
            )
        except Exception:  # noqa: BLE001 - never hide the attempt's own error
            logger.exception("could not settle the budget of a failed turn attempt")

    async def _screen(
        self,
        turn: AgentTurnInput,
        surface: Surface,
        text: str,
        findings: list[SecurityFinding],
        verdicts: list[VerdictRecord],
        parts: list[str] | None = None,
    ) -> ScreenOutput:
        """Screen one text of this turn; its verdict joins ``verdicts`` (written with the turn)."""
        assert turn.security is not None
        screened, record = await screen_input(
            ScreenInput(workflow_id=turn.workflow_id, step_id=turn.step_id, surface=surface,
                        tenant=turn.request.tenant, text=text, policy=turn.security),
            self._classifier,
            parts=parts,
        )
        verdicts.append(record)
        if screened.verdict.decision != "allow":
            findings.append(screened.finding(surface, turn.step_id))
        return screened

    async def _reserve_when_free(
        self, turn: AgentTurnInput, label: str, prompt_tokens: int, attempt: int
    ) -> ReservationResult | None:
        """Reserve the turn's estimate; while other turns in flight hold the rest of the budget,
        wait for them to settle (up to BUDGET_BUSY_WAIT_S, beating the heart) before giving up
        to Temporal's retries: a turn that fits once they commit should not fail its step."""
        started = time.monotonic()
        timeout = activity.info().start_to_close_timeout
        longest_turn_s = timeout.total_seconds() if timeout else 0
        pause = 0.25
        while True:
            try:
                return await self._meter.reserve(
                    turn, label, prompt_tokens, longest_turn_s=longest_turn_s, attempt=attempt
                )
            except BudgetBusy:
                if time.monotonic() - started + pause > BUDGET_BUSY_WAIT_S:
                    raise
            activity.heartbeat("waiting for the budget")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def _screen_answer(
        self,
        turn: AgentTurnInput,
        output: AgentTurnOutput,
        findings: list[SecurityFinding],
        verdicts: list[VerdictRecord],
    ) -> None:
        """Screen the answer, or the tool calls it asks for, and set ``output_action``; a redacted
        or blocked answer's content is replaced."""
        if turn.security is None:
            return
        if output.tool_calls:
            # The arguments are the model's output here; a tool never gets a redacted call.
            calls_text = "\n".join(call.shown() for call in output.tool_calls)
            screened = await self._screen(turn, "output", calls_text, findings, verdicts)
            output.output_action = "block" if screened.action in ("redact", "block") else screened.action
            return
        screened = await self._screen(turn, "output", output.content, findings, verdicts)
        output.output_action = screened.action
        if screened.action in ("redact", "block"):
            output.content = screened.text_after or WITHHELD

    async def _screen_prompt(
        self, turn: AgentTurnInput, findings: list[SecurityFinding], verdicts: list[VerdictRecord]
    ) -> tuple[str | None, list[PromptPart]]:
        """Screen the instruction and the context it brings: the action that holds the turn, if
        any, and what was redacted (a redacted instruction or context is passed on redacted).

        A flagged instruction does not end the screening: the person approving the prompt must
        see what the context holds too, and the call they approve redacts what was redacted."""
        redacted: list[PromptPart] = []
        hold: str | None = None
        screened = await self._screen(turn, "instruction", turn.request.task, findings, verdicts)
        if screened.action == "block":
            return "block", redacted
        if screened.action == "approval":
            hold = "approval"
        elif screened.action == "redact" and screened.text_after is not None:
            turn.request.task = screened.text_after
            redacted.append("instruction")
        if turn.context:
            parts = [message.content for message in turn.context]
            screened = await self._screen(turn, "context", "\n\n".join(parts), findings, verdicts, parts=parts)
            if screened.action == "block":
                return "block", redacted
            if screened.action == "approval":
                hold = "approval"
            elif screened.action == "redact":
                _redact_context(turn)
                redacted.append("context")
        return hold, redacted

    async def _recorded_turn(self, turn: AgentTurnInput) -> tuple[AgentTurnOutput, int] | None:
        """The turn as an earlier attempt recorded it, and which attempt that was."""
        async with self._pool.connection() as conn:
            cursor = await conn.cursor(row_factory=dict_row).execute(
                "SELECT t.agent, t.model, t.content, t.prompt_tokens, t.completion_tokens, t.finish_reason,"
                " coalesce(t.tool_calls, '[]'::jsonb) AS tool_calls,"
                " t.output_action, coalesce(t.attempt, 1) AS attempt,"
                " coalesce(c.cost_usd, 0)::float AS cost_usd"
                " FROM agent_turns t LEFT JOIN cost_ledger c USING (workflow_id, step_id, turn)"
                " WHERE t.workflow_id = %s AND t.step_id = %s AND t.turn = %s",
                (turn.workflow_id, turn.step_id, turn.turn),
            )
            row = await cursor.fetchone()
        if row is None:
            return None
        action = row.pop("output_action")
        attempt = row.pop("attempt")
        recorded = AgentTurnOutput(**row, replayed_from_ledger=True)
        if action is not None:
            recorded.output_action = action
        elif recorded.content == WITHHELD:
            recorded.output_action = "block"
        else:
            # Recorded before migration 0008 kept what screening did: screen the recorded answer
            # again (its verdict was logged the first time, so it is not logged twice), so that a
            # flagged answer still goes to a person. A redacted answer was recorded redacted.
            await self._screen_answer(turn, recorded, recorded.findings, [])
        return recorded, attempt

    async def _record(
        self,
        verdicts: list[VerdictRecord],
        turn: AgentTurnInput | None = None,
        output: AgentTurnOutput | None = None,
        cost: TurnCost | None = None,
        response_s: float | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Write the turn's verdicts, its record and its cost row as ONE statement (data-modifying
        CTEs, autocommit: one round trip, atomic), before the activity completes; whether the
        cost row was new (a retry finds it there and counts nothing twice)."""
        if not verdicts and turn is None:
            return False
        with_turn = turn is not None and output is not None
        params: list[object] = [Jsonb([record.row() for record in verdicts])] if verdicts else []
        if with_turn:
            assert turn is not None and output is not None
            params.extend((
                turn.workflow_id, turn.step_id, turn.turn, output.agent, output.model, output.prompt_tokens,
                output.completion_tokens, output.finish_reason, output.content,
                None if response_s is None else response_s * 1000,
                Jsonb([call.model_dump() for call in output.tool_calls]) if output.tool_calls else None,
                output.output_action, attempt,
            ))
        if cost is not None:
            params.extend(ledger.insert_params(cost))
        statement = _record_statement(bool(verdicts), with_turn, cost is not None)
        async with self._pool.connection() as conn:  # autocommit: the statement is its own transaction
            row = await (await conn.execute(statement, params)).fetchone()
        verdicts.clear()
        return bool(row and row[0])


@functools.lru_cache(maxsize=8)
def _record_statement(with_verdicts: bool, with_turn: bool, with_cost: bool) -> bytes:
    """The one statement of ``_record`` for this shape, composed once per worker (composing it
    took longer than sending it)."""
    parts: list[sql.Composable] = []
    if with_verdicts:
        parts.append(sql.SQL("verdicts AS ({})").format(sql.SQL(store.VERDICT_ROWS_SQL)))
    if with_turn:
        parts.append(sql.SQL(
            "turn AS (INSERT INTO agent_turns (workflow_id, step_id, turn, agent, model, prompt_tokens,"
            " completion_tokens, finish_reason, content, response_ms, tool_calls, output_action, attempt)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (workflow_id, step_id, turn) DO NOTHING)"
        ))
    if with_cost:
        parts.append(sql.SQL("cost AS ({} RETURNING 1)").format(sql.SQL(ledger.INSERT_SQL)))
    final = sql.SQL("SELECT count(*) FROM cost") if with_cost else sql.SQL("SELECT 0")
    return sql.SQL("WITH {} {}").format(sql.SQL(", ").join(parts), final).as_bytes()


def _usage(calls: list[CreateResult]) -> tuple[int, int]:
    """Prompt and completion tokens of a turn's model calls."""
    prompt = sum(call.usage.prompt_tokens for call in calls)
    return prompt, sum(call.usage.completion_tokens for call in calls)


def _prompt_tokens(turn: AgentTurnInput, offered: list[str]) -> int:
    """What the prompt will cost, counted before the call (tiktoken; 4 tokens per message framing;
    each offered tool's schema is sent too)."""
    texts = [turn.request.agent.system_message, *(m.content for m in turn.context)]
    texts += [] if turn.answers_last_message else [turn.request.task]
    texts += [json.dumps(_autogen_tool(name).schema, sort_keys=True) for name in offered]
    for tool_round in turn.tool_rounds:
        texts += [call.name + call.arguments for call in tool_round.calls]
        texts += [result.content for result in tool_round.results]
    return sum(count_tokens(text) + 4 for text in texts)


@functools.cache
def _autogen_tool(name: str) -> BaseTool[Any, Any]:
    """One AutoGen tool per registered tool and worker: it holds no state, and building one
    (and its schema) on every turn cost about half a millisecond."""
    from convergio.tools.registry import as_autogen_tool

    return as_autogen_tool(name)


def _redact_again(turn: AgentTurnInput) -> list[PromptPart]:
    """Redact what the answer's first model call redacted, as it did: the instruction with the
    guardian's rules (the verdict's redacted text), the context message by message."""
    if "instruction" in turn.prompt_redactions:
        request = ScreenRequest(text=turn.request.task, surface="instruction", tenant=turn.request.tenant)
        thresholds = turn.security.thresholds if turn.security else DEFAULT_THRESHOLDS
        turn.request.task = screen(request, thresholds).redacted or redact(turn.request.task)
    if "context" in turn.prompt_redactions:
        _redact_context(turn)
    return list(turn.prompt_redactions)


def _redact_context(turn: AgentTurnInput) -> None:
    """Redact the context message by message as the guardian redacts a text: secrets and the
    attack spans it found (``redact`` alone removes secrets only, so an injected instruction
    in a retrieved document reached the model under the ``redact`` action)."""
    thresholds = turn.security.thresholds if turn.security else DEFAULT_THRESHOLDS
    for message in turn.context:
        request = ScreenRequest(text=message.content, surface="context", tenant=turn.request.tenant)
        message.content = screen(request, thresholds).redacted or redact(message.content)


def _assistant(turn: AgentTurnInput, client: ChatCompletionClient, offered: list[str]) -> AssistantAgent:
    """The turn's agent. Its ``offered`` tools are shown to the model but never run here (see
    the caller). After tool rounds its context holds the transcript, the task, and each round's
    calls and results."""
    tools = [_autogen_tool(name) for name in offered] or None
    context = None
    if turn.tool_rounds:
        messages: list[LLMMessage] = [message.to_model_message() for message in _task_messages(turn)]
        for tool_round in turn.tool_rounds:
            messages.append(AssistantMessage(
                content=[FunctionCall(id=c.id, name=c.name, arguments=c.arguments) for c in tool_round.calls],
                source=turn.request.agent.name,
            ))
            messages.append(FunctionExecutionResultMessage(content=[
                FunctionExecutionResult(call_id=result.call_id, name=result.name, content=result.content,
                                        is_error=result.is_error)
                for result in tool_round.results
            ]))
        context = UnboundedChatCompletionContext(initial_messages=messages)
    return AssistantAgent(
        turn.request.agent.name,
        model_client=client,
        system_message=turn.request.agent.system_message,
        model_client_stream=True,
        tools=tools,
        model_context=context,
    )


def _refusal(reservation: ReservationResult) -> str:
    limits = {
        "daily_limit": f"the tenant's daily limit (${reservation.daily_committed} spent)",
        "workflow_limit": f"this run's limit (${reservation.workflow_committed} spent)",
        "turn_spike": f"the turn-spike limit (this turn alone is estimated at ${reservation.estimate_usd})",
    }
    return f"budget: the turn would exceed {limits.get(reservation.reason, reservation.reason)}"


async def _heartbeat_while_running(every: float = 1.0) -> None:
    """Tell Temporal the turn is alive while the model thinks; a dead worker goes silent.

    The first beat comes after ``every``: a turn that ends sooner needs none (and saves a
    call to the server per turn)."""
    while True:
        await asyncio.sleep(every)
        activity.heartbeat()


class _OwnReply(TextMessage):
    """One of the agent's own earlier replies. AutoGen's ``AssistantAgent`` keeps its replies
    in its model context as assistant messages (other agents' messages as user messages);
    our agent is new on every turn, so its own replies must be handed over that way."""

    def to_model_message(self):  # type: ignore[no-untyped-def,override]
        from autogen_core.models import AssistantMessage

        return AssistantMessage(content=self.content, source=self.source)


def _task_messages(turn: AgentTurnInput) -> list[BaseChatMessage]:
    """The transcript so far, then the instruction, as AutoGen chat messages.

    Two rules make a turn reproduce an AutoGen group-chat turn exactly (see
    ``convergio.graphflow.autogen_graph``): messages whose source is the agent's own name
    become assistant messages, as in a long-lived ``AssistantAgent``; and when the context
    already ends with the instruction itself from a participant rather than ``user`` (another
    agent, or this one after a self-loop), it is not repeated: in a group chat the newest
    message *is* what the agent answers (also when it could not be a task:
    ``answers_last_message``). Other callers' turns are unchanged.
    """
    name = turn.request.agent.name
    context: list[BaseChatMessage] = [
        (_OwnReply if message.source == name else TextMessage)(content=message.content, source=message.source)
        for message in turn.context
    ]
    if turn.answers_last_message:
        return context
    last = turn.context[-1] if turn.context else None
    if last is not None and last.source != "user" and last.content == turn.request.task:
        return context
    return [*context, TextMessage(content=turn.request.task, source="user")]


def _final_answer(result: TaskResult | None, agent_name: str) -> str:
    if result is None:
        raise ApplicationError("the agent produced no result", type="AgentError")
    for message in reversed(result.messages):
        if isinstance(message, TextMessage) and message.source == agent_name:
            return message.content
    raise ApplicationError(f"agent {agent_name} produced no text answer", type="AgentError")
