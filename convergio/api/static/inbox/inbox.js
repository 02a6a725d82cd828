// Convergio approval inbox: plain JavaScript over the public HTTP API, no build step.
"use strict";

const KEY_STORE = "convergio.apiKey";
const APPROVER_STORE = "convergio.approver";
const POLL_MS = 2000;
const MAX_EVENTS = 200;
const LIST_SIZE = 100;

const $ = (id) => document.getElementById(id);
const state = { selected: null, stream: null, runTimer: null, lastEventId: null, loading: false, again: false };

function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      const detail = body.detail ?? body.title ?? body;
      message = typeof detail === "string" ? detail : JSON.stringify(detail);
    } catch (_) { /* not JSON: keep the status line */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

const money = (usd) => (usd == null ? "–" : `$${Number(usd).toFixed(4)}`);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "none");

function relative(iso) {
  if (!iso) return "no deadline";
  const seconds = Math.round((new Date(iso) - Date.now()) / 1000);
  const abs = Math.abs(seconds);
  const span = abs >= 3600 ? `${Math.round(abs / 360) / 10} h` : abs >= 60 ? `${Math.round(abs / 60)} min` : `${abs} s`;
  return `${when(iso)} (${seconds >= 0 ? "in " + span : span + " ago"})`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ---------------------------------------------------------------- identity

function setupIdentity() {
  $("api-key").value = apiKey();
  $("approver").value = localStorage.getItem(APPROVER_STORE) || "";
  $("identity").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(KEY_STORE, $("api-key").value.trim());
    localStorage.setItem(APPROVER_STORE, $("approver").value.trim());
    $("identity-status").textContent = "saved";
    refreshQueue();
    if (state.selected) openRun(state.selected);
  });
}

// ---------------------------------------------------------------- the queue

async function refreshQueue() {
  try {
    const page = await api(`/workflows?page_size=${LIST_SIZE}`);
    // Newest first from the API; runs waiting for a decision go to the top.
    const runs = [...page.items].sort((a, b) => (b.pending_gates.length > 0) - (a.pending_gates.length > 0));
    renderQueue(runs);
    const waiting = runs.filter((run) => run.pending_gates.length).length;
    $("queue-status").textContent = `${waiting} waiting · updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    $("queue-status").textContent = error.status === 401 || error.status === 403
      ? `not allowed (${error.message}): enter an API key above`
      : `cannot load runs: ${error.message}`;
  }
}

function renderQueue(runs) {
  const list = $("runs");
  list.replaceChildren(...runs.map((run) => {
    const gates = run.pending_gates.length;
    const button = el("button", {
      type: "button",
      class: "run-item" + (run.workflow_id === state.selected ? " selected" : ""),
      "data-workflow-id": run.workflow_id,
      "aria-current": run.workflow_id === state.selected ? "true" : "false",
      onclick: () => selectRun(run.workflow_id),
    },
      el("span", { class: "run-template" }, run.template || "workflow"),
      el("span", { class: `badge ${gates ? "waiting" : run.status}` }, gates ? `${gates} to approve` : run.status),
      el("span", { class: "run-id" }, run.workflow_id),
      el("span", { class: "muted" }, `${money(run.cost_usd)} · started ${when(run.started_at)}`),
    );
    return el("li", {}, button);
  }));
  if (!runs.length) list.append(el("li", { class: "muted" }, "No runs yet. Start one with POST /workflows or `convergio run`."));
}

// ---------------------------------------------------------------- one run

function selectRun(workflowId) {
  if (location.hash !== `#run=${encodeURIComponent(workflowId)}`) {
    location.hash = `run=${encodeURIComponent(workflowId)}`;  // hashchange opens it
  } else {
    openRun(workflowId);
  }
}

function openRun(workflowId) {
  const changed = state.selected !== workflowId;
  state.selected = workflowId;
  for (const item of document.querySelectorAll(".run-item")) {
    const on = item.dataset.workflowId === workflowId;
    item.classList.toggle("selected", on);
    item.setAttribute("aria-current", on ? "true" : "false");
  }
  if (changed) {
    $("gates").replaceChildren();
    $("events").replaceChildren();
    $("steps").replaceChildren();
    $("report").hidden = true;
    $("detail").focus();
    startStream(workflowId);
  }
  $("empty").hidden = true;
  $("run").hidden = false;
  scheduleRefresh(0);
}

// One timer and at most one request in flight, however many events ask for a refresh.
function scheduleRefresh(delay) {
  clearTimeout(state.runTimer);
  state.runTimer = setTimeout(refreshRun, delay);
}

