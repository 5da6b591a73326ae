// docvec operator dashboard: polls /api/v1/fleet and /api/v1/tasks and updates the page in place.
// Plain ES2020, no dependencies. The API key travels in the HttpOnly `docvec_key` cookie.
"use strict";

(() => {
  const API = "/api/v1";
  const POLL_MS = 1500;
  const KB_REFRESH_EVERY = 10; // polls between knowledge-base list refreshes
  const TASK_LIMIT = 200;
  const STATES = ["queued", "running", "done", "failed", "cancelled"];
  const CANCELLABLE = new Set(["queued", "running"]);
  const RETRYABLE = new Set(["failed", "cancelled"]);

  const $ = (id) => document.getElementById(id);
  let kbNames = new Map(); // kb id -> name
  let polls = 0;
  let timer = null;

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "style") node.style.cssText = value;  // CSSOM: the CSP refuses style attributes
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 10) return `${seconds.toFixed(1)}s`;
    if (seconds < 60) return `${Math.round(seconds)}s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${Math.round(seconds % 60)}s`;
    return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  }

  const short = (id) => (id ? String(id).slice(0, 8) : "–");
  const pct = (p) => Math.round(Math.max(0, Math.min(1, Number(p) || 0)) * 100);

  function progressBar(progress, status) {
    const value = pct(progress);
    const bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
                            "aria-valuenow": value, "data-status": status || "" },
                   el("i", { style: `width:${value}%` }), el("span", { text: `${value}%` }));
    return bar;
  }

  function setProgress(bar, progress, status) {
    const value = pct(progress);
    if (bar.getAttribute("aria-valuenow") !== String(value)) {
      bar.setAttribute("aria-valuenow", value);
      bar.firstChild.style.width = `${value}%`;
      bar.lastChild.textContent = `${value}%`;
    }
    bar.dataset.status = status || "";
  }

  class AuthError extends Error {}

  async function api(path, options = {}) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" },
                                         ...options });
    if (response.status === 401 || response.status === 403) throw new AuthError(String(response.status));
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return body;
  }

  // ---------------------------------------------------------------- sections

  function renderCounts(tasks) {
    for (const state of STATES) $(`count-${state}`).textContent = String(tasks[state] ?? 0);
  }

  function renderWarnings(warnings) {
    const banner = $("warning-banner");
    banner.replaceChildren(...warnings.map((w) => el("div", {
      class: `warn warn-${w.level}`, "data-testid": `warning-${w.code}`, "data-code": w.code,
    }, el("strong", { text: w.level === "critical" ? "⚠ Attention:" : "Warning:" }), w.message)));
    banner.hidden = warnings.length === 0;
  }

  function workerCard(w) {
    const card = el("article", { class: "worker", "data-testid": "worker", "data-consumer": w.consumer });
    card.append(
      el("div", { class: "worker-head" },
         el("span", { class: "badge", "data-testid": "worker-state" }),
         el("span", { class: "worker-name", title: w.consumer, text: w.consumer }),
         el("span", { class: "worker-beat", "data-testid": "worker-beat" })),
      el("div", { class: "worker-meta", "data-testid": "worker-meta" }),
      el("div", { class: "worker-meta", "data-testid": "worker-counts" }),
      el("div", { class: "worker-tasks", "data-testid": "worker-tasks" }));
    return card;
  }

  function updateWorkerCard(card, w) {
    card.dataset.state = w.state;
    const badge = card.querySelector("[data-testid=worker-state]");
    badge.dataset.state = w.state;
    badge.textContent = w.stopping && w.state === "alive" ? "stopping" : w.state;
    card.querySelector("[data-testid=worker-beat]").textContent = `beat ${fmtAge(w.heartbeat_age_s)} ago`;
    const meta = [w.host || "?", w.pid ? `pid ${w.pid}` : null, w.uptime_s !== null ? `up ${fmtAge(w.uptime_s)}` : null,
                  w.slots ? `${w.in_flight.length}/${w.slots} slots` : null, w.version ? `v${w.version}` : null];
    card.querySelector("[data-testid=worker-meta]").textContent = w.record_missing
      ? "heartbeat record expired" : meta.filter(Boolean).join(" · ");
    const rate = (w.embed_chunks_per_s !== null ? ` · embed ${w.embed_chunks_per_s.toFixed(1)} chunks/s` : "")
      + (w.queue_lag_s !== null ? ` · queue wait ${fmtAge(w.queue_lag_s)}` : "");
    const counts = card.querySelector("[data-testid=worker-counts]");
    counts.replaceChildren("done ", el("b", { "data-testid": "worker-done", text: w.done }),
                           " · failed ", el("b", { "data-testid": "worker-failed", text: w.failed }),
                           ` · cancelled ${w.cancelled}${rate}`);
    const list = card.querySelector("[data-testid=worker-tasks]");
    list.replaceChildren(...w.in_flight.map((t) => el("div", { class: "inflight", "data-testid": "inflight",
                                                                "data-task-id": t.task_id },
      el("code", { title: t.task_id, text: short(t.task_id) }),
      el("span", { text: t.stage || "…" }),
      progressBar(t.progress, "running"))));
  }

  function renderWorkers(workers, states) {
    const box = $("workers");
    const existing = new Map([...box.querySelectorAll("[data-testid=worker]")].map((c) => [c.dataset.consumer, c]));
    const ordered = workers.map((w) => {
      const card = existing.get(w.consumer) || workerCard(w);
      existing.delete(w.consumer);
      updateWorkerCard(card, w);
      return card;
    });
    for (const stale of existing.values()) stale.remove();
    ordered.forEach((card, i) => { if (box.children[i + 1] !== card) box.insertBefore(card, box.children[i + 1] || null); });
    $("workers-empty").hidden = workers.length > 0;
    $("worker-summary").textContent = `${states.alive} alive · ${states.late} late · ${states.dead} dead`;
  }

  function renderStreams(streams, deadLetter) {
    $("streams-body").replaceChildren(...streams.map((s) => el("tr", { "data-testid": `stream-${s.priority}` },
      el("td", { title: s.name, text: s.priority }),
      el("td", { class: "num", "data-field": "length", text: s.length }),
      el("td", { class: "num", "data-field": "pending", text: s.pending }),
      el("td", { class: "num", "data-field": "lag", text: s.lag }),
      el("td", { class: "num", "data-field": "oldest-pending", text: fmtAge(s.oldest_pending_age_s) }),
      el("td", { class: "num", "data-field": "oldest-queued", text: fmtAge(s.oldest_queued_age_s) }))));
    const count = $("dead-letter-count");
    count.textContent = String(deadLetter.length);
    count.classList.toggle("nonzero", deadLetter.length > 0);
    $("dead-letter-name").textContent = deadLetter.name;
  }

  function renderGarbage(garbage) {
    const count = $("garbage-count");
    count.textContent = String(garbage.count);
    count.classList.toggle("nonzero", garbage.count > 0);
    $("garbage-age").textContent = garbage.count ? `oldest ${fmtAge(garbage.oldest_age_s)}` : "";
  }

  function renderThroughput(t) {
    const svg = $("throughput-chart");
    const NS = "http://www.w3.org/2000/svg";
    const W = 360, H = 150, left = 24, bottom = 16, top = 8;
    const n = t.done.length;
    const totals = t.done.map((d, i) => d + t.failed[i]);
    const max = Math.max(1, ...totals);
    const barW = (W - left) / n;
    const y = (v) => H - bottom - (v / max) * (H - bottom - top);
    const nodes = [];
    const mk = (tag, attrs, text) => {
      const node = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      return node;
    };
    nodes.push(mk("line", { class: "axis", x1: left, x2: W, y1: H - bottom, y2: H - bottom }));
    nodes.push(mk("line", { class: "axis", x1: left, x2: W, y1: top, y2: top, "stroke-dasharray": "2 3" }));
    nodes.push(mk("text", { x: left - 4, y: top + 3, "text-anchor": "end" }, String(max)));
    nodes.push(mk("text", { x: left - 4, y: H - bottom, "text-anchor": "end" }, "0"));
    for (const [label, frac] of [["-60m", 0], ["-30m", 0.5], ["now", 1]]) {
      nodes.push(mk("text", { x: left + frac * (W - left), y: H - 3,
                              "text-anchor": frac === 0 ? "start" : frac === 1 ? "end" : "middle" }, label));
    }
    for (let i = 0; i < n; i++) {
      if (!totals[i]) continue;
      const x = left + i * barW + 0.5;
      const group = mk("g", {});
      const minutesAgo = n - i;
      group.append(mk("title", {}, `${minutesAgo} min ago: ${t.done[i]} done, ${t.failed[i]} failed`));
      group.append(mk("rect", { class: "done", x, width: Math.max(barW - 1, 1), y: y(t.done[i]),
                                height: H - bottom - y(t.done[i]) }));
      if (t.failed[i]) {
        group.append(mk("rect", { class: "failed", x, width: Math.max(barW - 1, 1), y: y(totals[i]),
                                  height: y(t.done[i]) - y(totals[i]) }));
      }
      nodes.push(group);
    }
    svg.replaceChildren(...nodes);
    const sum = (xs) => xs.reduce((a, b) => a + b, 0);
    $("throughput-summary").textContent =
      `${sum(t.done)} done, ${sum(t.failed)} failed this hour · ${t.done_per_min.toFixed(2)}/min`;
  }

  // ---------------------------------------------------------------- tasks table

  function taskRow(task) {
    const row = el("tr", { "data-testid": "task-row", "data-task-id": task.id });
    const cancel = el("button", { type: "button", class: "btn btn-danger", "data-testid": "cancel-btn",
                                  onclick: () => act(task.id, "cancel", cancel) }, "Cancel");
    const retry = el("button", { type: "button", class: "btn", "data-testid": "retry-btn",
                                 onclick: () => act(task.id, "retry", retry) }, "Retry");
    row.append(
      el("td", { class: "id", title: `task ${task.id}\ndocument ${task.document_id}` },
         el("code", { text: short(task.id) }), el("span", { class: "muted", text: ` doc ${short(task.document_id)}` })),
      el("td", { "data-field": "kb" }),
      el("td", { "data-field": "change", "data-testid": "task-change" }),
      el("td", {}, el("span", { class: "badge", "data-testid": "task-status" })),
      el("td", {}, progressBar(task.progress, task.status)),
      el("td", { "data-field": "stage" }),
      el("td", { class: "num", "data-field": "chunks", "data-testid": "task-chunks" }),
      el("td", { class: "num", "data-field": "attempts" }),
      el("td", { "data-field": "worker" }),
      el("td", { class: "error", "data-field": "error" }),
      el("td", { class: "num", "data-field": "updated" }),
      el("td", { class: "actions" }, cancel, retry));
    row.querySelector("[role=progressbar]").dataset.testid = "task-progress";
    return row;
  }

  function updateTaskRow(row, task, nowMs) {
    row.dataset.status = task.status;
    const badge = row.querySelector("[data-testid=task-status]");
    badge.dataset.status = task.status;
    badge.textContent = task.status;
    setProgress(row.querySelector("[data-testid=task-progress]"), task.progress, task.status);
    const set = (field, text, title) => {
      const cell = row.querySelector(`[data-field=${field}]`);
      if (cell.textContent !== text) cell.textContent = text;
      cell.title = title ?? text;
    };
    set("kb", kbNames.get(task.kb_id) || short(task.kb_id), task.kb_id);
    // A document's first parse version is an added document; a later one, an update or a reindex.
    set("change", task.parse_version > 1 ? "updated" : "added", `parse version ${task.parse_version}`);
    set("stage", task.stage || "–");
    set("chunks", task.status === "done" ? `${task.chunks_embedded} new · ${task.chunks_reused} reused` : "–",
        task.status === "done" ? `${task.chunk_count} chunks: ${task.chunks_embedded} embedded, `
                                 + `${task.chunks_reused} reused unchanged` : "set when the task is done");
    set("attempts", String(task.attempts));
    set("worker", task.worker || "–");
    set("error", task.error || "", task.error || "");
    const changed = Date.parse(task.finished_at || task.started_at || task.created_at);
    set("updated", Number.isNaN(changed) ? "–" : `${fmtAge(Math.max(0, (nowMs - changed) / 1000))} ago`);
    const cancel = row.querySelector("[data-testid=cancel-btn]");
    const retry = row.querySelector("[data-testid=retry-btn]");
    if (!cancel.dataset.busy) cancel.disabled = !CANCELLABLE.has(task.status);
    if (!retry.dataset.busy) retry.disabled = !RETRYABLE.has(task.status);
  }

  function renderTasks(tasks) {
    const body = $("tasks-body");
    const existing = new Map([...body.children].map((r) => [r.dataset.taskId, r]));
    const nowMs = Date.now();
    const rows = tasks.map((task) => {
      const row = existing.get(task.id) || taskRow(task);
      existing.delete(task.id);
      updateTaskRow(row, task, nowMs);
      return row;
    });
    for (const stale of existing.values()) stale.remove();
    rows.forEach((row, i) => { if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null); });
    $("tasks-empty").hidden = tasks.length > 0;
    $("tasks-summary").textContent = tasks.length >= TASK_LIMIT ? `newest ${TASK_LIMIT}` : `${tasks.length} shown`;
  }

  function showMessage(text, kind) {
    const box = $("action-message");
    box.textContent = text;
    box.dataset.kind = kind;
    box.hidden = false;
  }

  async function act(taskId, action, button) {
    button.dataset.busy = "1";
    button.disabled = true;
    try {
      const task = await api(`${API}/tasks/${encodeURIComponent(taskId)}/${action}`, { method: "POST" });
      showMessage(`Task ${short(taskId)}: ${action === "cancel" ? "cancelled" : "queued again"} (now ${task.status}).`,
                  "info");
    } catch (err) {
      if (err instanceof AuthError) { window.location.assign("/dashboard"); return; }
      showMessage(`Could not ${action} task ${short(taskId)}: ${err.message}`, "error");
    } finally {
      delete button.dataset.busy;
      refresh();
    }
  }

  async function loadKbs() {
    const kbs = await api(`${API}/kbs`);
    kbNames = new Map(kbs.map((kb) => [kb.id, kb.name]));
    const select = $("filter-kb");
    const current = select.value;
    const names = kbs.map((kb) => kb.name).sort();
    const have = [...select.options].slice(1).map((o) => o.value);
    if (names.join("\n") !== have.join("\n")) {
      select.replaceChildren(el("option", { value: "" }, "all"), ...names.map((n) => el("option", { value: n }, n)));
      select.value = names.includes(current) ? current : "";
    }
  }

  // ---------------------------------------------------------------- polling

  function taskQuery() {
    const params = new URLSearchParams({ limit: String(TASK_LIMIT) });
    if ($("filter-status").value) params.set("status", $("filter-status").value);
    if ($("filter-kb").value) params.set("kb", $("filter-kb").value);
    return `${API}/tasks?${params}`;
  }

  async function poll() {
    const conn = $("conn-status");
    try {
      if (polls % KB_REFRESH_EVERY === 0) await loadKbs();
      polls += 1;
      const [fleet, tasks] = await Promise.all([api(`${API}/fleet`), api(taskQuery())]);
      renderCounts(fleet.tasks);
      renderWarnings(fleet.warnings);
      renderWorkers(fleet.workers, fleet.worker_states);
      renderStreams(fleet.streams, fleet.dead_letter);
      renderGarbage(fleet.garbage);
      renderThroughput(fleet.throughput);
      renderTasks(tasks);
      conn.dataset.state = "ok";
      conn.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (err instanceof AuthError) { window.location.assign("/dashboard"); return false; }
      conn.dataset.state = "error";
      conn.textContent = `cannot reach the API (${err.message}); retrying`;
    }
    return true;
  }

  // One poll at a time: a refresh asked for during a poll runs right after it, then polling resumes.
  let polling = false;
  let again = false;

  async function refresh() {
    if (polling) { again = true; return; }
    clearTimeout(timer);
    polling = true;
    let keepGoing = true;
    try {
      do { again = false; keepGoing = await poll(); } while (again && keepGoing);
    } finally {
      polling = false;
    }
    if (keepGoing) timer = setTimeout(refresh, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("filter-status").addEventListener("change", refresh);
    $("filter-kb").addEventListener("change", refresh);
    refresh();
  });
})();
