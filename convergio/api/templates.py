"""Templates: the shipped ones, and custom ones a tenant registers (validated, versioned)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Response, status
from pydantic import BaseModel, Field

from convergio.api import template_store
from convergio.api.auth import Operator, Viewer
from convergio.api.deps import CatalogDep, DbDep, RegistryDep, SettingsDep
from convergio.api.model_choice import refuse_unlisted_model
from convergio.api.problems import ProblemError, problem_responses
from convergio.graphflow.loader import parse_template
from convergio.graphflow.template import InputSpec, Template
from convergio.graphflow.validation import TemplateError
from convergio.tools.registry import tool_names

router = APIRouter(tags=["templates"])


class StepSummary(BaseModel):
    id: str
    title: str
    kind: str
    depends_on: list[str]
    agents: list[str]


class TemplateSummary(BaseModel):
    name: str = Field(examples=["strategic-analysis"])
    version: int = Field(examples=[1])
    description: str
    inputs: dict[str, InputSpec]
    steps: list[StepSummary]
    source: Literal["shipped", "custom"] = "shipped"
    tenant: str | None = Field(default=None, description="custom templates: the tenant that owns it.")


class TemplateRegistered(BaseModel):
    name: str = Field(examples=["vendor-review"])
    version: int = Field(examples=[1])
    tenant: str = Field(examples=["acme"])
    status: Literal["created", "unchanged"] = Field(
        description="unchanged: this exact template was registered before."
    )


def summary(
    template: Template, source: Literal["shipped", "custom"] = "shipped", tenant: str | None = None
) -> TemplateSummary:
    return TemplateSummary(
        name=template.name,
        version=template.version,
        description=template.description,
        inputs=template.inputs,
        steps=[
            StepSummary(id=s.id, title=s.label, kind=s.kind, depends_on=s.depends_on, agents=s.agents)
            for s in template.steps
        ],
        source=source,
        tenant=tenant,
    )


TEMPLATES_EXAMPLE = [
    {
        "name": "strategic-analysis",
        "version": 1,
        "description": "Strategic Analysis.",
        "inputs": {
            "company": {
                "type": "string",
                "description": "Who the analysis is for",
                "required": True,
                "default": None,
            }
        },
        "steps": [
            {
                "id": "market_analysis",
                "title": "Market analysis",
                "kind": "agent",
                "depends_on": [],
                "agents": ["market_analyst"],
            }
        ],
        "source": "shipped",
        "tenant": None,
    }
]

CUSTOM_TEMPLATE_EXAMPLE: dict[str, Any] = {
    "name": "vendor-review",
    "version": 1,
    "description": "Review a vendor, then a manager signs off.",
    "inputs": {"vendor": {"type": "string", "required": True}},
    "steps": [
        {"id": "review", "kind": "agent", "agent": "strategic", "instruction": "Assess {inputs.vendor}."},
        {"id": "sign_off", "kind": "approval", "depends_on": ["review"], "approvers": ["approver"]},
    ],
}


@router.get(
    "/templates",
    response_model=list[TemplateSummary],
    summary="Templates that can be started",
    description="The shipped templates and your tenant's custom ones (admins: every tenant's). "
    "Needs role `viewer`.",
    responses={
        200: {"content": {"application/json": {"example": TEMPLATES_EXAMPLE}}},
        **problem_responses(401, 429, 503),
    },
)
async def list_templates(principal: Viewer, registry: RegistryDep, db: DbDep) -> list[TemplateSummary]:
    shipped = [summary(t) for t in registry.all()]
    custom = await template_store.list_templates(db, None if principal.is_admin else principal.tenant)
    return shipped + [summary(s.template, "custom", s.tenant) for s in custom]


@router.post(
    "/templates",
    status_code=status.HTTP_201_CREATED,
    response_model=TemplateRegistered,
    summary="Register a custom template (validated, versioned)",
    description="Validates the template like a shipped one (agents, tools, graph, expressions) and "
    "stores it for your tenant. A name and version is written once: the same content again answers "
    "200 `unchanged`, other content 409 (bump `version`). Names of shipped templates are reserved. "
    "Runs pin the template at start, so a new version never changes a running workflow. "
    "Needs role `operator`.",
    responses={
        201: {
            "content": {
                "application/json": {
                    "example": {"name": "vendor-review", "version": 1, "tenant": "acme", "status": "created"}
                }
            }
        },
        200: {
            "model": TemplateRegistered,
            "description": "The same template was registered before",
            "content": {
                "application/json": {
                    "example": {
                        "name": "vendor-review",
                        "version": 1,
                        "tenant": "acme",
                        "status": "unchanged",
                    }
                }
            },
        },
        **problem_responses(401, 403, 409, 413, 422, 429, 503),
    },
)
async def register_template(
    principal: Operator,
    response: Response,
    settings: SettingsDep,
    db: DbDep,
    catalog: CatalogDep,
    registry: RegistryDep,
    body: Annotated[
        dict[str, Any],
        Body(
            description="A template, as in the shipped YAML files (JSON here).",
            openapi_examples={
                "vendor-review": {"summary": "Agent step and a sign-off", "value": CUSTOM_TEMPLATE_EXAMPLE}
            },
        ),
    ],
) -> TemplateRegistered:
    try:
        template = parse_template(body, agents=catalog.names(), tools=tool_names(), source="template")
    except TemplateError as exc:
        errors = [
            {"loc": ["body", *p.path.split(".")], "msg": p.message, "type": "template"} for p in exc.problems
        ]
        raise ProblemError(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "; ".join(str(p) for p in exc.problems)[:2000],
            errors=errors,
        ) from None
    refuse_unlisted_model(settings, template.budget.downgrade_model, ["body", "budget", "downgrade_model"])
    if template.name in registry.names():
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"'{template.name}' is a shipped template; choose another name"
        )
    try:
        outcome = await template_store.register(db, principal.tenant, template, principal.name)
    except template_store.VersionConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    if outcome == "unchanged":
        response.status_code = status.HTTP_200_OK
    return TemplateRegistered(
        name=template.name, version=template.version, tenant=principal.tenant, status=outcome
    )
