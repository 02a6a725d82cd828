"""``GraphFlowWorkflow``: interprets a pinned template as a durable multi-agent process.

Ready steps run concurrently; each model call is one activity and the transcript lives
here, so a worker crash resumes at the next turn and never repeats a completed call.
Everything in this module is deterministic: no I/O, clocks or randomness.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from datetime import datetime, timedelta

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from convergio.failures import root_cause
    from convergio.activities.agent_turn import AgentTurnActivities
    from convergio.activities.notifications import EscalationNotice, NotificationActivities, RunEvent
    from convergio.activities.quality import QualityActivities, QualityScore
    from convergio.security.activity import ScreenInput, SecurityActivities
    from convergio.security.policy import SecurityPolicy
    from convergio.activities.tool_step import ToolStepActivities, ToolStepInput
    from convergio.contracts import (
        MAX_TASK_CHARS,
        AgentProfile,
        AgentTurnInput,
        AgentTurnOutput,
        AgentTurnRequest,
        PromptPart,
        SecurityFinding,
        ToolCallRequest,
        ToolCallResult,
        ToolRound,
        TranscriptMessage,
        TurnBudget,
    )
    from convergio.graphflow.expressions import ExpressionError, compile_expression
    from convergio.graphflow.placeholders import render_text, render_value
    from convergio.graphflow.quality import output_problems, review_instruction, review_score
    from convergio.graphflow.report import render_markdown
    from convergio.graphflow.success_metrics import measure as measure_success_metrics
    from convergio.graphflow.run_models import (
        TERMINAL,
        ApprovalDecision,
        AuditEntry,
        GateKind,
        GraphFlowInput,
        GraphFlowResult,
        PendingApproval,
        RecordedDecision,
        RunStatus,
        StepReport,
        StepState,
        TurnRecord,
        same_round,
    )
    from convergio.graphflow.selector import ConversationState, select_speaker
    from convergio.graphflow.template import EscalationSpec, QualitySpec, StepSpec, Template
    from convergio.graphflow.validation import ancestors
    from convergio.rag.activity import KnowledgeActivities
    from convergio.rag.context import legend
    from convergio.rag.models import KnowledgeContext, KnowledgeRequest, MemoryIn

TEMPLATE_KEY = SearchAttributeKey.for_keyword("ConvergioTemplate")
STATUS_KEY = SearchAttributeKey.for_keyword("ConvergioStatus")
TENANT_KEY = SearchAttributeKey.for_keyword("ConvergioTenant")
PENDING_GATES_KEY = SearchAttributeKey.for_keyword_list("ConvergioPendingGates")
COST_KEY = SearchAttributeKey.for_float("ConvergioCostUsd")


def initial_search_attributes(run: GraphFlowInput) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(TEMPLATE_KEY, run.template.name),
            SearchAttributePair(STATUS_KEY, "running"),
            SearchAttributePair(TENANT_KEY, run.tenant),
            SearchAttributePair(PENDING_GATES_KEY, []),
            SearchAttributePair(COST_KEY, 0.0),
        ]
    )


# Workflows started before SLA timers existed replay without them.
SLA_PATCH = "sla-timers-v1"
# ... and before budgets: their turns are not metered on replay.
BUDGET_PATCH = "turn-budget-v1"
# ... and before reviewer scores reached the cost ledger.
QUALITY_PATCH = "quality-ledger-v1"
# ... and before inputs were screened by the security guardian.
SECURITY_PATCH = "security-inputs-v1"
# ... and before steps retrieved knowledge and completed steps became memories.
RAG_PATCH = "rag-context"
# ... and before gates and SLA warnings were announced on the run's event stream.
EVENTS_PATCH = "run-events-v1"
# ... and before the cost search attribute was refreshed at most every COST_REFRESH (and always
# with the gate and status updates) instead of after every turn.
COST_REFRESH_PATCH = "cost-attribute-refresh-v1"
# Every upsert is a visibility write on the server (and a billed action on Temporal Cloud); the
# exact live cost is in the ``status`` query and the run's cost_update events.
COST_REFRESH = timedelta(seconds=10)
# An agent's answer may take this many rounds of tool calls; one more round fails the step.
MAX_TOOL_ROUNDS = 4
# Runs started on code that has every change above record this one marker instead of one marker
# per change; each marker also costs a TemporalChangeVersion search-attribute write.
ALL_CHANGES_V1 = "graphflow-all-changes-v1"
# Changes after ALL_CHANGES_V1 stand alone (check them with workflow.patched, never _patched):
# team steps before their answer was reviewed (quality.reviewer) and revised (max_revisions)
# like an agent step's. Only runs that reach such a review or revision record this marker.
TEAM_QUALITY_PATCH = "team-quality-v1"
# ... and before a blocked answer to a prompt a person approved failed the step (it went on).
# Only runs whose approved call is blocked record this marker.
APPROVED_PROMPT_BLOCK_PATCH = "approved-prompt-block-v1"
# ... and before a gate on a working step (requires_approval, security, budget, escalation) named
# its approver among the step's agents. Only runs with such a gate record this marker.
GATE_AUTHOR_PATCH = "gate-author-v1"
# ... and before a turn retried after a budget refusal (downgrade, approved overrun) went through
# the security review too. Only runs with such a retry record this marker.
BUDGET_RETRY_SECURITY_PATCH = "budget-retry-security-v1"
# ... and before a skipped step could make a step listed earlier in the template ready (it stayed
# pending). Only runs where that happens record this marker.
SKIP_CASCADE_PATCH = "skip-cascade-v1"
# ... and before security, budget and escalation gates refused change requests (one counted as a
# denial) and SLA escalations left security and budget gates to their people. Only runs with
# such a gate record this marker.
GATE_KIND_PATCH = "gate-kind-v1"
# ... and before a run cancelled, failed before its steps, or failed while other steps waited at
# gates left ConvergioStatus "running" and its gates in ConvergioPendingGates. Only such runs
# record this marker.
CLOSED_STATUS_PATCH = "closed-status-v1"
# ... and before a held or refused call's gate was named after the call's own turn (it took the
# run's latest, shared by steps running side by side).
GATE_TURN_PATCH = "gate-turn-v1"
# ... and before a dependency's answer reached the next step only if it stood (a skipped step's
# rejected answer went on as context). Only runs with such a dependency record this marker.
STANDING_CONTEXT_PATCH = "standing-context-v1"
# ... and before a step's memory followed a person's edits or a rework after an approval step
# (later steps could retrieve the version the person changed). Only such runs record this marker.
MEMORY_REFRESH_PATCH = "memory-refresh-v1"
# ... and before a required section's heading could be numbered ("## 1. Market size") or its name
# end in punctuation ("Risks (top 5)"). Only runs where that changes a quality check record it.
SECTION_MATCH_PATCH = "section-match-v1"
# ... and before an answer held for a person and approved never reached the live stream (its turn
# streams nothing while held). Only runs with such an approval record this marker.
RELEASED_ANSWER_PATCH = "released-answer-v1"
# ... and before a team step run again (changes requested, or a loop) saw why and its previous
# answer; its first speaker is chosen from them. Only runs with such a team step record it.
REVISIT_PATCH = "revisit-context-v1"
# ... and before a condition that cannot be evaluated (division by zero, a comparison of a number
# with a text) failed its step and the run with the run's report; the run failed at once, without
# one. Only runs with such a condition record this marker.
CONDITION_FAILURE_PATCH = "condition-failure-report-v1"


# A timer is always started (a zero wait would start none and change the run's commands).
MIN_TIMER = timedelta(seconds=1)


def _escalation_waits(sla: timedelta, chain: list[EscalationSpec]) -> list[timedelta]:
    """How long before each link of an escalation chain runs, each after the one before it (the
    first counted from the start, so past the SLA by its ``after``)."""
    return [sla + chain[0].after, *(link.after for link in chain[1:])] if chain else []


def _output_problems(text: str, spec: QualitySpec | None) -> list[str]:
    """The quality checks' problems; runs started before SECTION_MATCH_PATCH keep the old
    section matching where it disagrees (their histories revised such answers)."""
    problems = output_problems(text, spec)
    legacy = output_problems(text, spec, legacy=True)
    if problems != legacy and not workflow.patched(SECTION_MATCH_PATCH):
        return legacy
    return problems


def _patched(change: str) -> bool:
    """Is ``change`` (one of those before ALL_CHANGES_V1) in effect for this run: it started with
    all of them (ALL_CHANGES_V1), or it recorded this one (runs started before ALL_CHANGES_V1)."""
    return workflow.patched(ALL_CHANGES_V1) or workflow.patched(change)


# A step's ``sla_warning`` goes out when this share of its SLA has passed.
SLA_WARNING_AT = 0.8


class StepFailed(Exception):
    """A step could not produce an acceptable output; ``on_failure`` decides what follows."""


@workflow.defn(name="GraphFlow")
class GraphFlowWorkflow:
    def __init__(self) -> None:
        self._run: GraphFlowInput | None = None
        self._steps: dict[str, StepState] = {}
        self._turns: list[TurnRecord] = []
        self._audit: list[AuditEntry] = []
        self._pending: dict[str, PendingApproval] = {}
        self._decisions: dict[str, RecordedDecision] = {}
        self._turn_counter = 0
        self._call_turns: dict[str, int] = {}  # step id -> the turn of its latest model call
        self._remembered: dict[str, str] = {}  # step id -> the output last stored as its memory
        self._loop_counts: dict[str, int] = {}
        self._looped_by: dict[str, str] = {}  # step id -> the step whose loop sent the run back to it
        self._change_requests: dict[str, int] = {}
        self._sla_failure: str | None = None
        self._condition_failure: ApplicationError | None = None
        self._findings: list[SecurityFinding] = []
        self._state = "running"
        self._cost_written_at: datetime | None = None  # when the cost attribute was last written
        self._policy: SecurityPolicy | None = None

    # ------------------------------------------------------------------ run
    @workflow.run
    async def run(self, run: GraphFlowInput) -> GraphFlowResult:
        try:
            return await self._run_steps(run)
        except asyncio.CancelledError:
            self._ended_early("canceled")
            raise
        except ApplicationError:
            if self._state == "running":  # failed before the steps ran (e.g. a blocked input)
                self._ended_early("failed")
            raise

    def _ended_early(self, state: Literal["canceled", "failed"]) -> None:
        """The run ends without its steps' ending: its search attributes say so (they said
        ``running``, and any gates it waited at, forever)."""
        if self._searchable() and workflow.patched(CLOSED_STATUS_PATCH):
            self._state = state
            self._set_search_status(state)
            self._clear_pending_gates()

    def _clear_pending_gates(self) -> None:
        self._pending.clear()
        if self._searchable():
            workflow.upsert_search_attributes([PENDING_GATES_KEY.value_set([])])

    async def _run_steps(self, run: GraphFlowInput) -> GraphFlowResult:
        self._run = run
        started_at = workflow.now()
        template = run.template
        self._steps = {
            step.id: StepState(id=step.id, kind=step.kind, title=step.label) for step in template.steps
        }
        if _patched(SECURITY_PATCH):
            await self._screen_inputs()
        running: dict[str, asyncio.Task[None]] = {}
        failure: ApplicationError | None = None
        sla_watch = asyncio.create_task(self._watch_workflow_sla())
        while True:
            self._start_ready_steps(running)
            # A step skipped in that pass may have made a step listed before it ready.
            while self._ready_steps(running) and workflow.patched(SKIP_CASCADE_PATCH):
                self._start_ready_steps(running)
            if self._condition_failure is not None:
                failure = self._condition_failure
                self._stop(running, failure)
                break
            if not running:
                break
            watched = [*running.values(), *([] if sla_watch.done() else [sla_watch])]
            done, _ = await workflow.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for step_id in [sid for sid, task in running.items() if task in done]:
                task = running.pop(step_id)
                error = task.exception()
                if isinstance(error, ApplicationError):
                    failure = failure or error
                elif error is not None:
                    raise error
                else:
                    self._after_step(template.step(step_id))
            failure = failure or self._condition_failure
            if self._sla_failure and failure is None:
                failure = ApplicationError(self._sla_failure, type="SlaBreached", non_retryable=True)
            if failure is not None:
                self._stop(running, failure)
                break
        sla_watch.cancel()
        self._state = "failed" if failure else "completed"
        self._set_search_status(self._state)
        if self._pending and workflow.patched(CLOSED_STATUS_PATCH):  # gates of steps a failure stopped
            self._clear_pending_gates()
        result = self._result(started_at)
        if failure is not None:
            raise ApplicationError(
                f"{failure.message}", result.model_dump(mode="json"), type="StepFailed", non_retryable=True
            )
        return result

    def _stop(self, running: dict[str, asyncio.Task[None]], failure: ApplicationError) -> None:
        """Cancel the steps still at work when the run fails."""
        for step_id, task in running.items():
            task.cancel()
            stopped = self._steps[step_id]  # the report must not show it still at work
            stopped.status, stopped.finished_at = "failed", workflow.now()
            stopped.error = f"stopped: {failure.message}"

    def _is_ready(self, step: StepSpec, running: dict[str, asyncio.Task[None]]) -> bool:
        """Pending, and every dependency has finished."""
        return (
            self._steps[step.id].status == "pending" and step.id not in running
            and all(self._steps[d].status in TERMINAL for d in step.depends_on)
        )

    def _ready_steps(self, running: dict[str, asyncio.Task[None]]) -> list[StepSpec]:
        assert self._run is not None
        return [step for step in self._run.template.steps if self._is_ready(step, running)]

    def _start_ready_steps(self, running: dict[str, asyncio.Task[None]]) -> None:
        """One pass in template order: each ready step is skipped (its condition or joins say so)
        or started. A skip makes the steps after it that depend on it ready in the same pass."""
        assert self._run is not None
        for step in self._run.template.steps:
            if not self._is_ready(step, running):
                continue
            state = self._steps[step.id]
            skip_reason = self._skip_reason(step)
            if state.status == "failed":  # its condition could not be evaluated
                continue
            if skip_reason:
                state.status, state.error = "skipped", skip_reason
                continue
            state.status, state.started_at = "running", workflow.now()
            running[step.id] = asyncio.create_task(self._execute(step))

    def _skip_reason(self, step: StepSpec) -> str | None:
        gate_id = self._denial_paths().get(step.id)
        if gate_id is not None:
            if self._steps[gate_id].status != "denied":
                return f"runs only when {gate_id} is denied"
            if step.when and not self._condition(step, step.when, "when"):
                return f"condition is false: {step.when}"
            return None
        deps = [self._steps[d] for d in step.depends_on]
        completed = [d for d in deps if d.status == "completed"]
        if deps and step.join == "all" and len(completed) < len(deps):
            blocked = ", ".join(d.id for d in deps if d.status != "completed")
            return f"skipped because {blocked} did not complete"
        if deps and step.join == "any" and not completed:
            return "skipped because none of its dependencies completed"
        if step.when and not self._condition(step, step.when, "when"):
            return f"condition is false: {step.when}"
        return None

    def _condition(self, step: StepSpec, expression: str, field: str) -> bool:
        """One of the step's conditions. One that cannot be evaluated fails the step, and the run
        then fails like after any failed step, with its report (False is returned meanwhile)."""
        try:
            return _holds(expression, self._context(), f"steps.{step.id}.{field}")
        except ApplicationError as error:
            if not workflow.patched(CONDITION_FAILURE_PATCH):
                raise  # runs from before the patch failed here, without a report
            state = self._steps[step.id]
            state.status, state.error, state.finished_at = "failed", error.message, workflow.now()
            self._condition_failure = self._condition_failure or ApplicationError(
                f"step '{step.id}' failed: {error.message}", type="StepFailed", non_retryable=True
            )
            return False

    def _denial_paths(self) -> dict[str, str]:
        """Steps a gate's ``on_denied`` names, mapped to that gate."""
        assert self._run is not None
        return {target: step.id for step in self._run.template.steps for target in step.on_denied}

    def _after_step(self, step: StepSpec) -> None:
        """A completed step with a ``loop`` may send the run back to an earlier step."""
        state = self._steps[step.id]
        loop = step.loop
        if loop is None or state.status != "completed":
            return
        count = self._loop_counts.get(step.id, 0)
        if count + 1 >= loop.max_iterations or not self._condition(step, loop.while_, "loop.while"):
            return
        self._loop_counts[step.id] = count + 1
        assert self._run is not None
        again = _between(self._run.template, loop.back_to, step.id)
        for step_id in again:
            self._looped_by[step_id] = step.id
            previous = self._steps[step_id]
            self._steps[step_id] = StepState(
                id=step_id,
                kind=previous.kind,
                title=previous.title,
                iterations=previous.iterations,
                prompt_tokens=previous.prompt_tokens,
                completion_tokens=previous.completion_tokens,
                cost_usd=previous.cost_usd,
                transcript=previous.transcript,
                output=previous.output,  # the previous round stays visible until replaced
            )

    # ------------------------------------------------------------------ steps
    async def _execute(self, step: StepSpec) -> None:
        state = self._steps[step.id]
        state.iterations += 1
        try:
            await self._within_sla(step, self._execute_with_failure_policy(step))
        except StepFailed as exc:
            state.status, state.error, state.finished_at = "failed", str(exc), workflow.now()
            raise ApplicationError(f"step '{step.id}' failed: {exc}", type="StepFailed", non_retryable=True)
        finally:
            self._looped_by.pop(step.id, None)  # this round is done; a later rework is not the loop's
        if state.status == "running":
            state.status = "completed"
        state.finished_at = workflow.now()
        if state.status == "completed" and state.output and step.kind != "approval":
            await self._remember(step)

    async def _execute_with_failure_policy(self, step: StepSpec) -> None:
        policy = step.on_failure
        attempts = policy.max_attempts + 1 if policy.action == "retry" else 1
        last_error = ""
        for attempt in range(attempts):
            try:
                await self._execute_once(step, agent_override=None)
                return
            except StepFailed as exc:
                last_error = str(exc)
                if attempt + 1 < attempts:
                    self._record_failure_handling(step, f"retrying the step after: {exc}")
        state = self._steps[step.id]
        if policy.action == "fallback" and policy.agent:
            self._record_failure_handling(step, f"falling back to {policy.agent} after: {last_error}")
            await self._execute_once(step, agent_override=policy.agent)
        elif policy.action == "skip":
            self._record_failure_handling(step, f"skipped after: {last_error}")
            state.status, state.error = "skipped", last_error
        elif policy.action == "escalate":
            self._record_failure_handling(step, f"escalated to a person after: {last_error}")
            decision = await self._gate(
                step, gate_id=f"{step.id}__escalation", roles=step.approvers or ["operator"],
                kind="escalation",
                under_review=f"Step '{step.label}' failed: {last_error}\n\n{state.output or ''}",
            )
            if decision.outcome != "approve":
                raise StepFailed(f"{last_error} (escalation denied)")
            state.error = last_error
        else:
            raise StepFailed(last_error)

    def _record_failure_handling(self, step: StepSpec, outcome: str) -> None:
        self._audit.append(AuditEntry(at=workflow.now(), kind="failure_handling", gate_id=step.id, outcome=outcome))

    async def _execute_once(self, step: StepSpec, agent_override: str | None) -> None:
        if step.kind == "approval":
            await self._approval_step(step)
            return
        if step.kind == "tool":
            await self._tool_step(step)
        elif step.kind == "team" and agent_override is None:
            await self._team_step(step)
        else:
            await self._agent_step(step, agent_override or step.agent or step.participants[0])
        if step.requires_approval:
            outcome = await self._review_gate(step, reviewed=[step], roles=step.approvers or ["approver"])
            if outcome != "approve":
                self._steps[step.id].status = "denied"

    async def _review_gate(self, gate_step: StepSpec, *, reviewed: list[StepSpec], roles: list[str]) -> str:
        """A person reviews ``reviewed`` outputs: approve (maybe with edits), deny, or send back."""
        while True:
            under_review = "\n\n".join(
                f"## {self._steps[r.id].title}\n\n{self._steps[r.id].output or ''}" for r in reviewed
            )
            decision = await self._gate(gate_step, gate_id=gate_step.id, roles=roles, under_review=under_review)
            if decision.outcome == "approve" and decision.edits is not None and reviewed:
                edited = reviewed[-1]
                self._steps[edited.id].output = decision.edits
                self._audit.append(AuditEntry(
                    at=workflow.now(), kind="decision", gate_id=gate_step.id, actor=decision.approver,
                    role=decision.role, outcome=f"edited the output of {edited.id}",
                ))
            if decision.outcome != "request_changes":
                if decision.outcome == "approve":
                    await self._refresh_memories(reviewed)
                return decision.outcome
            request = f"Changes requested by {decision.approver} ({decision.role}): {decision.comment}"
            for step in reviewed:
                await self._rework(step, request)

    async def _refresh_memories(self, steps: list[StepSpec]) -> None:
        """Store again the memory of a completed step whose output changed after it was remembered
        (edited by a person, or reworked) and was approved: later steps must retrieve the version
        that stands. A step still running is stored when it completes."""
        for step in steps:
            state = self._steps[step.id]
            remembered = self._remembered.get(step.id)
            changed = remembered is not None and remembered != (state.output or "")
            if changed and state.status == "completed" and workflow.patched(MEMORY_REFRESH_PATCH):
                await self._remember(step)

    async def _rework(self, step: StepSpec, request: str) -> None:
        state = self._steps[step.id]
        if step.kind == "team":
            state.revisions += 1
            await self._team_step(step, extra=request)
        elif step.kind == "agent":
            state.revisions += 1
            await self._agent_step(step, state.agents[-1] if state.agents else step.agent or "", extra=request)
        # A tool step is not run again: the same arguments give the same result.

    async def _agent_step(self, step: StepSpec, agent_name: str, extra: str = "") -> None:
        state = self._steps[step.id]
        instruction, context = self._task(step, extra)
        instruction, context = await self._with_knowledge(step, instruction, context)
        feedback = ""
        for revision in range(_max_revisions(step) + 1):
            task = instruction if not feedback else f"{instruction}\n\nRevise your previous answer. {feedback}"
            # A revision sees the answer it revises, as the agent's own earlier reply.
            revised = [TranscriptMessage(source=agent_name, content=state.output or "")] if feedback else []
            output = await self._turn(step, agent_name, task, [*context, *revised], purpose="answer")
            state.output = output.content
            state.agents.append(agent_name)
            problems = _output_problems(output.content, step.quality)
            answer_turns = [self._last_record(step.id).turn]
            problems += await self._review(step, output.content, answer_turns=answer_turns)
            state.quality_notes = problems
            if not problems:
                return
            if revision < _max_revisions(step):
                state.revisions += 1
                feedback = "Fix: " + "; ".join(problems)
        raise StepFailed("quality check failed: " + "; ".join(state.quality_notes))

    async def _review(self, step: StepSpec, draft: str, *, answer_turns: list[int]) -> list[str]:
        """The reviewer's verdict on a draft; its score goes on the ledger rows of the turns that
        wrote it (``answer_turns``, the last one the answer itself), for quality per dollar and
        the agents' records."""
        quality = step.quality
        if quality is None or quality.reviewer is None:
            return []
        reviewer = quality.reviewer
        task = review_instruction(step.label, draft, quality.required_sections)
        review = await self._turn(step, reviewer.agent, task, [], purpose="review")
        score = review_score(review.content)
        self._steps[step.id].score = score
        if score is not None and _patched(QUALITY_PATCH):
            await workflow.execute_activity_method(
                QualityActivities.record_quality,
                QualityScore(workflow_id=workflow.info().workflow_id, step_id=step.id, turn=answer_turns[-1],
                             also_turns=answer_turns[:-1], score=score),
                summary=f"quality {score:g}/10 · {step.label}",
                start_to_close_timeout=timedelta(seconds=30),
            )
        if score is None:
            return [f"reviewer {reviewer.agent} gave no SCORE"]
        if score < reviewer.threshold:
            return [f"reviewer score {score:g} below {reviewer.threshold:g}: {_review_fixes(review.content)}"]
        return []

    async def _team_step(self, step: StepSpec, extra: str = "") -> None:
        """A team chat whose final answer must pass the step's quality checks: its required
        sections and length, then its reviewer's score; a failing answer sends the team back to
        chat again with the fixes, up to ``max_revisions`` times."""
        state = self._steps[step.id]
        # What every speaker sees before the instruction: the inputs to the chat, then the chat.
        instruction, context = self._task(step, extra)
        instruction, context = await self._with_knowledge(step, instruction, context)
        feedback = ""
        for revision in range(_max_revisions(step) + 1):
            # A revision starts from the answer it revises, as the message of the agent who wrote it.
            author = state.agents[-1] if state.agents else "user"
            revised = [TranscriptMessage(source=author, content=state.output or "")] if feedback else []
            speakers = await self._team_chat(
                step, f"{instruction}\n\n{feedback}" if feedback else instruction, [*context, *revised]
            )
            problems = _output_problems(state.output or "", step.quality)
            if not problems and _reviewed(step) and workflow.patched(TEAM_QUALITY_PATCH):
                # Every agent who spoke wrote the answer: each one's last turn gets the score.
                problems = await self._review(step, state.output or "", answer_turns=list(speakers.values()))
            state.quality_notes = problems
            if not problems or step.quality is None:
                return
            if revision < _max_revisions(step) and workflow.patched(TEAM_QUALITY_PATCH):
                state.revisions += 1
                feedback = "Revise the team's answer. Fix: " + "; ".join(problems)
                continue
            break
        raise StepFailed("team did not reach the quality bar: " + "; ".join(state.quality_notes))

    async def _team_chat(
        self, step: StepSpec, instruction: str, transcript: list[TranscriptMessage]
    ) -> dict[str, int]:
        """A durable group chat: the composite-score selector picks each next speaker. Returns
        who spoke, each with their last turn, the last speaker last."""
        assert self._run is not None
        state = self._steps[step.id]
        members = [self._run.agents[name] for name in step.participants]
        speakers: list[str] = []
        last_turns: dict[str, int] = {}
        for _ in range(step.max_turns):
            chosen = select_speaker(
                members,
                ConversationState(
                    topic=instruction,
                    phase=step.phase,
                    complexity=step.complexity,
                    urgency=step.urgency,
                    speakers=speakers,
                    last_message=transcript[-1].content if transcript else instruction,
                ),
            )
            output = await self._turn(step, chosen.agent, instruction, transcript, purpose="chat")
            speakers.append(chosen.agent)
            last_turns.pop(chosen.agent, None)
            last_turns[chosen.agent] = self._last_record(step.id).turn
            state.agents.append(chosen.agent)
            transcript.append(TranscriptMessage(source=chosen.agent, content=output.content))
            state.transcript = [TranscriptMessage(source="user", content=instruction), *transcript]
            state.output = output.content
            if step.completion_marker in output.content:
                state.output = output.content.replace(step.completion_marker, "").strip()
                break
            if step.quality and not _output_problems(output.content, step.quality) and len(speakers) >= 2:
                break
        return last_turns

    async def _tool_step(self, step: StepSpec) -> None:
        state = self._steps[step.id]
        arguments = render_value(step.arguments, self._context())
        try:
            output = await workflow.execute_activity_method(
                ToolStepActivities.run_tool_step,
                ToolStepInput(workflow_id=workflow.info().workflow_id, step_id=step.id,
                              tool=step.tool or "", arguments=arguments),
                summary=f"tool {step.tool} · {step.label}",
                start_to_close_timeout=step.timeout,
                retry_policy=_retry_policy(step),
            )
        except ActivityError as exc:
            raise StepFailed(root_cause(exc)) from None
        state.output, state.data = output.summary, output.data
        state.agents.append(f"tool:{step.tool}")

    async def _approval_step(self, step: StepSpec) -> None:
        assert self._run is not None
        reviewed = [self._run.template.step(d) for d in step.depends_on if self._steps[d].output is not None]
        outcome = await self._review_gate(step, reviewed=reviewed, roles=step.approvers)
        if outcome != "approve":
            self._steps[step.id].status = "denied"

    # ------------------------------------------------------------------ knowledge
    async def _with_knowledge(
        self, step: StepSpec, instruction: str, context: list[TranscriptMessage]
    ) -> tuple[str, list[TranscriptMessage]]:
        """Retrieve the step's sources (screened by the guardian) and put them before its context."""
        spec = step.knowledge
        if spec is None or not _patched(RAG_PATCH):
            return instruction, context
        assert self._run is not None
        query = render_text(spec.query, self._context()) if spec.query else ""
        if not query.strip():  # no query, or it rendered from empty values: search by the instruction
            query = instruction
        if not query:  # a blank instruction fails its turn (below) with the reason
            raise StepFailed("knowledge retrieval: the instruction rendered empty: nothing to search for")
        try:
            found: KnowledgeContext = await workflow.execute_activity_method(
                KnowledgeActivities.retrieve_knowledge,
                KnowledgeRequest(
                    workflow_id=workflow.info().workflow_id, step_id=step.id, tenant=self._run.tenant,
                    query=query[:2000], top_k=spec.top_k, filters=spec.filters, memories=spec.memories,
                    exclude_steps=list(step.depends_on), max_tokens=spec.max_tokens,
                    security=self._security_policy(),
                ),
                summary=f"knowledge · {step.label}",
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError as exc:
            raise StepFailed(f"knowledge retrieval: {root_cause(exc)}") from None
        self._findings.extend(found.findings)
        self._steps[step.id].sources = found.sources
        if not found.text:
            return instruction, context
        knowledge = TranscriptMessage(source="knowledge", content=found.text)
        return f"{instruction}\n\n{legend(found.sources)}", [knowledge, *context]

    async def _remember(self, step: StepSpec) -> None:
        """A completed step's output becomes a memory later steps of the run can retrieve."""
        assert self._run is not None
        if not any(s.knowledge is not None for s in self._run.template.steps) or not _patched(RAG_PATCH):
            return
        state = self._steps[step.id]
        importance = min(1.0, state.score / 10) if state.score is not None else 0.6
        self._remembered[step.id] = state.output or ""
        try:
            await workflow.execute_activity_method(
                KnowledgeActivities.remember_step,
                MemoryIn(
                    tenant=self._run.tenant, workflow_id=workflow.info().workflow_id, step_id=step.id,
                    agent=state.agents[-1] if state.agents else "", content=state.output or "",
                    importance=importance, metadata={"title": step.label},
                ),
                summary=f"remember · {step.label}",
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError as exc:
            self._record_failure_handling(step, f"output not remembered: {root_cause(exc)}")

    # ------------------------------------------------------------------ model turns
    async def _turn(
        self, step: StepSpec, agent_name: str, task: str, context: list[TranscriptMessage], purpose: str
    ) -> AgentTurnOutput:
        """An agent's answer: one model call, and one more after each round of tools it asks for.
        Every model call and every tool run is its own activity."""
        rounds: list[ToolRound] = []
        output = await self._model_turn(step, agent_name, task, context, purpose, rounds)
        redactions = output.prompt_redactions  # the later calls of this answer redact the same
        while output.tool_calls:
            if len(rounds) == MAX_TOOL_ROUNDS:
                raise StepFailed(f"{agent_name} still asked for tools after {MAX_TOOL_ROUNDS} rounds")
            results = await self._run_tools(step, agent_name, output.tool_calls)
            self._last_record(step.id).tool_results = results
            rounds.append(ToolRound(calls=output.tool_calls, results=results))
            output = await self._model_turn(step, agent_name, task, context, purpose, rounds, redactions)
        return output

    async def _run_tools(
        self, step: StepSpec, agent_name: str, calls: list[ToolCallRequest]
    ) -> list[ToolCallResult]:
        """The tools one model call asked for, run at once, each as its own activity. A call that
        cannot run comes back to the model as an error result (it may correct itself)."""
        assert self._run is not None
        allowed = self._run.agents[agent_name].tools
        return list(await asyncio.gather(*(self._run_tool(step, call, allowed) for call in calls)))

    async def _run_tool(self, step: StepSpec, call: ToolCallRequest, allowed: list[str]) -> ToolCallResult:
        def error(message: str) -> ToolCallResult:
            return ToolCallResult(call_id=call.id, name=call.name, content=f"error: {message}", is_error=True)

        if call.name not in allowed:
            return error(f"'{call.name}' is not one of this agent's tools ({', '.join(allowed) or 'none'})")
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError as exc:
            return error(f"the arguments are not JSON: {exc}")
        if not isinstance(arguments, dict):
            return error("the arguments must be a JSON object")
        try:
            output = await workflow.execute_activity_method(
                ToolStepActivities.run_tool_step,
                ToolStepInput(workflow_id=workflow.info().workflow_id, step_id=step.id, tool=call.name,
                              arguments=arguments),
                summary=f"tool {call.name} · {step.label}",
                start_to_close_timeout=step.timeout,
                retry_policy=_retry_policy(step),
            )
        except ActivityError as exc:
            return error(root_cause(exc))
        state = self._steps[step.id]
        state.data = {**(state.data or {}), call.name: output.data}
        return ToolCallResult(
            call_id=call.id, name=call.name,
            content=f"{output.summary}\n{json.dumps(output.data, sort_keys=True, default=str)}",
        )

    async def _model_turn(
        self, step: StepSpec, agent_name: str, task: str, context: list[TranscriptMessage], purpose: str,
        rounds: list[ToolRound], redactions: list[PromptPart] | None = None,
    ) -> AgentTurnOutput:
        """One model call; a budget refusal is handled by the template's breach policy."""
        assert self._run is not None
        agent = self._run.agents[agent_name]
        model = agent.model or self._run.model
        first = await self._call_model(
            step, agent_name, task, context, purpose, model=model, rounds=rounds, redactions=redactions
        )
        output = await self._security_review(step, first, agent_name, task, context, purpose, model, rounds)
        if output.budget_refused is None:
            return output
        # A retry sends the same prompt: if a person approved it, they approved it for the retry too.
        approved = first.security_hold == "approval"
        retry_redactions = first.prompt_redactions if approved else redactions
        policy = self._run.template.budget
        retried = False
        if policy.on_breach == "downgrade" and policy.downgrade_model:
            self._record_failure_handling(step, f"{output.budget_refused}; retrying on {policy.downgrade_model}")
            output = await self._call_model(
                step, agent_name, task, context, purpose, model=policy.downgrade_model, rounds=rounds,
                redactions=retry_redactions, security_approved=approved,
            )
            retried = True
        elif policy.on_breach == "approval":
            gate_step = step.model_copy(update={"approvers": policy.approvers, "sla": None})
            decision = await self._gate(
                gate_step, gate_id=f"budget_{self._turn_of(step)}", roles=policy.approvers, kind="budget",
                under_review=f"High-cost operation: {output.budget_refused}. "
                f"Approve to let {agent.role} run this turn of '{step.label}' anyway.",
            )
            if decision.outcome == "approve":
                output = await self._call_model(
                    step, agent_name, task, context, purpose, model=model, approved_overrun=True,
                    rounds=rounds, redactions=retry_redactions, security_approved=approved,
                )
                retried = True
        if output.budget_refused is not None:
            raise StepFailed(output.budget_refused)
        acts = output.security_hold is not None or output.output_action in ("approval", "block")
        if retried and acts and workflow.patched(BUDGET_RETRY_SECURITY_PATCH):
            # The retry's answer is screened like any other: blocked, flagged or held.
            output = await self._security_review(
                step, output, agent_name, task, context, purpose, model, rounds
            )
        return output

    async def _security_review(
        self, step: StepSpec, output: AgentTurnOutput, agent_name: str, task: str,
        context: list[TranscriptMessage], purpose: str, model: str | None, rounds: list[ToolRound],
    ) -> AgentTurnOutput:
        """Apply the template's security policy to what screening found in the turn."""
        assert self._run is not None
        spec = self._run.template.security
        reasons = output.finding_reasons()
        if output.security_hold == "block" or output.output_action == "block":
            raise StepFailed(f"security: blocked ({reasons})")
        if output.security_hold == "approval":
            decision = await self._gate(
                step, gate_id=f"security_{self._turn_of(step)}", roles=spec.approvers, kind="security",
                under_review=f"The guardian flagged the instruction or context of '{step.label}': {reasons}\n\n{task}",
            )
            if decision.outcome != "approve":
                raise StepFailed(f"security: instruction not approved ({reasons})")
            # The approved call redacts what screening redacted in the held prompt.
            output = await self._call_model(
                step, agent_name, task, context, purpose, model=model, security_approved=True, rounds=rounds,
                redactions=output.prompt_redactions,
            )
            reasons = output.finding_reasons()  # from here on, what screening found in the answer
            if output.output_action == "block" and workflow.patched(APPROVED_PROMPT_BLOCK_PATCH):
                raise StepFailed(f"security: blocked ({reasons})")
        if output.output_action == "approval":
            decision = await self._gate(
                step, gate_id=f"security_{self._turn_of(step)}", roles=spec.approvers, kind="security",
                under_review=f"The guardian flagged the answer of '{step.label}': {reasons}\n\n"
                + (output.content or "\n".join(call.shown() for call in output.tool_calls)),
            )
            if decision.outcome != "approve":
                raise StepFailed(f"security: answer not approved ({reasons})")
            if output.content and _patched(EVENTS_PATCH) and workflow.patched(RELEASED_ANSWER_PATCH):
                # Viewers of the live stream now see the answer the person let through.
                await self._announce("text_chunk", step.id, agent=agent_name, text=output.content)
        return output

    async def _screen_inputs(self) -> None:
        """Screen the run's text inputs once, at start (all at once); the policy decides what follows."""
        assert self._run is not None
        spec = self._run.template.security
        texts = {name: value for name, value in self._run.inputs.items() if isinstance(value, str) and value.strip()}
        screened_all = await asyncio.gather(*(
            workflow.execute_activity_method(
                SecurityActivities.screen_text,
                ScreenInput(workflow_id=workflow.info().workflow_id, step_id=None, surface="input",
                            tenant=self._run.tenant, text=value, policy=spec.policy()),
                summary=f"security · input {name}",
                start_to_close_timeout=timedelta(seconds=30),
            )
            for name, value in texts.items()
        ))
        for (name, value), screened in zip(texts.items(), screened_all):
            if screened.verdict.decision == "allow":
                continue
            reasons = "; ".join(screened.verdict.reasons[:3])
            self._findings.append(screened.finding("input", None))
            if screened.action == "block":
                raise ApplicationError(f"security: input '{name}' blocked ({reasons})", type="SecurityBlocked",
                                       non_retryable=True)
            if screened.action == "redact" and screened.text_after is not None:
                self._run.inputs[name] = screened.text_after
            if screened.action == "approval":
                gate_step = self._run.template.steps[0].model_copy(update={"sla": None})
                decision = await self._gate(
                    gate_step, gate_id=f"security_input_{name}", roles=spec.approvers, kind="security",
                    under_review=f"The guardian flagged input '{name}': {reasons}\n\n{value}",
                )
                if decision.outcome != "approve":
                    raise ApplicationError(f"security: input '{name}' not approved ({reasons})",
                                           type="SecurityBlocked", non_retryable=True)

    async def _call_model(
        self,
        step: StepSpec,
        agent_name: str,
        task: str,
        context: list[TranscriptMessage],
        purpose: str,
        *,
        model: str | None,
        approved_overrun: bool = False,
        security_approved: bool = False,
        rounds: list[ToolRound],
        redactions: list[PromptPart] | None = None,
    ) -> AgentTurnOutput:
        assert self._run is not None
        agent = self._run.agents[agent_name]
        try:
            request = AgentTurnRequest(
                task=task,
                agent=AgentProfile(name=agent.name, role=agent.role, system_message=agent.system_message),
                model=model,
                tenant=self._run.tenant,
            )
        except ValidationError as exc:  # e.g. an instruction rendered from an empty or huge value
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise StepFailed(f"{agent_name} cannot be asked: {problems}") from None
        self._turn_counter += 1
        turn = self._turn_counter  # steps run concurrently: the counter moves on while this call runs
        self._call_turns[step.id] = turn
        budget = None
        if _patched(BUDGET_PATCH):
            budget = TurnBudget(
                limits=self._run.budget, day=workflow.now().date().isoformat(),
                template=self._run.template.name, approved_overrun=approved_overrun,
            )
        try:
            output = await workflow.execute_activity_method(
                AgentTurnActivities.run_agent_turn,
                AgentTurnInput(
                    workflow_id=workflow.info().workflow_id,
                    step_id=step.id,
                    turn=turn,
                    request=request,
                    context=context,
                    budget=budget,
                    security=self._security_policy(),
                    security_approved=security_approved,
                    run_cost_usd=round(sum(s.cost_usd for s in self._steps.values()), 8),
                    handoff_from=_previous_speaker(context, agent_name, self._run.agents) if purpose == "chat" else None,
                    tools=agent.tools,
                    tool_rounds=rounds,
                    prompt_redactions=redactions or [],
                ),
                summary=f"{agent.role} · {step.label}" + (" · review" if purpose == "review" else ""),
                start_to_close_timeout=step.timeout,
                heartbeat_timeout=step.heartbeat_timeout,
                retry_policy=_retry_policy(step),
            )
        except ActivityError as exc:
            raise StepFailed(f"{agent_name}: {root_cause(exc)}") from None
        self._findings.extend(output.findings)
        if output.budget_refused is not None or output.security_hold is not None:
            return output
        state = self._steps[step.id]
        state.prompt_tokens += output.prompt_tokens
        state.completion_tokens += output.completion_tokens
        state.cost_usd += output.cost_usd
        self._turns.append(
            TurnRecord(
                turn=turn, step_id=step.id, agent=agent_name, model=output.model,
                content=output.content, prompt_tokens=output.prompt_tokens,
                completion_tokens=output.completion_tokens, cost_usd=output.cost_usd,
                purpose=purpose,  # type: ignore[arg-type]
                tool_calls=output.tool_calls,
            )
        )
        self._set_search_cost()
        return output

    # ------------------------------------------------------------------ approvals
    async def _gate(
        self, step: StepSpec, *, gate_id: str, roles: list[str], under_review: str, kind: GateKind = "review"
    ) -> RecordedDecision:
        """Wait for a person's decision on ``gate_id``; a review gate may come back several times
        (changes requested). Other gates take approve or deny."""
        self._decisions.pop(gate_id, None)
        changes_left = step.max_change_requests - self._change_requests.get(gate_id, 0)
        if kind != "review" and changes_left > 0 and workflow.patched(GATE_KIND_PATCH):
            changes_left = 0
        state = self._steps[step.id]
        # The step's SLA runs from its start (that is when escalation begins), not from this gate.
        sla_from = state.started_at or workflow.now()
        self._pending[gate_id] = PendingApproval(
            gate_id=gate_id, step_id=step.id, title=step.label, approvers=list(roles),
            under_review=under_review, requested_at=workflow.now(),
            deadline=sla_from + step.sla if step.sla else None,
            prompt_tokens_so_far=sum(s.prompt_tokens for s in self._steps.values()),
            completion_tokens_so_far=sum(s.completion_tokens for s in self._steps.values()),
            cost_usd_so_far=round(sum(s.cost_usd for s in self._steps.values()), 8),
            change_requests_left=changes_left, kind=kind,
        )
        previous_status = state.status
        state.status = "waiting_approval"
        self._set_pending_gates()
        announce = _patched(EVENTS_PATCH)
        if announce:
            pending = self._pending[gate_id]
            await self._announce(
                "approval_requested", step.id, gate_id=gate_id, title=pending.title, approvers=pending.approvers,
                deadline=pending.deadline.isoformat() if pending.deadline else None,
                cost_usd_so_far=pending.cost_usd_so_far, change_requests_left=pending.change_requests_left,
            )
        await workflow.wait_condition(lambda: gate_id in self._decisions)
        self._pending.pop(gate_id, None)
        self._set_pending_gates()
        state.status = previous_status
        decision = self._decisions[gate_id]
        if announce:
            await self._announce(
                "approval_decided", step.id, gate_id=gate_id, outcome=decision.outcome,
                approver=decision.approver, role=decision.role, comment=decision.comment,
            )
        # An approval step's output is the decision; any other step's output stays its agents'
        # (the decision is in the audit trail).
        if step.kind == "approval" or not workflow.patched(GATE_AUTHOR_PATCH):
            state.agents.append(f"{decision.approver} ({decision.role})")
        if step.kind == "approval" and decision.outcome != "request_changes":
            verb = {"approve": "Approved", "deny": "Denied"}[decision.outcome]
            state.output = f"{verb} by {decision.approver} ({decision.role})" + (
                f": {decision.comment}" if decision.comment else ""
            )
        return decision

    def _decide(self, outcome: str, payload: Any) -> None:
        """Record a decision, or record why it was ignored; a decision never fails the run."""
        try:
            decision = ApprovalDecision.model_validate(payload)
        except ValidationError as exc:
            self._audit.append(AuditEntry(
                at=workflow.now(), kind="ignored_decision", outcome=f"{outcome} rejected: malformed payload: "
                + "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors()),
            ))
            return
        gate = self._pending.get(decision.gate_id)
        reason = None
        if decision.gate_id in self._decisions:
            reason = "already decided"
        elif gate is None:
            reason = "no such pending gate"
        elif decision.role not in gate.approvers:
            reason = f"role '{decision.role}' may not decide; allowed: {', '.join(gate.approvers)}"
        elif outcome == "request_changes" and gate.change_requests_left <= 0:
            reason = "no change requests left for this gate; approve or deny"
        elif decision.reviewed_at is not None and not same_round(decision.reviewed_at, gate.requested_at):
            reason = (f"the gate reopened at {gate.requested_at.isoformat()} after a change request; the "
                      f"decision was for what it held at {decision.reviewed_at.isoformat()}")
        if reason:
            self._audit.append(AuditEntry(
                at=workflow.now(), kind="ignored_decision", gate_id=decision.gate_id, actor=decision.approver,
                role=decision.role, outcome=f"{outcome} ignored: {reason}", comment=decision.comment,
            ))
            return
        if outcome == "request_changes":
            self._change_requests[decision.gate_id] = self._change_requests.get(decision.gate_id, 0) + 1
        self._decisions[decision.gate_id] = RecordedDecision(outcome=outcome, **decision.model_dump())
        outcome_text = {"approve": "approved", "deny": "denied", "request_changes": "changes requested"}[outcome]
        self._audit.append(AuditEntry(
            at=workflow.now(), kind="decision", gate_id=decision.gate_id, actor=decision.approver,
            role=decision.role, outcome=outcome_text, comment=decision.comment,
        ))

    @workflow.signal
    def approve(self, payload: Any) -> None:
        self._decide("approve", payload)

    @workflow.signal
    def deny(self, payload: Any) -> None:
        self._decide("deny", payload)

    @workflow.signal
    def request_changes(self, payload: Any) -> None:
        self._decide("request_changes", payload)

    # ------------------------------------------------------------------ SLAs
    async def _within_sla(self, step: StepSpec, work: Any) -> None:
        """Run ``work``; past the step's SLA, run its escalation chain link by link (an empty
        chain: the SLA only warns)."""
        task = asyncio.ensure_future(work)
        if step.sla is None or not _patched(SLA_PATCH):
            await task
            return
        waits = _escalation_waits(step.sla, step.escalation)
        if _patched(EVENTS_PATCH):
            warn_after = step.sla * SLA_WARNING_AT
            await workflow.wait([task], timeout=warn_after.total_seconds())
            if task.done():
                await task
                return
            await self._announce(
                "sla_warning", step.id, step=step.label, sla_s=step.sla.total_seconds(),
                remaining_s=(step.sla - warn_after).total_seconds(),
            )
            if waits:
                waits[0] -= warn_after
        for link, wait in zip(step.escalation, waits):
            if wait.total_seconds() > 0:
                await workflow.wait([task], timeout=wait.total_seconds())
            if task.done():
                break
            await self._escalate(link, f"SLA of {_human(step.sla)} for '{step.label}' breached", step.id, task)
        await task

    async def _announce(self, kind: str, step_id: str, agent: str = "workflow", **data: Any) -> None:
        """Put a workflow event on the run's stream; events are a view, so a failure is logged only."""
        try:
            await workflow.execute_activity_method(
                NotificationActivities.publish_run_event,
                RunEvent(
                    workflow_id=workflow.info().workflow_id, step_id=step_id, agent=agent, data=data,
                    type=kind,  # type: ignore[arg-type]
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError as exc:
            workflow.logger.warning("%s event not published: %s", kind, root_cause(exc))

    async def _watch_workflow_sla(self) -> None:
        """The whole run's SLA; a breach runs the template's workflow-level chain."""
        assert self._run is not None
        sla = self._run.template.sla
        if sla.total is None or not _patched(SLA_PATCH):
            return
        chain = sla.escalation
        waits = _escalation_waits(sla.total, chain)
        if waits:  # the run's clock started with the run, before its inputs were screened
            waits[0] = max(waits[0] - (workflow.now() - workflow.info().workflow_start_time), MIN_TIMER)
        for link, wait in zip(chain, waits):
            await workflow.sleep(wait)
            await self._escalate(link, f"SLA of {_human(sla.total)} for the whole run breached", None, None)

    async def _escalate(self, link: EscalationSpec, reason: str, step_id: str | None, task: Any) -> None:
        gates = [g for g in self._pending.values() if step_id is None or g.step_id == step_id]
        # A deadline never decides or reassigns what the guardian or the budget asks a person.
        guarded = {g.gate_id for g in gates if g.kind in ("security", "budget")}
        if link.action in ("reassign", "auto_decide") and guarded and workflow.patched(GATE_KIND_PATCH):
            gates = [g for g in gates if g.gate_id not in guarded]
        if link.action == "notify":
            outcome = f"{reason}: notified"
            await workflow.execute_activity_method(
                NotificationActivities.notify_escalation,
                EscalationNotice(workflow_id=workflow.info().workflow_id, step_id=step_id, reason=reason,
                                 pending_gates=[g.gate_id for g in gates]),
                summary=f"notify · {reason}"[:200],
                start_to_close_timeout=timedelta(seconds=30),
            )
        elif link.action == "reassign":
            for gate in gates:
                gate.approvers = list(link.to)
            outcome = f"{reason}: reassigned {', '.join(g.gate_id for g in gates) or 'no pending gate'} to {', '.join(link.to)}"
        elif link.action == "auto_decide":
            assert link.decision is not None
            for gate in gates:
                self._decisions[gate.gate_id] = RecordedDecision(
                    outcome=link.decision, gate_id=gate.gate_id, approver="sla-escalation", role="system",
                    comment=reason,
                )
            outcome = f"{reason}: auto-{link.decision} {', '.join(g.gate_id for g in gates) or 'no pending gate'}"
        else:
            outcome = f"{reason}: failing the run"
            self._sla_failure = outcome
            if task is not None:
                task.cancel()
        self._audit.append(AuditEntry(
            at=workflow.now(), kind="escalation", gate_id=step_id, actor="sla-escalation", role="system",
            outcome=outcome,
        ))
        if link.action == "fail" and task is not None:
            raise StepFailed(outcome)

    @workflow.query
    def status(self) -> RunStatus:
        assert self._run is not None
        return RunStatus(
            template=self._run.template.name,
            version=self._run.template.version,
            state=self._state,  # type: ignore[arg-type]
            steps=list(self._steps.values()),
            pending_approvals=list(self._pending.values()),
            prompt_tokens=sum(s.prompt_tokens for s in self._steps.values()),
            completion_tokens=sum(s.completion_tokens for s in self._steps.values()),
            cost_usd=round(sum(s.cost_usd for s in self._steps.values()), 8),
            started_at=workflow.info().start_time,
            audit=list(self._audit),
        )

    @workflow.query
    def pending_approvals(self) -> list[PendingApproval]:
        return list(self._pending.values())

    # ------------------------------------------------------------------ helpers
    def _turn_of(self, step: StepSpec) -> int:
        """The turn a step's held or refused call was, to name its gate. Runs recorded before
        GATE_TURN_PATCH named it after the run's latest turn, which another step running at the
        same time may have taken since (the marker is recorded only when the two differ)."""
        turn = self._call_turns.get(step.id, self._turn_counter)
        if turn != self._turn_counter and workflow.patched(GATE_TURN_PATCH):
            return turn
        return self._turn_counter

    def _last_record(self, step_id: str) -> TurnRecord:
        """The latest model turn of a step. Steps run concurrently, so the run's latest turn
        may be another step's; within a step, turns are sequential."""
        return next(record for record in reversed(self._turns) if record.step_id == step_id)

    def _context(self) -> dict[str, Any]:
        assert self._run is not None
        return {
            "inputs": self._run.inputs,
            "steps": {step_id: state.as_context() for step_id, state in self._steps.items()},
        }

    def _task(self, step: StepSpec, change_request: str = "") -> tuple[str, list[TranscriptMessage]]:
        """A working step's instruction and the outputs it builds on. A step that runs again
        because a person asked for changes, or because a loop came back to it, also sees why and
        its previous answer, so that it revises that answer instead of starting over."""
        state = self._steps[step.id]
        instruction = render_text(step.instruction, self._context())
        context = self._dependency_context(step)
        plain = instruction + (f"\n\n{change_request}" if change_request else "")
        looped_by = self._looped_by.get(step.id)
        if not (change_request or looped_by) or not instruction.strip():
            return plain, context  # a blank instruction fails its step, as it did
        # A team's first speaker is chosen from the task and the last message: runs before this
        # chose from the instruction and the change request alone.
        if step.kind == "team" and not workflow.patched(REVISIT_PATCH):
            return plain, context
        reasons = [change_request] if change_request else []
        if looped_by is not None:
            assert self._run is not None
            loop = self._run.template.step(looped_by)
            assert loop.loop is not None
            reasons.append(
                f"This is round {self._loop_counts.get(looped_by, 0) + 1} of a loop: after '{loop.label}' "
                f"the condition `{loop.loop.while_}` held, so the run came back here."
            )
            loop_output = self._steps[looped_by].output
            if looped_by != step.id and looped_by not in step.depends_on and loop_output:
                context.append(TranscriptMessage(source=self._author(looped_by), content=loop_output))
        if state.output:
            context.append(TranscriptMessage(source=self._author(step.id), content=state.output))
            reasons.append("Revise your previous answer (the last message above) accordingly.")
        task = instruction + "\n\n" + "\n".join(reasons)
        return (task if len(task) <= MAX_TASK_CHARS else plain), context

    def _author(self, step_id: str) -> str:
        """Who wrote a step's latest answer (a reviewer's verdict is not an answer)."""
        answers = (r.agent for r in reversed(self._turns) if r.step_id == step_id and r.purpose != "review")
        return _source_name(next(answers, step_id))

    def _dependency_context(self, step: StepSpec) -> list[TranscriptMessage]:
        """Outputs of the steps this one depends on, as messages from who produced them."""
        messages = []
        for dependency in step.depends_on:
            state = self._steps[dependency]
            # Only answers that stood: not a skipped step's failed one, nor one a person denied.
            if not state.output or state.kind == "approval":
                continue
            if state.status != "completed" and workflow.patched(STANDING_CONTEXT_PATCH):
                continue
            source = state.agents[-1] if state.agents else dependency
            messages.append(TranscriptMessage(source=_source_name(source), content=state.output))
        return messages

    @staticmethod
    def _searchable() -> bool:
        """Was the run started with Convergio's search attributes (runs started by hand may not be)?"""
        return workflow.info().typed_search_attributes.get(STATUS_KEY) is not None

    def _set_search_status(self, status: str) -> None:
        if self._searchable():
            workflow.upsert_search_attributes([STATUS_KEY.value_set(status), *self._cost_update(refresh=True)])

    def _set_search_cost(self) -> None:
        """After a turn: the run's cost so far, unless it was written less than COST_REFRESH ago."""
        if self._searchable() and _patched(BUDGET_PATCH):
            update = self._cost_update(refresh=False)
            if update:
                workflow.upsert_search_attributes(update)

    def _set_pending_gates(self) -> None:
        if self._searchable():
            workflow.upsert_search_attributes(
                [PENDING_GATES_KEY.value_set(sorted(self._pending)), *self._cost_update(refresh=True)]
            )

    def _cost_update(self, *, refresh: bool) -> list[SearchAttributeUpdate[Any]]:
        """The cost attribute's update to send now: always after a turn on runs started before
        COST_REFRESH_PATCH; otherwise with the gate and status updates (``refresh``) and after a
        turn once COST_REFRESH has passed since it was last written."""
        if not _patched(COST_REFRESH_PATCH):
            return [] if refresh else [COST_KEY.value_set(self._cost_so_far())]
        now = workflow.now()
        if not refresh and now - (self._cost_written_at or workflow.info().start_time) < COST_REFRESH:
            return []
        self._cost_written_at = now
        return [COST_KEY.value_set(self._cost_so_far())]

    def _security_policy(self) -> SecurityPolicy:
        """The template's screening policy, built once per run (it goes with every turn)."""
        assert self._run is not None
        if self._policy is None:
            self._policy = self._run.template.security.policy()
        return self._policy

    def _cost_so_far(self) -> float:
        return round(sum(s.cost_usd for s in self._steps.values()), 6)

    def _result(self, started_at: Any) -> GraphFlowResult:
        assert self._run is not None
        template = self._run.template
        reports = [_report(self._steps[step.id]) for step in template.steps]
        prompt = sum(r.prompt_tokens for r in reports)
        completion = sum(r.completion_tokens for r in reports)
        workflow_id = workflow.info().workflow_id
        status = "failed" if self._state == "failed" else "completed"
        cost_usd = round(sum(r.cost_usd for r in reports), 8)
        finished_at = workflow.now()
        metrics = measure_success_metrics(template, {
            **self._context(),
            "run": {"status": status, "cost_usd": cost_usd, "duration_s": (finished_at - started_at).total_seconds(),
                    "prompt_tokens": prompt, "completion_tokens": completion},
        })
        return GraphFlowResult(
            workflow_id=workflow_id,
            template=template.name,
            version=template.version,
            status=status,  # type: ignore[arg-type]
            inputs=self._run.inputs,
            steps=reports,
            turns=self._turns,
            audit=self._audit,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost_usd,
            security=self._findings,
            success_metrics=metrics,
            started_at=started_at,
            finished_at=finished_at,
            markdown=render_markdown(
                title=template.description.split(".")[0] or template.name,
                workflow_id=workflow_id, status=status, steps=reports, audit=self._audit,
                prompt_tokens=prompt, completion_tokens=completion,
                cost_usd=sum(r.cost_usd for r in reports), turns=self._turns, metrics=metrics,
            ),
        )


def _between(template: Template, start: str, end: str) -> list[str]:
    """Steps from ``start`` to ``end`` inclusive: the body of a loop."""
    body = {end}
    for step in template.steps:
        if step.id == start or start in ancestors(template, step.id):
            if step.id == end or step.id in ancestors(template, end):
                body.add(step.id)
    return [step.id for step in template.steps if step.id in body]


def _previous_speaker(context: list[TranscriptMessage], agent: str, agents: Any) -> str | None:
    """Who spoke last in a group chat, when it was another agent (a ``handoff`` event)."""
    last = context[-1].source if context else None
    return last if last and last != agent and last in agents else None


def _human(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _holds(expression: str, context: dict[str, Any], where: str) -> bool:
    """Evaluate a template condition; one that cannot be evaluated fails the run, with the reason."""
    try:
        return compile_expression(expression).test(context)
    except ExpressionError as exc:
        raise ApplicationError(f"{where}: {exc}", type="ExpressionError", non_retryable=True) from None


def _max_revisions(step: StepSpec) -> int:
    return step.quality.max_revisions if step.quality else 0


def _reviewed(step: StepSpec) -> bool:
    return step.quality is not None and step.quality.reviewer is not None


def _retry_policy(step: StepSpec) -> RetryPolicy:
    return RetryPolicy(
        maximum_attempts=step.retry.max_attempts,
        initial_interval=step.retry.initial_interval,
        backoff_coefficient=step.retry.backoff,
        maximum_interval=step.retry.max_interval,
        non_retryable_error_types=["ModelConfigError", "ToolInputError", "UnknownToolError"],
    )


def _review_fixes(text: str) -> str:
    """The reviewer's fixes, on one line, to hand back to the author."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fixes = [line for line in lines if not line.upper().startswith(("SCORE", "FIXES:"))]
    return " ".join(fixes)[:500] or "no fixes given"


def _source_name(name: str) -> str:
    """AutoGen message sources must be identifiers."""
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return cleaned or "step"


def _report(state: StepState) -> StepReport:
    duration = (
        (state.finished_at - state.started_at).total_seconds()
        if state.started_at and state.finished_at else None
    )
    return StepReport(
        id=state.id, title=state.title, kind=state.kind, status=state.status, agents=state.agents,
        output=state.output, data=state.data, score=state.score, iterations=state.iterations,
        revisions=state.revisions, prompt_tokens=state.prompt_tokens,
        completion_tokens=state.completion_tokens, cost_usd=round(state.cost_usd, 8),
        started_at=state.started_at, duration_s=duration,
        quality_notes=state.quality_notes, error=state.error, sources=state.sources,
    )
