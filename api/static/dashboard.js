// docvec operator dashboard: polls /api/v1/fleet and /api/v1/tasks and updates the page in place.
// Plain ES2020, no dependencies. The API key travels in the HttpOnly `docvec_key` cookie.
"use strict";

(() => {
  const API = "/api/v1";
  const POLL_MS = 1500;
  const KB_REFRESH_EVERY = 10; // polls between knowledge-base list refreshes
  const STATES = ["queued", "running", "done", "failed", "cancelled"];
  const CANCELLABLE = new Set(["queued", "running"]);
  const RETRYABLE = new Set(["failed", "cancelled"]);

  const $ = (id) => document.getElementById(id);
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

  // An error answer of the API: its message and HTTP status (a 404 is something gone, not the API down).
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  const isNotFound = (err) => err instanceof ApiError && err.status === 404;

  async function api(path, options = {}) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" },
                                         ...options });
    if (response.status === 401 || response.status === 403) throw new AuthError(String(response.status));
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
      throw new ApiError(message, response.status);
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

  // ---------------------------------------------------------------- small shared pieces

  const TASK_PAGE = 50;
  const DOC_PAGE = 50;
  const CHUNK_PAGE = 50;
  const SEARCH_DEBOUNCE_MS = 300;
  const CONFIRM_MS = 4000;

  const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

  function fmtBytes(n) {
    if (n === null || n === undefined) return "–";
    if (n < 1024) return `${n} B`;
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let value = n / 1024, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
  }

  function fmtWhen(iso) {
    const t = Date.parse(iso || "");
    return Number.isNaN(t) ? "–" : `${fmtAge(Math.max(0, (Date.now() - t) / 1000))} ago`;
  }

  // The tenant selected in the top bar: "*" (every tenant) or one tenant's name.
  const scopeTenant = () => $("filter-tenant").value || "*";

  function withTenant(path, tenant, params = {}) {
    const query = new URLSearchParams(params);
    if (tenant) query.set("tenant", tenant);
    const text = query.toString();
    return text ? `${path}?${text}` : path;
  }

  const docHash = (tenant, id) => `#/doc/${encodeURIComponent(tenant)}/${encodeURIComponent(id)}`;
  const kbHash = (tenant, name) => `#/kb/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`;

  function link(href, text, attrs = {}) {
    return el("a", { href, title: text, ...attrs }, text);
  }

  // Keep a table body's rows in the order of `items`, one row per key, built once and updated in place
  // (a click on a row's button is not lost to a refresh).
  function syncRows(body, items, keyOf, create, update) {
    const existing = new Map([...body.children].map((r) => [r.dataset.key, r]));
    const rows = items.map((item) => {
      const key = keyOf(item);
      let row = existing.get(key);
      if (row) existing.delete(key);
      else { row = create(item); row.dataset.key = key; }
      update(row, item);
      return row;
    });
    for (const stale of existing.values()) stale.remove();
    rows.forEach((row, i) => { if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null); });
  }

  function setCell(row, field, text, title) {
    const cell = row.querySelector(`[data-field=${field}]`);
    if (cell.textContent !== text) cell.textContent = text;
    cell.title = title ?? text;
  }

  // A pager: "showing X–Y of N" with previous / next buttons.
  function renderPager(prefix, offset, shown, total) {
    const first = total === 0 ? 0 : offset + 1;
    $(`${prefix}-range`).textContent = `showing ${fmtInt(first)}–${fmtInt(offset + shown)} of ${fmtInt(total)}`;
    $(`${prefix}-prev`).disabled = offset <= 0;
    $(`${prefix}-next`).disabled = offset + shown >= total;
  }

  function showMessage(text, kind, box = $("action-message")) {
    box.textContent = text;
    box.dataset.kind = kind;
    box.hidden = false;
  }

  // A destructive button asks once more: the first click arms it, a second within a few seconds acts.
  function confirmingButton(label, testid, action) {
    const button = el("button", { type: "button", class: "btn btn-danger", "data-testid": testid }, label);
    let armed = null;
    button.addEventListener("click", () => {
      if (!armed) {
        button.textContent = "Confirm?";
        button.dataset.armed = "1";
        armed = setTimeout(() => { armed = null; button.textContent = label; delete button.dataset.armed; }, CONFIRM_MS);
        return;
      }
      clearTimeout(armed);
      armed = null;
      button.textContent = label;
      delete button.dataset.armed;
      action(button);
    });
    return button;
  }

  // A task's error as an operator reads it: the reason first. The row already names the file, so the
  // errors' `file "name": ` (or `name: `) is left out of the cell; two lines of the reason show, the cell's
  // tooltip and a click on it give the whole error (kept open while the page polls).
  function errorReason(error, filename) {
    if (!filename) return error;
    return error.replaceAll(`file "${filename}": `, "").replaceAll(`file "${filename}"`, "the file")
      .replaceAll(`${filename}: `, "");
  }

  function setErrorCell(row, error, filename) {
    const cell = row.querySelector("[data-field=error]");
    const text = error || "";
    cell.title = text;
    if (cell.dataset.error === text && cell.dataset.filename === (filename || "")) return;
    cell.dataset.error = text;
    cell.dataset.filename = filename || "";
    const open = Boolean(cell.querySelector("details")?.open);
    cell.replaceChildren(...(text ? [el("details", { class: "error-detail", open },
      el("summary", { "data-testid": "task-error", text: errorReason(text, filename) }),
      el("div", { class: "error-full", "data-testid": "task-error-full", text }))] : []));
  }

  function handleError(err, box) {
    if (err instanceof AuthError) { window.location.assign("/dashboard"); return; }
    showMessage(err.message, "error", box);
  }

  // ---------------------------------------------------------------- tasks table

  const taskView = { offset: 0, total: 0 };

  function taskRow(task) {
    const row = el("tr", { "data-testid": "task-row", "data-task-id": task.id });
    const cancel = el("button", { type: "button", class: "btn btn-danger", "data-testid": "cancel-btn",
                                  onclick: () => act(row.dataset.taskId, row.dataset.tenant, "cancel", cancel) },
                      "Cancel");
    const retry = el("button", { type: "button", class: "btn", "data-testid": "retry-btn",
                                 onclick: () => act(row.dataset.taskId, row.dataset.tenant, "retry", retry) }, "Retry");
    row.append(
      el("td", { "data-field": "file", "data-testid": "task-file" }),
      el("td", { "data-field": "kb", "data-testid": "task-kb" }),
      el("td", { "data-field": "tenant", "data-testid": "task-tenant" }),
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

  function setLinkCell(row, field, href, text, title) {
    const cell = row.querySelector(`[data-field=${field}]`);
    const anchor = cell.firstChild;
    if (!anchor || anchor.getAttribute("href") !== href || anchor.textContent !== text) {
      cell.replaceChildren(link(href, text));
    }
    cell.title = title;
  }

  function updateTaskRow(row, task, nowMs) {
    row.dataset.status = task.status;
    row.dataset.tenant = task.tenant;
    const badge = row.querySelector("[data-testid=task-status]");
    badge.dataset.status = task.status;
    badge.textContent = task.status;
    setProgress(row.querySelector("[data-testid=task-progress]"), task.progress, task.status);
    setLinkCell(row, "file", docHash(task.tenant, task.document_id), task.filename,
                `${task.filename}\ntask ${task.id}\ndocument ${task.document_id}`);
    setLinkCell(row, "kb", kbHash(task.tenant, task.kb_name), task.kb_name, task.kb_id);
    setCell(row, "tenant", task.tenant);
    // A document's first parse version is an added document; a later one, an update or a reindex.
    setCell(row, "change", task.parse_version > 1 ? "updated" : "added", `parse version ${task.parse_version}`);
    setCell(row, "stage", task.stage || "–");
    setCell(row, "chunks", task.status === "done" ? `${task.chunks_embedded} new · ${task.chunks_reused} reused` : "–",
            task.status === "done" ? `${task.chunk_count} chunks: ${task.chunks_embedded} embedded, `
                                     + `${task.chunks_reused} reused unchanged` : "set when the task is done");
    setCell(row, "attempts", String(task.attempts));
    setCell(row, "worker", task.worker || "–");
    setErrorCell(row, task.error, task.filename);
    const changed = Date.parse(task.finished_at || task.started_at || task.created_at);
    setCell(row, "updated", Number.isNaN(changed) ? "–" : `${fmtAge(Math.max(0, (nowMs - changed) / 1000))} ago`);
    const cancel = row.querySelector("[data-testid=cancel-btn]");
    const retry = row.querySelector("[data-testid=retry-btn]");
    if (!cancel.dataset.busy) cancel.disabled = !CANCELLABLE.has(task.status);
    if (!retry.dataset.busy) retry.disabled = !RETRYABLE.has(task.status);
  }

  function renderTasks(tasks, total) {
    const nowMs = Date.now();
    taskView.total = total;
    syncRows($("tasks-body"), tasks, (t) => t.id, taskRow, (row, t) => updateTaskRow(row, t, nowMs));
    $("tasks-empty").hidden = tasks.length > 0;
    $("tasks-summary").textContent = `${fmtInt(total)} match`;
    renderPager("tasks", taskView.offset, tasks.length, total);
  }

  async function act(taskId, tenant, action, button) {
    button.dataset.busy = "1";
    button.disabled = true;
    try {
      const task = await api(withTenant(`${API}/tasks/${encodeURIComponent(taskId)}/${action}`, tenant),
                             { method: "POST" });
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

  function taskQuery() {
    const params = { limit: String(TASK_PAGE), offset: String(taskView.offset) };
    if ($("filter-status").value) params.status = $("filter-status").value;
    if ($("filter-kb").value) params.kb = $("filter-kb").value;
    if ($("filter-q").value.trim()) params.q = $("filter-q").value.trim();
    return withTenant(`${API}/tasks`, scopeTenant(), params);
  }

  async function apiPage(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401 || response.status === 403) throw new AuthError(String(response.status));
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok) throw new ApiError(body && body.error ? body.error.message : `${response.status}`, response.status);
    return { items: body, total: Number(response.headers.get("X-Total-Count") || body.length) };
  }

  async function pollTasks() {
    let page = await apiPage(taskQuery());
    if (page.items.length === 0 && taskView.offset > 0 && page.total > 0) {  // the page emptied under us
      taskView.offset = Math.max(0, Math.floor((page.total - 1) / TASK_PAGE) * TASK_PAGE);
      page = await apiPage(taskQuery());
    }
    renderTasks(page.items, page.total);
  }

  // ---------------------------------------------------------------- knowledge bases (shared list)

  let kbList = []; // every knowledge base in the selected scope, with its documents' totals

  async function loadKbs() {
    kbList = await api(withTenant(`${API}/kbs`, "*"));
    // The tenant filter: every tenant that has a knowledge base.
    const tenants = [...new Set(kbList.map((kb) => kb.tenant))].sort();
    const tenantSelect = $("filter-tenant");
    const have = [...tenantSelect.options].slice(1).map((o) => o.value);
    if (tenants.join("\n") !== have.join("\n")) {
      const current = tenantSelect.value;
      tenantSelect.replaceChildren(el("option", { value: "*" }, "all tenants"),
                                   ...tenants.map((t) => el("option", { value: t }, t)));
      tenantSelect.value = tenants.includes(current) ? current : "*";
    }
    const scoped = kbsInScope();
    const names = [...new Set(scoped.map((kb) => kb.name))].sort();
    const select = $("filter-kb");
    const current = select.value;
    const options = [...select.options].slice(1).map((o) => o.value);
    if (names.join("\n") !== options.join("\n")) {
      select.replaceChildren(el("option", { value: "" }, "all"), ...names.map((n) => el("option", { value: n }, n)));
      select.value = names.includes(current) ? current : "";
    }
    renderSearchKbs(scoped);
  }

  function kbsInScope() {
    const tenant = scopeTenant();
    return kbList.filter((kb) => tenant === "*" || kb.tenant === tenant);
  }

  function renderKbList() {
    const kbs = kbsInScope();
    syncRows($("kbs-body"), kbs, (kb) => kb.id, () => el("tr", { "data-testid": "kb-row" },
      el("td", { "data-field": "name" }), el("td", { "data-field": "tenant" }),
      el("td", { class: "num", "data-field": "documents" }), el("td", { class: "num", "data-field": "chunks" }),
      el("td", { class: "num", "data-field": "tokens" }), el("td", { class: "num", "data-field": "size" }),
      el("td", { "data-field": "chunking" }), el("td", { "data-field": "model" }),
      el("td", { class: "num", "data-field": "created" })), (row, kb) => {
      row.dataset.kb = kb.name;
      row.dataset.tenant = kb.tenant;
      setLinkCell(row, "name", kbHash(kb.tenant, kb.name), kb.name, kb.id);
      setCell(row, "tenant", kb.tenant);
      setCell(row, "documents", fmtInt(kb.document_count));
      setCell(row, "chunks", fmtInt(kb.chunk_count));
      setCell(row, "tokens", fmtInt(kb.token_count));
      setCell(row, "size", fmtBytes(kb.size_bytes));
      setCell(row, "chunking", `${kb.chunk_tokens} tokens, ${kb.overlap_tokens} overlap`);
      setCell(row, "model", `${kb.embedding_model} (${kb.dim}d)`);
      setCell(row, "created", fmtWhen(kb.created_at));
    });
    $("kbs-empty").hidden = kbs.length > 0;
  }

  // ---------------------------------------------------------------- one knowledge base

  // `missing`: the knowledge base answered 404; the page shows so and stops asking until "Check again".
  const kbView = { tenant: "", name: "", offset: 0, missing: false };
  const KB_COUNTS = ["kb-documents", "kb-chunks", "kb-tokens", "kb-size"];

  // Nothing of the previous knowledge base stays on the page while the next one loads (or is not found).
  function resetKb(name) {
    $("kb-title").textContent = name || "–";
    $("kb-meta").textContent = "";
    for (const id of KB_COUNTS) $(id).textContent = "–";
    $("docs-body").replaceChildren();
    $("docs-empty").hidden = true;
    $("docs-range").textContent = "–";
    $("kb-missing").hidden = true;
    $("kb-docs").hidden = false;
    $("kb-search-link").hidden = false;
  }

  function showKbMissing(tenant, name) {
    resetKb(name);
    kbView.missing = true;
    $("kb-missing-text").textContent = `Knowledge base "${name}" not found (tenant ${tenant}).`;
    $("kb-missing").hidden = false;
    $("kb-docs").hidden = true;
    $("kb-search-link").hidden = true;
  }

  function docRow(doc) {
    const row = el("tr", { "data-testid": "doc-row", "data-document-id": doc.id });
    const reparse = el("button", { type: "button", class: "btn", "data-testid": "reparse-btn",
                                   onclick: () => documentAction(doc.id, kbView.tenant, "reparse", reparse) }, "Reparse");
    const remove = confirmingButton("Delete", "delete-btn", (button) => documentAction(doc.id, kbView.tenant, "delete",
                                                                                        button));
    row.append(
      el("td", { "data-field": "file", "data-testid": "doc-file" }),
      el("td", {}, el("span", { class: "badge", "data-testid": "doc-status" })),
      el("td", { class: "num", "data-field": "size", "data-testid": "doc-size" }),
      el("td", { class: "num", "data-field": "chunks", "data-testid": "doc-chunks" }),
      el("td", { class: "num", "data-field": "tokens", "data-testid": "doc-tokens" }),
      el("td", { class: "num", "data-field": "version" }),
      el("td", { "data-field": "format" }),
      el("td", { class: "num", "data-field": "updated" }),
      el("td", { class: "actions" }, reparse, remove));
    return row;
  }

  function updateDocRow(row, doc) {
    row.dataset.status = doc.status;
    const badge = row.querySelector("[data-testid=doc-status]");
    badge.dataset.status = doc.status;
    badge.textContent = doc.status;
    setLinkCell(row, "file", docHash(kbView.tenant, doc.id), doc.filename, `${doc.source_id || doc.filename}\n${doc.id}`);
    setCell(row, "size", fmtBytes(doc.size_bytes), `${doc.size_bytes} bytes`);
    setCell(row, "chunks", fmtInt(doc.chunk_count));
    setCell(row, "tokens", fmtInt(doc.token_count));
    setCell(row, "version", doc.parse_version ? `v${doc.parse_version}` : "–",
            `live parse version ${doc.parse_version}; latest ${doc.next_parse_version ?? "?"}`);
    setCell(row, "format", doc.format || "–");
    setCell(row, "updated", fmtWhen(doc.updated_at));
    const reparse = row.querySelector("[data-testid=reparse-btn]");
    if (!reparse.dataset.busy) reparse.disabled = CANCELLABLE.has(doc.status);
  }

  async function documentAction(documentId, tenant, action, button) {
    const box = currentRoute().view === "doc" ? $("doc-message") : $("kb-message");
    button.dataset.busy = "1";
    button.disabled = true;
    try {
      const path = withTenant(action === "delete" ? `${API}/documents/${encodeURIComponent(documentId)}`
                                                  : `${API}/documents/${encodeURIComponent(documentId)}/reparse`, tenant);
      const response = await fetch(path, { method: action === "delete" ? "DELETE" : "POST",
                                           credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 401) throw new AuthError("401");
      if (!response.ok) {
        let body = null;
        try { body = await response.json(); } catch (err) { body = null; }
        throw new Error(body && body.error ? body.error.message : `${response.status}`);
      }
      showMessage(`Document ${short(documentId)}: ${action === "delete" ? "deleted" : "queued for a new parse"}.`,
                  "info", box);
      if (action === "delete" && currentRoute().view === "doc") {
        window.location.hash = kbHash(docView.tenant, docView.kbName || "");
      }
    } catch (err) {
      handleError(err, box);
    } finally {
      delete button.dataset.busy;
      button.disabled = false;
      refresh();
    }
  }

  async function pollKb() {
    const { tenant, name } = kbView;
    const params = { limit: String(DOC_PAGE), offset: String(kbView.offset) };
    if ($("docs-q").value.trim()) params.q = $("docs-q").value.trim();
    let kb, page;
    try {
      [kb, page] = await Promise.all([
        api(withTenant(`${API}/kbs/${encodeURIComponent(name)}`, tenant)),
        apiPage(withTenant(`${API}/kbs/${encodeURIComponent(name)}/documents`, tenant, params)),
      ]);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      if (kbView.tenant === tenant && kbView.name === name) showKbMissing(tenant, name);
      return;
    }
    if (kbView.tenant !== tenant || kbView.name !== name) return;  // the page moved on meanwhile
    const docs = page.items;
    $("kb-title").textContent = kb.name;
    $("kb-meta").textContent = `tenant ${kb.tenant} · ${kb.embedding_model} (${kb.dim}d) · `
      + `${kb.chunk_tokens}-token chunks, ${kb.overlap_tokens} overlap`;
    $("kb-documents").textContent = fmtInt(kb.document_count);
    $("kb-chunks").textContent = fmtInt(kb.chunk_count);
    $("kb-tokens").textContent = fmtInt(kb.token_count);
    $("kb-size").textContent = fmtBytes(kb.size_bytes);
    $("kb-search-link").setAttribute("href", `#/search/${encodeURIComponent(kb.tenant)}/${encodeURIComponent(kb.name)}`);
    syncRows($("docs-body"), docs, (d) => d.id, docRow, updateDocRow);
    $("docs-empty").hidden = docs.length > 0;
    renderPager("docs", kbView.offset, docs.length, page.total);
  }

  // ---------------------------------------------------------------- one document

  // `missing`: the document answered 404; as for a knowledge base, the page says so and stops asking.
  const docView = { tenant: "", id: "", kbName: "", filename: "", offset: 0, chunksKey: "", missing: false };
  const DOC_FACTS = ["doc-tenant", "doc-size", "doc-chunks", "doc-tokens", "doc-version", "doc-format", "doc-source",
                     "doc-sha", "doc-reuse", "doc-updated"];

  function resetDoc() {
    $("doc-title").textContent = "–";
    $("doc-kb-link").replaceChildren("–");
    for (const id of DOC_FACTS) $(id).textContent = "–";
    $("parses-body").replaceChildren();
    $("chunks-body").replaceChildren();
    $("chunks-version").textContent = "";
    $("chunks-range").textContent = "–";
    $("doc-missing").hidden = true;
    $("doc-body").hidden = false;
    $("doc-actions").hidden = false;
  }

  function showDocMissing(tenant, id) {
    resetDoc();
    docView.missing = true;
    $("doc-missing-text").textContent = `Document ${id} not found (tenant ${tenant}).`;
    $("doc-missing").hidden = false;
    $("doc-body").hidden = true;
    $("doc-actions").hidden = true;
  }

  const STAGE_ORDER = ["fetch", "split", "parse", "chunk", "embed", "index", "finish"];
  const stageRank = (stage) => (STAGE_ORDER.includes(stage) ? STAGE_ORDER.indexOf(stage) : STAGE_ORDER.length);

  function timings(stageTimings) {
    const entries = Object.entries(stageTimings || {}).sort(([a], [b]) => stageRank(a) - stageRank(b));
    if (!entries.length) return "–";
    return entries.map(([stage, s]) => `${stage} ${Number(s) < 1 ? `${Math.round(Number(s) * 1000)} ms`
                                                                   : `${Number(s).toFixed(2)} s`}`).join(" · ");
  }

  function parseRow(task) {
    const row = el("tr", { "data-testid": "parse-row", "data-task-id": task.id });
    row.append(
      el("td", { class: "num", "data-field": "version" }),
      el("td", {}, el("span", { class: "badge", "data-testid": "parse-status" })),
      el("td", {}, progressBar(task.progress, task.status)),
      el("td", { class: "num", "data-field": "chunks" }),
      el("td", { class: "num", "data-field": "attempts" }),
      el("td", { "data-field": "timings", "data-testid": "parse-timings" }),
      el("td", { class: "num", "data-field": "created" }),
      el("td", { class: "error", "data-field": "error" }));
    const logRow = el("tr", { class: "log-row", "data-testid": "parse-log-row" },
                      el("td", { colspan: 8 }, el("details", {}, el("summary", { "data-testid": "parse-log-summary" }),
                                                  el("pre", { class: "log", "data-testid": "parse-log" }))));
    row.logRow = logRow;
    return row;
  }

  function updateParseRow(row, task) {
    const badge = row.querySelector("[data-testid=parse-status]");
    badge.dataset.status = task.status;
    badge.textContent = task.status;
    setProgress(row.querySelector("[role=progressbar]"), task.progress, task.status);
    const part = task.parts > 1 ? ` part ${task.part + 1}/${task.parts}` : "";
    setCell(row, "version", `v${task.parse_version}${part}`, `task ${task.id}`);
    setCell(row, "chunks", task.status === "done" ? `${fmtInt(task.chunk_count)} · ${fmtInt(task.token_count)} tok`
                                                  : "–");
    setCell(row, "attempts", String(task.attempts));
    setCell(row, "timings", timings(task.stage_timings));
    setCell(row, "created", fmtWhen(task.created_at), task.created_at);
    setErrorCell(row, task.error, docView.filename);
    const lines = (task.progress_msg || "").split("\n").filter(Boolean);
    const summary = row.logRow.querySelector("summary");
    const text = `progress log (${lines.length} ${lines.length === 1 ? "line" : "lines"})`;
    if (summary.textContent !== text) summary.textContent = text;
    const pre = row.logRow.querySelector("pre");
    const body = lines.join("\n");
    if (pre.textContent !== body) pre.textContent = body;
  }

  function renderParses(tasks) {
    const body = $("parses-body");
    const keep = new Map();
    for (const row of body.querySelectorAll("[data-testid=parse-row]")) keep.set(row.dataset.key, row);
    const ordered = [];
    for (const task of tasks) {
      let row = keep.get(task.id);
      if (!row) { row = parseRow(task); row.dataset.key = task.id; }
      keep.delete(task.id);
      updateParseRow(row, task);
      ordered.push(row, row.logRow);
    }
    for (const stale of keep.values()) { stale.logRow.remove(); stale.remove(); }
    ordered.forEach((row, i) => { if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null); });
    $("parses-empty").hidden = tasks.length > 0;
  }

  function chunkRow() {
    return el("tr", { "data-testid": "chunk-row" },
      el("td", { class: "num", "data-field": "ordinal" }), el("td", { "data-field": "title", "data-testid": "chunk-title" }),
      el("td", { class: "num", "data-field": "page", "data-testid": "chunk-page" }),
      el("td", { class: "num", "data-field": "offsets", "data-testid": "chunk-offsets" }),
      el("td", { class: "num", "data-field": "tokens" }),
      el("td", { class: "chunk-text", "data-field": "text", "data-testid": "chunk-text" }));
  }

  function updateChunkRow(row, chunk) {
    row.dataset.ordinal = String(chunk.ordinal);
    setCell(row, "ordinal", String(chunk.ordinal), chunk.chunk_id);
    setCell(row, "title", chunk.title || "–");
    setCell(row, "page", chunk.page === null ? "–" : String(chunk.page));
    setCell(row, "offsets", `${fmtInt(chunk.start_char)}–${fmtInt(chunk.end_char)}`);
    setCell(row, "tokens", fmtInt(chunk.token_count));
    setCell(row, "text", chunk.text);
  }

  async function loadChunks() {
    const page = await api(withTenant(`${API}/documents/${encodeURIComponent(docView.id)}/chunks`, docView.tenant,
                                      { limit: String(CHUNK_PAGE), offset: String(docView.offset) }));
    syncRows($("chunks-body"), page.chunks, (c) => c.chunk_id, chunkRow, updateChunkRow);
    $("chunks-empty").hidden = page.chunks.length > 0;
    $("chunks-version").textContent = page.parse_version ? `live version v${page.parse_version}` : "no live version yet";
    renderPager("chunks", docView.offset, page.chunks.length, page.total);
    return page;
  }

  async function pollDoc() {
    const { tenant, id } = docView;
    let doc, tasks;
    try {
      [doc, tasks] = await Promise.all([
        api(withTenant(`${API}/documents/${encodeURIComponent(id)}`, tenant)),
        api(withTenant(`${API}/tasks`, tenant, { document_id: id, limit: "100" })),
      ]);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      if (docView.tenant === tenant && docView.id === id) showDocMissing(tenant, id);
      return;
    }
    if (docView.tenant !== tenant || docView.id !== id) return;  // the page moved on meanwhile
    docView.filename = doc.filename;
    docView.kbName = tasks.length ? tasks[0].kb_name : (kbList.find((kb) => kb.id === doc.kb_id) || {}).name || "";
    $("doc-title").textContent = doc.filename;
    $("doc-kb-link").replaceChildren(docView.kbName ? link(kbHash(tenant, docView.kbName), docView.kbName) : "–");
    const badge = $("doc-status");
    badge.dataset.status = doc.status;
    badge.textContent = doc.status;
    const facts = {
      "doc-tenant": tenant, "doc-size": fmtBytes(doc.size_bytes), "doc-chunks": fmtInt(doc.chunk_count),
      "doc-tokens": fmtInt(doc.token_count), "doc-version": doc.parse_version ? `v${doc.parse_version}` : "none yet",
      "doc-format": doc.format || "–", "doc-source": doc.source_id || "–", "doc-sha": short(doc.sha256),
      "doc-reuse": `${fmtInt(doc.chunks_embedded)} embedded · ${fmtInt(doc.chunks_reused)} reused`,
      "doc-updated": fmtWhen(doc.updated_at),
    };
    for (const [fieldId, text] of Object.entries(facts)) if ($(fieldId).textContent !== text) $(fieldId).textContent = text;
    $("doc-reparse").disabled = CANCELLABLE.has(doc.status) || Boolean($("doc-reparse").dataset.busy);
    renderParses(tasks);
    // Chunks are read again only when the live version changes (or on paging), not on every poll.
    const chunksKey = `${doc.parse_version}:${doc.chunk_count}:${docView.offset}`;
    if (chunksKey !== docView.chunksKey) {
      await loadChunks();
      docView.chunksKey = chunksKey;
    }
  }

  // ---------------------------------------------------------------- search playground

  function renderSearchKbs(kbs) {
    const select = $("search-kb");
    const values = kbs.map((kb) => `${kb.tenant}/${kb.name}`);
    const have = [...select.options].map((o) => o.value);
    if (values.join("\n") !== have.join("\n")) {
      const current = select.value;
      select.replaceChildren(...kbs.map((kb) => el("option", { value: `${kb.tenant}/${kb.name}` },
                                                   scopeTenant() === "*" ? `${kb.tenant} / ${kb.name}` : kb.name)));
      if (values.includes(current)) select.value = current;
    }
  }

  function queryWords(query) {
    const words = (query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((w) => w.length >= 2);
    return [...new Set(words)].sort((a, b) => b.length - a.length);
  }

  // The text with the query's words in <mark>, built as text nodes: document text is never parsed as HTML.
  function highlighted(text, words) {
    const node = el("p", { class: "hit-text", "data-testid": "hit-text" });
    if (!words.length) { node.textContent = text; return node; }
    const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const pattern = new RegExp(`(${escaped.join("|")})`, "giu");
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) node.append(document.createTextNode(text.slice(last, match.index)));
      node.append(el("mark", { text: match[0] }));
      last = match.index + match[0].length;
    }
    if (last < text.length) node.append(document.createTextNode(text.slice(last)));
    return node;
  }

  async function runSearch(event) {
    event.preventDefault();
    const box = $("search-message");
    box.hidden = true;
    const choice = $("search-kb").value;
    const query = $("search-query").value.trim();
    if (!choice || !query) {
      clearHits();
      showMessage("Pick a knowledge base and type a query.", "error", box);
      return;
    }
    const slash = choice.indexOf("/");
    const tenant = choice.slice(0, slash), kb = choice.slice(slash + 1);
    const body = { query, top_k: Math.max(1, Math.min(100, Number($("search-topk").value) || 5)) };
    if ($("search-filter").value.trim()) body.filter = $("search-filter").value.trim();
    const button = $("search-submit");
    button.disabled = true;
    try {
      const result = await api(withTenant(`${API}/kbs/${encodeURIComponent(kb)}/search`, tenant), {
        method: "POST", body: JSON.stringify(body),
        headers: { Accept: "application/json", "Content-Type": "application/json" },
      });
      renderHits(result.hits, tenant, queryWords(query));
    } catch (err) {
      clearHits();  // an error is no result: no "N hits" left over from the last search
      handleError(err, box);
    } finally {
      button.disabled = false;
    }
  }

  function clearHits() {
    $("search-summary").textContent = "";
    $("search-hits").replaceChildren();
    $("search-empty").hidden = true;
  }

  function renderHits(hits, tenant, words) {
    $("search-summary").textContent = `${hits.length} ${hits.length === 1 ? "hit" : "hits"}`;
    $("search-hits").replaceChildren(...hits.map((hit, i) => el("li", { class: "hit", "data-testid": "hit",
                                                                         "data-chunk-id": hit.chunk_id },
      el("div", { class: "hit-head" },
         el("span", { class: "hit-rank", text: `#${i + 1}` }),
         el("span", { class: "hit-score", "data-testid": "hit-score", title: "similarity score",
                      text: Number(hit.score).toFixed(3) }),
         el("a", { href: docHash(tenant, hit.document_id), class: "hit-source", "data-testid": "hit-source",
                   text: hit.filename }),
         el("span", { class: "muted", "data-testid": "hit-page", text: hit.page === null || hit.page === undefined
                                                                       ? "" : `page ${hit.page}` }),
         el("span", { class: "hit-title", text: hit.title || "" })),
      highlighted(hit.text, words))));
    $("search-empty").hidden = hits.length > 0;
  }

  // ---------------------------------------------------------------- routing

  function currentRoute() {
    const parts = window.location.hash.replace(/^#\/?/, "").split("/").map((p) => {
      try { return decodeURIComponent(p); } catch (err) { return p; }
    });
    const [view, a, b] = parts;
    if (view === "kbs") return { view: "kbs" };
    if (view === "kb" && a && b) return { view: "kb", tenant: a, name: b };
    if (view === "doc" && a && b) return { view: "doc", tenant: a, id: b };
    if (view === "search") return { view: "search", tenant: a || "", name: b || "" };
    return { view: "tasks" };
  }

  const VIEWS = ["tasks", "kbs", "kb", "doc", "search"];
  const TABS = { tasks: "tasks", kbs: "kbs", kb: "kbs", doc: "kbs", search: "search" };

  function route() {
    const r = currentRoute();
    for (const view of VIEWS) $(`view-${view}`).hidden = view !== r.view;
    for (const tab of document.querySelectorAll("[data-tab]")) {
      tab.setAttribute("aria-current", tab.dataset.tab === TABS[r.view] ? "page" : "false");
    }
    if (r.view === "kb" && (kbView.tenant !== r.tenant || kbView.name !== r.name)) {
      Object.assign(kbView, { tenant: r.tenant, name: r.name, offset: 0, missing: false });
      $("docs-q").value = "";
      resetKb(r.name);
      $("kb-message").hidden = true;
    }
    if (r.view === "doc" && (docView.tenant !== r.tenant || docView.id !== r.id)) {
      Object.assign(docView, { tenant: r.tenant, id: r.id, filename: "", offset: 0, chunksKey: "", missing: false });
      resetDoc();
      $("doc-message").hidden = true;
    }
    if (r.view === "search" && r.tenant && r.name) {
      renderSearchKbs(kbsInScope());
      const value = `${r.tenant}/${r.name}`;
      if (![...$("search-kb").options].some((o) => o.value === value)) {
        $("search-kb").append(el("option", { value }, `${r.tenant} / ${r.name}`));
      }
      $("search-kb").value = value;
    }
    refresh();
  }

  // ---------------------------------------------------------------- polling

  async function poll() {
    const conn = $("conn-status");
    const view = currentRoute().view;
    try {
      if (polls % KB_REFRESH_EVERY === 0 || view === "kbs") await loadKbs();
      polls += 1;
      const fleet = await api(`${API}/fleet`);
      renderCounts(fleet.tasks);
      renderWarnings(fleet.warnings);
      if (view === "tasks") {
        renderWorkers(fleet.workers, fleet.worker_states);
        renderStreams(fleet.streams, fleet.dead_letter);
        renderGarbage(fleet.garbage);
        renderThroughput(fleet.throughput);
        await pollTasks();
      } else if (view === "kbs") {
        renderKbList();
      } else if (view === "kb") {
        if (!kbView.missing) await pollKb();
      } else if (view === "doc") {
        if (!docView.missing) await pollDoc();
      }
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

  function pagerButtons(prefix, state, pageSize, onChange) {
    $(`${prefix}-prev`).addEventListener("click", () => { state.offset = Math.max(0, state.offset - pageSize); onChange(); });
    $(`${prefix}-next`).addEventListener("click", () => { state.offset += pageSize; onChange(); });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const restartTasks = () => { taskView.offset = 0; refresh(); };
    $("filter-status").addEventListener("change", restartTasks);
    $("filter-kb").addEventListener("change", restartTasks);
    let typing = null;
    $("filter-q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(restartTasks, SEARCH_DEBOUNCE_MS); });
    $("docs-q").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => { kbView.offset = 0; refresh(); }, SEARCH_DEBOUNCE_MS);
    });
    $("filter-tenant").addEventListener("change", () => {
      taskView.offset = 0;
      loadKbs().then(refresh, refresh);
    });
    pagerButtons("tasks", taskView, TASK_PAGE, refresh);
    pagerButtons("docs", kbView, DOC_PAGE, refresh);
    pagerButtons("chunks", docView, CHUNK_PAGE, refresh);
    $("doc-reparse").addEventListener("click", (e) => documentAction(docView.id, docView.tenant, "reparse", e.currentTarget));
    $("doc-delete-slot").replaceWith(confirmingButton("Delete", "doc-delete",
                                                      (button) => documentAction(docView.id, docView.tenant, "delete", button)));
    $("search-form").addEventListener("submit", runSearch);
    $("kb-missing-retry").addEventListener("click", () => { kbView.missing = false; resetKb(kbView.name); refresh(); });
    $("doc-missing-retry").addEventListener("click", () => { docView.missing = false; resetDoc(); refresh(); });
    window.addEventListener("hashchange", route);
    route();
  });
})();
