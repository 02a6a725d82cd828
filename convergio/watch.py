"""``convergio watch``: one run's live view in the terminal, fed by the API's event stream.

The SSE stream (``GET /workflows/{id}/events``) says when something happened; the run's view
(``GET /workflows/{id}``) says where the run stands (steps, tokens, cost, open gates). Each
event refreshes the view, and so does a slow poll, because gates and tool steps change state
without agent events. A dropped stream resumes after the last event id it saw, and a brief API
outage (no connection, 429, 5xx) keeps the last view on screen and retries; only a definitive
answer (401, 403, 404 and other 4xx) ends the watch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from convergio.events import AgentEvent
from convergio.graphflow.runs import RunView

SHOWN_EVENTS = 8
POLL_S = 1.0
MIN_REFRESH_S = 0.25  # a burst of events redraws at once, but asks the API for the view at most this often
RETRY_S = 1.0

_STYLE = {
    "completed": "green",
    "failed": "red",
    "skipped": "dim",
    "denied": "red",
    "running": "cyan",
    "waiting_approval": "yellow",
    "pending": "dim",
    "canceled": "red",
    "terminated": "red",
}


class WatchError(Exception):
    """The run cannot be watched (unknown, not allowed, API unreachable); the message says why."""


class ApiUnavailable(WatchError):
    """The API did not answer this time (no connection, 408, 429, 5xx): worth asking again."""


class ApiUnreachable(ApiUnavailable):
    """No answer at all (connection refused, timed out)."""


def _is_transient(status_code: int) -> bool:
    return status_code in (408, 429) or status_code >= 500


@dataclass
class SseMessage:
    event: str = "message"
    data: str = ""
    id: str | None = None


async def read_sse(lines: AsyncIterator[str]) -> AsyncIterator[SseMessage]:
    """Server-Sent Events from a line iterator (the subset of the spec the API uses)."""
    message, seen = SseMessage(), False
    async for line in lines:
        if not line:
            if seen:
                yield message
            message, seen = SseMessage(), False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            message.data = f"{message.data}\n{value}" if message.data else value
        elif name == "event":
            message.event = value
        elif name == "id":
            message.id = value
        seen = True
    if seen:
        yield message


@dataclass
class WatchState:
    workflow_id: str
    view: RunView | None = None
    events: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=SHOWN_EVENTS))
    event_count: int = 0
    last_event_id: str | None = None
    stream_note: str = "connecting"
    view_note: str | None = None  # why the view shown may be stale
    ended: bool = False

    def add(self, event: AgentEvent) -> None:
        self.event_count += 1
        who = f"{event.step_id} · {event.agent}"
        if event.type == "text_chunk":
            text = str(event.data.get("text", ""))
            if self.events and self.events[-1][0] == "text_chunk" and self.events[-1][1] == who:
                kind, _, before = self.events.pop()
                self.events.append((kind, who, (before + text)[-400:]))
                return
            self.events.append(("text_chunk", who, text))
        elif event.type == "turn_finished":
            tokens = int(event.data.get("prompt_tokens", 0)) + int(event.data.get("completion_tokens", 0))
            self.events.append(
                ("turn_finished", who, f"{tokens} tokens · ${event.data.get('cost_usd', '0')}")
            )
        else:
            details = " · ".join(f"{k}: {v}" for k, v in event.data.items() if not isinstance(v, dict | list))
            self.events.append((event.type, who, details))


def render(state: WatchState) -> RenderableType:
    view = state.view
    if view is None:
        return Text(f"{state.workflow_id}: waiting for the API… {state.view_note or ''}".rstrip())
    progress, result = view.progress, view.result
    cost = progress.cost_usd if progress else result.cost_usd if result else 0.0
    head = Text.assemble(
        (view.workflow_id, "bold"),
        f" · {view.template or view.workflow_type} · ",
        (view.status, _STYLE.get(view.status, "white")),
        f" · ${cost:.6f}",
        f" · {state.event_count} events ({state.stream_note})",
    )
    steps = Table("step", "state", "agents", "tokens", "cost (USD)", title_justify="left", expand=False)
    rows = progress.steps if progress else result.steps if result else []
    for step in rows:
        steps.add_row(
            step.title,
            Text(step.status, style=_STYLE.get(step.status, "white")),
            ", ".join(dict.fromkeys(step.agents)) or "-",
            str(step.prompt_tokens + step.completion_tokens),
            f"{step.cost_usd:.6f}",
        )
    parts: list[RenderableType] = [head]
    if state.view_note:
        parts.append(Text(state.view_note, style="yellow"))
    parts.append(steps)
    for gate in progress.pending_approvals if progress else []:
        deadline = gate.deadline.isoformat(timespec="seconds") if gate.deadline else "none"
        parts.append(
            Text.assemble(
                ("waiting for approval ", "bold yellow"),
                f"{gate.title} (roles: {', '.join(gate.approvers)}; ",
                f"deadline: {deadline}): convergio approve | deny | request-changes {view.workflow_id} {gate.gate_id}",
            )
        )
    if state.events:
        events = Table("event", "step · agent", title="last events", title_justify="left", show_edge=False)
        events.add_column("", no_wrap=True, overflow="ellipsis", max_width=100)
        for kind, who, text in state.events:
            events.add_row(kind, who, " ".join(text.split())[-100:])
        parts.append(events)
    if view.error:
        parts.append(Text(f"{view.status}: {view.error}", style="bold red"))
    parts.append(Text(f"Temporal Web UI: {view.temporal_ui_url}", style="dim"))
    return Group(*parts)


async def fetch_view(http: httpx.AsyncClient, workflow_id: str) -> RunView:
    """The run's view; :class:`ApiUnavailable` when asking again may help, :class:`WatchError`
    when the answer is final (unknown run, key refused)."""
    try:
        response = await http.get(f"/workflows/{workflow_id}")
    except httpx.HTTPError as exc:
        raise ApiUnreachable(f"cannot reach the API at {http.base_url}: {exc}") from None
    if response.status_code != 200:
        error = ApiUnavailable if _is_transient(response.status_code) else WatchError
        raise error(f"{workflow_id}: {response.status_code} {_detail(response)}")
    try:
        return RunView.model_validate_json(response.content)
    except ValidationError as exc:
        raise WatchError(f"{workflow_id}: unexpected answer from the API: {exc}") from None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail") or body.get("title") or body) if isinstance(body, dict) else str(body)


async def watch_run(
    http: httpx.AsyncClient,
    workflow_id: str,
    live: Live,
    *,
    on_update: Callable[[WatchState], None] | None = None,
) -> WatchState:
    """Follow the run until it ends; ``live`` shows ``render(state)`` after every change."""
    state = WatchState(workflow_id)
    changed = asyncio.Event()

    def show() -> None:
        live.update(render(state), refresh=True)
        if on_update is not None:
            on_update(state)

    async def refresh(*, unreachable_is_final: bool = False) -> bool:
        """A fresh view; while the API is unavailable the last one stays, saying why."""
        try:
            state.view = await fetch_view(http, workflow_id)
        except ApiUnreachable as exc:
            if unreachable_is_final:
                raise
            problem: Exception = exc
        except ApiUnavailable as exc:
            problem = exc
        else:
            state.view_note = None
            return True
        state.view_note = f"view not refreshed ({problem}); retrying"
        return False

    async def refresh_until_answered(*, unreachable_is_final: bool = False) -> None:
        while not await refresh(unreachable_is_final=unreachable_is_final):
            show()
            await asyncio.sleep(RETRY_S)

    async def follow() -> None:
        while not state.ended:
            headers = {"Accept": "text/event-stream"}
            if state.last_event_id:
                headers["Last-Event-ID"] = state.last_event_id
            try:
                async with http.stream(
                    "GET",
                    f"/workflows/{workflow_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(10, read=None),
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        error = ApiUnavailable if _is_transient(response.status_code) else WatchError
                        state.stream_note = f"reconnecting: {response.status_code}"
                        raise error(f"{workflow_id}/events: {response.status_code} {_detail(response)}")
                    state.stream_note = "live"
                    async for message in read_sse(response.aiter_lines()):
                        if message.event == "end":
                            state.ended = True
                            break
                        if message.event == "error":
                            state.stream_note = f"reconnecting: {message.data[:100]}"
                            continue
                        if message.id:
                            state.last_event_id = message.id
                        try:
                            state.add(AgentEvent.model_validate_json(message.data))
                        except ValidationError:
                            continue  # an event kind this client does not know: skip it
                        changed.set()
            except httpx.HTTPError as exc:
                state.stream_note = f"reconnecting: {exc.__class__.__name__}"
            except ApiUnavailable:
                pass  # the note says which status; a definitive WatchError ends the watch
            if not state.ended:  # dropped or refused: resume after the last event id, a little later
                changed.set()
                await asyncio.sleep(RETRY_S)
        changed.set()

    # No API at all at the start is most likely a wrong --api-url: that fails at once. An API that
    # answers "busy" (429, 5xx) is waited for, like any outage later on.
    await refresh_until_answered(unreachable_is_final=True)
    stream = asyncio.create_task(follow())
    fetched = time.monotonic()
    try:
        show()
        while not state.ended:
            try:
                await asyncio.wait_for(changed.wait(), timeout=POLL_S)
            except TimeoutError:
                pass
            changed.clear()
            if stream.done():
                stream.result()  # a WatchError from the stream surfaces here
            if time.monotonic() - fetched >= MIN_REFRESH_S:
                await refresh()
                fetched = time.monotonic()
            show()
        # The final view (its status decides the exit code) is worth waiting for.
        await refresh_until_answered()
        state.stream_note = "ended"
        show()
    finally:
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)
    return state
