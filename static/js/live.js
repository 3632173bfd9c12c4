// Live parts of the fleet, plan and run pages, and the report charts.
//
// A page marks its live part with data-live="fleet|plan|run" and data-live-url="/ws/…/". The socket's
// first message (and the first after every reconnect) is a snapshot of the whole state; deltas follow.
// Every value that reaches the page goes through textContent or an attribute setter: names and messages
// come from hypervisors and are never parsed as markup.
(function () {
  "use strict";

  // ---- formatting ----------------------------------------------------------------------------------
  const UNITS = ["bytes", "KB", "MB", "GB", "TB", "PB"];
  function bytes(n) {
    if (n === null || n === undefined || !Number.isFinite(Number(n))) return "—";
    let v = Number(n);
    let i = 0;
    while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i += 1; }
    return (i === 0 ? String(Math.round(v)) : v.toFixed(1)) + "\u00a0" + UNITS[i];
  }
  function rate(n) { return n ? bytes(n) + "/s" : "—"; }
  function pct(n) { return Math.floor(Number(n) || 0) + "%"; }
  function seconds(n) { return n === null || n === undefined ? "—" : Number(n).toFixed(1) + " s"; }
  function ms(n) { return n === null || n === undefined ? "—" : Math.round(Number(n)) + " ms"; }

  function setText(scope, field, text) {
    for (const el of scope.querySelectorAll('[data-field="' + field + '"]')) el.textContent = text;
  }
  function setStatus(scope, status, label) {
    for (const el of scope.querySelectorAll('[data-field="status_label"]')) {
      el.textContent = label;
      el.className = "status status-" + status;
      el.dataset.status = status;
    }
  }
  function setProgress(scope, percent) {
    for (const el of scope.querySelectorAll('progress[data-field="progress"]')) el.value = Math.floor(Number(percent) || 0);
    setText(scope, "percent", pct(percent));
  }
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // ---- phase timeline --------------------------------------------------------------------------------
  const TERMINAL = new Set(["succeeded", "failed", "rolled_back", "cancelled"]);
  const STOPPED = new Set(["failed", "rolled_back", "cancelled"]);
  let PHASES = [];
  function renderTimeline(list, rows) {
    if (!list) return;
    list.replaceChildren();
    for (const row of rows) {
      const li = el("li", {"class": "phase phase-" + row.state, "data-phase": row.key});
      li.append(el("span", {"class": "phase-label"}, row.label), " ", el("span", {"class": "phase-state"}, row.state));
      list.append(li);
    }
  }
  // a state delta moves the timeline on: the phase of the new status becomes current, earlier ones done
  function advanceTimeline(list, status) {
    if (!list || !PHASES.length) return;
    const items = Array.from(list.querySelectorAll("li[data-phase]"));
    const at = PHASES.findIndex((p) => p.statuses.includes(status));
    const reached = at >= 0 ? at : items.findIndex((li) => li.classList.contains("phase-current"));
    items.forEach((li, i) => {
      let state;
      if (status === "succeeded" || (reached >= 0 && i < reached)) state = "done";
      else if (i === reached) state = STOPPED.has(status) ? "stopped" : "current";
      else state = li.classList.contains("phase-skipped") ? "skipped" : "todo";
      if (li.classList.contains("phase-skipped") && state !== "current") state = "skipped";
      li.className = "phase phase-" + state;
      const label = li.querySelector(".phase-state");
      if (label) label.textContent = state;
    });
  }

  // ---- validation results (post-migration checks, one by one) --------------------------------------
  function addValidation(scope, result) {
    if (!result || !result.check_id) return;  // the report's closing summary carries no result
    const table = scope.querySelector("[data-validation-table]");
    const list = scope.querySelector("[data-validation-list]");
    const empty = scope.querySelector("[data-validation-empty]");
    if (empty) empty.hidden = true;
    const sev = el("span", {"class": "sev sev-" + String(result.severity || "info")}, result.severity || "info");
    if (table) {
      table.hidden = false;
      const tr = el("tr");
      const td = el("td");
      td.append(sev, " ", el("code", {}, result.check_id));
      tr.append(td, el("td", {}, result.message));
      table.tBodies[0].append(tr);
    }
    if (list) {
      const li = el("li");
      li.append(sev, " ", el("code", {}, result.check_id), " ", el("span", {}, result.message));
      list.append(li);
    }
  }
  function validationSummary(scope, report) {
    if (!report || !report.status) return;
    const parts = [report.status];
    for (const k of ["passed", "warned", "failed"]) if (report[k]) parts.push(report[k] + " " + k);
    setText(scope, "validation_summary", parts.join(" · "));
  }

  // ---- run page ------------------------------------------------------------------------------------
  function runPage(root, socket) {
    const chartBox = document.querySelector("[data-run-chart]");
    const timeline = document.querySelector("[data-timeline]");
    const points = {x: [], throughput: [], remaining: [], lastId: 0};
    let chart = null;

    function drawChart() {
      const note = document.querySelector("[data-chart-note]");
      if (note) note.textContent = points.x.length ? points.x.length + " sample" + (points.x.length === 1 ? "" : "s") + " shown." : "No progress figures yet; the chart starts with the transfer.";
      if (!chartBox || typeof uPlot === "undefined" || !points.x.length) return;
      const data = [points.x, points.throughput, points.remaining];
      if (chart) { chart.setData(data); return; }
      const width = Math.max(280, chartBox.clientWidth || 600);
      chart = new uPlot({
        width: width, height: 260,
        scales: {x: {time: false}},
        axes: [
          {label: "seconds"},
          {scale: "MiB/s", label: "MiB/s"},
          {scale: "MiB", label: "MiB remaining", side: 1, grid: {show: false}},
        ],
        series: [
          {label: "time (s)"},
          {label: "throughput (MiB/s)", scale: "MiB/s", stroke: "#1f5fbf", width: 2, spanGaps: true},
          {label: "remaining (MiB)", scale: "MiB", stroke: "#9a6200", width: 2, dash: [6, 4], spanGaps: true},
        ],
      }, data, chartBox);
      window.addEventListener("resize", () => chart.setSize({width: Math.max(280, chartBox.clientWidth), height: 260}));
    }
    function addPoint(p) {
      if (p.id !== undefined && p.id <= points.lastId) return;
      if (p.id !== undefined) points.lastId = p.id;
      const x = Number(p.elapsed_s) || 0;
      if (points.x.length && x <= points.x[points.x.length - 1]) return;
      points.x.push(x);
      points.throughput.push(p.throughput_bps ? p.throughput_bps / 1048576 : null);
      points.remaining.push(p.bytes_remaining !== null && p.bytes_remaining !== undefined ? p.bytes_remaining / 1048576 : null);
    }
    function figures(f) {
      if ("percent" in f) { setProgress(root, f.percent); setText(root, "percent_text", Number(f.percent).toFixed(1) + " %"); }
      if ("bytes_total" in f) setText(root, "bytes", bytes(f.bytes_processed) + " of " + bytes(f.bytes_total));
      if ("bytes_remaining" in f) setText(root, "remaining", bytes(f.bytes_remaining));
      if ("throughput_bps" in f) setText(root, "throughput", rate(f.throughput_bps));
      if ("dirty_rate_bps" in f) setText(root, "dirty_rate", rate(f.dirty_rate_bps));
      if ("iteration" in f) setText(root, "iteration", f.iteration || "—");
      if ("eta_s" in f) setText(root, "eta", f.eta_s === null || f.eta_s === undefined ? "—" : "about " + Math.round(f.eta_s) + " s");
    }
    function state(s) {
      if (s.status) {
        setStatus(root, s.status, s.status_label || s.status.replace("_", " "));
        advanceTimeline(timeline, s.status);
        if (TERMINAL.has(s.status)) {
          setText(root, "eta", "—");
          for (const f of document.querySelectorAll("[data-cancel-form]")) f.hidden = true;
          // the final figures (duration, downtime, the last samples) are in the rows now: read them once more
          if (s.type === "run.state") socket.resync();
        }
      }
      if ("phase_detail" in s) setText(root, "phase_detail", TERMINAL.has(s.status) ? "" : s.phase_detail || "");
      if ("percent" in s) { setProgress(root, s.percent); setText(root, "percent_text", Number(s.percent).toFixed(1) + " %"); }
      if ("downtime_ms" in s) setText(root, "downtime", ms(s.downtime_ms));
      if ("duration_s" in s) setText(root, "duration", seconds(s.duration_s));
      if ("outcome" in s) setText(root, "outcome", s.outcome || "");
      if ("error" in s) setText(root, "error", s.error || "");
    }
    return {
      snapshot(m) {
        PHASES = m.phases || [];
        state(m.run);
        figures(m.run);
        if (m.latest) figures(m.latest);
        renderTimeline(timeline, m.timeline || []);
        setText(root, "queue", m.run.queue_position ? "(number " + m.run.queue_position + " in the queue for these hosts)" : "");
        points.x = []; points.throughput = []; points.remaining = []; points.lastId = 0;
        for (const p of m.samples || []) addPoint(p);
        drawChart();
        const box = document.querySelector("[data-validation]");
        if (box && m.validation) {
          const body = box.querySelector("[data-validation-table] tbody");
          if (body) body.replaceChildren();
          for (const r of m.validation.results || []) addValidation(box, r);
          validationSummary(box, m.validation);
        }
      },
      "run.progress"(m) { figures(m); addPoint({elapsed_s: m.elapsed_s, throughput_bps: m.throughput_bps, bytes_remaining: m.bytes_remaining, id: m.sample}); drawChart(); },
      "run.state"(m) { state(m); },
      "run.queue"(m) { setText(root, "queue", m.position ? "(number " + m.position + " in the queue for these hosts)" : ""); },
      "run.validation"(m) {
        const box = document.querySelector("[data-validation]");
        if (box) { addValidation(box, m.result || {}); validationSummary(box, m.report); }
      },
    };
  }

  // ---- plan page -----------------------------------------------------------------------------------
  function planPage(root, socket) {
    const rowOf = (runId) => root.querySelector('tr[data-run="' + runId + '"]');
    function runState(row, s) {
      if (s.status) {
        setStatus(row, s.status, s.status_label || s.status.replace("_", " "));
        advanceTimeline(row.querySelector("[data-timeline]"), s.status);
      }
      if ("phase_detail" in s) setText(row, "phase_detail", TERMINAL.has(s.status) ? "" : s.phase_detail || "");
      if ("percent" in s) setProgress(row, s.percent);
      if ("downtime_ms" in s) setText(row, "downtime", ms(s.downtime_ms));
      if ("duration_s" in s) setText(row, "duration", seconds(s.duration_s));
    }
    function approval(a) {
      const list = root.ownerDocument.querySelector("[data-approvals]");
      if (!list || !a) return;
      const when = new Date(a.at);
      const at = el("time", {"datetime": a.at, "title": a.at + " (UTC)"}, Number.isNaN(when.getTime()) ? String(a.at) : when.toLocaleString());
      const rest = [a.approver, a.decision, a.comment ? "“" + a.comment + "”" : ""].filter(Boolean).join(" · ");
      const item = el("li", {});
      item.append(at, " · " + rest);
      list.append(item);
    }
    return {
      snapshot(m) {
        PHASES = m.phases || [];
        for (const el2 of document.querySelectorAll('[data-field="plan_status"]')) {
          el2.textContent = m.plan.status_label; el2.className = "status status-" + m.plan.status; el2.dataset.status = m.plan.status;
        }
        for (const item of m.items) {
          const row = root.querySelector('tr[data-item="' + item.item + '"]');
          if (!row) continue;
          if (item.run) {
            row.dataset.run = String(item.run.id);
            const link = row.querySelector('[data-field="run_link"]');
            if (link && link.tagName !== "A") {
              const a = el("a", {"href": item.run.url, "data-field": "run_link"}, item.vm);
              link.replaceWith(a);
            }
            runState(row, item.run);
            renderTimeline(row.querySelector("[data-timeline]"), item.timeline);
          }
        }
        const list = root.ownerDocument.querySelector("[data-approvals]");
        if (list) { list.replaceChildren(); for (const a of m.approvals || []) approval(a); }
      },
      "run.progress"(m) { const row = rowOf(m.run); if (row) setProgress(row, m.percent); },
      "run.state"(m) {
        const row = rowOf(m.run);
        if (row) runState(row, m);
        // a run this page does not know yet (its item is in a new snapshot), or one that ended (its final
        // figures are in the rows): read the plan again
        if (!row || TERMINAL.has(m.status)) socket.resync();
      },
      "run.validation"(m) { const row = rowOf(m.run); if (row) addValidation(row, m.result || {}); },
      "plan.state"(m) {
        for (const el2 of root.ownerDocument.querySelectorAll('[data-field="plan_status"]')) {
          el2.textContent = m.status_label || String(m.status).replace(/_/g, " ");
          el2.className = "status status-" + m.status;
          el2.dataset.status = m.status;
        }
      },
      "plan.approval"(m) { approval(m.approval); },
    };
  }

  // ---- fleet dashboard -----------------------------------------------------------------------------
  function fleetPage(root, socket) {
    const table = root.querySelector("[data-moving]");
    const empty = root.querySelector("[data-moving-empty]");
    function movingRow(r) {
      const tr = el("tr", {"data-run": String(r.id)});
      const vm = el("td"); vm.append(el("a", {"href": r.url}, r.vm));
      const status = el("td");
      status.append(el("span", {"class": "status status-" + r.status, "data-field": "status_label", "data-status": r.status}, r.status_label),
        " ", el("small", {"class": "meta", "data-field": "phase_detail"}, r.phase_detail || ""));
      const prog = el("td");
      const bar = el("progress", {"max": "100", "data-field": "progress", "aria-label": "Progress of " + r.vm});
      bar.value = Math.floor(r.percent || 0);
      prog.append(bar, " ", el("span", {"data-field": "percent"}, pct(r.percent)));
      tr.append(vm, el("td", {}, r.source + " → " + r.destination), el("td", {}, r.mode), status, prog);
      return tr;
    }
    function hosts(rows) {
      for (const h of rows) {
        const card = document.querySelector('[data-host="' + h.id + '"]');
        if (!card) continue;
        for (const [key, p, text] of [["memory", h.memory_pct, h.memory_text], ["vcpu", h.vcpu_pct, h.vcpu_text], ["storage", h.storage_pct, h.storage_text]]) {
          const bar = card.querySelector('[data-bar="' + key + '"]');
          if (!bar) continue;
          const meter = bar.querySelector("meter");
          meter.value = p;
          meter.textContent = p + "%";
          meter.setAttribute("aria-label", bar.querySelector(".bar-label").textContent + " " + p + " percent");
          bar.querySelector(".bar-text").textContent = text;
        }
        const reach = card.querySelector(".reach");
        if (reach) {
          reach.className = "reach reach-" + h.reachability;
          reach.textContent = (h.reachability === "reachable" ? "✔ " : h.reachability === "unreachable" ? "✖ " : "… ") + h.reachability_label;
        }
        const maint = card.querySelector('[data-field="maintenance"]');
        if (maint) maint.hidden = !h.maintenance;
        const err = card.querySelector('[data-field="last_error"]');
        if (err) { err.textContent = h.last_error || ""; err.hidden = !h.last_error; }
        const counts = card.querySelector('[data-field="counts"]');
        if (counts) {
          counts.replaceChildren(el("strong", {}, h.vm_running), " running of ", el("strong", {}, h.vm_total), " VM" + (h.vm_total === 1 ? "" : "s"));
        }
      }
    }
    function showTable() {
      const any = table.tBodies[0].rows.length > 0;
      table.hidden = !any;
      if (empty) empty.hidden = any;
    }
    return {
      snapshot(m) {
        table.tBodies[0].replaceChildren(...m.runs.map(movingRow));
        showTable();
        hosts(m.hosts);
      },
      hosts(m) { hosts(m.hosts); },
      "run.progress"(m) {
        const row = table.querySelector('tr[data-run="' + m.run + '"]');
        if (row) setProgress(row, m.percent);
      },
      "run.state"(m) {
        const row = table.querySelector('tr[data-run="' + m.run + '"]');
        if (!row) { socket.resync(); return; }
        setStatus(row, m.status, m.status_label || m.status.replace("_", " "));
        setText(row, "phase_detail", m.phase_detail || "");
        if ("percent" in m) setProgress(row, m.percent);
      },
    };
  }

  // ---- the socket: snapshot first, deltas after, reconnect with back-off ----------------------------
  function connect(root) {
    const badge = root.querySelector("[data-live-status]") || document.querySelector("[data-live-status]");
    const socket = {ws: null, attempt: 0, timer: null, resyncAsked: false};
    const pages = {run: runPage, plan: planPage, fleet: fleetPage};
    const handlers = pages[root.dataset.live](root, socket);
    function show(state, text) {
      if (!badge) return;
      badge.dataset.state = state;
      badge.className = "live-status live-" + state;
      badge.textContent = text;
    }
    socket.resync = function () {
      if (socket.resyncAsked || !socket.ws || socket.ws.readyState !== WebSocket.OPEN) return;
      socket.resyncAsked = true;
      setTimeout(() => { if (socket.ws && socket.ws.readyState === WebSocket.OPEN) socket.ws.send(JSON.stringify({type: "snapshot"})); }, 600);
    };
    function open() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const ws = new WebSocket(scheme + location.host + root.dataset.liveUrl);
      socket.ws = ws;
      ws.addEventListener("message", (event) => {
        let m;
        try { m = JSON.parse(event.data); } catch (e) { return; }
        if (m.type === "snapshot") {
          socket.attempt = 0;
          socket.resyncAsked = false;
          show("live", "● Live");
          root.dataset.snapshots = String(Number(root.dataset.snapshots || 0) + 1);
        }
        const handler = handlers[m.type];
        if (handler) handler(m);
      });
      ws.addEventListener("close", (event) => {
        socket.ws = null;
        if (event.code === 4401 || event.code === 4403) { show("refused", "Live updates are not available for you here; reload the page."); }
        // back-off: 1, 2, 4, 8, 16, 30 s (with a little jitter, so a restarted server is not stormed)
        const delay = Math.min(30, 2 ** socket.attempt) * (0.8 + Math.random() * 0.4);
        socket.attempt += 1;
        show("disconnected", "Disconnected — reconnecting in " + Math.round(delay) + " s. Figures shown may be out of date.");
        clearTimeout(socket.timer);
        socket.timer = setTimeout(open, delay * 1000);
      });
    }
    window.addEventListener("online", () => { if (!socket.ws) { clearTimeout(socket.timer); open(); } });
    open();
  }

  // ---- report charts (data in data-series attributes, written by the server) ------------------------
  function reportCharts() {
    if (typeof uPlot === "undefined") return;
    for (const box of document.querySelectorAll("[data-chart]")) {
      let rows;
      try { rows = JSON.parse(box.dataset.series || "[]"); } catch (e) { continue; }
      const width = Math.max(280, box.clientWidth || 500);
      if (box.dataset.chart === "success") {
        const x = rows.map((r) => Date.parse(r.day + "T12:00:00") / 1000);
        const day = 86400;
        const success = new uPlot({
          width: width, height: 240,
          scales: {y: {range: [0, 100]}},
          axes: [{}, {label: "% succeeded"}],
          series: [{}, {label: "success rate (%)", stroke: "#1e7b34", width: 2, points: {show: true, size: 6}},
                   {label: "runs ended", stroke: "#5b6475", scale: "n", width: 1, dash: [4, 4]}],
        }, [x, rows.map((r) => r.rate), rows.map((r) => r.ended)], box);
        // a single day would otherwise stretch the time axis over years
        if (x.length && x[x.length - 1] - x[0] < day) success.setScale("x", {min: x[0] - day, max: x[x.length - 1] + day});
      } else if (box.dataset.chart === "downtime") {
        const x = rows.map((_, i) => i);
        new uPlot({
          width: width, height: 240,
          scales: {x: {time: false, range: [-0.5, rows.length - 0.5]}},
          axes: [{values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) && rows[t] ? rows[t].label : "")), space: 80, incrs: [1, 2, 3, 4, 6]},
                 {label: "runs"}],
          series: [{label: "downtime", value: (u, v) => (rows[v] ? rows[v].label : "")},
                   {label: "succeeded runs", stroke: "#1f5fbf", fill: "rgba(31,95,191,0.35)",
                    paths: uPlot.paths.bars({size: [0.8, 60]}), points: {show: false}}],
        }, [x, rows.map((r) => r.count)], box);
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const root of document.querySelectorAll("[data-live][data-live-url]")) connect(root);
    reportCharts();
  });
})();