async function refreshRun() {
  const workflowId = state.selected;
  if (!workflowId) return;
  if (state.loading) {
    state.again = true;
    return;
  }
  state.loading = true;
  state.again = false;
  let running = true;
  try {
    const view = await api(`/workflows/${encodeURIComponent(workflowId)}`);
    if (workflowId === state.selected) renderRun(view);
    running = view.status === "running";
    if (!running) refreshQueue();
  } catch (error) {
    $("run-error").hidden = false;
    $("run-error").textContent = `cannot load ${workflowId}: ${error.message}`;
  } finally {
    state.loading = false;
  }
  if (workflowId !== state.selected) scheduleRefresh(0);  // another run was opened meanwhile
  else if (state.again) scheduleRefresh(200);
  else if (running) scheduleRefresh(POLL_MS);
  // ended: nothing more will change
}

function renderRun(view) {
  const progress = view.progress;
  const result = view.result;
  $("run-title").textContent = `${view.template || view.workflow_type}`;
  $("run-id").textContent = view.workflow_id;
  $("run-status").textContent = view.status;
  $("run-status").className = `badge ${view.status}`;
  const cost = progress ? progress.cost_usd : result ? result.cost_usd : null;
  $("run-cost").textContent = `${view.status === "running" ? "cost so far" : "cost"} ${money(cost)}`;
  $("run-ui").href = view.temporal_ui_url;
  $("run-error").hidden = !view.error;
  $("run-error").textContent = view.error || "";
  renderGates(progress ? progress.pending_approvals : []);
  const steps = progress ? progress.steps : result ? result.steps : [];
  $("steps").replaceChildren(...steps.map((step) => el("tr", {},
    el("th", { scope: "row" }, step.title),
    el("td", {}, el("span", { class: `badge ${step.status}` }, step.status.replace("_", " "))),
    el("td", {}, [...new Set(step.agents)].join(", ") || "–"),
    el("td", { class: "num" }, String(step.prompt_tokens + step.completion_tokens)),
    el("td", { class: "num" }, Number(step.cost_usd || 0).toFixed(4)),
  )));
  const audit = result ? result.audit.filter((entry) => entry.kind === "decision" || entry.kind === "escalation") : [];
  $("audit-section").hidden = audit.length === 0;
  $("audit").replaceChildren(...audit.map((entry) => el("li", {},
    el("strong", {}, entry.outcome),
    ` by ${entry.actor || "the run"}${entry.role ? ` (${entry.role})` : ""} · ${when(entry.at)}`,
    entry.comment ? el("q", {}, entry.comment) : "",
  )));
  if (result && result.markdown) {
    $("report").hidden = false;
    $("report-text").textContent = result.markdown;
  }
}

// A gate that opens again after a change request is a new request: it gets a fresh card.
const gateKey = (gate) => `${gate.gate_id}@${gate.requested_at}`;

function renderGates(pending) {
  const container = $("gates");
  const open = new Set(pending.map(gateKey));
  for (const card of [...container.children]) {
    if (!open.has(card.dataset.key)) card.remove();
  }
  for (const gate of pending) {
    let card = container.querySelector(`[data-key="${CSS.escape(gateKey(gate))}"]`);
    if (!card) {
      card = gateCard(gate);
      container.append(card);
    }
    // Facts change while the card is open; the form the person is typing in does not.
    card.querySelector(".gate-deadline").textContent = relative(gate.deadline);
    card.querySelector(".gate-cost").textContent = money(gate.cost_usd_so_far);
    card.querySelector(".gate-tokens").textContent =
      `${gate.prompt_tokens_so_far} prompt + ${gate.completion_tokens_so_far} completion`;
    card.querySelector(".gate-requested").textContent = when(gate.requested_at);
    card.querySelector(".gate-output").textContent = gate.under_review;
    card.querySelector("button.changes").disabled = gate.change_requests_left <= 0;
    card.querySelector("button.changes").title = `${gate.change_requests_left} change request(s) left`;
  }
}

function gateCard(gate) {
  const card = $("gate-template").content.firstElementChild.cloneNode(true);
  card.dataset.gateId = gate.gate_id;
  card.dataset.key = gateKey(gate);
  card.querySelector(".gate-title").textContent = `Waiting for approval: ${gate.title}`;
  const select = card.querySelector("select");
  for (const role of gate.approvers) select.append(el("option", { value: role }, role));
  const form = card.querySelector("form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    decide(gate, form, event.submitter ? event.submitter.value : "approve");
  });
  return card;
}

