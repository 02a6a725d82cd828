"""Observability: one trace from the HTTP request to every agent turn, metrics at /metrics,
percentiles at /stats, JSON logs with trace and workflow ids, dashboards and alerts that only
use exported metrics."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convergio.api.app import create_app
from convergio.observability import tracing
from convergio.observability.logging import setup_logging
from convergio.observability.metrics import METRIC_NAMES, Metrics, percentiles, setup_metrics
from convergio.settings import Settings
from convergio.temporal_client import connect_temporal
from convergio.workers.worker import WorkerResources, build_worker
from tests.graphflow_helpers import STRATEGIC_INPUTS, wait_for_gate

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "convergio.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


@dataclass
class TracedRun:
    spans: list[ReadableSpan]
    metrics_text: str
    stats: dict[str, Any]
    log_lines: list[dict[str, Any]]
    workflow_id: str
    metrics: Metrics


@pytest_asyncio.fixture(scope="module")
async def traced_run(settings: Settings, resources: WorkerResources) -> AsyncIterator[TracedRun]:
    """One strategic-analysis run through the API with tracing into memory; approved via the API."""
    exporter = InMemorySpanExporter()
    provider = tracing.setup_tracing(settings, exporter, set_global=False)
    metrics = setup_metrics(settings)
    json_settings = settings.model_copy(update={"log_format": "json"})
    stream = io.StringIO()
    handler = setup_logging(json_settings, stream=stream)
    client = await connect_temporal(settings, tracer_provider=provider)
    from tests.test_api import auth_settings, headers

    app = create_app(auth_settings(settings), tracer_provider=provider, metrics=metrics)
    try:
        async with app.router.lifespan_context(app), build_worker(client, settings, resources):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers("admin")
            ) as api:
                started = await api.post("/workflows", json={"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS})
                assert started.status_code == 202, started.text
                workflow_id = started.json()["workflow_id"]
                await wait_for_gate(client.get_workflow_handle(workflow_id), "executive_approval")
                scraped_while_pending = (await api.get("/metrics")).text
                decided = await api.post(
                    f"/workflows/{workflow_id}/approvals/executive_approval",
                    json={"decision": "approve", "approver": "Ada", "role": "executive"},
                )
                assert decided.status_code == 202, decided.text
                await client.get_workflow_handle(workflow_id).result()
                metrics_response = await api.get("/metrics")
                stats = (await api.get("/stats")).json()
        assert 'convergio_pending_approvals{' in scraped_while_pending
        backlog = [line for line in scraped_while_pending.splitlines() if line.startswith("convergio_task_queue_backlog{")]
        assert sorted('task_type="activity"' in line for line in backlog) == [False, True]
        assert metrics_response.headers["content-type"].startswith("text/plain")
        lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
        yield TracedRun(list(exporter.get_finished_spans()), metrics_response.text, stats, lines, workflow_id, metrics)
    finally:
        logging.getLogger().removeHandler(handler)
        tracing.reset_tracing()
        provider.shutdown()


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_one_trace_from_request_to_agent_turns(traced_run: TracedRun) -> None:
    spans = traced_run.spans
    by_id = {s.context.span_id: s for s in spans}
    names = sorted({s.name for s in spans})
    http = next((s for s in spans if s.name == "POST /workflows" and s.kind.name == "SERVER"), None)
    start = next((s for s in spans if s.name == "StartWorkflow:GraphFlow"), None)
    assert http is not None and start is not None, "; ".join(names)
    assert http in _ancestors(start, by_id)
    trace_spans = [s for s in spans if s.context.trace_id == http.context.trace_id]
    names = {s.name for s in trace_spans}
    run_workflow = next(s for s in trace_spans if s.name == "RunWorkflow:GraphFlow")
    assert start in _ancestors(run_workflow, by_id)
    activities = [s for s in trace_spans if s.name.startswith("RunActivity:")]
    assert {"RunActivity:run_agent_turn", "RunActivity:run_tool_step"} <= {s.name for s in activities}, names
    for activity_span in activities:
        assert start in _ancestors(activity_span, by_id), activity_span.name

    turns = [s for s in trace_spans if s.name == "agent.turn"]
    assert len(turns) >= 3
    for turn in turns:
        parents = _ancestors(turn, by_id)
        assert parents[0].name == "RunActivity:run_agent_turn"
        assert http in parents
        attributes = dict(turn.attributes or {})
        assert attributes["agent"] and attributes["step"] and attributes["model"] == "offline"
        assert attributes["prompt_tokens"] > 0 and attributes["completion_tokens"] > 0
        assert attributes["cost_usd"] > 0
    # The turns after the approval belong to the same run's trace too.
    assert "final_recommendation" in {dict(t.attributes or {})["step"] for t in turns}
    reserves = [s for s in trace_spans if s.name == "budget.reserve"]
    assert reserves and all(by_id[s.parent.span_id].name == "agent.turn" for s in reserves)
    screens = [s for s in trace_spans if s.name == "security.screen"]
    surfaces = {(s.attributes["surface"], by_id[s.parent.span_id].name) for s in screens}
    assert ("input", "RunActivity:screen_text") in surfaces
    assert {("instruction", "agent.turn"), ("output", "agent.turn")} <= surfaces
    assert all(s.attributes["decision"] in ("allow", "flag", "block") for s in screens)
    assert all(dict(s.attributes or {})["granted"] is True for s in reserves)
    # Retrieval (RAG) is in the same trace: the knowledge steps of the template retrieve context.
    retrievals = [s for s in trace_spans if s.name == "rag.retrieve"]
    assert retrievals, names
    for retrieval in retrievals:
        assert by_id[retrieval.parent.span_id].name.startswith("RunActivity:"), retrieval.name
        attributes = dict(retrieval.attributes or {})
        assert attributes["tenant"] and attributes["top_k"] > 0
        assert "embedding_cache_hits" in attributes  # the query's embedding, from Redis or computed
    # Embeddings missing from the Redis cache are computed inside the retrieval (the query) or the
    # remembering of a step's output; which ones miss depends on what earlier tests cached.
    for embed in (s for s in trace_spans if s.name == "rag.embed"):
        assert by_id[embed.parent.span_id].name in ("rag.retrieve", "rag.remember")


async def test_metrics_endpoint_exports_the_instruments(traced_run: TracedRun) -> None:
    text = traced_run.metrics_text
    for name in (
        "convergio_agent_response_seconds_bucket",
        "convergio_workflow_duration_seconds_bucket",
        "convergio_turn_cost_usd_bucket",
        "convergio_tokens_total",
        "convergio_budget_remaining_usd",
        "convergio_pending_approvals",
    ):
        assert re.search(rf"^{name}\{{", text, re.MULTILINE), name
    assert re.search(r'^convergio_tokens_total\{kind="completion",model="offline"', text, re.MULTILINE)
    assert re.search(r'^convergio_agent_response_seconds_count\{agent="cfo",model="offline"', text, re.MULTILINE)
    assert re.search(
        r'^convergio_workflow_duration_seconds_count\{.*status="completed",workflow_type="GraphFlow"', text,
        re.MULTILINE,
    )


async def test_stats_report_percentiles(traced_run: TracedRun) -> None:
    stats = traced_run.stats
    for name in ("workflow_duration_seconds", "agent_response_seconds", "turn_cost_usd", "tokens_per_turn"):
        row = stats[name]
        assert row["count"] >= 1, name
        assert row["p50"] is not None and row["p50"] <= row["p95"] <= row["p99"], (name, row)
        assert row["source"]
    assert "every worker" in stats["agent_response_seconds"]["source"]


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p95": 95, "p99": 99}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}


async def test_json_log_lines_carry_trace_and_workflow(traced_run: TracedRun) -> None:
    turns = [line for line in traced_run.log_lines if line["message"].startswith("agent turn finished")]
    assert turns, traced_run.log_lines[:5]
    span_trace_ids = {format(s.context.trace_id, "032x") for s in traced_run.spans}
    for line in turns:
        assert line["workflow_id"] == traced_run.workflow_id
        assert line["step_id"] and line["tenant"] == "default" and line["agent"]
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"]) and line["trace_id"] in span_trace_ids
        assert line["level"] == "INFO"


# ---------------------------------------------------------------- dashboards and alerts

_PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "on", "ignoring", "group_left",
    "group_right", "max", "min", "avg", "count", "topk", "bottomk", "clamp_min", "clamp_max", "abs", "and", "or",
    "unless", "offset", "bool", "le", "vector", "scalar", "time", "delta", "max_over_time", "min_over_time",
    "avg_over_time", "absent", "label_replace", "sort_desc", "round",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers not followed by '(' and not keywords, labels or strings."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    names = set()
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr):
        word = match.group(1)
        if word in _PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]?|e\d*", word):
            continue
        names.add(word)
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets") or []:
            if target.get("expr"):
                exprs.append(target["expr"])
    return exprs


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_promql_metric_extraction() -> None:
    assert promql_metrics(
        'histogram_quantile(0.95, sum by (le) (rate(convergio_agent_response_seconds_bucket{job="api"}[5m]))) > 30'
    ) == {"convergio_agent_response_seconds_bucket"}
    assert promql_metrics("sum(rate(a_total[5m])) / clamp_min(sum(rate(b_count[5m])), 1)") == {"a_total", "b_count"}


def test_alert_rules_cover_the_issue() -> None:
    names = {rule["alert"] for rule in _alert_rules()}
    assert {"ConvergioSlaBreach", "ConvergioBudgetBreach", "ConvergioErrorRate", "ConvergioAgentLatencyP95"} <= names
    for rule in _alert_rules():
        assert rule["expr"] and rule["labels"]["severity"] and rule["annotations"]["summary"]


async def test_dashboard_and_alerts_use_only_exported_metrics(traced_run: TracedRun) -> None:
    """Every metric the dashboard and the rules query is in the registry after a run (or is one of
    ours with its Prometheus suffix). The happy run has no error and no SLA breach, and a counter
    without events has no series yet, so record one of each as the activities would."""
    traced_run.metrics.record_error("activity:Test")
    traced_run.metrics.record_sla_breach("step")
    exported: set[str] = set()
    for family in traced_run.metrics.registry.collect():
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
    used = {name for expr in _dashboard_exprs() for name in promql_metrics(expr)}
    used |= {name for rule in _alert_rules() for name in promql_metrics(rule["expr"])}
    assert used, "the dashboard and rules query nothing"
    ours = {name for name in used if name.startswith("convergio_")}
    assert ours == used - {name for name in used if name.startswith("temporal_")}
    missing = sorted(name for name in ours if name not in exported)
    assert not missing, f"not exported: {missing}; exported: {sorted(n for n in exported if n.startswith('convergio'))}"
    assert {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in ours} >= {
        "convergio_agent_response_seconds", "convergio_workflow_duration_seconds", "convergio_sla_breaches_total",
        "convergio_errors_total", "convergio_budget_remaining_usd",
    }
    assert set(METRIC_NAMES) <= {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in exported}


def test_sla_breaches_are_counted_by_scope_not_by_their_free_text_reason() -> None:
    """The reason quotes the tenant's step labels: as a label it made one series per distinct text
    (unbounded cardinality). Breaches are counted by scope, a step's or the whole run's SLA."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    metrics = Metrics(MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)]), registry)

    def series() -> dict[tuple[tuple[str, str], ...], float]:
        return {
            tuple(sorted((k, v) for k, v in sample.labels.items() if not k.startswith("otel_"))): sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "convergio_sla_breaches_total"
        }

    try:
        for scope in ("step", "step", "run"):
            metrics.record_sla_breach(scope)
        assert series() == {(("scope", "step"),): 2, (("scope", "run"),): 1}
    finally:
        metrics.shutdown()


async def test_logs_never_carry_a_model_calls_prompt_or_answer() -> None:
    """AutoGen logs each model call's messages and answer (``autogen_core.events``, INFO): with
    the worker's logging they reached worker.log in full, secrets the guardian withholds from the
    stream and the report included. Convergio's own turn log line stays."""
    from autogen_core.models import UserMessage

    from convergio.agents.offline import OfflineChatCompletionClient

    secret = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd"
    stream = io.StringIO()
    handler = setup_logging(Settings(_env_file=None), stream=stream)  # type: ignore[call-arg]
    try:
        client = OfflineChatCompletionClient()
        messages = [UserMessage(content=f"Use key {secret}. Cover: Summary.", source="user")]
        answer = await client.create(messages)
        streamed = [item async for item in client.create_stream(messages)]
        last = streamed[-1]
        assert secret in str(answer.content) and secret in str(last.content)  # type: ignore[union-attr]
        logging.getLogger("convergio.activities.agent_turn").info("agent turn finished")
        logging.getLogger("autogen_core.events").warning("kept")
    finally:
        logging.getLogger().removeHandler(handler)
    logged = stream.getvalue()
    assert secret not in logged
    assert "agent turn finished" in logged and "kept" in logged
