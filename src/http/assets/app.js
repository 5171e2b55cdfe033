// The mqtt-sessions status page: polls `sessions` (one page, filtered and sorted by the
// server), `overview` and `rules`, and listens to `events` (Server-Sent Events) to show
// state changes at once. Read-only; every URL is relative to the page.
'use strict';

// Errors the page met, for tests and for a look in the console.
window.statusPageErrors = [];
window.addEventListener('error', (e) => window.statusPageErrors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => window.statusPageErrors.push(String(e.reason)));

const POLL_MS = 2000;
const HISTORY = 150; // chart samples kept: 5 minutes at one per poll
const STATES = ['connected', 'connecting', 'reconnecting', 'disconnected', 'gave_up', 'closed'];

const view = { offset: 0, limit: 100, sort: 'name', order: 'asc', q: '', state: '' };
const history = []; // {t, in, out}
const previous = { rules: new Map(), routes: new Map(), t: 0 };
let total = 0;
let serverSkew = 0; // server time - local time, seconds
let refreshTimer = null;
let inFlight = false;

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function rate(x) {
  if (!x) return '0';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return '';
  let s = Math.max(0, Math.round(Date.now() / 1000 + serverSkew - seconds));
  if (s < 60) return s + 's';
  const m = Math.floor(s / 60); s %= 60;
  if (m < 60) return m + 'm ' + s + 's';
  const h = Math.floor(m / 60);
  if (h < 48) return h + 'h ' + (m % 60) + 'm';
  return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
}

function live(ok, text) {
  $('#live-dot').className = 'dot ' + (ok ? 'on' : 'off');
  $('#live-text').textContent = text;
}

async function getJSON(url) {
  const r = await fetch(url, { cache: 'no-store', credentials: 'same-origin' });
  if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
  return { body: await r.json(), headers: r.headers };
}

function sessionsURL() {
  const p = new URLSearchParams({
    offset: String(view.offset), limit: String(view.limit), sort: view.sort, order: view.order,
  });
  if (view.q) p.set('q', view.q);
  if (view.state) p.set('state', view.state);
  return 'sessions?' + p.toString();
}

function renderSessions(rows) {
  const body = $('#sessions tbody');
  const frag = document.createDocumentFragment();
  for (const r of rows) {
    const tr = el('tr');
    tr.dataset.name = r.name;
    tr.dataset.state = r.state;
    tr.appendChild(el('td', { class: 'name' }, r.name));
    tr.appendChild(el('td', { class: 'state ' + r.state }, r.state));
    tr.appendChild(el('td', {}, r.broker || ''));
    const since = el('td', { class: 'since' }, ago(r.state_since_seconds));
    if (r.state_since_seconds) {
      since.title = new Date(r.state_since_seconds * 1000).toISOString();
      since.dataset.since = String(r.state_since_seconds);
    }
    tr.appendChild(since);
    const e = r.last_error;
    tr.appendChild(el('td', { class: 'error' }, e ? e.kind + ': ' + e.message : ''));
    tr.appendChild(el('td', { class: 'num' }, rate(r.metrics.messages_received_per_second)));
    tr.appendChild(el('td', { class: 'num' }, rate(r.metrics.messages_sent_per_second)));
    tr.appendChild(el('td', { class: 'num' }, r.metrics.pending_messages));
    tr.appendChild(el('td', { class: 'num' }, r.subscriptions));
    frag.appendChild(tr);
  }
  body.replaceChildren(frag);
  const first = total === 0 ? 0 : view.offset + 1;
  const last = Math.min(view.offset + rows.length, total);
  $('#page-info').textContent = first + '–' + last + ' of ' + total;
  $('#prev').disabled = view.offset === 0;
  $('#next').disabled = view.offset + view.limit >= total;
  for (const th of document.querySelectorAll('#sessions th[data-sort]')) {
    th.classList.toggle('asc', th.dataset.sort === view.sort && view.order === 'asc');
    th.classList.toggle('desc', th.dataset.sort === view.sort && view.order === 'desc');
  }
}

