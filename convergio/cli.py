"""The ``convergio`` command line (Typer + Rich)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.table import Table

from convergio.agents.models import ModelConfigError, validate_model_setting
from convergio.contracts import AgentProfile, AgentTurnRequest, AgentTurnResult
from convergio.settings import Settings
from convergio.stack.process import StackError

app = typer.Typer(
    name="convergio",
    help="Business processes as durable multi-agent workflows (AutoGen agents on Temporal).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)

DEFAULT_TASK = (
    "Assess whether Acme Analytics should expand into the German mid-market. "
    "Germany has about 12,000 mid-market manufacturers, and 30% of them already buy analytics software. "
    "Our average contract is worth 40,000 euros a year with a 70% gross margin. "
    "Entering needs a Munich sales office costing 1.2 million euros a year and GDPR-compliant hosting in the EU. "
    "Two local competitors hold most of the market and discount aggressively. "
    "Cover: Market, Financials, Risks, Recommendation."
)


def fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


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
                f"[bold red]error:[/] CONVERGIO_{field.upper()}: {error['msg']}", highlight=False, soft_wrap=True
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
        asyncio.run(main())
    except StackError as exc:
        raise fail(str(exc)) from None


@app.command()
def worker() -> None:
    """Run a worker against the configured Temporal, PostgreSQL and Redis."""
    from convergio.stack.supervisor import install_stop_handlers
    from convergio.workers.worker import run_worker

    settings = load_settings(check_model=True)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await run_worker(settings, stop)

    asyncio.run(main())


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default CONVERGIO_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CONVERGIO_API_PORT).")] = None,
) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    settings = load_settings()
    uvicorn.run(
        "convergio.api.app:app",
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending SQL migrations to CONVERGIO_DATABASE_URL."""
    from convergio.db.migrate import apply_migrations

    settings = load_settings()
    if settings.database_url is None:
        raise fail("CONVERGIO_DATABASE_URL is not set (the embedded database is migrated by `convergio up`)")
    applied = asyncio.run(apply_migrations(settings.database_url))
    console.print(f"applied: {', '.join(applied)}" if applied else "database is up to date")


TaskOption = Annotated[str, typer.Option("--task", "-t", help="What the agent should do.")]


@app.command()
def run(
    task: TaskOption = DEFAULT_TASK,
    agent: Annotated[str, typer.Option(help="Agent name (an identifier).")] = "chief_of_staff",
    role: Annotated[str, typer.Option(help="The agent's role, shown in reports.")] = "Chief of Staff",
    wait: Annotated[bool, typer.Option(help="Wait for the result.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Start a workflow on a running stack (see `convergio up`) and print its result."""
    from convergio.temporal_client import connect_temporal
    from convergio.workflow_runs import start_agent_turn

    settings = load_settings()
    request = _request_or_exit(task, agent, role)

    async def main() -> None:
        try:
            client = await connect_temporal(settings)
        except RuntimeError as exc:
            raise fail(
                f"cannot reach Temporal at {settings.effective_temporal_address} ({exc}); "
                "start the stack with `convergio up` or set CONVERGIO_TEMPORAL_ADDRESS"
            ) from None
        started = await start_agent_turn(client, settings, request)
        if not wait:
            console.print(started.model_dump_json(indent=2) if as_json else f"started {started.workflow_id}")
            return
        with console.status(f"Running {started.workflow_id}…"):
            result = await client.get_workflow_handle(started.workflow_id, result_type=AgentTurnResult).result()
        print_result(result, started.temporal_ui_url, as_json)

    asyncio.run(main())


@app.command()
def demo(
    task: TaskOption = DEFAULT_TASK,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """The main job: start the embedded stack, run a workflow to completion, print the result."""
    from convergio.demo import run_demo

    settings = load_settings(check_model=True)
    request = _request_or_exit(task, "chief_of_staff", "Chief of Staff")
    try:
        result, ui_url = asyncio.run(run_demo(settings, request, lambda part: err_console.log(f"starting {part}")))
    except StackError as exc:
        raise fail(str(exc)) from None
    print_result(result, ui_url, as_json)
    err_console.print(
        "The run is kept in Temporal's database: `.venv/bin/convergio up` serves the Web UI at the link above."
    )


def _request_or_exit(task: str, agent: str, role: str) -> AgentTurnRequest:
    try:
        return AgentTurnRequest(task=task, agent=AgentProfile(name=agent, role=role))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise fail(f"{where}: {first['msg']}") from None


def print_result(result: AgentTurnResult, ui_url: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**result.model_dump(mode="json"), "temporal_ui_url": ui_url}, indent=2))
        return
    console.print(Panel(Markdown(result.content), title=f"{result.role} · {result.model}", expand=False))
    console.print(
        f"[bold]workflow[/] {result.workflow_id}  [bold]tokens[/] {result.prompt_tokens} in / "
        f"{result.completion_tokens} out  [bold]finish[/] {result.finish_reason}"
    )
    console.print(f"[bold]Temporal Web UI:[/] {ui_url}", soft_wrap=True)


if __name__ == "__main__":
    app()
