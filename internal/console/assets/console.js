// rbee-hive web console (SPEC §13). Plain script, no library, no build step.
//
// Data flow: the worker list is loaded once, then kept current from
// /v1/events (state changes, pushed) and a light poll of the list every few
// seconds (resource use, which no event carries). The token travels only in
// the Authorization header: /v1/events and the log follow are read with
// fetch() and a stream reader (EventSource cannot send headers), and the
// token is kept in this tab's sessionStorage, never in a URL.
//
// On a queen (its /health says "role": "queen") the page shows the cluster
// instead: every hive registered in etcd with its workers, from
// GET /v1/cluster polled every second (a queen has no event stream). The
// token is then one of the queen's inference tokens. Worker actions and
// logs are a hive's, behind the hive's own token: the queen's page links to
// each hive's console rather than offering them.
'use strict';

(function () {
  const TOKEN_KEY = 'rbee-hive-token';
  const POLL_MS = 2000;          // worker list (stats) refresh
  const STATUS_MS = 5000;        // status and models refresh
  const HISTORY_MS = 10 * 60e3;  // how far back the plots go
  const MAX_EVENTS = 300;
  const MAX_LOG_LINES = 2000;
  const ENDED = new Set(['terminated', 'failed']);

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, props, ...kids) => {
    const e = document.createElement(tag);
    if (props) for (const [k, v] of Object.entries(props)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  };
  const SVG = 'http://www.w3.org/2000/svg';
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  };

  // ---- state ----
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let authFailed = false;
  let devMode = null;
  const workers = new Map();   // id → WorkerInfo (latest)
  const rows = new Map();      // id → {tr, cells}
  const history = new Map();   // id → [{t, rss, cpu}] (cpu: % of one core)
  const lastCPU = new Map();   // id → {t, sec}
  let selected = null;         // worker id shown in detail
  let logAbort = null;
  let eventsAbort = null;
  let status = null;
  let role = null;             // 'queen' or 'hive', from /health

  // ---- API ----
  class APIError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(method, path, body, opts) {
    const headers = {};
    if (token) headers['Authorization'] = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const resp = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store', credentials: 'omit', signal: opts && opts.signal,
    });
    if (!resp.ok) throw await toError(resp);
    if (opts && opts.raw) return resp;
    const ct = resp.headers.get('Content-Type') || '';
    return ct.includes('json') ? resp.json() : resp.text();
  }

  async function toError(resp) {
    let code = 'HTTP_' + resp.status, message = resp.statusText || ('status ' + resp.status);
    try {
      const b = await resp.json();
      if (b && b.error) { code = b.error.code || code; message = b.error.message || message; }
    } catch (_) { /* not JSON */ }
    const e = new APIError(resp.status, code, message);
    if (resp.status === 401) authRefused(e);
    return e;
  }

  // ---- auth ----
  function authRefused(e) {
    authFailed = true;
    const m = $('#auth-msg');
    if (role === 'queen') {
      m.textContent = e.code === 'MISSING_API_KEY'
        ? 'This queen needs one of its inference tokens (inference_tokens in queen.yaml). Type it above; it is kept in this tab only.'
        : 'The queen refused the token (' + e.code + ': ' + e.message + '). Type one of its inference tokens again.';
    } else if (e.code === 'MISSING_API_KEY') {
      m.textContent = 'This hive needs its operator token (RBEE_API_TOKEN). Type it above; it is kept in this tab only.';
    } else {
      m.textContent = 'The hive refused the token (' + e.code + ': ' + e.message + '). Type the operator token again.';
    }
    m.hidden = false;
    $('#token-form').hidden = false;
    $('#token-forget').hidden = !token;
    setConn('error', 'not authorised');
    stopStreams();
  }

  function authOK() {
    if (authFailed || !$('#auth-msg').hidden) {
      authFailed = false;
      $('#auth-msg').hidden = true;
    }
    $('#token-form').hidden = devMode === true || !!token;
    $('#token-forget').hidden = !token;
  }

  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('#token-input').value.trim();
    $('#token-input').value = '';
    if (!v) return;
    token = v;
    sessionStorage.setItem(TOKEN_KEY, v);
    start();
  });
  $('#token-forget').addEventListener('click', () => {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    stopStreams();
    location.reload();
  });

  // ---- messages ----
  let msgTimer = null;
  function say(text, isError) {
    const m = $('#msg');
    m.textContent = text;
    m.className = 'banner' + (isError ? ' error' : '');
    m.hidden = false;
    clearTimeout(msgTimer);
    msgTimer = setTimeout(() => { m.hidden = true; }, isError ? 12000 : 5000);
  }
  function setConn(state, text) {
    const c = $('#conn');
    c.dataset.state = state;
    c.textContent = text;
  }

  // ---- formatting ----
  function bytes(n) {
    if (n == null || isNaN(n)) return '—';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + u[i];
  }
  function duration(ms) {
    if (ms == null || ms < 0 || isNaN(ms)) return '—';
    if (ms < 10e3) return (ms / 1000).toFixed(1) + 's';
    let s = Math.floor(ms / 1000);
    if (s < 60) return s + 's';
    let m = Math.floor(s / 60); s %= 60;
    if (m < 60) return m + 'm ' + String(s).padStart(2, '0') + 's';
    let h = Math.floor(m / 60); m %= 60;
    if (h < 48) return h + 'h ' + String(m).padStart(2, '0') + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }
  function clock(t) {
    const d = new Date(t);
    return isNaN(d) ? '' : d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
  }
  const shortID = (id) => id.replace(/^worker-/, '').slice(0, 8);
  // when shows an RFC 3339 time as local date and time, and how long ago.
  function when(t) {
    if (!t) return null;
    const d = new Date(t);
    if (isNaN(d)) return t;
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} (${duration(Date.now() - d)} ago)`;
  }

  // escapeControls shows control characters (C0, DEL, C1) and the bidi and
  // zero-width characters that could make a log line lie as visible escapes,
  // like the CLI does. It returns text; the caller sets textContent.
  function escapeControls(s) {
    return s.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, (c) => {
      const n = c.charCodeAt(0);
      if (n === 0x1b) return '\\e';
      if (n === 0x0d) return '\\r';
      return n < 0x100 ? '\\x' + n.toString(16).padStart(2, '0') : '\\u' + n.toString(16).padStart(4, '0');
    });
  }

  function inFlight(w) {
    if (typeof w.in_flight === 'number') return w.in_flight;
    if (w.slots_total > 0) return Math.max(0, w.slots_total - w.slots_available);
    return w.state === 'busy' ? 1 : 0;
  }
  function gpuMem(w) {
    const s = w.stats || {};
    const n = s.gpu_memory_bytes != null ? s.gpu_memory_bytes : w.gpu_memory_bytes;
    // A worker not placed on a GPU holds none: a dash, not "0 B".
    return n == null || (!n && !w.gpu_uuid) ? '—' : bytes(n);
  }
  function uptimeMs(w, now) {
    const from = w.started_at && Date.parse(w.started_at);
    if (!from) return null;
    const to = ENDED.has(w.state) ? Date.parse(w.ended_at || (w.exit && w.exit.at) || '') || from : now;
    return to - from;
  }

  // ---- history ----
  function sample(w, now) {
    if (!w.stats || ENDED.has(w.state)) return;
    let cpuPct = null;
    const prev = lastCPU.get(w.id);
    if (prev && now > prev.t && w.stats.cpu_seconds >= prev.sec) {
      cpuPct = (w.stats.cpu_seconds - prev.sec) / ((now - prev.t) / 1000) * 100;
    }
    if (!prev || prev.sec !== w.stats.cpu_seconds || now - prev.t > 10e3) {
      lastCPU.set(w.id, { t: now, sec: w.stats.cpu_seconds });
    }
    let h = history.get(w.id);
    if (!h) { h = []; history.set(w.id, h); }
    h.push({ t: now, rss: w.stats.rss_bytes, cpu: cpuPct });
    while (h.length && h[0].t < now - HISTORY_MS) h.shift();
  }
  function currentCPU(id) {
    const h = history.get(id);
    for (let i = h ? h.length - 1 : -1; i >= 0; i--) if (h[i].cpu != null) return h[i].cpu;
    return null;
  }

  // plot draws RSS (blue, own scale) and CPU % (orange, own scale) over the
  // kept history as an inline SVG.
  function plot(id, width, height, withAxes) {
    const h = history.get(id) || [];
    const svg = svgEl('svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: withAxes ? 'big' : 'spark', role: 'img' });
    const pad = withAxes ? { l: 48, r: 40, t: 8, b: 16 } : { l: 1, r: 1, t: 2, b: 2 };
    const now = Date.now();
    // The x axis spans the kept samples (10 s at least, HISTORY_MS at most).
    const t0 = Math.min(now - 10e3, h.length ? h[0].t : now);
    const span = Math.max(1, now - t0);
    const maxRSS = Math.max(1, ...h.map((p) => p.rss || 0));
    const maxCPU = Math.max(5, ...h.map((p) => p.cpu || 0));
    const x = (t) => pad.l + (t - t0) / span * (width - pad.l - pad.r);
    const y = (v, max) => height - pad.b - v / max * (height - pad.t - pad.b);
    if (withAxes) {
      for (const f of [0, 0.5, 1]) {
        const yy = y(f * maxRSS, maxRSS);
        svg.append(svgEl('line', { x1: pad.l, x2: width - pad.r, y1: yy, y2: yy, class: 'grid' }));
        const tl = svgEl('text', { x: 2, y: yy + 3 }); tl.textContent = bytes(f * maxRSS); svg.append(tl);
        const tr = svgEl('text', { x: width - pad.r + 3, y: yy + 3 }); tr.textContent = Math.round(f * maxCPU) + '%'; svg.append(tr);
      }
      const lt = svgEl('text', { x: pad.l, y: height - 2 }); lt.textContent = '−' + duration(span); svg.append(lt);
      const rt = svgEl('text', { x: width - pad.r - 20, y: height - 2 }); rt.textContent = 'now'; svg.append(rt);
      const lg = svgEl('text', { x: pad.l + 70, y: height - 2 }); lg.textContent = 'blue: RSS   orange: CPU % of one core'; svg.append(lg);
    }
    const line = (key, max, cls) => {
      const pts = h.filter((p) => p[key] != null).map((p) => x(p.t).toFixed(1) + ',' + y(p[key], max).toFixed(1));
      if (pts.length === 1) pts.push((width - pad.r) + ',' + pts[0].split(',')[1]);
      if (pts.length) svg.append(svgEl('polyline', { points: pts.join(' '), class: cls }));
    };
    line('rss', maxRSS, 'rss');
    line('cpu', maxCPU, 'cpu');
    const title = svgEl('title');
    const last = h[h.length - 1];
    title.textContent = last ? `RSS ${bytes(last.rss)}, CPU ${last.cpu == null ? '—' : last.cpu.toFixed(1) + '%'}` : 'no samples yet';
    svg.append(title);
    return svg;
  }

  // ---- worker table ----
  const COLS = ['id', 'state', 'model', 'pid', 'device', 'uptime', 'inflight', 'rss', 'cpu', 'gpu', 'history', 'actions'];
  // Labels shown before a value when the table folds into cards (phones).
  const LABELS = { pid: 'PID', device: 'device', uptime: 'up', inflight: 'in flight', rss: 'RSS', cpu: 'CPU', gpu: 'GPU mem' };

  function makeRow(id) {
    const tr = el('tr', { 'data-id': id });
    const cells = {};
    for (const c of COLS) {
      const td = el('td', { class: 'col-' + c });
      if (LABELS[c]) td.dataset.label = LABELS[c];
      cells[c] = td;
      tr.append(td);
    }
    cells.id.classList.add('id');
    cells.model.classList.add('model');
    for (const c of ['pid', 'inflight', 'rss', 'cpu', 'gpu', 'uptime']) cells[c].classList.add('num');
    for (const [act, label] of [['stop', 'Stop'], ['kill', 'Kill'], ['restart', 'Restart']]) {
      const b = el('button', { type: 'button', text: label, 'data-act': act });
      if (act === 'kill') b.className = 'danger';
      b.addEventListener('click', (ev) => { ev.stopPropagation(); act3(act, id); });
      cells.actions.append(b, ' ');
    }
    tr.tabIndex = 0;
    tr.addEventListener('click', () => select(id));
    tr.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && ev.target === tr) select(id); });
    const r = { tr, cells, key: {} };
    rows.set(id, r);
    return r;
  }

  function setCell(r, c, text) {
    if (r.key[c] !== text) { r.key[c] = text; r.cells[c].textContent = text; }
  }

  function renderRow(r, w, now) {
    setCell(r, 'id', shortID(w.id));
    r.cells.id.title = w.id;
    const p = w.progress;
    const loading = w.state === 'loading' && p && p.total > 0 ? Math.floor(p.done / p.total * 100) + '%' : '';
    const stateKey = w.state + '|' + (w.reason || '') + '|' + loading;
    if (r.key.state !== stateKey) {
      r.key.state = stateKey;
      const badge = el('span', { class: 'state ' + w.state, text: w.state });
      const note = w.reason || loading;
      r.cells.state.replaceChildren(badge, note ? el('span', { class: 'reason', text: note }) : '');
      r.cells.state.title = w.detail || '';
      r.tr.dataset.state = w.state;
      r.tr.classList.toggle('ended', ENDED.has(w.state));
      for (const b of r.cells.actions.querySelectorAll('button')) b.disabled = ENDED.has(w.state);
    }
    // A worker the front door started for a served model (SPEC §10) is
    // named by that model; its reference is in the tooltip and the detail.
    const served = w.labels && w.labels['rbee.model'];
    setCell(r, 'model', served || w.model_ref || '');
    r.cells.model.title = (served ? served + ' = ' : '') + (w.model_ref || '') + (w.model_path ? ' (' + w.model_path + ')' : '');
    setCell(r, 'pid', w.pid ? String(w.pid) : '—');
    setCell(r, 'device', (w.backend || 'cpu') + ':' + (w.device ?? 0));
    setCell(r, 'uptime', duration(uptimeMs(w, now)));
    setCell(r, 'inflight', ENDED.has(w.state) ? '—' : String(inFlight(w)) + (w.slots_total ? '/' + w.slots_total : ''));
    setCell(r, 'rss', w.stats && !ENDED.has(w.state) ? bytes(w.stats.rss_bytes) : '—');
    const cpu = ENDED.has(w.state) ? null : currentCPU(w.id);
    setCell(r, 'cpu', cpu == null ? '—' : cpu.toFixed(1) + '%');
    setCell(r, 'gpu', gpuMem(w));
    const h = history.get(w.id);
    const hk = h && h.length ? h.length + '@' + h[h.length - 1].t : '';
    if (r.key.history !== hk) { r.key.history = hk; r.cells.history.replaceChildren(plot(w.id, 90, 22, false)); }
    r.tr.classList.toggle('selected', w.id === selected);
  }

  // startedMs is the worker's start as a number, parsed once per snapshot.
  function startedMs(w) {
    if (w._startedMs === undefined) w._startedMs = Date.parse(w.started_at || '') || 0;
    return w._startedMs;
  }

  function renderTable() {
    const now = Date.now();
    const showEnded = $('#show-ended').checked;
    const tbody = $('#workers tbody');
    const list = [...workers.values()]
      .filter((w) => showEnded || !ENDED.has(w.state))
      .sort((a, b) => (startedMs(a) - startedMs(b)) || (a.id < b.id ? -1 : 1));
    const keep = new Set(list.map((w) => w.id));
    for (const [id, r] of rows) if (!keep.has(id)) { r.tr.remove(); rows.delete(id); }
    let prev = null;
    for (const w of list) {
      const r = rows.get(w.id) || makeRow(w.id);
      renderRow(r, w, now);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== r.tr) tbody.insertBefore(r.tr, want);
      prev = r.tr;
    }
    const live = [...workers.values()].filter((w) => !ENDED.has(w.state)).length;
    $('#worker-count').textContent = `${live} live, ${workers.size - live} ended`;
    $('#no-workers').hidden = list.length > 0;
    if (selected) renderDetail();
    renderBars();
  }

  // ---- actions ----
  function confirmBox(text) {
    const d = $('#confirm');
    $('#confirm-text').textContent = text;
    d.returnValue = '';
    return new Promise((resolve) => {
      // The close event is queued: the one of a dialog closed just before
      // can arrive after this one opened. It is not ours while d is open.
      const onClose = () => {
        if (d.open) return;
        d.removeEventListener('close', onClose);
        resolve(d.returnValue === 'ok');
      };
      d.addEventListener('close', onClose);
      d.showModal();
      $('#confirm-cancel').focus();
    });
  }

  async function act3(act, id) {
    const w = workers.get(id);
    const what = { stop: 'Stop (gracefully)', kill: 'Kill (SIGKILL, at once)', restart: 'Restart' }[act];
    const ok = await confirmBox(`${what} worker ${id}${w ? ' (' + w.model_ref + ')' : ''}?`);
    if (!ok) return;
    try {
      const r = await api('POST', `/v1/workers/${encodeURIComponent(id)}/${act}`);
      say(`${act}: ${id} is ${r.state}`);
    } catch (e) {
      say(`${act} failed: ${e.code}: ${e.message}`, true);
    }
  }

  $('#spawn-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const out = $('#spawn-result');
    const req = { model_ref: f.model_ref.value.trim() };
    if (f.profile.value.trim()) req.profile = f.profile.value.trim();
    if (f.backend.value.trim()) req.backend = f.backend.value.trim();
    req.device = Number(f.device.value || 0);
    if (f.settings.value.trim()) {
      try { req.settings = JSON.parse(f.settings.value); } catch (e) {
        out.textContent = 'Settings are not valid JSON: ' + e.message;
        return;
      }
    }
    out.textContent = 'spawning…';
    try {
      const r = await api('POST', '/v1/workers/spawn', req);
      out.textContent = `spawned ${r.worker_id} (PID ${r.pid}, port ${r.port})`;
      refreshWorker(r.worker_id);
    } catch (e) {
      out.textContent = `${e.code}: ${e.message}`;
    }
  });

  // ---- detail ----
  function select(id) {
    if (selected === id) return;
    selected = id;
    $('#detail').hidden = false;
    $('#detail-id').textContent = id;
    for (const [rid, r] of rows) r.tr.classList.toggle('selected', rid === id);
    renderDetail();
    startLog();
    $('#detail').scrollIntoView({ block: 'nearest' });
  }
  $('#detail-close').addEventListener('click', () => {
    selected = null;
    stopLog();
    $('#detail').hidden = true;
    for (const r of rows.values()) r.tr.classList.remove('selected');
  });

  function renderDetail() {
    const w = workers.get(selected);
    if (!w) return;
    const dl = $('#detail-fields');
    const now = Date.now();
    const f = [
      ['state', w.state + (w.reason ? ' / ' + w.reason : '')],
      ['detail', w.detail],
      ['served model', w.labels && w.labels['rbee.model']],
      ['model', w.model_ref], ['model path', w.model_path], ['profile', w.profile],
      ['backend / device', (w.backend || 'cpu') + ' / ' + (w.device ?? 0)],
      ['PID', w.pid || '—'], ['URL', w.url],
      ['started', when(w.started_at)], ['ready', when(w.ready_at)], ['uptime', duration(uptimeMs(w, now))],
      ['last activity', when(w.last_activity)], ['last heartbeat', when(w.last_heartbeat)],
      ['ended', when(w.ended_at)],
      ['slots', w.slots_total ? `${w.slots_available} free of ${w.slots_total}` : null],
      ['restarts', String(w.restart_count || 0)],
      ['failed health checks', String(w.failed_health_checks || 0)],
      ['RSS', w.stats ? bytes(w.stats.rss_bytes) : null],
      ['CPU time', w.stats ? w.stats.cpu_seconds.toFixed(2) + ' s' : null],
      ['threads / fds', w.stats ? `${w.stats.threads} / ${w.stats.open_fds}` : null],
      ['exit', w.exit ? (w.exit.signal ? 'signal ' + w.exit.signal : 'code ' + w.exit.code) + (w.exit.oom_killed ? ' (OOM)' : '') : null],
      ['last output', Array.isArray(w.last_lines) && w.last_lines.length ? w.last_lines.slice(-3).join(' ⏎ ') : null],
      ['labels', w.labels && Object.keys(w.labels).length ? Object.entries(w.labels).map(([k, v]) => k + '=' + v).join(', ') : null],
    ];
    const key = JSON.stringify(f);
    if (dl.dataset.key !== key) {
      dl.dataset.key = key;
      dl.replaceChildren(...f.filter(([, v]) => v != null && v !== '').flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: escapeControls(String(v)) })]));
    }
    $('#detail-plot').replaceChildren(plot(w.id, 640, 140, true));
  }

  // ---- log tail ----
  function stopLog() {
    if (logAbort) { logAbort.abort(); logAbort = null; }
  }
  $('#log-follow').addEventListener('change', () => { if (selected) startLog(); });

  let logEnded = false; // the selected worker's follow ended with the worker
  async function startLog() {
    stopLog();
    logEnded = false;
    const id = selected;
    $('#log').replaceChildren();
    const follow = $('#log-follow').checked;
    const ac = new AbortController();
    logAbort = ac;
    const pre = $('#log');
    const st = $('#log-state');
    st.textContent = follow ? 'following…' : '';
    try {
      const resp = await api('GET', `/v1/workers/${encodeURIComponent(id)}/logs?tail=200&follow=${follow}`, undefined, { raw: true, signal: ac.signal });
      await readLines(resp, ac.signal, (line) => appendLog(pre, line));
      if (logAbort === ac) {
        st.textContent = follow ? 'ended (the worker is gone)' : '';
        logEnded = follow;
      }
    } catch (e) {
      if (ac.signal.aborted) return;
      st.textContent = e.code ? `${e.code}: ${e.message}` : String(e);
    }
  }

  function appendLog(pre, line) {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(escapeControls(line) + '\n');
    while (pre.childNodes.length > MAX_LOG_LINES) pre.firstChild.remove();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  async function readLines(resp, signal, onLine) {
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          onLine(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      }
      buf += dec.decode();
      if (buf) onLine(buf);
    } finally {
      if (signal.aborted) reader.cancel().catch(() => {});
    }
  }

  // ---- events ----
  function stopStreams() {
    if (eventsAbort) { eventsAbort.abort(); eventsAbort = null; }
    stopLog();
  }

  let eventsBackoff = 500;
  async function runEvents() {
    if (eventsAbort) eventsAbort.abort();
    const ac = new AbortController();
    eventsAbort = ac;
    while (!ac.signal.aborted) {
      try {
        const resp = await api('GET', '/v1/events', undefined, { raw: true, signal: ac.signal });
        setConn('live', 'live');
        eventsBackoff = 500;
        // Events missed while disconnected: reload the list once connected.
        refreshList();
        let ev = { type: 'message', data: '' };
        await readLines(resp, ac.signal, (line) => {
          if (line === '') {
            if (ev.data) onEvent(ev.type, ev.data);
            ev = { type: 'message', data: '' };
          } else if (line.startsWith('event:')) ev.type = line.slice(6).trim();
          else if (line.startsWith('data:')) ev.data += (ev.data ? '\n' : '') + line.slice(5).replace(/^ /, '');
        });
        if (ac.signal.aborted) return;
        setConn('off', 'reconnecting…');
      } catch (e) {
        if (ac.signal.aborted) return;
        if (e.status === 401) return;
        setConn('off', 'reconnecting…');
      }
      await new Promise((r) => setTimeout(r, eventsBackoff));
      eventsBackoff = Math.min(eventsBackoff * 2, 10000);
    }
  }

  function onEvent(type, data) {
    if (type !== 'state') {
      if (type === 'lagged') refreshList();
      return;
    }
    let e;
    try { e = JSON.parse(data); } catch (_) { return; }
    addEventRow(e);
    // A restarted worker (same id) writes a new log: follow it again.
    if (e.worker_id === selected && logEnded && (e.to === 'spawning' || e.to === 'loading')) startLog();
    const w = workers.get(e.worker_id);
    if (w) {
      w.state = e.to;
      w.reason = e.reason || '';
      if (e.pid) w.pid = e.pid;
    } else {
      workers.set(e.worker_id, { id: e.worker_id, state: e.to, reason: e.reason || '', pid: e.pid, started_at: e.at, model_ref: '' });
    }
    renderTable();
    refreshWorker(e.worker_id);
  }

  function addEventRow(e) {
    const tbody = $('#events tbody');
    const tr = el('tr', { 'data-worker': e.worker_id },
      el('td', { class: 'mono', text: clock(e.at) }),
      el('td', { class: 'mono', text: shortID(e.worker_id), title: e.worker_id }),
      el('td', { text: e.from || '' }),
      el('td', {}, el('span', { class: 'state ' + e.to, text: e.to })),
      el('td', { text: e.reason || '' }),
      el('td', { class: 'num', text: e.pid ? String(e.pid) : '' }));
    tr.addEventListener('click', () => { showTab('workers'); select(e.worker_id); });
    tr.dataset.text = [e.worker_id, e.from, e.to, e.reason, e.pid].join(' ').toLowerCase();
    filterEvent(tr, $('#event-filter').value.trim().toLowerCase());
    tbody.prepend(tr);
    while (tbody.rows.length > MAX_EVENTS) tbody.lastChild.remove();
    $('#event-count').textContent = `${tbody.rows.length} most recent (at most ${MAX_EVENTS})`;
  }
  function filterEvent(tr, f) { tr.hidden = f !== '' && !tr.dataset.text.includes(f); }
  $('#event-filter').addEventListener('input', () => {
    const f = $('#event-filter').value.trim().toLowerCase();
    for (const tr of $('#events tbody').rows) filterEvent(tr, f);
  });

  // ---- refreshes ----
  const pending = new Map();
  function refreshWorker(id) {
    if (pending.has(id)) return;
    pending.set(id, setTimeout(async () => {
      pending.delete(id);
      try {
        const w = await api('GET', `/v1/workers/${encodeURIComponent(id)}`);
        workers.set(id, w);
        sample(w, Date.now());
        renderTable();
      } catch (e) {
        if (e.status === 404) { workers.delete(id); renderTable(); }
      }
    }, 50));
  }

  let listBusy = false;
  async function refreshList() {
    if (listBusy || authFailed) return;
    listBusy = true;
    try {
      const r = await api('GET', '/v1/workers/list?all=true');
      authOK();
      const now = Date.now();
      const seen = new Set();
      for (const w of r.workers) {
        seen.add(w.id);
        workers.set(w.id, w);
        sample(w, now);
      }
      for (const id of [...workers.keys()]) if (!seen.has(id)) { workers.delete(id); history.delete(id); lastCPU.delete(id); }
      renderTable();
    } catch (e) {
      if (e.status !== 401) setConn('error', 'hive unreachable');
    } finally {
      listBusy = false;
    }
  }

  async function refreshStatus() {
    if (authFailed) return;
    try {
      status = await api('GET', '/v1/status');
      devMode = !!status.dev_mode;
      authOK();
      const up = duration(status.uptime_seconds * 1000);
      $('#hive-info').textContent = `v${status.version} · up ${up} · ${devMode ? 'dev mode (no token)' : 'token auth'} · cgroups: ${status.cgroup_mode}`;
      renderBars();
    } catch (_) { /* shown by the 401 handler or the connection badge */ }
  }

  // ---- bars ----
  function bar(label, used, total, parts, note) {
    const pct = total > 0 ? Math.min(100, used / total * 100) : 0;
    const track = el('div', { class: 'track' });
    if (parts) {
      for (const p of parts) {
        const f = el('div', { class: 'fill ' + (p.cls || '') });
        f.style.width = (total > 0 ? Math.min(100, p.value / total * 100) : 0) + '%';
        f.title = p.title || '';
        track.append(f);
      }
    } else {
      const f = el('div', { class: 'fill' });
      f.style.width = pct + '%';
      track.append(f);
    }
    return el('div', { class: 'bar' },
      el('div', { class: 'label' }, el('span', { text: label }), el('span', { text: `${bytes(used)} of ${bytes(total)} used (${pct.toFixed(0)}%)` })),
      track,
      note ? el('div', { class: 'note', text: note }) : null);
  }

  function renderBars() {
    const box = $('#bars');
    const kids = [];
    const rss = [...workers.values()].filter((w) => w.stats && !ENDED.has(w.state)).reduce((a, w) => a + w.stats.rss_bytes, 0);
    const mem = status && status.memory;
    if (mem && mem.total_bytes > 0) {
      const used = mem.total_bytes - (mem.available_bytes ?? 0);
      const other = Math.max(0, used - rss);
      kids.push(bar('Memory', used, mem.total_bytes, [
        { value: rss, cls: 'workers', title: 'workers: ' + bytes(rss) },
        { value: other, title: 'everything else: ' + bytes(other) },
      ], `workers ${bytes(rss)} (blue) · everything else ${bytes(other)} · available ${bytes(mem.available_bytes)}` +
        (mem.reserve_bytes > 0 ? ` · reserve ${bytes(mem.reserve_bytes)}` : '')));
    } else if (rss > 0) {
      kids.push(el('div', { class: 'bar' }, el('div', { class: 'label' }, el('span', { text: 'Workers\u2019 memory' }), el('span', { text: bytes(rss) }))));
    }
    const gpus = status && Array.isArray(status.gpus) ? status.gpus : [];
    for (const g of gpus) {
      const total = g.memory_total_bytes || 0;
      const used = g.memory_used_bytes != null ? g.memory_used_bytes : total - (g.memory_free_bytes || 0);
      // utilization_percent is -1 where the driver does not report it.
      const util = g.utilization_percent >= 0 ? `, ${g.utilization_percent}% busy` : '';
      const notes = [];
      if (Array.isArray(g.workers) && g.workers.length) notes.push(`${g.workers.length} worker(s)`);
      if (g.reserved_bytes > 0) notes.push(`${bytes(g.reserved_bytes)} reserved for loading workers`);
      if (g.available_bytes != null) notes.push(`${bytes(Math.max(0, g.available_bytes))} available for new workers`);
      kids.push(bar(`GPU ${g.index} ${g.name || ''}${util}`, used, total, null, notes.join(' · ') || null));
    }
    box.replaceChildren(...kids);
  }

  // ---- models ----
  async function refreshModels() {
    if (authFailed) return;
    const box = $('#models');
    let r;
    try {
      r = await api('GET', '/v1/models');
    } catch (e) {
      if (e.status === 404 || e.status === 405) box.replaceChildren(el('p', { class: 'muted', text: 'No models configured.' }));
      else if (e.status !== 401) box.replaceChildren(el('p', { class: 'muted', text: `Models unavailable: ${e.code}: ${e.message}` }));
      return;
    }
    // The model catalog (rbee-hive model add/list) beside the served models.
    let catalog = [];
    try {
      const c = await api('GET', '/v1/catalog');
      if (c && Array.isArray(c.models)) catalog = c.models;
    } catch (_) { /* shown without the catalog */ }
    const kids = [];
    const refs = new Set();
    if (r && Array.isArray(r.data)) {
      // SPEC §10: the OpenAI list, with rbee's per-model counts.
      if (r.data.length) {
        const tb = el('tbody');
        for (const m of r.data) {
          const rb = m.rbee || {};
          const ws = rb.workers || {};
          const byState = Object.entries(ws).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`).join(', ') || 'none';
          tb.append(el('tr', { 'data-model': m.id },
            el('td', { class: 'mono', text: m.id }),
            el('td', { text: byState }),
            el('td', { class: 'num', text: String(rb.in_flight ?? 0) }),
            el('td', { class: 'num', text: String(rb.queued ?? 0) })));
        }
        kids.push(el('h2', { text: 'Models' }), el('div', { class: 'scroll' }, el('table', { id: 'model-table' },
          el('thead', {}, el('tr', {}, el('th', { text: 'Model' }), el('th', { text: 'Workers' }), el('th', { text: 'In flight' }), el('th', { text: 'Queued' }))), tb)));
      }
    }
    if (catalog.length) {
      // The model catalog (rbee-hive model add/list).
      const tb = el('tbody');
      for (const m of catalog) {
        const live = [...workers.values()].filter((w) => w.model_ref === m.ref && !ENDED.has(w.state)).length;
        tb.append(el('tr', { 'data-model': m.ref },
          el('td', { class: 'mono', text: m.ref }),
          el('td', { class: 'mono', text: m.path }),
          el('td', { class: 'num', text: bytes(m.size_bytes) }),
          el('td', { class: 'num', text: String(live) })));
        refs.add(m.ref);
      }
      kids.push(el('h2', { text: 'Model catalog' }), el('div', { class: 'scroll' }, el('table', { id: 'catalog-table' },
        el('thead', {}, el('tr', {}, el('th', { text: 'Reference' }), el('th', { text: 'File' }), el('th', { text: 'Size' }), el('th', { text: 'Live workers' }))), tb)));
    }
    if (!kids.length) kids.push(el('p', { class: 'muted', text: 'No models configured.' }));
    box.replaceChildren(...kids);
    $('#model-refs').replaceChildren(...[...refs].map((v) => el('option', { value: v })));
  }

  // ---- tabs ----
  function showTab(name) {
    for (const b of document.querySelectorAll('nav button')) b.setAttribute('aria-selected', String(b.dataset.tab === name));
    for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== 'tab-' + name;
    if (name === 'models') refreshModels();
  }
  for (const b of document.querySelectorAll('nav button')) b.addEventListener('click', () => showTab(b.dataset.tab));
  $('#show-ended').addEventListener('change', renderTable);

  // ---- background tabs ----
  // A browser opens at most six HTTP/1.1 connections to one host, and each
  // open console holds one or two streams: a tab left in the background
  // closes its streams after a while and reopens them when shown again.
  let hiddenTimer = null;
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      hiddenTimer = setTimeout(() => { hiddenTimer = null; stopStreams(); setConn('off', 'paused (tab hidden)'); }, 30e3);
      return;
    }
    if (hiddenTimer) { clearTimeout(hiddenTimer); hiddenTimer = null; return; }
    if (authFailed || role === 'queen') return;
    refreshList();
    runEvents();
    if (selected) startLog();
  });

  // ---- start ----
  let timers = [];
  let pollGen = 0;
  async function start() {
    for (const t of timers) clearInterval(t);
    timers = [];
    authFailed = false;
    $('#auth-msg').hidden = true;
    setConn('off', 'connecting…');
    if (role === null) {
      // /health is public; a queen says so. Unreachable: taken for a hive,
      // whose page reports the connection.
      try {
        const h = await api('GET', '/health');
        role = h && h.role === 'queen' ? 'queen' : 'hive';
      } catch (_) { /* asked again at the next start */ }
    }
    if (role === 'queen') { startQueen(); return; }
    await refreshStatus();
    if (authFailed) return;
    authOK();
    await refreshList();
    refreshModels();
    runEvents();
    // The list poll backs off on a big hive or a slow device: it waits at
    // least four times as long as the last refresh took.
    const gen = ++pollGen;
    const poll = async () => {
      if (gen !== pollGen) return;
      const t0 = performance.now();
      if (!document.hidden) await refreshList();
      if (gen === pollGen) setTimeout(poll, Math.max(POLL_MS, 4 * (performance.now() - t0)));
    };
    setTimeout(poll, POLL_MS);
    timers.push(setInterval(() => { if (!document.hidden) { refreshStatus(); refreshModels(); } }, STATUS_MS));
  }
  // ---- queen: the cluster ----
  const QUEEN_POLL_MS = 1000;
  let queenGen = 0;

  function queenLayout() {
    document.title = 'rbee-queen';
    $('header h1').textContent = 'rbee-queen';
    $('#token-form label').textContent = 'Queen token';
    $('#token-input').placeholder = 'an inference token';
    $('nav').hidden = true;
    for (const sct of document.querySelectorAll('.tab')) sct.hidden = sct.id !== 'tab-cluster';
  }

  function startQueen() {
    queenLayout();
    const gen = ++queenGen;
    const poll = async () => {
      if (gen !== queenGen || authFailed) return;
      const t0 = performance.now();
      if (!document.hidden) await refreshCluster();
      if (gen === queenGen && !authFailed) setTimeout(poll, Math.max(QUEEN_POLL_MS, 4 * (performance.now() - t0)));
    };
    poll();
  }

  async function refreshCluster() {
    let c;
    try {
      c = await api('GET', '/v1/cluster');
    } catch (e) {
      if (e.status !== 401) setConn('error', e instanceof APIError ? `error: ${e.code}` : 'queen unreachable');
      return;
    }
    if (devMode === null) devMode = !token; // answered without a token: an open queen
    authOK();
    setConn('live', 'live');
    const hives = Array.isArray(c.hives) ? c.hives : [];
    const nw = hives.reduce((a, h) => a + (Array.isArray(h.workers) ? h.workers.length : 0), 0);
    $('#hive-info').textContent = `${hives.length} hive(s) · ${nw} worker(s) · etcd revision ${c.revision} · ${devMode ? 'dev mode (no token)' : 'token auth'}`;
    renderHives(hives);
    renderClusterModels(Array.isArray(c.models) ? c.models : []);
  }

  // safeURL returns u when it is an http(s) URL (a link to the hive's own
  // console), else null: a record in etcd must not make a javascript: link.
  function safeURL(u) {
    try {
      const p = new URL(u);
      return p.protocol === 'http:' || p.protocol === 'https:' ? p : null;
    } catch (_) { return null; }
  }

  function renderHives(hives) {
    const box = $('#hives');
    $('#no-hives').hidden = hives.length > 0;
    const now = Date.now();
    box.replaceChildren(...hives.map((h) => {
      const cap = h.capacity || {};
      const link = safeURL(h.url);
      const title = el('h2', {}, el('span', { class: 'mono node', text: h.node }), ' ',
        link ? el('a', { href: new URL('/ui/', link).href, rel: 'noreferrer noopener', target: '_blank', class: 'mono small', text: h.url })
          : el('span', { class: 'mono small muted', text: h.url || '(no URL)' }));
      const facts = [];
      if (h.version) facts.push('v' + h.version);
      if (h.started_at) facts.push('up ' + duration(now - Date.parse(h.started_at)));
      facts.push('lease live, record updated ' + (h.updated_at ? duration(now - Date.parse(h.updated_at)) + ' ago' : '—'));
      if (cap.cpus) facts.push(cap.cpus + ' CPUs');
      const kids = [title, el('div', { class: 'muted facts', text: facts.join(' · ') })];
      const bars = [];
      if (cap.memory_total > 0) {
        const b = bar('Memory', cap.memory_total - (cap.memory_free || 0), cap.memory_total, null, bytes(cap.memory_free || 0) + ' free');
        bars.push(b);
      }
      for (const g of Array.isArray(cap.gpus) ? cap.gpus : []) {
        bars.push(bar(`GPU ${g.index} ${g.name || ''}`, g.memory_total - (g.memory_free || 0), g.memory_total, null,
          bytes(g.memory_free || 0) + ' free for new workers'));
      }
      if (bars.length) kids.push(el('div', { class: 'bars' }, ...bars));
      const models = Array.isArray(h.models) ? h.models : [];
      const gpuModels = new Set(Array.isArray(h.gpu_models) ? h.gpu_models : []);
      kids.push(el('div', { class: 'models' }, el('span', { class: 'muted', text: 'Models: ' }),
        models.length ? models.map((m) => m + (gpuModels.has(m) ? ' (GPU)' : '')).join(', ') : 'none'));
      const ws = Array.isArray(h.workers) ? h.workers : [];
      if (ws.length) {
        const tb = el('tbody');
        for (const w of ws) {
          tb.append(el('tr', { 'data-id': w.id, 'data-state': w.state },
            el('td', { class: 'id col-id', title: w.id, text: shortID(w.id) }),
            el('td', { class: 'col-model model', text: w.model || '' }),
            el('td', { class: 'col-state' }, el('span', { class: 'state ' + w.state, text: w.state })),
            el('td', { class: 'num col-inflight', text: String(w.in_flight ?? 0) + (w.max_concurrency ? '/' + w.max_concurrency : '') })));
        }
        kids.push(el('div', { class: 'scroll' }, el('table', { class: 'hive-workers' },
          el('thead', {}, el('tr', {}, el('th', { text: 'Worker' }), el('th', { text: 'Model' }), el('th', { text: 'State' }), el('th', { text: 'In flight' }))), tb)));
      } else {
        kids.push(el('p', { class: 'muted', text: 'No workers.' }));
      }
      return el('section', { class: 'hive', 'data-node': h.node }, ...kids);
    }));
  }

  function renderClusterModels(models) {
    const box = $('#cluster-models');
    if (!models.length) { box.replaceChildren(); return; }
    const tb = el('tbody');
    for (const m of models) {
      const byState = Object.entries(m.workers || {}).filter(([, n]) => n > 0).map(([st, n]) => `${n} ${st}`).join(', ') || 'none';
      tb.append(el('tr', { 'data-model': m.name },
        el('td', { class: 'mono', text: m.name }),
        el('td', { class: 'mono', text: (m.hives || []).join(', ') || '—' }),
        el('td', { text: byState }),
        el('td', { class: 'num', text: String(m.in_flight ?? 0) })));
    }
    box.replaceChildren(el('h2', { text: 'Models across the cluster' }), el('div', { class: 'scroll' }, el('table', { id: 'cluster-model-table' },
      el('thead', {}, el('tr', {}, el('th', { text: 'Model' }), el('th', { text: 'Served by' }), el('th', { text: 'Workers' }), el('th', { text: 'In flight' }))), tb)));
  }

  start();
})();