function renderSummary(o) {
  const box = $('#summary');
  const chips = [el('span', { class: 'chip' }, o.sessions + ' sessions')];
  for (const s of STATES) {
    const n = (o.sessions_by_state || {})[s] || 0;
    if (n > 0 || s === 'connected') {
      const c = el('span', { class: 'chip' });
      c.appendChild(el('b', { class: 'state ' + s }, n));
      c.appendChild(document.createTextNode(' ' + s));
      chips.push(c);
    }
  }
  box.replaceChildren(...chips);
  $('#rate-in').textContent = rate(o.messages_received_per_second);
  $('#rate-out').textContent = rate(o.messages_sent_per_second);
  $('#queued').textContent = String(o.pending_messages);
}

function drawChart() {
  const svg = $('#chart');
  const W = 600, H = 140, PAD = 14;
  const ns = 'http://www.w3.org/2000/svg';
  const max = Math.max(1, ...history.map((h) => Math.max(h.in, h.out)));
  const x = (i) => (W * i) / (HISTORY - 1);
  const y = (v) => H - PAD - ((H - 2 * PAD) * v) / max;
  const offset = HISTORY - history.length;
  const nodes = [];
  for (const frac of [0, 0.5, 1]) {
    const line = document.createElementNS(ns, 'line');
    line.setAttribute('x1', '0'); line.setAttribute('x2', String(W));
    line.setAttribute('y1', String(y(max * frac))); line.setAttribute('y2', String(y(max * frac)));
    line.setAttribute('stroke', '#e3e6eb'); line.setAttribute('stroke-width', '1');
    nodes.push(line);
  }
  for (const [key, colour] of [['in', '#2563eb'], ['out', '#16a34a']]) {
    const p = document.createElementNS(ns, 'polyline');
    p.setAttribute('fill', 'none'); p.setAttribute('stroke', colour); p.setAttribute('stroke-width', '2');
    p.setAttribute('vector-effect', 'non-scaling-stroke');
    p.setAttribute('points', history.map((h, i) => x(i + offset).toFixed(1) + ',' + y(h[key]).toFixed(1)).join(' '));
    nodes.push(p);
  }
  svg.replaceChildren(...nodes);
  $('#chart-max').textContent = 'scale: 0 – ' + rate(max) + '/s';
}

// Rates of counters between two polls.
function perSecond(map, key, value, dt) {
  const before = map.get(key);
  map.set(key, value);
  return before === undefined || dt <= 0 ? 0 : Math.max(0, (value - before) / dt);
}

function renderRules(rules, dt) {
  $('#rules-panel').hidden = rules.length === 0;
  const rows = rules.map((r) => {
    const tr = el('tr');
    tr.dataset.rule = r.name;
    tr.appendChild(el('td', {}, r.name));
    tr.appendChild(el('td', {}, r.from + ' → ' + r.to));
    tr.appendChild(el('td', {}, r.filter));
    for (const k of ['forwarded', 'retries', 'dropped']) {
      tr.appendChild(el('td', { class: 'num' }, r[k]));
      tr.appendChild(el('td', { class: 'num' }, rate(perSecond(previous.rules, r.name + '/' + k, r[k], dt))));
    }
    tr.appendChild(el('td', { class: 'num' }, r.in_flight));
    tr.appendChild(el('td', { class: 'num' }, r.waiting));
    tr.appendChild(el('td', { class: 'num' }, (r.oldest_age_ms / 1000).toFixed(1) + ' s'));
    return tr;
  });
  $('#rules tbody').replaceChildren(...rows);
}

function renderRoutes(routes, dt) {
  const names = Object.keys(routes || {});
  $('#routes-panel').hidden = names.length === 0;
  const rows = names.map((n) => {
    const r = routes[n];
    const tr = el('tr');
    tr.appendChild(el('td', {}, n));
    tr.appendChild(el('td', { class: 'num' }, r.delivered));
    tr.appendChild(el('td', { class: 'num' }, rate(perSecond(previous.routes, n, r.delivered, dt))));
    tr.appendChild(el('td', { class: 'num' }, r.dropped_full));
    tr.appendChild(el('td', { class: 'num' }, r.dropped_panic));
    return tr;
  });
  $('#routes tbody').replaceChildren(...rows);
}

