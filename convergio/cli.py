"""The ``convergio`` command line (Typer + Rich)."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import signal
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table
from temporalio.service import RPCError, RPCStatusCode

from convergio.agents.models import ModelConfigError, parse_model_setting, validate_model_setting
from convergio.process_exit import exit_now, exit_status
from convergio.settings import Settings
from convergio.stack.process import StackError

if TYPE_CHECKING:
    from datetime import datetime

    from temporalio.client import Client

    from convergio.graphflow.runs import RunView
    from convergio.temporal_client import TemporalUnreachable

app = typer.Typer(
    name="convergio",
    help="Business processes as durable multi-agent workflows (AutoGen agents on Temporal).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

console = Console()
err_console = Console(stderr=True)


def main() -> None:
    """The ``convergio`` command: ``app``, then an exit that cannot abort (see
    ``convergio.process_exit``)."""
    try:
        app(prog_name="convergio")
        code = 0
    except SystemExit as exit_:
        code = exit_status(exit_.code)
    exit_now(code)


def fail(message: str, code: int = 1) -> typer.Exit:
    # The message is text, not Rich markup: it quotes user input, paths and patterns ("[a-z0-9]").
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


@contextmanager
def temporal_errors(subject: str) -> Iterator[None]:
    """A Temporal RPC error (the run is unknown, or closed between a query and a signal) as one
    line naming ``subject``, not a traceback."""
    try:
        yield
    except RPCError as exc:
        raise fail(f"{subject}: {exc.message}") from None


@contextmanager
def database_errors(settings: Settings, what: str) -> Iterator[None]:
    """A database that does not answer (refused, unknown host, the pool giving up) as one line,
    ``what`` and then where and why with the password masked, not a traceback."""
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        yield
    except (OSError, psycopg.Error, PoolTimeout) as exc:
        raise fail(f"{what} {database_error(settings, exc)}") from None


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def database_error(settings: Settings, exc: BaseException) -> str:
    """Where and why the database failed, for an error line. The password is masked: the URL
    (and psycopg's messages, which can quote the connection string) would otherwise carry it
    into terminals, CI logs and bug reports."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    url = settings.effective_database_url
    text = f"{url}: {type(exc).__name__}: {exc}"
    text = _KEYWORD_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
    try:
        password = str(conninfo_to_dict(url).get("password") or "")
    except Exception:  # noqa: BLE001 - an unparsable URL: the patterns above masked what they could
        password = ""
    for form in {password, quote(password, safe="")} - {""}:
        text = text.replace(form, "***")
    return text


def load_settings(*, check_model: bool = False) -> Settings:
    """Settings from the environment, or a one-line error per bad setting."""
    try:
        settings = Settings()
        if check_model:
            validate_model_setting(settings)
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            err_console.print(
                f"[bold red]error:[/] CONVERGIO_{field.upper()}: {escape(error['msg'])}",
                highlight=False, soft_wrap=True,
            )
        raise typer.Exit(code=2) from None
    except ModelConfigError as exc:
        raise fail(str(exc)) from None
    return settings


@app.command()
def up() -> None:
    """Start the embedded stack, a worker and the API; stop everything on Ctrl-C."""
    from convergio.stack.supervisor import Supervisor, install_stop_handlers

    settings = load_settings(check_model=True)

    async def main() -> None:
        supervisor = Supervisor(settings)
        stop = asyncio.Event()
        install_stop_handlers(stop)
        try:
            with console.status("Starting…") as spinner:
                def progress(part: str) -> None:
                    spinner.update(f"Starting {part}…")
                    console.log(f"starting {part}")

                running = await supervisor.start(progress)
            table = Table(title="Convergio is up", show_header=False, title_justify="left")
            table.add_row("API docs", f"{running.api_url}/docs")
            table.add_row("Health", f"{running.api_url}/healthz")
            table.add_row("Approval inbox", f"{running.api_url}/inbox/")
            table.add_row("API key (admin)", f"{running.api_key}  (in {settings.resolved_data_dir / 'api-key'})")
            table.add_row("Temporal Web UI", running.endpoints.temporal_ui_url or "(external Temporal)")
            table.add_row("Temporal", running.endpoints.temporal_address)
            table.add_row("Data", str(settings.resolved_data_dir))
            table.add_row("Model", settings.model)
            console.print(table)
            console.print("Press Ctrl-C to stop.")
            await supervisor.supervise(stop, lambda text: console.log(f"[yellow]{text}"))
        finally:
            with console.status("Stopping…"):
                supervisor.stop()
            console.print("Stopped; data kept in " + str(settings.resolved_data_dir))

    try:
        with database_errors(settings, "cannot migrate the database at"):  # an external one
            asyncio.run(main())
    except StackError as exc:
        raise fail(str(exc)) from None


@app.command()
def worker() -> None:
    """Run a worker against the configured Temporal, PostgreSQL and Redis."""
    from convergio.stack.supervisor import install_stop_handlers
    from convergio.temporal_client import TemporalUnreachable
    from convergio.workers.worker import run_worker

    settings = load_settings(check_model=True)
    _setup_logging(settings)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await run_worker(settings, stop)

    try:
        with database_errors(settings, "cannot reach the database at"):  # the pool gives up after 30 s
            asyncio.run(main())
    except TemporalUnreachable as exc:  # one line, not the SDK's traceback
        raise temporal_unreachable(exc, SERVER_TEMPORAL_HINT) from None


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default CONVERGIO_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CONVERGIO_API_PORT).")] = None,
) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    settings = load_settings()
    _setup_logging(settings)
    # The app connects to Temporal as it starts, and uvicorn reports a failure there as a traceback:
    # try first, to say it in one line.
    asyncio.run(_connect_or_exit(settings, SERVER_TEMPORAL_HINT))
    uvicorn.run(
        "convergio.api.app:app",
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
        # JSON logs: uvicorn's loggers propagate to our root handler instead of its own.
        **({"log_config": None} if settings.log_format == "json" else {}),
    )


