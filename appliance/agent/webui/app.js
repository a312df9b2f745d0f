// The agent's status page. Plain script, no libraries: it reads the
// agent's JSON under /ui/api/ with the session cookie, renders with DOM
// calls only (never innerHTML: log lines and names come from services),
// follows a log over a streamed fetch, and sends every POST with the
// session's CSRF token.
'use strict';
(() => {
  const CSRF_HEADER = 'X-Ingot-Csrf';
  const STATUS_EVERY_MS = 2000;
  const LOG_LINES_KEPT = 5000;
  const $ = (id) => document.getElementById(id);

  // el builds an element: el('div', {class: 'x', 'data-y': 1}, child, 'text').
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids) {
      if (k === undefined || k === null || k === false) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }

  let csrf = '';
  let lastStatus = null;
  let logCtl = null;
  let logService = '';

  async function api(path, opts) {
    const r = await fetch(path, Object.assign({ credentials: 'same-origin', cache: 'no-store' }, opts || {}));
    if (r.status === 401) {
      location.assign('/ui/login');
      throw new Error('the session ended');
    }
    return r;
  }

  async function errorOf(r) {
    try {
      const b = await r.json();
      if (b && b.error) return b.error;
    } catch (e) { /* not JSON */ }
    return 'HTTP ' + r.status;
  }

  function banner(text, kind) {
    const b = $('banner');
    b.className = 'banner' + (kind ? ' ' + kind : '');
    b.textContent = text || '';
    b.hidden = !text;
  }

  // ---- formatting ----
  function bytes(n) {
    if (!n && n !== 0) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
  }
  function duration(s) {
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60, sec = s % 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + sec + 's';
    return sec + 's';
  }
  function since(t) {
    if (!t) return '';
    return duration((Date.now() - Date.parse(t)) / 1000);
  }
  function clock(t) {
    const d = new Date(t);
    if (isNaN(d)) return '';
    return d.toLocaleTimeString([], { hour12: false });
  }
  function exitText(x) {
    if (!x) return '–';
    let s;
    if (x.error) s = 'start failed: ' + x.error;
    else if (x.signal) s = 'signal ' + x.signal;
    else s = 'exit status ' + x.code;
    if (x.oom_killed) s += ' (out of memory)';
    if (x.unhealthy) s += ' (ended as unhealthy)';
    if (x.requested) s += ', on request';
    return s + ' after ' + duration(x.ran_s) + ', ' + since(x.time) + ' ago';
  }
  function stateClass(st) {
    switch (st) {
      case 'running': return 'ok';
      case 'backoff': case 'waiting': return 'warn';
      case 'exited': case 'held': return 'bad';
      default: return '';
    }
  }
  function healthClass(h) {
    return h === 'healthy' ? 'ok' : h === 'unhealthy' ? 'bad' : 'warn';
  }

  // ---- overview ----
  function card(title, value, sub, opts) {
    const c = el('div', { class: 'card' + (opts && opts.bad ? ' bad' : ''), 'data-card': opts && opts.key },
      el('h3', { text: title }), el('div', { class: 'value', text: value }));
    if (sub) c.append(el('div', { class: 'sub', text: sub }));
    if (opts && opts.fraction !== undefined) {
      const fill = el('span');
      fill.style.width = Math.min(100, Math.max(0, opts.fraction * 100)).toFixed(1) + '%';
      c.append(el('div', { class: 'bar' }, fill));
    }
    return c;
  }

  function slotCards(s) {
    const st = s.slot_state;
    let slot = s.slot ? 'slot ' + s.slot : 'unknown';
    if (s.slot && s.trial) slot += ' (trial)';
    else if (s.slot) slot += ' (active)';
    let sub = '';
    if (st) sub = 'slot.json: active ' + st.active + (st.trial ? ', trial ' + st.trial + ' (' + st.tries_left + ' boot left)' : '');
    else if (s.slot_error) sub = s.slot_error;
    const out = [card('Slot', slot, sub, { key: 'slot' })];
    let upd = 'no failed trial', usub = 'build ' + (s.build_id || '?') + ' runs', bad = false;
    if (s.trial) {
      upd = 'on trial';
      usub = 'this boot of slot ' + s.slot + ' is not confirmed yet';
    } else if (st && st.trial) {
      upd = 'pending';
      usub = 'slot ' + st.trial + ' boots on trial at the next reboot';
    } else if (st && st.last_failed) {
      upd = 'failed (slot ' + st.last_failed.slot + ')';
      usub = st.last_failed.reason;
      bad = true;
    }
    const lu = s.last_update;
    if (lu) [upd, usub, bad] = lastUpdateText(lu, s);
    out.push(card('Last update', upd, usub, { key: 'update', bad }));
    return out;
  }

  // The record of the last update (mgmt.LastUpdate): its outcome, then
  // what it installed over what, when, and why it failed or was undone.
  function lastUpdateText(lu, s) {
    const build = (id, rel) => 'build ' + (id || '?') + (rel ? ' (release ' + rel + ')' : '');
    let value = lu.outcome === 'rolled-back' ? 'rolled back' : lu.outcome;
    if (lu.outcome === 'pending' && s.trial && s.slot === lu.slot) value = 'on trial';
    value += ' (slot ' + lu.slot + ')';
    const parts = [build(lu.build_id, lu.release) + ' over ' + build(lu.from_build_id, lu.from_release),
      'committed ' + new Date(lu.started).toLocaleString() + ', ' + since(lu.started) + ' ago'];
    if (lu.finished) parts.push(lu.outcome + ' ' + new Date(lu.finished).toLocaleString());
    if (lu.reason) parts.push(lu.reason);
    return [value, parts.join(' · '), lu.outcome === 'failed' || lu.outcome === 'rolled-back'];
  }

  // The release puller's state (mgmt.PullStatus), read-only: what is
  // being installed, else what was found at update.from and when, and
  // the last failure.
  function pullCard(p) {
    const rel = (r) => 'release ' + r.release + (r.build_id ? ' (build ' + r.build_id + ')' : '');
    let value, bad = false;
    const parts = [];
    if (p.progress) {
      const g = p.progress;
      value = 'installing ' + rel(g.release);
      let step = g.phase;
      if (g.bytes_root) step += ', ' + bytes(g.bytes_done) + ' of ' + bytes(g.bytes_root) + ' (' + bytes(g.bytes_fetched) + ' fetched, ' + bytes(g.bytes_reused) + ' reused)';
      parts.push(step);
    } else if (p.available) {
      value = rel(p.available) + ' available';
    } else {
      value = p.from ? 'nothing found yet' : 'on request only';
    }
    if (p.from) {
      let sched = 'from ' + p.from;
      if (p.last_check) sched += ', checked ' + since(p.last_check) + ' ago';
      parts.push(sched);
    }
    if (p.last_check_error) {
      parts.push('check failed: ' + p.last_check_error);
      bad = true;
    }
    if (p.last_failure) {
      const f = p.last_failure;
      parts.push('last failure' + (f.release ? ' (release ' + f.release + ')' : '') + ': ' + f.reason);
      bad = bad || !p.progress;
    }
    return card('Releases', value, parts.join(' · '), { key: 'pull', bad });
  }

  function renderSystem(s) {
    document.title = (s.name || 'ingot') + ' · ingot';
    $('app-name').textContent = s.name || 'ingot';
    const box = $('system');
    const cards = [
      card('Build', s.build_id || '–', [s.name, s.arch].filter(Boolean).join(' · '), { key: 'build' }),
      card('Target', s.target || '–', s.hostname ? 'host ' + s.hostname : '', { key: 'target' }),
      ...slotCards(s),
      ...(s.pull ? [pullCard(s.pull)] : []),
      card('Uptime', duration(s.uptime_s), s.started_at ? 'since ' + new Date(s.started_at).toLocaleString() : '', { key: 'uptime' }),
    ];
    const h = s.host;
    if (h && h.mem_total_bytes) {
      const used = h.mem_total_bytes - h.mem_available_bytes;
      cards.push(card('Memory', bytes(used) + ' of ' + bytes(h.mem_total_bytes), bytes(h.mem_available_bytes) + ' available',
        { key: 'memory', fraction: used / h.mem_total_bytes }));
    } else {
      cards.push(card('Memory', '–', h && h.error ? h.error : 'not reported', { key: 'memory' }));
    }
    if (h && h.load) {
      cards.push(card('Load', h.load.map((x) => x.toFixed(2)).join('  '), '1, 5 and 15 minutes', { key: 'load' }));
    }
    const p = s.perm || {};
    if (p.mounted && p.total_bytes) {
      cards.push(card('Perm', bytes(p.used_bytes) + ' of ' + bytes(p.total_bytes), 'persistent partition',
        { key: 'perm', fraction: p.used_bytes / p.total_bytes }));
    } else {
      cards.push(card('Perm', p.mounted ? 'mounted' : 'not mounted', p.error || '', { key: 'perm', bad: !p.mounted && !!p.error }));
    }
    box.replaceChildren(...cards);
    const notes = [];
    if (s.shutting_down) notes.push('The appliance is shutting down.');
    for (const w of s.warnings || []) notes.push(w);
    if (notes.length) banner(notes.join(' · '), 'info');
    else if ($('banner').classList.contains('info')) banner('');
  }

  function actionButtons(sv) {
    const stopped = sv.state === 'stopped' || sv.state === 'exited' || sv.state === 'held';
    return [
      el('button', { type: 'button', 'data-action': 'restart', 'data-service': sv.name, text: 'Restart' }),
      stopped
        ? el('button', { type: 'button', 'data-action': 'start', 'data-service': sv.name, text: 'Start' })
        : el('button', { type: 'button', 'data-action': 'stop', 'data-service': sv.name, text: 'Stop' }),
    ];
  }

  function renderServices(s) {
    const list = (s.services || []).map((sv) => {
      const h = sv.health;
      const dl = el('dl', null,
        el('dt', { text: 'PID' }), el('dd', { 'data-field': 'pid', text: sv.pid || '–' }),
        el('dt', { text: 'Restarts' }), el('dd', { 'data-field': 'restarts', text: sv.restarts }),
        el('dt', { text: 'OOM kills' }), el('dd', { 'data-field': 'oom', text: sv.oom_kills || 0 }),
        el('dt', { text: sv.state === 'running' ? 'Running for' : 'Last run' }),
        el('dd', { text: sv.started_at ? since(sv.started_at) : '–' }),
        el('dt', { text: 'Last exit' }), el('dd', { 'data-field': 'last-exit', text: exitText(sv.last_exit) }));
      if (h && h.last_error && h.state !== 'healthy') {
        dl.append(el('dt', { text: 'Health' }), el('dd', { text: h.last_error }));
      }
      if (sv.state === 'backoff' && sv.next_start) {
        dl.append(el('dt', { text: 'Next start' }), el('dd', { text: clock(sv.next_start) }));
      }
      return el('article', { class: 'service', 'data-service': sv.name },
        el('header', null,
          el('h3', { text: sv.name }),
          el('span', { class: 'pill ' + stateClass(sv.state), 'data-field': 'state', text: sv.state }),
          h ? el('span', { class: 'pill ' + healthClass(h.state), 'data-field': 'health', text: h.state }) : null),
        sv.reason ? el('p', { class: 'reason', text: sv.reason }) : null,
        dl,
        el('div', { class: 'actions' },
          el('a', { class: 'button', href: '#/logs/' + encodeURIComponent(sv.name), 'data-logs': sv.name, text: 'Logs' }),
          ...actionButtons(sv)));
    });
    const init = el('article', { class: 'service', 'data-service': 'init' },
      el('header', null, el('h3', { text: 'init' }), el('span', { class: 'pill', text: 'ingot-init' })),
      el('p', { class: 'muted', text: 'PID 1: supervisor, container launcher and this agent.' }),
      el('div', { class: 'actions' }, el('a', { class: 'button', href: '#/logs/init', 'data-logs': 'init', text: 'Logs' })));
    $('services').replaceChildren(...list, init);
  }

  function renderLogHead() {
    if (!logService || !lastStatus) return;
    const sv = (lastStatus.services || []).find((x) => x.name === logService);
    const pill = $('logs-service-state');
    pill.className = 'pill ' + (sv ? stateClass(sv.state) : '');
    pill.textContent = sv ? sv.state + (sv.health ? ', ' + sv.health.state : '') + ' · restarts ' + sv.restarts : '';
    pill.setAttribute('data-restarts', sv ? sv.restarts : '');
    $('logs-actions').replaceChildren(...(sv ? actionButtons(sv) : []));
  }

  // keepFocus re-renders with render() and gives the keyboard focus back
  // to the same control, so a keyboard user does not lose it every poll.
  function keepFocus(render) {
    const a = document.activeElement;
    let sel = '';
    if (a && a.hasAttribute('data-action')) {
      sel = '[data-action="' + a.getAttribute('data-action') + '"][data-service="' + CSS.escape(a.getAttribute('data-service')) + '"]';
    } else if (a && a.hasAttribute('data-logs')) {
      sel = '[data-logs="' + CSS.escape(a.getAttribute('data-logs')) + '"]';
    }
    const inLogHead = a && a.closest && a.closest('#logs-actions');
    render();
    if (!sel) return;
    const again = document.querySelector((inLogHead ? '#logs-actions ' : '#services ') + sel);
    if (again) again.focus();
  }

  async function refreshStatus() {
    try {
      const r = await api('/ui/api/status');
      if (!r.ok) throw new Error(await errorOf(r));
      lastStatus = await r.json();
      renderSystem(lastStatus);
      keepFocus(() => {
        renderServices(lastStatus);
        renderLogHead();
      });
      if ($('banner').textContent.startsWith('The agent does not answer')) banner('');
    } catch (e) {
      if (e.message !== 'the session ended') banner('The agent does not answer: ' + e.message);
    }
  }

  // ---- service actions, after a confirmation ----
  function confirmAction(text, label) {
    const d = $('confirm');
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = label;
    d.returnValue = '';
    return new Promise((resolve) => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
      d.showModal();
    });
  }

  async function serviceAction(name, action) {
    const verb = action.charAt(0).toUpperCase() + action.slice(1);
    if (!(await confirmAction(verb + ' the service “' + name + '”?', verb))) return;
    document.querySelectorAll('button[data-action]').forEach((b) => { b.disabled = true; });
    try {
      const r = await api('/ui/api/services/' + encodeURIComponent(name) + '/' + action, {
        method: 'POST', headers: { [CSRF_HEADER]: csrf },
      });
      if (!r.ok) banner(verb + ' ' + name + ': ' + (await errorOf(r)));
      else banner('');
    } catch (e) {
      banner(verb + ' ' + name + ': ' + e.message);
    }
    await refreshStatus();
  }

  // ---- log view: a followed NDJSON stream ----
  function addLogLine(box, l) {
    const cls = 'line ' + (l.seq === 0 ? 'note' : l.stream);
    box.append(el('div', { class: cls, 'data-seq': l.seq }, el('time', { text: clock(l.time) }), el('span', { text: l.text })));
    while (box.childElementCount > LOG_LINES_KEPT) box.firstElementChild.remove();
  }

  function stopLogs() {
    if (logCtl) logCtl.abort();
    logCtl = null;
    logService = '';
  }

  async function followLogs(name) {
    stopLogs();
    const ctl = new AbortController();
    logCtl = ctl;
    logService = name;
    $('logs-title').textContent = name;
    const box = $('logs');
    box.replaceChildren();
    renderLogHead();
    let lastSeq = 0;
    const state = (t) => { $('logs-stream').textContent = t; };
    while (!ctl.signal.aborted) {
      try {
        state('connecting…');
        const r = await api('/ui/api/logs?service=' + encodeURIComponent(name) + '&n=500&follow=1', { signal: ctl.signal });
        if (!r.ok) {
          state(await errorOf(r));
          return;
        }
        state('Live: new lines appear as they are written');
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
          while ((i = buf.indexOf('\n')) >= 0) {
            const text = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (!text) continue;
            const l = JSON.parse(text);
            if (l.seq && l.seq <= lastSeq) continue; // seen before a reconnect
            if (l.seq) lastSeq = l.seq;
            addLogLine(box, l);
          }
          if ($('logs-follow').checked && atEnd) box.scrollTop = box.scrollHeight;
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        state('lost the stream (' + e.message + '), reconnecting…');
      }
      await new Promise((res) => setTimeout(res, 2000));
    }
  }

  // ---- SBOM ----
  async function showSBOM() {
    const meta = $('sbom-meta');
    const table = $('sbom');
    try {
      const r = await api('/ui/api/sbom');
      if (!r.ok) throw new Error(await errorOf(r));
      const doc = await r.json();
      const pkgs = doc.packages || [];
      const created = doc.creationInfo && doc.creationInfo.created;
      meta.textContent = (doc.name || 'SBOM') + ' · ' + (doc.spdxVersion || 'SPDX') + ' · ' + pkgs.length + ' packages' +
        (created ? ' · created ' + created : '');
      const license = (p) => [p.licenseConcluded, p.licenseDeclared].find((l) => l && l !== 'NOASSERTION' && l !== 'NONE') || '';
      const withLicense = pkgs.some((p) => license(p));
      const rows = pkgs.map((p) => {
        const purl = (p.externalRefs || []).find((x) => x.referenceType === 'purl');
        return el('tr', null, el('td', { text: p.name || '' }), el('td', { text: p.versionInfo || '' }),
          withLicense ? el('td', { text: license(p) }) : null,
          el('td', null, el('code', { text: purl ? purl.referenceLocator : '' })));
      });
      table.replaceChildren(el('thead', null, el('tr', null, el('th', { text: 'Package' }), el('th', { text: 'Version' }),
        withLicense ? el('th', { text: 'License' }) : null, el('th', { text: 'Package URL' }))), el('tbody', null, ...rows));
    } catch (e) {
      meta.textContent = 'No SBOM: ' + e.message;
    }
  }

  // ---- views, by the URL's fragment: #/ , #/logs/NAME, #/sbom ----
  function route() {
    const h = location.hash.replace(/^#\/?/, '');
    let view = 'overview';
    if (h.startsWith('logs/')) view = 'logs';
    else if (h === 'sbom') view = 'sbom';
    document.querySelectorAll('[data-view]').forEach((v) => { v.hidden = v.getAttribute('data-view') !== view; });
    document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('current', a.getAttribute('data-nav') === view));
    if (view === 'logs') {
      const name = decodeURIComponent(h.slice('logs/'.length));
      if (name !== logService) followLogs(name);
    } else {
      stopLogs();
    }
    if (view === 'sbom') showSBOM();
  }

  async function logout() {
    try {
      await fetch('/ui/logout', { method: 'POST', credentials: 'same-origin', headers: { [CSRF_HEADER]: csrf } });
    } finally {
      location.assign('/ui/login');
    }
  }

  async function start() {
    document.addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-action]');
      if (b && !b.disabled) serviceAction(b.getAttribute('data-service'), b.getAttribute('data-action'));
    });
    $('logout').addEventListener('click', logout);
    window.addEventListener('hashchange', route);
    window.addEventListener('resize', () => {
      const box = $('logs');
      if (logService && $('logs-follow').checked) box.scrollTop = box.scrollHeight;
    });
    const r = await api('/ui/session');
    if (!r.ok) {
      banner('No session: ' + (await errorOf(r)));
      return;
    }
    csrf = (await r.json()).csrf;
    await refreshStatus();
    route();
    setInterval(() => { if (!document.hidden) refreshStatus(); }, STATUS_EVERY_MS);
  }

  start();
})();