async function refresh() {
  if (inFlight) { schedule(100); return; }
  inFlight = true;
  try {
    const [s, o, rules] = await Promise.all([getJSON(sessionsURL()), getJSON('overview'), getJSON('rules')]);
    total = Number(s.headers.get('x-total-count') || s.body.length);
    if (view.offset > 0 && view.offset >= total) {
      view.offset = Math.max(0, total - (total % view.limit || view.limit));
      schedule(0);
    }
    serverSkew = o.body.time - Date.now() / 1000;
    const dt = previous.t ? o.body.time - previous.t : 0;
    previous.t = o.body.time;
    renderSessions(s.body);
    renderSummary(o.body);
    renderRules(rules.body, dt);
    renderRoutes(o.body.routes, dt);
    // One sample per poll period (refreshes caused by events update the last one).
    const sample = { t: o.body.time, in: o.body.messages_received_per_second, out: o.body.messages_sent_per_second };
    const last = history[history.length - 1];
    if (last && sample.t - last.t < (POLL_MS / 1000) * 0.75) history[history.length - 1] = { ...sample, t: last.t };
    else history.push(sample);
    while (history.length > HISTORY) history.shift();
    drawChart();
    if (eventsOpen) live(true, 'live · ' + new Date().toLocaleTimeString());
  } catch (err) {
    live(false, 'cannot reach the daemon (' + err.message + ')');
  } finally {
    inFlight = false;
  }
}

function schedule(ms) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, ms);
}

// Server-Sent Events: patch the row at once, then ask the server for the whole page.
let eventsOpen = false;
function listen() {
  const es = new EventSource('events');
  es.onopen = () => { eventsOpen = true; live(true, 'live'); };
  es.onerror = () => { eventsOpen = false; live(false, 'event stream interrupted; retrying'); };
  es.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch (e) { return; }
    if (ev.kind === 'session_state_changed') {
      for (const tr of document.querySelectorAll('#sessions tbody tr')) {
        if (tr.dataset.name !== ev.session) continue;
        tr.dataset.state = ev.data.new;
        const cell = tr.querySelector('td.state');
        cell.className = 'state ' + ev.data.new;
        cell.textContent = ev.data.new;
        const since = tr.querySelector('td.since');
        since.dataset.since = String(ev.time);
        since.textContent = ago(ev.time);
        tr.classList.add('flash');
        setTimeout(() => tr.classList.remove('flash'), 800);
      }
    }
    schedule(300);
  };
}

function bind() {
  let typing = null;
  $('#filter').addEventListener('input', (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { view.q = e.target.value.trim(); view.offset = 0; refresh(); }, 150);
  });
  $('#state-filter').addEventListener('change', (e) => { view.state = e.target.value; view.offset = 0; refresh(); });
  $('#page-size').addEventListener('change', (e) => { view.limit = Number(e.target.value); view.offset = 0; refresh(); });
  $('#prev').addEventListener('click', () => { view.offset = Math.max(0, view.offset - view.limit); refresh(); });
  $('#next').addEventListener('click', () => { view.offset += view.limit; refresh(); });
  for (const th of document.querySelectorAll('#sessions th[data-sort]')) {
    th.addEventListener('click', () => {
      const key = th.dataset.sort;
      view.order = view.sort === key && view.order === 'asc' ? 'desc' : 'asc';
      view.sort = key;
      refresh();
    });
  }
  // Keep "since" ticking between polls.
  setInterval(() => {
    for (const td of document.querySelectorAll('#sessions td.since[data-since]')) {
      td.textContent = ago(Number(td.dataset.since));
    }
  }, 1000);
  setInterval(refresh, POLL_MS);
}

bind();
listen();
refresh();
