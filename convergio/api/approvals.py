"""Deciding gates: approve, deny or request changes, as the authenticated caller."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Path, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from temporalio.client import WorkflowExecutionStatus

from convergio.api.auth import Approver
from convergio.api.deps import TemporalDep
from convergio.api.problems import problem_responses
from convergio.api.workflows import WorkflowIdPath, visible_run
from convergio.graphflow.run_models import ApprovalDecision, same_round
from convergio.graphflow.runs import QUERY_TIMEOUT, decide
from convergio.workflows.graphflow import GraphFlowWorkflow

router = APIRouter(tags=["approvals"])


class ApprovalRequest(BaseModel):
    """A person's decision on a gate."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"decision": "approve", "role": "executive", "comment": "Go, but keep Munich small."}
            ]
        },
    )

    decision: Literal["approve", "deny", "request_changes"]
    role: str = Field(
        min_length=1,
        max_length=100,
        examples=["executive"],
        description="The gate role you decide as: one of the gate's `approvers` that your key may act as.",
    )
    approver: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        examples=["ada@example.com"],
        description="Recorded in the audit trail. Unset: your key's name. Only admins may name someone else.",
    )
    comment: str = Field(default="", max_length=10_000)
    edits: str | None = Field(
        default=None,
        max_length=200_000,
        description="approve only: a corrected version of the output under review.",
    )
    reviewed_at: AwareDatetime | None = Field(
        default=None,
        description="The gate's `requested_at` as you saw it (with its time zone; milliseconds suffice). "
        "If the gate reopened since (someone requested changes), the decision is refused with 409: what "
        "you reviewed is not what waits.",
    )


class DecisionAccepted(BaseModel):
    workflow_id: str = Field(examples=["strategic-analysis-5f1c0e9a7b2d4c3e8f10"])
    gate_id: str = Field(examples=["executive_approval"])
    decision: str = Field(examples=["approve"])
    approver: str = Field(examples=["ada@example.com"])


@router.post(
    "/workflows/{workflow_id}/approvals/{gate_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DecisionAccepted,
    summary="Approve, deny or request changes on a pending gate",
    description="Needs role `approver` (or `admin`) and a gate role: `role` must be one of the gate's "
    "`approvers`, and your key must hold it (`approves_as`, or the API role itself; admins may act "
    "as any). 409 when the gate is not pending; 202 means the decision was sent to the run.",
    responses={
        202: {
            "content": {
                "application/json": {
                    "example": {
                        "workflow_id": "strategic-analysis-5f1c0e9a7b2d4c3e8f10",
                        "gate_id": "executive_approval",
                        "decision": "approve",
                        "approver": "ada@example.com",
                    }
                }
            }
        },
        **problem_responses(401, 403, 404, 409, 413, 422, 429, 503),
    },
)
async def decide_gate(
    workflow_id: WorkflowIdPath,
    gate_id: Annotated[
        str, Path(max_length=128, description="The pending gate.", examples=["executive_approval"])
    ],
    principal: Approver,
    temporal: TemporalDep,
    body: Annotated[
        ApprovalRequest,
        Body(
            openapi_examples={
                "approve": {
                    "summary": "Approve",
                    "value": {"decision": "approve", "role": "executive", "comment": "Go"},
                },
                "deny": {
                    "summary": "Deny",
                    "value": {"decision": "deny", "role": "executive", "comment": "Too risky"},
                },
                "request_changes": {
                    "summary": "Send back with a change request",
                    "value": {
                        "decision": "request_changes",
                        "role": "executive",
                        "comment": "Add a cost table.",
                    },
                },
            }
        ),
    ],
) -> DecisionAccepted:
    description = await visible_run(temporal, principal, workflow_id)
    if description.status != WorkflowExecutionStatus.RUNNING:
        ended = description.status.name.lower() if description.status else "closed"
        raise HTTPException(status.HTTP_409_CONFLICT, f"the run is {ended}: no gate of it is pending")
    pending = await temporal.get_workflow_handle_for(GraphFlowWorkflow.run, workflow_id).query(
        GraphFlowWorkflow.pending_approvals, rpc_timeout=QUERY_TIMEOUT
    )
    gate = next((g for g in pending if g.gate_id == gate_id), None)
    if gate is None:
        open_gates = ", ".join(g.gate_id for g in pending) or "none"
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"gate {gate_id!r} is not pending (pending: {open_gates})"
        )
    if body.reviewed_at is not None and not same_round(body.reviewed_at, gate.requested_at):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"gate {gate_id!r} reopened at {gate.requested_at.isoformat()} after a change request; "
            "review what it holds now",
        )
    if body.role not in gate.approvers:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"role {body.role!r} may not decide {gate_id!r}; allowed: {gate.approvers}",
        )
    if not principal.is_admin and body.role not in principal.gate_roles():
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"your key may not decide as {body.role!r}; it may decide as: {sorted(principal.gate_roles())}",
        )
    approver = body.approver or principal.name
    if approver != principal.name and not principal.is_admin:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "you decide as yourself; only admins may name another approver"
        )
    if body.decision == "request_changes" and gate.change_requests_left <= 0:
        why = "no change requests left for"
        if gate.kind != "review":
            why = f"a {gate.kind} gate takes no changes:"
        raise HTTPException(status.HTTP_409_CONFLICT, f"{why} {gate_id!r}; approve or deny")
    if body.edits is not None and body.decision != "approve":
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "edits go with decision 'approve' only")
    if body.edits is not None and gate.kind != "review":
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"edits replace an output under review; {gate_id!r} is a {gate.kind} gate (approve or deny)",
        )
    # The workflow checks reviewed_at again: a change request may land between the query and this.
    decision = ApprovalDecision(
        gate_id=gate_id, approver=approver, role=body.role, comment=body.comment, edits=body.edits,
        reviewed_at=body.reviewed_at,
    )
    await decide(temporal, workflow_id, body.decision, decision)
    return DecisionAccepted(
        workflow_id=workflow_id, gate_id=gate_id, decision=body.decision, approver=approver
    )