async function decide(gate, form, decision) {
  const status = form.querySelector(".decide-status");
  // reviewed_at: if the gate reopened since this card was drawn, the API refuses the decision.
  const body = {
    decision, role: form.elements.role.value, comment: form.elements.comment.value,
    reviewed_at: gate.requested_at,
  };
  // Unset, the API records the key's own name; only admin keys may name someone else.
  const approver = (localStorage.getItem(APPROVER_STORE) || "").trim();
  if (approver) body.approver = approver;
  for (const button of form.querySelectorAll("button")) button.disabled = true;
  status.textContent = "sending…";
  try {
    await api(`/workflows/${encodeURIComponent(state.selected)}/approvals/${encodeURIComponent(gate.gate_id)}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    status.textContent = { approve: "Approved.", deny: "Denied.", request_changes: "Changes requested." }[decision];
    form.closest(".gate").classList.add("decided");
    scheduleRefresh(300);
  } catch (error) {
    status.textContent = `Not sent: ${error.message}`;
    for (const button of form.querySelectorAll("button")) button.disabled = false;
  }
}

// ---------------------------------------------------------------- live events
// fetch() instead of EventSource: EventSource cannot send the API key header.

function startStream(workflowId) {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  state.lastEventId = null;
  followEvents(workflowId, controller.signal);
}

async function followEvents(workflowId, signal) {
  let retry = 1000;
  while (!signal.aborted) {
    try {
      $("stream-status").textContent = "connected";
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await fetch(`/workflows/${encodeURIComponent(workflowId)}/events`, { headers, signal });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const ended = await readEvents(response.body, signal);
      if (ended) {
        $("stream-status").textContent = "run ended";
        return;
      }
    } catch (error) {
      if (signal.aborted) return;
      $("stream-status").textContent = `reconnecting (${error.message})`;
    }
    await new Promise((resolve) => setTimeout(resolve, retry));
    retry = Math.min(retry * 2, 15000);
  }
}

// Splits the text of an SSE stream, chunk by chunk, into its blocks (the text between blank lines);
// lines may end in "\r\n", "\n" or "\r". A chunk can end between the "\r" and the "\n" of one
// "\r\n": that "\r" waits for the next chunk, or it would read as a line end of its own and the
// "\n" after it as a second one, cutting one event in two.
function sseSplitter() {
  let buffer = "";
  let heldCR = false;
  return (chunk) => {
    let text = (heldCR ? "\r" : "") + chunk;
    heldCR = text.endsWith("\r");
    if (heldCR) text = text.slice(0, -1);
    buffer += text.replace(/\r\n?/g, "\n");
    const blocks = [];
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      blocks.push(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
    }
    return blocks;
  };
}

async function readEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const split = sseSplitter();
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return false;
    for (const block of split(value)) {
      const event = parseBlock(block);
      if (!event) continue;
      if (event.id) state.lastEventId = event.id;
      if (event.event === "end") {
        scheduleRefresh(0);
        return true;
      }
      showEvent(event);
    }
  }
  return false;
}

function parseBlock(block) {
  const event = { event: "message", data: "" };
  let seen = false;
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") event.data += (event.data ? "\n" : "") + value;
    else if (field === "event" || field === "id") event[field] = value;
    seen = true;
  }
  return seen ? event : null;
}

function showEvent(event) {
  if (event.event === "heartbeat") return;  // only says the stream is alive
  let payload = {};
  try { payload = JSON.parse(event.data); } catch (_) { /* shown raw below */ }
  const list = $("events");
  const last = list.lastElementChild;
  // Text chunks of one agent's turn are joined into one line, as they read.
  if (event.event === "text_chunk" && last && last.dataset.kind === "text_chunk"
      && last.dataset.step === payload.step_id && last.dataset.agent === payload.agent) {
    last.querySelector(".text").textContent += payload.data && payload.data.text ? payload.data.text : "";
  } else {
    const text = event.event === "text_chunk" ? (payload.data && payload.data.text) || "" : summary(event.event, payload);
    const item = el("li", { class: `event ${event.event}` },
      el("span", { class: "kind" }, event.event.replace(/_/g, " ")),
      el("span", { class: "who" }, [payload.step_id, payload.agent].filter(Boolean).join(" · ")),
      el("span", { class: "text" }, text));
    item.dataset.kind = event.event;
    item.dataset.step = payload.step_id || "";
    item.dataset.agent = payload.agent || "";
    list.append(item);
    while (list.children.length > MAX_EVENTS) list.firstElementChild.remove();
  }
  list.scrollTop = list.scrollHeight;
  if (["turn_finished", "sla_breach", "approval_requested", "approval_decided"].includes(event.event)) {
    scheduleRefresh(200);
  }
}

function summary(kind, payload) {
  const data = payload.data || {};
  if (kind === "turn_finished") {
    const tokens = (data.prompt_tokens || 0) + (data.completion_tokens || 0);
    return `${tokens} tokens${data.cost_usd != null ? " · " + money(data.cost_usd) : ""}`;
  }
  const shown = Object.entries(data).filter(([, v]) => typeof v !== "object").map(([k, v]) => `${k}: ${v}`);
  return shown.join(" · ");
}

// ---------------------------------------------------------------- start

function fromHash() {
  const match = location.hash.match(/^#run=(.+)$/);
  if (match) openRun(decodeURIComponent(match[1]));
}

document.addEventListener("DOMContentLoaded", () => {
  setupIdentity();
  refreshQueue();
  setInterval(refreshQueue, POLL_MS);
  window.addEventListener("hashchange", fromHash);
  fromHash();
});
