// The web status page of the job launcher (gateway/src/ui.rs serves it; DESIGN §2).
//
// Plain JavaScript, no build step, no third-party code: the Content-Security-Policy allows
// scripts from this origin only. Every data call goes to the API's own routes; the browser
// sends the HttpOnly `launcher-token` cookie that POST /ui/login set, which is also what lets
// EventSource (which cannot send headers) follow a job's status.
'use strict';

(function () {
  const TERMINAL = new Set(['Finished', 'Failed', 'Killed', 'Canceled']);
  // Browsers open at most six HTTP/1.1 connections per host and every EventSource or followed
  // output holds one for as long as it lasts: leave room for the page's own requests.
  const MAX_STREAMS = 3;
  // Health, members and the listing are polled; the status of the newest active jobs is pushed.
  const POLL_MS = 5000;
  const MAX_ROWS = 200;
  const MAX_OUTPUT_CHARS = 1 << 20;
  const LIST_FIELDS = 'id,name,user,cluster,status,statusMessage,tags,submissionTime,lastUpdateTime,exitCode';
  const DETAIL_FIELDS = [
    'id', 'name', 'user', 'cluster', 'status', 'statusMessage', 'exitCode', 'host', 'pid',
    'submissionTime', 'lastUpdateTime', 'tags', 'queues', 'command', 'exe', 'args', 'workingDirectory',
  ];

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  const state = {
    session: null, // {user, admin, expiresAt}
    rows: new Map(), // job id -> <tr>
    streams: new Map(), // job id -> EventSource
    busy: { status: false, jobs: false, members: false },
    jobsAgain: false,
    job: null, // the job view: {id, es, abort}
    view: null,
  };

  class ApiError extends Error {
    constructor(status, body) {
      const e = body && body.error;
      super(e && e.message ? e.message : 'HTTP ' + status);
      this.status = status;
      this.code = e ? e.code : undefined;
    }
  }

  async function call(path, options) {
    const opts = Object.assign({ credentials: 'same-origin', cache: 'no-store' }, options || {});
    opts.headers = Object.assign({ Accept: 'application/json' }, opts.headers || {});
    const r = await fetch(path, opts);
    if (r.ok) return r.status === 204 ? null : r.json();
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      // Not the API's error body.
    }
    const err = new ApiError(r.status, body);
    if (r.status === 401 && state.session) showLogin('Signed out: ' + err.message);
    throw err;
  }

  function pad(n) {
    return String(n).padStart(2, '0');
  }

  function fmtTime(t) {
    if (!t) return '';
    const d = new Date(t);
    if (isNaN(d)) return t;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  // Whether time `a` is not before `b` (RFC 3339 strings; empty is the oldest).
  function notBefore(a, b) {
    if (!b) return true;
    if (!a) return false;
    if (a.length === b.length) return a >= b;
    return Date.parse(a) >= Date.parse(b);
  }

  function notice(message) {
    const n = $('notice');
    n.textContent = message || '';
    n.hidden = !message;
  }

  function show(view) {
    state.view = view;
    for (const id of ['login-view', 'dashboard-view', 'job-view']) $(id).hidden = id !== view;
  }

  // ------------------------------------------------------------------------------------------
  // Health and members.

  async function refreshStatus() {
    if (state.busy.status) return;
    state.busy.status = true;
    try {
      const st = await call('/status');
      const nodes = st.nodes || [];
      const healthy = nodes.filter((n) => n.healthy).length;
      $('health').dataset.status = st.status;
      $('health-status').textContent = st.status;
      $('health-summary').textContent = 'leader ' + (st.leader || 'none') + ' · ' + healthy + '/' +
        nodes.length + ' healthy · applied index ' + st.appliedIndex;
      $('footer-version').textContent = 'launcher ' + st.version;
      $('footer-refresh').textContent = ' · refreshed ' + fmtTime(new Date().toISOString());
      if (!(state.session && state.session.admin)) renderMembers(nodes, 'from GET /status', st.leader);
    } catch (e) {
      $('health').dataset.status = 'Red';
      $('health-status').textContent = 'unreachable';
      $('health-summary').textContent = e.message;
    } finally {
      state.busy.status = false;
    }
  }

  async function refreshMembers() {
    if (!(state.session && state.session.admin) || state.busy.members) return;
    state.busy.members = true;
    try {
      renderMembers(await call('/members'), 'from GET /members');
    } catch (e) {
      if (e.status !== 401) notice('Members: ' + e.message);
    } finally {
      state.busy.members = false;
    }
  }

  function yesNo(b) {
    return b ? 'yes' : 'no';
  }

  function renderMembers(nodes, source, leader) {
    $('members-source').textContent = source;
    const rows = nodes.slice().sort((a, b) => a.id - b.id).map((n) => {
      const tr = el('tr');
      tr.dataset.nodeId = n.id;
      const role = n.role || (leader === n.id ? 'leader' : '');
      const health = el('td');
      health.append(el('span', n.healthy ? 'healthy' : 'down', 'pill ' + (n.healthy ? 'ok' : 'bad')));
      tr.append(
        el('td', n.id, 'num-id'), el('td', n.address, 'mono'), el('td', role, 'role-' + role),
        el('td', n.voter === undefined ? '' : yesNo(n.voter)), health,
        el('td', n.appliedIndex, 'num'), el('td', n.draining ? 'draining' : ''),
      );
      return tr;
    });
    $('members-table').tBodies[0].replaceChildren(...rows);
  }

  // ------------------------------------------------------------------------------------------
  // Jobs.

  function filters() {
    const admin = state.session && state.session.admin;
    return {
      statuses: $('filter-status').value,
      tags: $('filter-tags').value.trim(),
      user: admin ? $('filter-user').value.trim() : '',
    };
  }

  function setFilters(params) {
    const status = params.get('statuses') || '';
    const select = $('filter-status');
    if (status && ![...select.options].some((o) => o.value === status)) select.append(el('option', status));
    select.value = status;
    $('filter-tags').value = params.get('tags') || '';
    $('filter-user').value = params.get('user') || '';
  }

  function filterParams(f) {
    const q = new URLSearchParams();
    for (const k of ['statuses', 'tags', 'user']) if (f[k]) q.set(k, f[k]);
    return q;
  }

  let filterTimer = null;
  function filtersChanged() {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      const q = filterParams(filters()).toString();
      history.replaceState(null, '', '#/' + (q ? '?' + q : ''));
      refreshJobs();
    }, 250);
  }

  async function refreshJobs() {
    if (state.view !== 'dashboard-view') return;
    if (state.busy.jobs) {
      state.jobsAgain = true;
      return;
    }
    state.busy.jobs = true;
    const f = filters();
    const q = filterParams(f);
    q.set('fields', LIST_FIELDS);
    try {
      const jobs = await call('/jobs?' + q.toString());
      // Filters changed while the answer was on its way: the refresh queued below shows them.
      if (JSON.stringify(f) === JSON.stringify(filters()) && state.view === 'dashboard-view') {
        renderJobs(jobs);
        notice(null);
      }
    } catch (e) {
      if (e.status !== 401) notice('Jobs: ' + e.message);
    } finally {
      state.busy.jobs = false;
      if (state.jobsAgain) {
        state.jobsAgain = false;
        refreshJobs();
      }
    }
  }

  function renderJobs(jobs) {
    jobs.sort((a, b) => (b.submissionTime || '').localeCompare(a.submissionTime || '') ||
      (a.id < b.id ? 1 : -1));
    const shown = jobs.slice(0, MAX_ROWS);
    const keep = new Set(shown.map((j) => j.id));
    for (const [id, row] of state.rows) {
      if (!keep.has(id)) {
        closeStream(id);
        row.remove();
        state.rows.delete(id);
      }
    }
    const tbody = $('jobs-table').tBodies[0];
    shown.forEach((job, i) => {
      let row = state.rows.get(job.id);
      if (!row) {
        row = newRow(job);
        state.rows.set(job.id, row);
      }
      updateRow(row, job, 'poll');
      if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
    });
    $('jobs-empty').hidden = shown.length > 0;
    $('jobs-count').textContent = jobs.length > MAX_ROWS
      ? 'newest ' + MAX_ROWS + ' of ' + jobs.length + ' jobs'
      : jobs.length + (jobs.length === 1 ? ' job' : ' jobs');
    syncStreams();
  }

  function jobLink(id, text) {
    const a = el('a', text);
    a.href = '#/jobs/' + encodeURIComponent(id);
    return a;
  }

  function newRow(job) {
    const row = el('tr');
    row.dataset.jobId = job.id;
    const name = el('td', null, 'c-name');
    name.append(jobLink(job.id, job.name || job.id));
    const status = el('td', null, 'c-status');
    status.append(el('span', '', 'status'));
    row.append(
      name, status, el('td', '', 'c-user'), el('td', '', 'c-cluster'), el('td', '', 'c-tags'),
      el('td', '', 'c-submitted'), el('td', '', 'c-updated'), el('td', '', 'c-exit num'),
      el('td', job.id, 'c-id mono small'),
    );
    return row;
  }

  function cell(row, cls) {
    return row.querySelector('td.' + cls);
  }

  // Applies a status to a row unless it is older than what the row shows: statuses only move
  // forward, and a listing that left before a pushed change may arrive after it.
  function setStatus(row, ev, source) {
    const current = row.dataset.status;
    if (current && TERMINAL.has(current)) return;
    if (!notBefore(ev.lastUpdateTime || '', row.dataset.updated || '')) return;
    row.dataset.updated = ev.lastUpdateTime || '';
    cell(row, 'c-updated').textContent = fmtTime(ev.lastUpdateTime);
    if (ev.status === current) return;
    const badge = cell(row, 'c-status').firstChild;
    badge.textContent = ev.status;
    badge.dataset.status = ev.status;
    badge.title = ev.statusMessage || '';
    row.dataset.status = ev.status;
    row.dataset.statusSource = source;
    if (current && source === 'sse') {
      row.classList.remove('changed');
      void row.offsetWidth; // restart the highlight
      row.classList.add('changed');
    }
  }

  function updateRow(row, job, source) {
    // A row with an open stream takes its status from the stream alone.
    if (!(source === 'poll' && state.streams.has(job.id)) && job.status) setStatus(row, job, source);
    cell(row, 'c-user').textContent = job.user || '';
    cell(row, 'c-cluster').textContent = job.cluster || '';
    cell(row, 'c-tags').textContent = (job.tags || []).join(', ');
    cell(row, 'c-submitted').textContent = fmtTime(job.submissionTime);
    cell(row, 'c-exit').textContent = job.exitCode === undefined || job.exitCode === null ? '' : job.exitCode;
  }

  async function refreshRow(id) {
    try {
      const job = await call('/jobs/' + encodeURIComponent(id) + '?fields=' + LIST_FIELDS);
      const row = state.rows.get(id);
      if (row) updateRow(row, job, 'fetch');
    } catch (_) {
      // The next listing shows it.
    }
  }

  function statusUrl(id) {
    return '/jobs/' + encodeURIComponent(id) + '/status?stream=true';
  }

  // Streams the status of the newest active jobs shown; the listing poll covers the rest.
  function syncStreams() {
    const want = [];
    if (state.view === 'dashboard-view') {
      for (const row of $('jobs-table').tBodies[0].rows) {
        if (want.length >= MAX_STREAMS) break;
        if (!TERMINAL.has(row.dataset.status)) want.push(row.dataset.jobId);
      }
    }
    for (const id of [...state.streams.keys()]) if (!want.includes(id)) closeStream(id);
    for (const id of want) if (!state.streams.has(id)) openStream(id);
  }

  function openStream(id) {
    const es = new EventSource(statusUrl(id));
    state.streams.set(id, es);
    const row = state.rows.get(id);
    if (row) row.dataset.live = 'sse';
    es.addEventListener('status', (e) => {
      let ev;
      try {
        ev = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      const r = state.rows.get(id);
      if (!r) return;
      r.dataset.sseEvents = String(Number(r.dataset.sseEvents || 0) + 1);
      setStatus(r, ev, 'sse');
      if (TERMINAL.has(ev.status)) {
        closeStream(id);
        refreshRow(id); // for the exit code
        syncStreams();
      }
    });
    es.addEventListener('error', (e) => {
      // A named `error` event carries the API's error body; a bare one is the connection, which
      // the browser reopens by itself unless the answer was an HTTP error.
      if (e.data || es.readyState === EventSource.CLOSED) closeStream(id);
    });
  }

  function closeStream(id) {
    const es = state.streams.get(id);
    if (es) es.close();
    state.streams.delete(id);
    const row = state.rows.get(id);
    if (row) delete row.dataset.live;
  }

  function closeAllStreams() {
    for (const id of [...state.streams.keys()]) closeStream(id);
  }

  // ------------------------------------------------------------------------------------------
  // One job: details, live status and output.

  function renderJob(job) {
    $('job-title').textContent = job.name ? job.name : job.id;
    const badge = $('job-status');
    badge.textContent = job.status || '';
    badge.dataset.status = job.status || '';
    const rows = [];
    for (const k of DETAIL_FIELDS) {
      let v = job[k];
      if (v === undefined || v === null || v === '' || (Array.isArray(v) && v.length === 0)) continue;
      if (k === 'submissionTime' || k === 'lastUpdateTime') v = fmtTime(v) + '  (' + v + ')';
      else if (Array.isArray(v)) v = v.join(k === 'args' ? ' ' : ', ');
      const dt = el('dt', k);
      const dd = el('dd', v);
      dd.dataset.field = k;
      rows.push(dt, dd);
    }
    $('job-details').replaceChildren(...rows);
  }

  async function showJob(id) {
    show('job-view');
    closeAllStreams();
    const v = (state.job = { id, es: null, abort: new AbortController() });
    $('job-view').dataset.jobId = id;
    $('job-title').textContent = id;
    $('job-status').textContent = '';
    $('job-details').replaceChildren();
    const out = $('job-output');
    out.textContent = '';
    delete out.dataset.complete;
    $('output-state').textContent = '';
    let job;
    try {
      job = await call('/jobs/' + encodeURIComponent(id));
    } catch (e) {
      if (state.job === v) $('output-state').textContent = e.message;
      return;
    }
    if (state.job !== v) return;
    renderJob(job);
    const live = !TERMINAL.has(job.status);
    if (live) {
      v.es = new EventSource(statusUrl(id));
      v.es.addEventListener('status', (e) => {
        let ev;
        try {
          ev = JSON.parse(e.data);
        } catch (_) {
          return;
        }
        if (state.job !== v) return;
        job = Object.assign(job, ev);
        renderJob(job);
        if (TERMINAL.has(ev.status)) {
          v.es.close();
          call('/jobs/' + encodeURIComponent(id)).then((j) => state.job === v && renderJob(j), () => {});
        }
      });
      v.es.addEventListener('error', (e) => {
        if (e.data || v.es.readyState === EventSource.CLOSED) v.es.close();
      });
    }
    followOutput(v, live);
  }

  function appendOutput(out, text) {
    if (!text) return;
    const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
    out.append(document.createTextNode(text));
    if (out.textContent.length > MAX_OUTPUT_CHARS) {
      out.textContent = '… (earlier output cut)\n' + out.textContent.slice(-MAX_OUTPUT_CHARS);
    }
    if (atEnd) out.scrollTop = out.scrollHeight;
  }

  async function followOutput(v, follow) {
    const out = $('job-output');
    $('output-state').textContent = follow ? 'following…' : '';
    const url = '/jobs/' + encodeURIComponent(v.id) + '/output?type=both' + (follow ? '&follow=true' : '');
    try {
      const r = await fetch(url, { credentials: 'same-origin', cache: 'no-store', signal: v.abort.signal });
      if (!r.ok) {
        let body = null;
        try {
          body = await r.json();
        } catch (_) {
          // Not the API's error body.
        }
        throw new ApiError(r.status, body);
      }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (state.job === v) appendOutput(out, decoder.decode(value, { stream: true }));
      }
      if (state.job !== v) return;
      appendOutput(out, decoder.decode());
      out.dataset.complete = 'true';
      $('output-state').textContent = out.textContent ? 'complete' : 'complete (empty)';
    } catch (e) {
      if (e.name === 'AbortError' || state.job !== v) return;
      $('output-state').textContent = e.code === 7 ? 'no output' : 'unavailable: ' + e.message;
    }
  }

  function leaveJob() {
    const v = state.job;
    if (!v) return;
    state.job = null;
    v.abort.abort();
    if (v.es) v.es.close();
  }

  // ------------------------------------------------------------------------------------------
  // Views, session and start.

  function route() {
    if (!state.session) return;
    const hash = location.hash || '#/';
    const m = hash.match(/^#\/jobs\/([^?/]+)$/);
    leaveJob();
    if (m) {
      showJob(decodeURIComponent(m[1]));
      return;
    }
    const query = hash.indexOf('?') >= 0 ? hash.slice(hash.indexOf('?') + 1) : '';
    setFilters(new URLSearchParams(query));
    show('dashboard-view');
    refreshMembers();
    refreshJobs();
  }

  function showLogin(message) {
    state.session = null;
    leaveJob();
    closeAllStreams();
    for (const row of state.rows.values()) row.remove();
    state.rows.clear();
    $('session').hidden = true;
    show('login-view');
    const err = $('login-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('token').focus();
  }

  async function loadSession() {
    try {
      state.session = await call('/ui/session');
    } catch (e) {
      showLogin(e.status === 401 ? null : 'Cannot reach the launcher: ' + e.message);
      return;
    }
    $('session-user').textContent = state.session.user + (state.session.admin ? ' (admin)' : '');
    $('session-user').title = state.session.expiresAt ? 'signed in until ' + fmtTime(state.session.expiresAt) : '';
    $('session').hidden = false;
    $('filter-user-label').hidden = !state.session.admin;
    route();
    refreshStatus();
  }

  async function login(e) {
    e.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    const button = e.target.querySelector('button');
    button.disabled = true;
    try {
      await call('/ui/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token }),
      });
      $('token').value = '';
      $('login-error').hidden = true;
      await loadSession();
    } catch (err) {
      $('login-error').textContent = err.message;
      $('login-error').hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  async function logout() {
    try {
      await call('/ui/logout', { method: 'POST' });
    } catch (_) {
      // The cookie is cleared or was never there.
    }
    showLogin(null);
  }

  function tick() {
    refreshStatus();
    if (state.view === 'dashboard-view') {
      refreshMembers();
      refreshJobs();
    }
  }

  function start() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('filter-status').addEventListener('change', filtersChanged);
    $('filter-tags').addEventListener('input', filtersChanged);
    $('filter-user').addEventListener('input', filtersChanged);
    $('job-filters').addEventListener('submit', (e) => {
      e.preventDefault();
      filtersChanged();
    });
    window.addEventListener('hashchange', route);
    refreshStatus();
    setInterval(tick, POLL_MS);
    loadSession();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
