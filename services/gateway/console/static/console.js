// Outpost console: the little the pages need beyond HTML. Every page works without it.
"use strict";

// Confirm destructive forms (data-confirm="question").
document.addEventListener("submit", (ev) => {
  const q = ev.target.getAttribute && ev.target.getAttribute("data-confirm");
  if (q && !window.confirm(q)) ev.preventDefault();
});

// Live discovery run: the page subscribes to its Server-Sent Events and updates counters,
// progress, state and the host table in place. The stream ends when the run is final.
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("run");
  const url = box && box.dataset.events;
  if (!url || !window.EventSource) return;
  const live = document.getElementById("run-live");
  const es = new EventSource(url);
  es.addEventListener("open", () => { if (live) live.hidden = false; });
  es.addEventListener("run", (ev) => update(JSON.parse(ev.data)));
  es.addEventListener("end", () => {
    es.close();
    if (live) live.textContent = "finished";
    box.dataset.final = "true";
    const cancel = document.getElementById("run-cancel");
    if (cancel) cancel.hidden = true;
  });
  es.addEventListener("problem", (ev) => { if (live) live.textContent = JSON.parse(ev.data).error; });
});

const pillClass = (s) => {
  if (["completed", "done", "up", "ok"].includes(s)) return "pill good";
  if (["failed", "down", "error"].includes(s)) return "pill bad";
  if (["canceled"].includes(s)) return "pill quiet";
  return "pill busy";
};

function update(run) {
  const state = document.getElementById("run-state");
  if (state) { state.textContent = run.state; state.className = pillClass(run.state); }
  const bar = document.getElementById("run-progress");
  if (bar) { bar.value = run.progress; bar.textContent = run.progress + "%"; }
  const pct = document.getElementById("run-pct");
  if (pct) pct.textContent = run.progress + "%";
  const reason = document.getElementById("run-reason");
  if (reason) reason.textContent = run.reason || "";
  for (const el of document.querySelectorAll("[data-counter]")) {
    const v = run.counters[el.dataset.counter];
    if (v !== undefined) el.textContent = v;
  }
  const log = document.getElementById("run-log");
  if (log && run.log) log.textContent = run.log.join("\n") + "\n";
  const hosts = document.getElementById("run-hosts");
  if (hosts && run.hosts) {
    const rows = run.hosts.map((h) => {
      const tr = document.createElement("tr");
      const cell = (text, cls) => { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; };
      const a = document.createElement("a");
      a.href = hosts.dataset.base + encodeURIComponent(h.ip);
      a.textContent = h.ip;
      cell("", "mono").appendChild(a);
      cell(h.name || "");
      cell((h.class || "") + (h.by_ports ? " (ports)" : ""));
      const st = document.createElement("span");
      st.className = pillClass(h.stage === "done" ? "done" : "busy");
      st.textContent = h.stage;
      cell("").appendChild(st);
      cell(h.credential || "", "small");
      cell(String(h.cis_sent || 0), "num");
      return tr;
    });
    if (rows.length) hosts.replaceChildren(...rows);
  }
}

// Live workflow run: on each change the stream announces, the page fetches its own HTML
// and swaps the run's section (rendering stays on the server); open details stay open.
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("wf-run");
  const url = box && box.dataset.events;
  if (!url || !window.EventSource) return;
  const es = new EventSource(url);
  const live = () => document.getElementById("wf-run-live");
  let busy = false, again = false;
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const resp = await fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (resp.ok) {
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        const next = doc.getElementById("wf-run");
        const cur = document.getElementById("wf-run");
        if (next && cur) {
          const open = [...cur.querySelectorAll("details[open]")].map((d) => d.closest("li") && d.closest("li").id + "/" + d.className);
          next.removeAttribute("data-events");
          cur.replaceWith(next);
          for (const d of next.querySelectorAll("details")) {
            if (open.includes(d.closest("li") && d.closest("li").id + "/" + d.className)) d.open = true;
          }
          const l = live(); if (l) l.hidden = false;
        }
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  };
  es.addEventListener("open", () => { const l = live(); if (l) l.hidden = false; });
  // The stream's first event is usually the state the page was rendered from (the same
  // history sequence): swapping the section then would only disturb the reader.
  es.addEventListener("run", (ev) => {
    const cur = document.getElementById("wf-run");
    let seq;
    try { seq = String(JSON.parse(ev.data).seq); } catch (e) { seq = undefined; }
    if (cur && seq !== undefined && cur.dataset.seq === seq) return;
    refresh();
  });
  es.addEventListener("end", () => { es.close(); refresh().then(() => { const l = live(); if (l) { l.hidden = false; l.textContent = "finished"; } }); });
  es.addEventListener("problem", (ev) => { const l = live(); if (l) l.textContent = JSON.parse(ev.data).error; });
});

// Live alert list: on each change the stream announces, the page fetches its own HTML and
// swaps the list (rendering stays on the server).
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("alerts-box");
  const url = box && box.dataset.events;
  if (!url || !window.EventSource) return;
  const es = new EventSource(url);
  const live = () => document.getElementById("alerts-live");
  let busy = false, again = false;
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const resp = await fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (resp.ok) {
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        const next = doc.getElementById("alerts-box");
        const cur = document.getElementById("alerts-box");
        if (next && cur) cur.replaceWith(next);
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  };
  es.addEventListener("open", () => { const l = live(); if (l) l.hidden = false; });
  es.addEventListener("alerts", refresh);
  es.addEventListener("end", (ev) => { es.close(); const l = live(); if (l) l.textContent = JSON.parse(ev.data).error || "ended"; });
  es.addEventListener("problem", (ev) => { const l = live(); if (l) l.textContent = JSON.parse(ev.data).error; });
});