def _setup_logging(settings: Settings) -> None:
    from convergio.observability.logging import setup_logging

    setup_logging(settings)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending SQL migrations to CONVERGIO_DATABASE_URL."""
    from convergio.db.migrate import apply_migrations

    settings = load_settings()
    if settings.database_url is None:
        raise fail("CONVERGIO_DATABASE_URL is not set (the embedded database is migrated by `convergio up`)")
    with database_errors(settings, "cannot migrate the database at"):
        applied = asyncio.run(apply_migrations(settings.database_url))
    console.print(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who holds the key (recorded as the actor).")],
    role: Annotated[str, typer.Option(help="viewer | operator | approver | admin.")] = "viewer",
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for.")] = "default",
    approves_as: Annotated[
        list[str], typer.Option("--approves-as", help="A gate role the holder may decide as; repeatable.")
    ] = [],  # noqa: B006 - Typer reads the default
) -> None:
    """Make a new API key: prints the key once, and the CONVERGIO_API_KEYS entry (its SHA-256 only)."""
    from convergio.api.auth import hash_key, new_key
    from convergio.settings import ApiKeyEntry

    key = new_key()
    try:
        entry = ApiKeyEntry(name=name, role=role, tenant=tenant, approves_as=approves_as, sha256=hash_key(key))  # type: ignore[arg-type]
    except ValidationError as exc:
        raise fail("; ".join(f"--{'-'.join(map(str, e['loc'])) or 'key'}: {e['msg']}" for e in exc.errors())) from None
    err_console.print("The key is shown once; the server keeps only its SHA-256. Add the entry to CONVERGIO_API_KEYS:")
    console.print(key, highlight=False, soft_wrap=True)
    console.print(entry.model_dump_json(exclude_none=True), highlight=False, soft_wrap=True)


def parse_inputs(
    pairs: list[str], inputs_file: Path | None, string_inputs: Collection[str] = ()
) -> dict[str, Any]:
    """``--input key=value`` pairs over an inputs file. A value is parsed as JSON when it is JSON,
    except for the ``string_inputs`` (the template's text inputs): `company=1893` stays a text."""
    inputs: dict[str, Any] = {}
    if inputs_file is not None:
        try:
            loaded = json.loads(inputs_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise fail(f"--inputs-file {inputs_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise fail(f"--inputs-file {inputs_file}: must hold a JSON object")
        inputs.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--input {pair!r}: expected key=value")
        if key.strip() in string_inputs:
            inputs[key.strip()] = value
            continue
        try:
            inputs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            inputs[key.strip()] = value
    return inputs


def string_inputs(template: str, version: int | None = None) -> set[str]:
    """The names of the shipped template's text inputs (none when there is no such template: the
    run's own look-up then says so)."""
    from convergio.graphflow.loader import default_registry

    try:
        chosen = default_registry().get(template, version)
    except KeyError:
        return set()
    return {name for name, spec in chosen.inputs.items() if spec.type == "string"}


InputOption = Annotated[
    list[str], typer.Option(
        "--input", "-i",
        help="An input as key=value; repeatable. Text inputs are taken as written, others as JSON.",
    )
]
InputsFileOption = Annotated[Path | None, typer.Option(help="A JSON file with the inputs.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Model for every agent, in CONVERGIO_MODEL syntax (e.g. local, openai:gpt-4o-mini)."),
]


@app.command()
def run(
    template: Annotated[str, typer.Argument(help="Template name, e.g. strategic-analysis.")],
    inputs: InputOption = [],  # noqa: B006 - Typer reads the default
    inputs_file: InputsFileOption = None,
    version: Annotated[int | None, typer.Option(help="Template version (default: latest).")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the run until it ends.")] = True,
    as_json: JsonOption = False,
    model: ModelOption = None,
) -> None:
    """Start a template run on a running stack (see `convergio up`); with --wait (the default), follow
    it until it closes and exit 0 only if it completed."""
    from convergio.agents.catalog import default_catalog
    from convergio.graphflow.loader import InputError, default_registry
    from convergio.graphflow.runs import build_run_input, start_template_run

    settings = load_settings()
    given = parse_inputs(inputs, inputs_file, string_inputs(template, version))
    try:
        chosen = default_registry().get(template, version)
        if model is not None:
            parse_model_setting(model, "--model")  # a typo fails here, not in the worker
        run_input = build_run_input(chosen, given, default_catalog(), tenant="default", model=model, settings=settings)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None
    except (InputError, ModelConfigError) as exc:
        raise fail(str(exc)) from None

    async def main() -> str | None:
        client = await _connect_or_exit(settings)
        run = await _with_performance_records(settings, run_input)
        with temporal_errors(template):
            started = await start_template_run(client, settings, run)
        if not wait:
            # print, not console.print: Rich would wrap the JSON at the terminal width (80 when piped).
            print(started.model_dump_json(indent=2) if as_json else f"started {started.workflow_id}")
            return None
        # With --json, stdout carries the JSON report only; the progress goes to stderr.
        out = err_console if as_json else console
        out.print(f"started [bold]{started.workflow_id}[/] · {started.temporal_ui_url}", soft_wrap=True)
        with temporal_errors(started.workflow_id):
            view = await follow_run(client, settings, started.workflow_id, out=out)
        print_view(view, as_json)
        return view.status

    if asyncio.run(main()) not in (None, "completed"):  # failed, canceled, terminated, timed out
        raise typer.Exit(code=1)


async def follow_run(client: Client, settings: Settings, workflow_id: str, out: Console = console) -> RunView:
    """Print the run's steps and gates as they change until Temporal reports it closed. A status
    query no worker answers in time (none running, or a busy or restarting one) shows no progress:
    that is no end, so the run is asked again, as after a moment Temporal could not be reached."""
    from convergio.graphflow.runs import RunView, read_template_run

    seen: dict[str, str] = {}
    unanswered = False
    while True:
        try:
            view = await read_template_run(client, settings, workflow_id)
        except RPCError as exc:  # Temporal briefly unreachable: the run goes on, so ask again
            if exc.status not in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
                raise
            view = RunView(
                workflow_id=workflow_id, status="running", workflow_type="GraphFlow",
                temporal_ui_url=settings.workflow_ui_url(workflow_id), error=f"Temporal: {exc.message}",
            )
        if view.status != "running":
            return view
        if view.progress is None:
            if not unanswered:
                note = f"{view.error or 'no progress yet'}; still following the run"
                err_console.print(note, style="yellow", markup=False)
            unanswered = True
        else:
            unanswered = False
            for step in view.progress.steps:
                if seen.get(step.id) != step.status:
                    seen[step.id] = step.status
                    print_step(step.title, step.status, step.agents, to=out)
            for gate in view.progress.pending_approvals:
                # requested_at tells a gate reopened after a change request from the one already shown.
                if seen.get(f"gate:{gate.gate_id}") != gate.requested_at.isoformat():
                    seen[f"gate:{gate.gate_id}"] = gate.requested_at.isoformat()
                    out.print(
                        f"[bold yellow]waiting for approval[/] {gate.gate_id} (roles: {', '.join(gate.approvers)}): "
                        f"convergio approve {workflow_id} {gate.gate_id} --role {gate.approvers[0]}",
                        soft_wrap=True,
                    )
        await asyncio.sleep(0.5)


@app.command()
def status(workflow_id: str, as_json: JsonOption = False) -> None:
    """Show a run's progress, or its report when it has ended."""
    from convergio.graphflow.runs import read_template_run

    settings = load_settings()

    async def main() -> None:
        client = await _connect_or_exit(settings)
        with temporal_errors(workflow_id):
            view = await read_template_run(client, settings, workflow_id)
        print_view(view, as_json)

    asyncio.run(main())


_DECISION_HELP = {
    "approve": "Approve a pending approval gate.",
    "deny": "Deny a pending approval gate.",
    "request_changes": "Send the output under review back with a change request (--comment says what to change).",
}


def _decide_command(outcome: Literal["approve", "deny", "request_changes"]) -> Callable[..., None]:
    def command(
        workflow_id: str,
        gate_id: str,
        role: Annotated[str, typer.Option(help="Your role; the gate lists the roles allowed to decide.")],
        approver: Annotated[str, typer.Option(help="Who decides (recorded in the audit trail).")] = getpass.getuser(),
        comment: Annotated[str, typer.Option(help="Why.")] = "",
    ) -> None:
        from convergio.graphflow.run_models import ApprovalDecision
        from convergio.graphflow.runs import QUERY_TIMEOUT, decide, no_worker_answered
        from convergio.workflows.graphflow import GraphFlowWorkflow

        settings = load_settings()
        if outcome == "request_changes" and not comment.strip():
            raise fail("request-changes needs --comment saying what to change")

        async def main() -> None:
            client = await _connect_or_exit(settings)
            handle = client.get_workflow_handle_for(GraphFlowWorkflow.run, workflow_id)
            with temporal_errors(workflow_id):
                try:
                    pending = await handle.query(
                        GraphFlowWorkflow.pending_approvals, rpc_timeout=QUERY_TIMEOUT
                    )
                except RPCError as exc:
                    if not no_worker_answered(exc):
                        raise
                    pending, unanswered = None, exc.message
            if pending is None:  # the signal waits in the run's history for the worker to come back
                err_console.print(
                    f"[yellow]warning:[/] no worker answered ({escape(unanswered)}), so the gate could "
                    "not be checked; the decision is sent and applied when a worker runs again (one the "
                    "gate does not take is recorded in the audit trail and ignored)",
                    highlight=False, soft_wrap=True,
                )
            reviewed_at = None if pending is None else _check_decision(pending, gate_id, role, outcome)
            # reviewed_at: the round just checked, so a change request landing meanwhile voids this decision.
            decision = ApprovalDecision(
                gate_id=gate_id, approver=approver, role=role, comment=comment, reviewed_at=reviewed_at
            )
            with temporal_errors(workflow_id):  # e.g. the run closed since the query
                await decide(client, workflow_id, outcome, decision)
            console.print(f"{outcome.replace('_', ' ')} sent for {workflow_id} / {gate_id}")

        asyncio.run(main())

    command.__doc__ = _DECISION_HELP[outcome]
    return command


def _check_decision(pending: list[Any], gate_id: str, role: str, outcome: str) -> datetime:
    """Refuse, with the reason, what the gate would not take (the workflow checks again); the
    time the gate opened (this round of it)."""
    gate = next((g for g in pending if g.gate_id == gate_id), None)
    if gate is None:
        open_gates = ", ".join(g.gate_id for g in pending) or "none"
        raise fail(f"gate {gate_id!r} is not pending (pending: {open_gates})")
    if role not in gate.approvers:
        raise fail(f"role {role!r} may not decide {gate_id!r}; allowed: {', '.join(gate.approvers)}")
    if outcome == "request_changes" and gate.change_requests_left <= 0:
        raise fail(f"no change requests left for {gate_id!r}; approve or deny")
    return gate.requested_at


app.command("approve")(_decide_command("approve"))
app.command("deny")(_decide_command("deny"))
app.command("request-changes")(_decide_command("request_changes"))


@app.command()
def watch(
    workflow_id: str,
    api_url: Annotated[str | None, typer.Option(help="The API (default http://CONVERGIO_API_HOST:PORT).")] = None,
) -> None:
    """Follow a run live (steps, tokens, cost, last events) until it ends; Ctrl-C stops watching, not the run."""
    try:
        final = _watch(workflow_id, api_url)
    except KeyboardInterrupt:
        err_console.print(f"stopped watching; {workflow_id} goes on")
        raise typer.Exit(code=130) from None
    if final != "completed":
        raise typer.Exit(code=1)


def _watch(workflow_id: str, api_url: str | None) -> str:
    import httpx
    from rich.live import Live

    from convergio.watch import WatchError, WatchState, watch_run

    settings = load_settings()
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
    base = (api_url or f"http://{host}:{settings.api_port}").rstrip("/")
    announced = False

    def announce(state: WatchState) -> None:
        nonlocal announced
        if not announced and state.stream_note == "live":
            announced = True
            err_console.print(f"watching {workflow_id} at {base} (Ctrl-C stops watching, not the run)")

    async def main() -> str:
        async with httpx.AsyncClient(base_url=base, headers=api_headers(settings), timeout=30) as http:
            with Live(console=console, refresh_per_second=4, auto_refresh=False, redirect_stderr=False) as live:
                state = await watch_run(http, workflow_id, live, on_update=announce)
        return state.view.status if state.view else "unknown"

    try:
        return asyncio.run(main())
    except WatchError as exc:
        raise fail(str(exc)) from None


@app.command()
def costs(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    since: Annotated[str | None, typer.Option(help="First UTC day, YYYY-MM-DD.")] = None,
    until: Annotated[str | None, typer.Option(help="Last UTC day, YYYY-MM-DD.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Model spend from the ledger: totals by day, tenant, template, agent and model; trend; advice."""
    from datetime import date

    from convergio.db.pool import connection_pool

    from convergio.costs.ledger import check_report_range, report

    settings = load_settings()
    try:
        first = date.fromisoformat(since) if since else None
        last = date.fromisoformat(until) if until else None
        check_report_range(first, last)
    except ValueError as exc:
        raise fail(f"--since/--until: {exc}") from None

    async def main() -> Any:
        async with connection_pool(settings.effective_database_url, max_size=2) as pool:
            return await report(pool, tenant=tenant, since=first, until=last)

    try:
        result = asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        raise fail(f"cannot read the cost ledger at {database_error(settings, exc)}") from None
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    # Decimal's str() turns to exponent notation below 1e-6 ("$0E-8" for nothing spent): ":f" never does.
    console.print(f"[bold]Total[/] ${result.total_usd:f} over {result.turns} turns "
                  f"({result.prompt_tokens} prompt + {result.completion_tokens} completion tokens)")
    for title, rows in [("tenant", result.by_tenant), ("template", result.by_template),
                        ("agent", result.by_agent), ("model", result.by_model)]:
        table = Table(title, "cost (USD)", "turns", title=f"by {title}", title_justify="left")
        for row in rows:
            table.add_row(str(row.key), f"{row.cost_usd:f}", str(row.turns))
        console.print(table)
    trend = Table("day", "cost (USD)", "turns", "cumulative (USD)", title="daily trend", title_justify="left")
    for point in result.trend:
        trend.add_row(str(point.day), f"{point.cost_usd:f}", str(point.turns), f"{point.cumulative_usd:f}")
    console.print(trend)
    quality = Table("agent", "model", "turns", "avg quality", "quality per dollar",
                    title="quality per dollar", title_justify="left")
    for row in result.efficiency:
        quality.add_row(row.agent, row.model, str(row.turns), _maybe(row.avg_quality, ".1f"),
                        _maybe(row.quality_per_dollar, ",.0f"))
    console.print(quality)
    for advice in result.recommendations:
        console.print(
            f"[green]advice[/] {advice.template} / {advice.step_id} / {advice.agent}: "
            f"{advice.recommended_model} instead of {advice.current_model} saves "
            f"${advice.saving_per_turn_usd:f} a turn ({advice.saving_fraction:.0%}); quality "
            f"{advice.recommended_avg_quality:.1f} vs {advice.current_avg_quality:.1f} over "
            f"{advice.recommended_turns} and {advice.current_turns} scored turns",
            soft_wrap=True, highlight=False,
        )


def _maybe(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@app.command()
def templates() -> None:
    """List the templates that can be run."""
    from convergio.graphflow.loader import default_registry

    table = Table("template", "version", "steps", "description")
    for template in default_registry().all():
        table.add_row(template.name, str(template.version), " → ".join(s.id for s in template.steps), template.description)
    console.print(table)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files (.txt, .md, .html, .pdf) or folders of them.")],
    tenant: Annotated[str, typer.Option(help="Whose knowledge base.")] = "default",
    importance: Annotated[
        float | None, typer.Option(min=0, max=1, help="Weight of these documents in retrieval (default: front matter, else 0.5).")
    ] = None,
) -> None:
    """Add documents to the knowledge base (CONVERGIO_DATABASE_URL, or the running `convergio up`)."""
    import re

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from convergio.rag.embeddings import EmbeddingError
    from convergio.rag.ingest import expand_paths, ingest_into
    from convergio.rag.models import TENANT_PATTERN
    from convergio.rag.readers import missing_path

    settings = load_settings()
    if not re.match(TENANT_PATTERN, tenant):
        raise fail(f"--tenant {tenant!r}: lowercase letters, digits, '-' and '_' only")
    files = expand_paths(paths)
    if not files:
        raise fail("no supported files (.txt, .md, .html, .pdf) under " + ", ".join(map(str, paths)))
    if not any(path.exists() for path in files):  # say so without opening the database first
        for path in files:
            err_console.print(
                f"[bold red]error:[/] {escape(missing_path(path))}", highlight=False, soft_wrap=True
            )
        raise fail(f"{len(files)} of {len(files)} files could not be ingested")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task("ingesting", total=len(files))

        def on_file(path: Path, result: Any, error: str | None) -> None:
            if error:
                progress.console.print(
                    f"[bold red]error:[/] {escape(error)}", highlight=False, soft_wrap=True
                )
            elif result.duplicate:
                progress.console.print(
                    f"[yellow]duplicate[/] {escape(str(path))} (already ingested)", highlight=False
                )
            else:
                progress.console.print(
                    f"[green]added[/] {escape(str(path))}: {result.chunks_added} chunks"
                    + (f", {result.chunks_skipped} already known" if result.chunks_skipped else ""),
                    highlight=False,
                )
            progress.advance(task)

        try:
            with database_errors(settings, "cannot reach the database at"):
                urls = (settings.effective_database_url, settings.effective_redis_url)
                report = asyncio.run(
                    ingest_into(settings, *urls, files, tenant, importance=importance, on_file=on_file)
                )
        except EmbeddingError as exc:
            raise fail(str(exc)) from None
    console.print(f"{report.chunks_added} chunks added from {len(report.results)} files for tenant {tenant}")
    if report.errors:
        raise fail(f"{len(report.errors)} of {len(files)} files could not be ingested")


@app.command()
def demo(
    template: Annotated[str, typer.Option(help="Template to run.")] = "strategic-analysis",
    inputs: InputOption = [],  # noqa: B006 - Typer reads the default
    inputs_file: InputsFileOption = None,
    as_json: JsonOption = False,
    model: ModelOption = None,
) -> None:
    """The main job: start the embedded stack, run a template to completion, print its report."""
    from convergio.demo import DEMO_INPUTS, DEMO_TEMPLATE, run_demo
    from convergio.graphflow.loader import InputError

    settings = load_settings(check_model=model is None)
    if model is not None:
        settings = settings.model_copy(update={"model": model.strip()})
        try:
            validate_model_setting(settings, "--model")  # errors name the flag the user typed
        except ModelConfigError as exc:
            raise fail(str(exc)) from None
    given = parse_inputs(inputs, inputs_file, string_inputs(template)) or (
        DEMO_INPUTS if template == DEMO_TEMPLATE else {}
    )

    def on_gate(gate: Any, decision: Any) -> None:
        err_console.print(
            f"[bold yellow]approval[/] {gate.title}: approved by {decision.approver} as {decision.role} "
            "(the demo decides itself; under `convergio up` a person does)"
        )

    async def main() -> tuple[Any, str]:
        # SIGTERM (like Ctrl-C) cancels the demo, so its servers are stopped on the way out.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_demo(
            settings,
            template_name=template,
            inputs=given,
            progress=lambda part: err_console.log(f"starting {part}"),
            on_step=lambda step: print_step(step.title, step.status, step.agents, to=err_console),
            on_gate=on_gate,
        )

    try:
        with database_errors(settings, "cannot migrate the database at"):  # an external one
            result, ui_url = asyncio.run(main())
    except asyncio.CancelledError:
        raise fail("stopped; the embedded servers were stopped too", code=143) from None
    except StackError as exc:
        raise fail(str(exc)) from None
    except (KeyError, InputError) as exc:
        raise fail(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
    print_result(result, ui_url, as_json)
    from convergio.api.auth import ensure_local_admin_key, local_key_path

    err_console.print(
        "The run is kept in Temporal's database: `.venv/bin/convergio up` serves the Web UI at the link above."
    )
    err_console.print(
        f"API key (admin, local): {ensure_local_admin_key(settings)} (in {local_key_path(settings)})", soft_wrap=True
    )


def api_headers(settings: Settings) -> dict[str, str]:
    """The credentials the CLI sends to the API: CONVERGIO_API_KEY, else the local admin key."""
    from convergio.api.auth import client_key

    key = client_key(settings)
    return {"Authorization": f"Bearer {key}"} if key else {}


CLIENT_TEMPORAL_HINT = "start the stack with `convergio up` or set CONVERGIO_TEMPORAL_ADDRESS"
SERVER_TEMPORAL_HINT = "start Temporal, or set CONVERGIO_TEMPORAL_ADDRESS to where it runs"


def temporal_unreachable(exc: TemporalUnreachable, hint: str) -> typer.Exit:
    """The one error line for a Temporal that does not answer, naming the address tried."""
    return fail(f"cannot reach Temporal at {exc.address} ({exc}); {hint}")


async def _connect_or_exit(settings: Settings, hint: str = CLIENT_TEMPORAL_HINT) -> Any:
    from convergio.temporal_client import TemporalUnreachable, connect_temporal

    try:
        return await connect_temporal(settings)
    except TemporalUnreachable as exc:
        raise temporal_unreachable(exc, hint) from None


async def _with_performance_records(settings: Settings, run: Any) -> Any:
    """The run with its agents' scored records (the API does the same); without a reachable
    database the run starts on the agents' profiles, with a warning."""
    import psycopg

    from convergio.graphflow.runs import with_performance_records

    try:
        async with await psycopg.AsyncConnection.connect(
            settings.effective_database_url, connect_timeout=5, autocommit=True
        ) as conn:
            return await with_performance_records(run, conn)
    except psycopg.Error as exc:
        err_console.print(
            f"agents' performance records not read ({database_error(settings, exc)}; check "
            "CONVERGIO_DATABASE_URL); using their profiles",
            style="yellow", markup=False, highlight=False, soft_wrap=True,
        )
        return run


_STATUS_STYLE = {"completed": "green", "failed": "red", "skipped": "dim", "denied": "red", "running": "cyan",
                 "waiting_approval": "yellow", "pending": "dim"}


def print_step(title: str, state: str, agents: list[str], to: Console | None = None) -> None:
    if state == "pending":
        return
    who = f" · {', '.join(dict.fromkeys(agents))}" if agents else ""
    (to or console).print(f"  [{_STATUS_STYLE.get(state, 'white')}]{state:>16}[/] {title}{who}", highlight=False)


def print_view(view: Any, as_json: bool) -> None:
    if as_json:
        print(view.model_dump_json(indent=2))
        return
    if view.result is not None:
        console.print(Markdown(view.result.markdown))
    if view.progress is not None:
        for step in view.progress.steps:
            print_step(step.title, step.status, step.agents)
    if view.error:
        console.print(f"[bold red]{view.status}:[/] {view.error}", soft_wrap=True)
    console.print(f"[bold]{view.status}[/] · Temporal Web UI: {view.temporal_ui_url}", soft_wrap=True)


def print_result(result: Any, ui_url: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**result.model_dump(mode="json"), "temporal_ui_url": ui_url}, indent=2))
        return
    console.print(Markdown(result.markdown))
    console.print(f"[bold]Temporal Web UI:[/] {ui_url}", soft_wrap=True)


if __name__ == "__main__":
    app()


@app.command()
def stats(
    api_url: Annotated[str | None, typer.Option(help="The API (default http://CONVERGIO_API_HOST:PORT).")] = None,
    days: Annotated[int, typer.Option(help="Cost ledger window, in days.")] = 7,
    as_json: JsonOption = False,
) -> None:
    """P50/P95/P99 of workflow durations, agent response times and costs (from the API's /stats)."""
    import httpx

    settings = load_settings()
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
    url = (api_url or f"http://{host}:{settings.api_port}").rstrip("/") + "/stats"
    try:
        response = httpx.get(url, params={"days": days}, headers=api_headers(settings), timeout=30)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise fail(f"cannot read {url}: {exc}") from None
    try:
        data = response.json()
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    except ValueError as exc:  # e.g. --api-url names another server, which answers HTML
        raise fail(
            f"cannot read {url}: not an answer of the Convergio API ({exc}); check --api-url"
        ) from None
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table("metric", "count", "p50", "p95", "p99", "source", title="Convergio stats", title_justify="left")
    for name, row in data.items():
        cells = ["-" if row.get(q) is None else f"{row[q]:.6g}" for q in ("p50", "p95", "p99")]
        table.add_row(name, str(row["count"]), *cells, row["source"])
    console.print(table)
