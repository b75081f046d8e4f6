// The review console's page: polls /api/status and /api/rows, sends labels to /api/label.
// Every value from the server is set as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (x) => (typeof x === "number" && isFinite(x) ? (Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(3)) : String(x));
const sent = new Map();  // row key -> label sent from this page, until the sink has stored it

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function keyOf(r) { return [r.window_start, r.src_ip, r.ja4, r.host].join("|"); }

function say(text) { $("message").textContent = text || ""; }

async function getJSON(url) {
  const resp = await fetch(url, { credentials: "same-origin" });
  let body = {};
  try { body = await resp.json(); } catch (e) { body = { error: "not JSON" }; }
  if (!resp.ok) throw new Error(body.error || ("HTTP " + resp.status));
  return body;
}

async function refreshStatus() {
  try {
    const s = await getJSON("/api/status");
    const m = s.model || {};
    $("model").textContent = m.champion ? m.champion.version : (m.error || "none");
    $("challenger").textContent = m.challenger ? m.challenger.version : "none";
    $("dlq").textContent = s.dlq === undefined ? (s.kafka_error ? "Kafka unreachable" : "?") : s.dlq;
    $("lag").textContent = s.lag === undefined ? "?" : s.lag;
    $("source").textContent = s.source || "?";
  } catch (e) {
    $("model").textContent = "status unavailable: " + e.message;
  }
}

function reasonsCell(reasons) {
  const td = el("td", null, "reasons");
  if (!reasons || !reasons.length) { td.appendChild(el("span", "-", "empty")); return td; }
  const ul = el("ul", null, "reasons");
  for (const r of reasons) {
    const li = el("li", r.feature + " = " + fmt(r.value) + " (" + fmt(r.median) + " / " + fmt(r.p99) + ")");
    li.dataset.feature = r.feature;
    ul.appendChild(li);
  }
  td.appendChild(ul);
  return td;
}

function labelCell(r) {
  const td = el("td", null, "label");
  const given = r.label ? r.label.label : sent.get(keyOf(r));
  if (r.label) sent.delete(keyOf(r));
  if (given) {
    const who = r.label && r.label.analyst ? " by " + r.label.analyst : "";
    td.appendChild(el("span", given + (r.label ? who : " (sent)"), "labelled " + given));
    return td;
  }
  for (const value of ["bot", "human"]) {
    const b = el("button", value, "label-" + value);
    b.type = "button";
    b.addEventListener("click", () => sendLabel(r, value, td));
    td.appendChild(b);
  }
  return td;
}

function renderRows(data) {
  const tbody = $("rows").querySelector("tbody");
  tbody.replaceChildren();
  if (!data.rows.length) {
    const tr = el("tr"); const td = el("td", "no scores in the last hour match these filters", "empty");
    td.colSpan = 9; tr.appendChild(td); tbody.appendChild(tr); return;
  }
  for (const r of data.rows) {
    const tr = el("tr");
    tr.dataset.key = keyOf(r);
    tr.dataset.srcIp = r.src_ip;
    tr.appendChild(el("td", r.window_start_iso, "mono"));
    tr.appendChild(el("td", r.src_ip, "mono"));
    tr.appendChild(el("td", r.ja4, "mono"));
    tr.appendChild(el("td", r.host));
    tr.appendChild(el("td", r.anomaly_score.toFixed(3), "score"));
    const lv = el("td"); lv.appendChild(el("span", r.threat_level, "level level-" + r.threat_level)); tr.appendChild(lv);
    tr.appendChild(el("td", r.model_version, "mono"));
    tr.appendChild(reasonsCell(r.reasons));
    tr.appendChild(labelCell(r));
    tbody.appendChild(tr);
  }
}

function query() {
  const p = new URLSearchParams();
  for (const id of ["level", "host", "ja4"]) { const v = $(id).value.trim(); if (v) p.set(id, v); }
  return p.toString();
}

async function refreshRows() {
  try {
    renderRows(await getJSON("/api/rows?" + query()));
    say("");
  } catch (e) {
    say("rows unavailable: " + e.message);
  }
}

async function sendLabel(r, value, td) {
  for (const b of td.querySelectorAll("button")) b.disabled = true;
  const body = { window_start: r.window_start, src_ip: r.src_ip, ja4: r.ja4, host: r.host, label: value };
  const analyst = $("analyst").value.trim();
  if (analyst) body.analyst = analyst;
  try {
    const resp = await fetch("/api/label", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const out = await resp.json();
    if (!resp.ok) throw new Error(out.error || ("HTTP " + resp.status));
    sent.set(keyOf(r), value);
    td.replaceChildren(el("span", value + " (sent)", "labelled " + value));
    say("label sent: " + value + " for " + r.src_ip);
  } catch (e) {
    for (const b of td.querySelectorAll("button")) b.disabled = false;
    say("label not sent: " + e.message);
  }
}

$("analyst").value = localStorage.getItem("ja4-analyst") || "";
$("analyst").addEventListener("change", () => localStorage.setItem("ja4-analyst", $("analyst").value.trim()));
$("filters").addEventListener("submit", (ev) => { ev.preventDefault(); refreshRows(); });
$("level").addEventListener("change", refreshRows);
refreshStatus();
refreshRows();
setInterval(refreshStatus, 5000);
setInterval(refreshRows, 10000);
