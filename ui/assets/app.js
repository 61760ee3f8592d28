// AI Flow web UI: plain JavaScript over the JSON API (/api/v1) and its event stream.
// Pages are addressed by the URL fragment: #/workflows, #/workflows/NAME, #/executions/ID, …
'use strict';

(() => {
  const API = '/api/v1';
  const SVGNS = 'http://www.w3.org/2000/svg';
  const main = document.getElementById('main');
  // Read by the browser tests: which page is shown, when it became ready, how long a graph took.
  const probe = (window.__aiflow = { page: null, scriptAt: performance.now(), readyAt: null, graphMs: null, loads: 0 });

  // ------------------------------------------------------------------------------------------
  // small helpers

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = v;
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  const enc = encodeURIComponent;
  const esc = (s) =>
    String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
    }
    const s = p.toString();
    return s ? '?' + s : '';
  }

  const pad = (n) => String(n).padStart(2, '0');
  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function dur(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
    if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
    const hrs = Math.floor(m / 60);
    if (hrs < 48) return `${hrs} h ${m % 60} min`;
    return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
  }
  function ago(iso) {
    if (!iso) return '—';
    const ms = Date.now() - new Date(iso).getTime();
    return ms >= 0 ? `${dur(ms)} ago` : `in ${dur(-ms)}`;
  }
  const time = (iso) => (iso ? h('time', { datetime: iso, title: fmtTime(iso) }, ago(iso)) : '—');
  const badge = (state, cls) => h('span', { class: `badge s-${String(state).toUpperCase()} ${cls || ''}` }, state);
  const shortId = (id) => (id && id.length > 12 ? id.slice(0, 8) : id);
  const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'STOPPED']);

  let toastTimer = null;
  function toast(msg, bad) {
    const t = document.getElementById('toast');
    t.textContent = msg;
    t.className = 'show' + (bad ? ' bad' : '');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.className = ''), 3500);
  }

  // A table; on narrow screens its rows stack, each cell labelled with its column's name.
  function table(heads, tbody, attrs) {
    const ths = heads.map((x) => (typeof x === 'string' ? h('th', null, x) : x));
    const names = ths.map((th) => th.textContent);
    const label = (tr) => [...tr.children].forEach((td, i) => names[i] && td.setAttribute('data-label', names[i]));
    [...tbody.children].forEach(label);
    new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach((n) => n.nodeType === 1 && label(n)))).observe(tbody, { childList: true });
    return h('div', { class: 'table-wrap' }, h('table', { ...(attrs || {}), class: 'stack' }, h('thead', null, h('tr', null, ths)), tbody));
  }

  // Keyboard navigation of a list: one row in the tab order; arrows, j/k, Home/End move; Enter
  // opens the row's link.
  function listNav(tbody) {
    const rows = () => [...tbody.querySelectorAll('tr[data-href]')];
    const focus = (r) => {
      if (!r) return;
      for (const x of rows()) x.tabIndex = -1;
      r.tabIndex = 0;
      r.focus();
    };
    tbody.addEventListener('keydown', (e) => {
      const all = rows();
      const i = all.indexOf(document.activeElement);
      if (i < 0) return;
      if (e.key === 'ArrowDown' || e.key === 'j') focus(all[Math.min(i + 1, all.length - 1)]);
      else if (e.key === 'ArrowUp' || e.key === 'k') focus(all[Math.max(i - 1, 0)]);
      else if (e.key === 'Home') focus(all[0]);
      else if (e.key === 'End') focus(all[all.length - 1]);
      else if (e.key === 'Enter') location.hash = all[i].dataset.href;
      else return;
      e.preventDefault();
    });
    tbody.addEventListener('click', (e) => {
      if (e.target.closest('a, button, input, select, summary')) return;
      const tr = e.target.closest('tr[data-href]');
      if (tr) location.hash = tr.dataset.href;
    });
    const first = () => {
      const all = rows();
      if (all.length && !all.some((r) => r.tabIndex === 0)) all[0].tabIndex = 0;
    };
    new MutationObserver(first).observe(tbody, { childList: true });
    first();
    return tbody;
  }
  const navRow = (href, ...cells) => h('tr', { 'data-href': href, tabindex: '-1' }, ...cells);

  // ------------------------------------------------------------------------------------------
  // API access, with a token when the server asks for one

  const TOKEN_KEY = 'aiflow.token';
  let token = sessionStorage.getItem(TOKEN_KEY) || null;
  let tokenAsk = null;
  const auth = () => (token ? { Authorization: `Bearer ${token}` } : {});

  function askToken(message) {
    if (tokenAsk) return tokenAsk;
    const dialog = document.getElementById('token-dialog');
    const input = document.getElementById('token-input');
    document.getElementById('token-error').textContent = message || '';
    tokenAsk = new Promise((resolve) => {
      const form = document.getElementById('token-form');
      const done = (e) => {
        e.preventDefault();
        if (!input.value) return;
        token = input.value;
        sessionStorage.setItem(TOKEN_KEY, token);
        input.value = '';
        form.removeEventListener('submit', done);
        dialog.close();
        tokenAsk = null;
        showSignout();
        resolve();
      };
      form.addEventListener('submit', done);
      dialog.showModal();
      input.focus();
    });
    return tokenAsk;
  }
  function showSignout() {
    const b = document.getElementById('signout');
    b.hidden = !token;
  }
  document.getElementById('signout').addEventListener('click', () => {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignout();
    toast('Token forgotten');
  });
  showSignout();

  class ApiError extends Error {
    constructor(status, body, path) {
      const e = body && body.error;
      super(e && e.message ? e.message : `${path}: HTTP ${status}`);
      this.status = status;
      this.field = e && e.field;
    }
  }

  async function request(method, path, body, opts) {
    for (let tries = 0; ; tries++) {
      const headers = { ...auth() };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const res = await fetch(API + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: opts && opts.signal,
      });
      if (res.status === 401 && tries < 3) {
        await askToken(tries ? 'That token was refused.' : '');
        continue;
      }
      if (!res.ok) {
        let b = null;
        try {
          b = await res.json();
        } catch (_) {
          /* not JSON */
        }
        throw new ApiError(res.status, b, path);
      }
      if (opts && opts.raw) return res;
      if (res.status === 204) return null;
      return res.json();
    }
  }
  const get = (path, opts) => request('GET', path, undefined, opts);
  const post = (path, body, opts) => request('POST', path, body === undefined ? {} : body, opts);

  // Every page of a list route.
  async function getAll(path, params, max) {
    const items = [];
    let cursor = null;
    do {
      const page = await get(path + qs({ ...params, limit: 1000, cursor }));
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && items.length < (max || 10000));
    return items;
  }

  // ------------------------------------------------------------------------------------------
  // live: the event stream (Server-Sent Events read with fetch, so a token can be sent), and
  // followed job logs

  let liveCount = 0;
  function setLive(d) {
    liveCount += d;
    document.getElementById('live').className = liveCount > 0 ? 'live on' : 'live';
  }

  // Calls onEvent(event) for each event matching `filter`; onOpen(offset) once with the offset
  // the stream starts after. Reconnects with Last-Event-ID; stops with the page.
  function subscribe(ctx, filter, onEvent, onOpen) {
    const ctl = new AbortController();
    ctx.cleanup(() => ctl.abort());
    let last = null;
    let opened = false;
    (async () => {
      let delay = 500;
      while (!ctl.signal.aborted) {
        let live = false;
        try {
          const headers = { ...auth(), Accept: 'text/event-stream' };
          if (last !== null) headers['Last-Event-ID'] = String(last);
          const res = await fetch(API + '/events/stream' + qs(last === null ? filter : { ...filter, from: undefined }), {
            headers,
            signal: ctl.signal,
          });
          if (res.status === 401) {
            await askToken('');
            continue;
          }
          if (!res.ok) throw new Error(`event stream: HTTP ${res.status}`);
          setLive(1);
          live = true;
          delay = 500;
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = '';
          let id = null;
          let data = [];
          let name = null;
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let nl;
            while ((nl = buf.indexOf('\n')) >= 0) {
              let line = buf.slice(0, nl);
              buf = buf.slice(nl + 1);
              if (line.endsWith('\r')) line = line.slice(0, -1);
              if (line === '') {
                if (id !== null) last = Number(id);
                if (!opened && id !== null && data.length === 0) {
                  opened = true;
                  if (onOpen) onOpen(last);
                }
                if (name === 'error') throw new Error(data.join('\n'));
                if (data.length) {
                  try {
                    onEvent(JSON.parse(data.join('\n')));
                  } catch (e) {
                    console.warn('event not handled', e);
                  }
                }
                id = null;
                data = [];
                name = null;
                continue;
              }
              if (line.startsWith(':')) continue;
              const c = line.indexOf(':');
              const field = c < 0 ? line : line.slice(0, c);
              let v = c < 0 ? '' : line.slice(c + 1);
              if (v.startsWith(' ')) v = v.slice(1);
              if (field === 'id') id = v;
              else if (field === 'data') data.push(v);
              else if (field === 'event') name = v;
            }
          }
        } catch (e) {
          if (ctl.signal.aborted) return;
        } finally {
          if (live) setLive(-1);
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    })();
    return ctl;
  }

  // Resolves once the stream is open (or after `ms`), so a page can read state after it and
  // miss no change.
  function subscribeFirst(ctx, filter, onEvent, ms) {
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(null), ms || 1500);
      subscribe(ctx, filter, onEvent, (offset) => {
        clearTimeout(t);
        resolve(offset);
      });
    });
  }

  // ------------------------------------------------------------------------------------------
  // drawing: layered graphs as SVG (left to right), shared by the workflow and lineage pages

  // Layer of each vertex: longest path from a source over arrows that close no cycle.
  function layers(n, arrows) {
    const out = Array.from({ length: n }, () => []);
    const indeg = new Array(n).fill(0);
    for (const a of arrows) {
      if (a.from === a.to) continue;
      out[a.from].push(a.to);
      indeg[a.to]++;
    }
    const layer = new Array(n).fill(0);
    const done = new Array(n).fill(false);
    const ready = [];
    for (let i = n - 1; i >= 0; i--) if (indeg[i] === 0) ready.push(i);
    let placed = 0;
    let scan = 0;
    for (;;) {
      while (ready.length) {
        const u = ready.pop();
        if (done[u]) continue;
        done[u] = true;
        placed++;
        for (const v of out[u]) {
          if (done[v] || indeg[v] === 0) continue;
          layer[v] = Math.max(layer[v], layer[u] + 1);
          if (--indeg[v] === 0) ready.push(v);
        }
      }
      if (placed >= n) break;
      while (done[scan]) scan++;
      indeg[scan] = 0; // a cycle: break it at the first unplaced vertex
      ready.push(scan);
    }
    return layer;
  }

  const BOX_W = 172;
  const BOX_H = 48;
  const GAP_X = 86;
  const GAP_Y = 22;
  const MARGIN = 20;

  // vertices: [{id, label, sub, shape: 'box'|'ellipse', fill, stripe, href, cls, attrs}]
  // arrows: [{from, to, control, label}] (indices). Returns {svg (string), width, height}.
  function drawGraph(vertices, arrows) {
    const n = vertices.length;
    const layer = layers(n, arrows);
    const byLayer = [];
    for (let i = 0; i < n; i++) (byLayer[layer[i]] = byLayer[layer[i]] || []).push(i);
    // Order within a layer by the mean row of predecessors (fewer crossings), then by index.
    const row = new Array(n).fill(0);
    const preds = Array.from({ length: n }, () => []);
    for (const a of arrows) if (layer[a.from] < layer[a.to]) preds[a.to].push(a.from);
    byLayer.forEach((ids, l) => {
      if (!ids) return;
      if (l > 0) {
        const key = new Map(ids.map((i) => [i, preds[i].length ? preds[i].reduce((s, p) => s + row[p], 0) / preds[i].length : Infinity]));
        ids.sort((a, b) => key.get(a) - key.get(b) || a - b);
      }
      ids.forEach((i, r) => (row[i] = r));
    });
    const rows = Math.max(1, ...byLayer.map((x) => (x ? x.length : 0)));
    const x = (i) => MARGIN + layer[i] * (BOX_W + GAP_X);
    const y = (i) => MARGIN + row[i] * (BOX_H + GAP_Y);
    const width = MARGIN * 2 + byLayer.length * (BOX_W + GAP_X) - GAP_X;
    const height = MARGIN * 2 + rows * (BOX_H + GAP_Y) - GAP_Y + BOX_H;
    const parts = [];
    const labels = []; // drawn last, over the boxes
    parts.push(
      `<svg xmlns="${SVGNS}" class="graph" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img">` +
        '<defs><marker id="arr" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" fill="#334155"/></marker>' +
        '<marker id="arr-c" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" fill="#b45309"/></marker></defs>',
    );
    for (const a of arrows) {
      const x1 = x(a.from) + BOX_W;
      const y1 = y(a.from) + BOX_H / 2;
      const x2 = x(a.to);
      const y2 = y(a.to) + BOX_H / 2;
      let d;
      if (x2 > x1) {
        const mx = (x1 + x2) / 2;
        d = `M${x1} ${y1}C${mx} ${y1},${mx} ${y2},${x2} ${y2}`;
      } else {
        const low = Math.max(y1, y2) + BOX_H;
        d = `M${x1} ${y1}C${x1 + 60} ${low},${x2 - 60} ${low},${x2} ${y2}`;
      }
      const cls = a.control ? 'control' : 'data';
      parts.push(
        `<path class="edge ${cls}" data-from="${esc(vertices[a.from].id)}" data-to="${esc(vertices[a.to].id)}" d="${d}" marker-end="url(#${a.control ? 'arr-c' : 'arr'})"/>`,
      );
      if (a.label) {
        const ly = x2 > x1 ? (y1 + y2) / 2 - 5 : Math.max(y1, y2) + BOX_H * 0.75;
        labels.push(`<text class="edge-label" x="${(x1 + x2) / 2}" y="${ly}" text-anchor="middle">${esc(a.label)}</text>`);
      }
    }
    vertices.forEach((v, i) => {
      const vx = x(i);
      const vy = y(i);
      const cx = vx + BOX_W / 2;
      const cy = vy + BOX_H / 2;
      const extra = Object.entries(v.attrs || {})
        .map(([k, val]) => ` ${k}="${esc(val)}"`)
        .join('');
      const link = v.href ? ` data-href="${esc(v.href)}" tabindex="0" role="link"` : '';
      parts.push(`<g class="node ${v.cls || ''}${v.href ? ' clickable' : ''}" data-id="${esc(v.id)}"${extra}${link}>`);
      parts.push(`<title>${esc(v.title || v.id)}</title>`);
      if (v.shape === 'ellipse') {
        parts.push(`<ellipse class="body" cx="${cx}" cy="${cy}" rx="${BOX_W / 2}" ry="${BOX_H / 2}" fill="${v.fill || '#fff7d6'}"/>`);
      } else {
        parts.push(`<rect class="body" x="${vx}" y="${vy}" width="${BOX_W}" height="${BOX_H}" rx="8" fill="${v.fill || '#ffffff'}"/>`);
        if (v.stripe) parts.push(`<rect x="${vx + 1}" y="${vy + 6}" width="5" height="${BOX_H - 12}" rx="2" fill="${v.stripe}" stroke="none"/>`);
      }
      const max = v.shape === 'ellipse' ? 20 : 24;
      const label = v.label.length > max ? v.label.slice(0, max - 1) + '…' : v.label;
      const sub = (v.sub || '').length > 30 ? v.sub.slice(0, 29) + '…' : v.sub || '';
      parts.push(
        `<text x="${cx}" y="${cy - 3}" text-anchor="middle" font-weight="600" font-size="13" fill="#0f172a">${esc(label)}</text>` +
          `<text class="sub" x="${cx}" y="${cy + 13}" text-anchor="middle" font-size="11" fill="#475569">${esc(sub)}</text></g>`,
      );
    });
    parts.push(...labels, '</svg>');
    return { svg: parts.join(''), width, height };
  }

  // Puts a drawing in `box`; clicks and Enter on linked vertices navigate.
  function showGraph(box, drawing) {
    box.innerHTML = drawing.svg;
    const svg = box.firstElementChild;
    const open = (e) => {
      const g = e.target.closest('[data-href]');
      if (g) location.hash = g.getAttribute('data-href');
    };
    svg.addEventListener('click', open);
    svg.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        open(e);
      }
    });
    return svg;
  }

  const STATE_FILL = {
    WAITING: '#f1f5f9',
    QUEUED: '#e0e7ff',
    RUNNING: '#bfdbfe',
    RETRYING: '#fde68a',
    SUCCEEDED: '#bbf7d0',
    FAILED: '#fecaca',
    STOPPED: '#fed7aa',
  };
  const PALETTE = ['#2563eb', '#16a34a', '#d97706', '#db2777', '#4f46e5', '#0d9488', '#dc2626', '#7c3aed'];

  // Leaves of a condition: [{kind: 'event', key, type} | {kind: 'status', name, status}].
  function leaves(cond, out) {
    out = out || [];
    if (!cond) return out;
    if (cond.event) out.push({ kind: 'event', key: cond.event.key, type: cond.event.event_type || null });
    else if (cond.job_status) out.push({ kind: 'status', name: cond.job_status.node || cond.job_status.job, job: cond.job_status.job, status: cond.job_status.status });
    else for (const part of cond.all_of || cond.any_of || []) leaves(part, out);
    return out;
  }

  // The AI graph (nodes, data edges solid, control edges dashed) or, with no graph, the jobs of
  // the workflow document and its rules. `states`: job name → latest state.
  function workflowModel(graph, wf, view, states, jobHref) {
    const vertices = [];
    const arrows = [];
    const index = new Map();
    const events = new Map();
    const jobs = wf.jobs || [];
    const jobOf = new Map();
    jobs.forEach((j, k) => (j.nodes || []).forEach((n) => jobOf.set(n.name, k)));
    const eventVertex = (key, type) => {
      const id = `event:${key}${type ? ` [${type}]` : ''}`;
      if (!events.has(id)) {
        vertices.push({ id, label: key, sub: type || 'event', shape: 'ellipse', cls: 'event', href: `/events?key=${enc(key)}`, title: `events ${key}` });
        events.set(id, vertices.length - 1);
      }
      return events.get(id);
    };
    const fill = (job) => STATE_FILL[states.get(job)] || '#ffffff';
    const jobVertex = (jobName, id, label, sub, k) => {
      vertices.push({
        id,
        label,
        sub,
        fill: fill(jobName),
        stripe: PALETTE[k % PALETTE.length],
        href: jobHref(jobName),
        attrs: { 'data-job': jobName, 'data-state': states.get(jobName) || '' },
        title: `job ${jobName}${states.get(jobName) ? ': ' + states.get(jobName) : ''}`,
      });
      index.set(id, vertices.length - 1);
    };
    if (view === 'graph' && graph) {
      for (const n of graph.nodes || []) {
        const k = jobOf.has(n.name) ? jobOf.get(n.name) : 0;
        const job = jobs[k] ? jobs[k].name : n.name;
        jobVertex(job, n.name, n.name, job === n.name ? n.op || '' : `${n.op || ''} · job ${job}`, k);
      }
      for (const e of graph.data_edges || []) {
        if (index.has(e.from) && index.has(e.to)) arrows.push({ from: index.get(e.from), to: index.get(e.to), control: false, label: '' });
      }
      for (const e of graph.control_edges || []) {
        if (!index.has(e.to)) continue;
        for (const leaf of leaves(e.condition)) {
          if (leaf.kind === 'status') {
            if (!index.has(leaf.name)) continue;
            arrows.push({ from: index.get(leaf.name), to: index.get(e.to), control: true, label: `${e.action} on ${leaf.status}` });
          } else {
            arrows.push({ from: eventVertex(leaf.key, leaf.type), to: index.get(e.to), control: true, label: e.action });
          }
        }
      }
    } else {
      jobs.forEach((j, k) => {
        const nodes = (j.nodes || []).length;
        const sub = [nodes > 1 ? `${nodes} nodes` : (j.nodes || [])[0] ? j.nodes[0].op : '', j.streaming ? 'streaming' : ''].filter(Boolean).join(' · ');
        jobVertex(j.name, `job:${j.name}`, j.name, sub, k);
      });
      for (const r of wf.rules || []) {
        const to = index.get(`job:${r.job}`);
        if (to === undefined) continue;
        for (const leaf of leaves(r.condition)) {
          if (leaf.kind === 'status') {
            const from = index.get(`job:${leaf.job || leaf.name}`);
            if (from !== undefined) arrows.push({ from, to, control: true, label: `${r.action} on ${leaf.status}` });
          } else {
            arrows.push({ from: eventVertex(leaf.key, leaf.type), to, control: true, label: r.action });
          }
        }
      }
    }
    return { vertices, arrows };
  }

  // ------------------------------------------------------------------------------------------
  // pages

  function crumbs(...parts) {
    const out = h('div', { class: 'crumbs' });
    parts.forEach((p, i) => {
      if (i) out.append(' / ');
      out.append(Array.isArray(p) ? h('a', { href: '#' + p[1] }, p[0]) : p);
    });
    return out;
  }

  function kv(pairs) {
    return h(
      'dl',
      { class: 'grid kv panel' },
      pairs.filter(Boolean).map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v === undefined || v === null || v === '' ? '—' : v))),
    );
  }

  // latest attempt per job → state
  function latestStates(jobRows) {
    const best = new Map();
    for (const j of jobRows) {
      const b = best.get(j.job);
      if (!b || j.attempt >= b.attempt) best.set(j.job, j);
    }
    return new Map([...best].map(([k, v]) => [k, v.state]));
  }

  async function startWorkflow(name) {
    try {
      const e = await post(`/workflows/${enc(name)}/executions`);
      toast(`Started ${name}`);
      location.hash = `/executions/${enc(e.id)}`;
    } catch (err) {
      toast(err.message, true);
    }
  }

  // ---- workflows

  async function pageWorkflows(ctx) {
    const workflows = await getAll('/workflows');
    const tbody = listNav(h('tbody'));
    const cells = new Map();
    const fillRow = async (wf) => {
      const c = cells.get(wf.name);
      const [last, triggers] = await Promise.all([
        get(`/executions${qs({ workflow: wf.name, order: 'desc', limit: 1 })}`),
        get(`/workflows/${enc(wf.name)}/triggers`).catch(() => []),
      ]);
      const e = last.items[0];
      c.last.replaceChildren(e ? h('span', null, h('a', { href: `#/executions/${enc(e.id)}` }, badge(e.state)), ' ', time(e.created_at)) : h('span', { class: 'muted' }, 'never'));
      const timed = triggers.filter((t) => t.next_at).sort((a, b) => a.next_at.localeCompare(b.next_at));
      c.next.replaceChildren(
        timed.length
          ? h('span', { title: timed[0].description }, time(timed[0].next_at), h('div', { class: 'muted' }, timed[0].description))
          : triggers.length
            ? h('span', { class: 'muted' }, wf.paused ? 'paused' : triggers.map((t) => t.description).join('; '))
            : h('span', { class: 'muted' }, 'manual only'),
      );
    };
    for (const wf of workflows) {
      const c = { state: h('td'), last: h('td'), next: h('td', { class: 'wrap' }), toggle: h('button') };
      cells.set(wf.name, c);
      const setPaused = (paused) => {
        wf.paused = paused;
        c.state.replaceChildren(badge(paused ? 'PAUSED' : 'ACTIVE'));
        c.toggle.textContent = paused ? 'Resume' : 'Pause';
      };
      setPaused(wf.paused);
      c.toggle.addEventListener('click', async () => {
        try {
          const info = await post(`/workflows/${enc(wf.name)}/${wf.paused ? 'resume' : 'pause'}`);
          setPaused(info.paused);
          toast(`${wf.name} ${info.paused ? 'paused' : 'resumed'}`);
          await fillRow(wf);
        } catch (err) {
          toast(err.message, true);
        }
      });
      tbody.append(
        navRow(
          `/workflows/${enc(wf.name)}`,
          h('td', null, h('a', { href: `#/workflows/${enc(wf.name)}` }, h('strong', null, wf.name)), wf.description ? h('div', { class: 'muted hide-narrow' }, wf.description) : null),
          c.state,
          h('td', { class: 'num hide-narrow' }, `v${wf.latest_version}`),
          c.last,
          c.next,
          h('td', null, h('div', { class: 'actions' }, h('button', { class: 'primary', onclick: () => startWorkflow(wf.name) }, 'Start'), c.toggle)),
        ),
      );
    }
    ctx.render(
      h('h1', null, 'Workflows'),
      workflows.length
        ? table(['Workflow', 'State', h('th', { class: 'num hide-narrow' }, 'Version'), 'Last run', 'Next trigger', ''], tbody, { id: 'workflows' })
        : h('p', { class: 'panel empty' }, 'No workflows yet. Submit one with ', h('code', null, 'aiflow workflow submit FILE'), ' or put it in the dags folder.'),
      h('p', { class: 'muted' }, 'Keys: ↑/↓ or j/k move, Enter opens.'),
    );
    await Promise.all(workflows.map((wf) => fillRow(wf).catch(() => {})));
    subscribe(ctx, { event_type: 'WORKFLOW_STATUS' }, (ev) => {
      const wf = workflows.find((w) => ev.context && w.name === ev.context.workflow);
      if (wf) fillRow(wf).catch(() => {});
    });
  }

  // ---- one workflow: graph coloured by the latest execution

  async function pageWorkflow(ctx, name) {
    const wanted = Number(ctx.query.get('version')) || null;
    const [info, triggers, recent] = await Promise.all([
      get(`/workflows/${enc(name)}`),
      get(`/workflows/${enc(name)}/triggers`).catch(() => []),
      get(`/executions${qs({ workflow: name, order: 'desc', limit: 10 })}`),
    ]);
    let latest = recent.items[0] || null;
    const [v, jobRows] = await Promise.all([
      get(`/workflows/${enc(name)}/versions/${wanted || info.latest_version}`),
      latest ? get(`/executions/${enc(latest.id)}/jobs`) : [],
    ]);
    const states = latestStates(jobRows);
    let view = ctx.query.get('view') === 'jobs' || !v.graph ? 'jobs' : 'graph';

    const toggle = h('button', null, info.paused ? 'Resume' : 'Pause');
    const stateCell = h('span', null, badge(info.paused ? 'PAUSED' : 'ACTIVE'));
    toggle.addEventListener('click', async () => {
      try {
        const r = await post(`/workflows/${enc(name)}/${info.paused ? 'resume' : 'pause'}`);
        info.paused = r.paused;
        toggle.textContent = r.paused ? 'Resume' : 'Pause';
        stateCell.replaceChildren(badge(r.paused ? 'PAUSED' : 'ACTIVE'));
        toast(`${name} ${r.paused ? 'paused' : 'resumed'}`);
      } catch (err) {
        toast(err.message, true);
      }
    });
    const latestCell = h('span');
    const showLatest = () =>
      latestCell.replaceChildren(latest ? h('span', null, h('a', { href: `#/executions/${enc(latest.id)}` }, shortId(latest.id)), ' ', badge(latest.state)) : 'none');
    showLatest();
    const versionSelect = h(
      'select',
      { 'aria-label': 'Version' },
      Array.from({ length: info.latest_version }, (_, i) => info.latest_version - i).map((n) =>
        h('option', { value: n, selected: n === v.version }, n === info.latest_version ? `v${n} (latest)` : `v${n}`),
      ),
    );
    versionSelect.addEventListener('change', () => (location.hash = `/workflows/${enc(name)}${qs({ version: versionSelect.value, view })}`));

    const box = h('div', { class: 'graph-box', id: 'graph' });
    const tabs = h('div', { class: 'tabs', role: 'tablist' });
    const draw = () => {
      const t0 = performance.now();
      const jobHref = (job) => (latest ? `/executions/${enc(latest.id)}/jobs/${enc(job)}` : null);
      const m = workflowModel(v.graph, v.workflow_doc, view, states, jobHref);
      showGraph(box, drawGraph(m.vertices, m.arrows));
      box.firstElementChild.getBoundingClientRect();
      probe.graphMs = performance.now() - t0;
      probe.graphNodes = m.vertices.length;
      for (const b of tabs.children) b.setAttribute('aria-selected', String(b.dataset.view === view));
    };
    for (const [key, label] of [
      ['graph', 'AI graph'],
      ['jobs', 'Jobs'],
    ]) {
      if (key === 'graph' && !v.graph) continue;
      tabs.append(
        h('button', { role: 'tab', 'data-view': key, onclick: () => ((view = key), draw()) }, label),
      );
    }
    const recolor = () => {
      for (const g of box.querySelectorAll('g.node[data-job]')) {
        const st = states.get(g.getAttribute('data-job'));
        g.setAttribute('data-state', st || '');
        g.querySelector('.body').setAttribute('fill', STATE_FILL[st] || '#ffffff');
        g.querySelector('title').textContent = `job ${g.getAttribute('data-job')}${st ? ': ' + st : ''}`;
      }
    };
    const execBody = h('tbody');
    listNav(execBody);
    const execRows = new Map();
    const execRow = (e) => {
      const tr = navRow(
        `/executions/${enc(e.id)}`,
        h('td', { class: 'mono' }, h('a', { href: `#/executions/${enc(e.id)}` }, shortId(e.id))),
        h('td', null, badge(e.state)),
        h('td', { class: 'hide-narrow' }, `v${e.workflow_version}`),
        h('td', null, time(e.created_at)),
        h('td', null, dur((e.ended_at ? new Date(e.ended_at) : new Date()) - new Date(e.started_at || e.created_at))),
      );
      execRows.set(e.id, tr);
      return tr;
    };
    for (const e of recent.items) execBody.append(execRow(e));
    const none = recent.items.length ? null : h('p', { class: 'muted' }, 'No executions yet.');

    const legend = h(
      'div',
      { class: 'legend' },
      h('span', null, h('span', { class: 'sw' }), 'data edge'),
      h('span', null, h('span', { class: 'sw control' }), 'control edge'),
      Object.entries(STATE_FILL).map(([s, c]) => h('span', null, h('span', { class: 'dot', style: `background:${c}` }), s.toLowerCase())),
    );
    ctx.render(
      crumbs(['Workflows', '/workflows'], name),
      h('h1', null, name, stateCell, h('span', { class: 'actions' }, h('button', { class: 'primary', onclick: () => startWorkflow(name) }, 'Start'), toggle)),
      kv([
        ['Project', info.project],
        ['Namespace', info.namespace],
        ['Version', h('span', null, versionSelect, ' ', h('span', { class: 'muted' }, fmtTime(v.created_at)))],
        ['Latest execution', latestCell],
        ['Triggers', triggers.length ? h('div', null, triggers.map((t) => h('div', null, t.description, t.next_at ? h('span', { class: 'muted' }, ' · next ', time(t.next_at)) : null))) : 'manual only'],
        info.description ? ['Description', info.description] : null,
      ]),
      tabs,
      legend,
      box,
      h('h2', null, 'Recent executions'),
      table(['Execution', 'State', h('th', { class: 'hide-narrow' }, 'Version'), 'Created', 'Duration'], execBody, { id: 'recent' }),
      none,
    );
    draw();
    // Events of one execution are applied in order, after its row is known.
    let chain = Promise.resolve();
    subscribe(ctx, { event_type: 'JOB_STATUS,WORKFLOW_STATUS' }, (ev) => {
      chain = chain.then(() => apply(ev)).catch(() => {});
    });
    const apply = async (ev) => {
      const c = ev.context || {};
      if (c.workflow !== name || !c.execution) return;
      if (!latest || c.execution !== latest.id) {
        if (execRows.has(c.execution)) return; // an older execution
        latest = await get(`/executions/${enc(c.execution)}`);
        states.clear();
        execBody.prepend(execRow(latest));
        if (none) none.remove();
        draw();
      }
      if (ev.event_type === 'JOB_STATUS') {
        states.set(c.job, ev.value);
        recolor();
      } else {
        latest.state = ev.value;
      }
      showLatest();
      const tr = execRows.get(c.execution);
      if (tr && ev.event_type === 'WORKFLOW_STATUS') tr.children[1].replaceChildren(badge(ev.value));
    };
  }

  // ---- executions

  const STATES = ['RUNNING', 'SUCCEEDED', 'FAILED', 'STOPPED'];

  async function pageExecutions(ctx) {
    const filter = { workflow: ctx.query.get('workflow') || '', state: ctx.query.get('state') || '' };
    const [workflows, first] = await Promise.all([getAll('/workflows').catch(() => []), get(`/executions${qs({ ...filter, order: 'desc', limit: 50 })}`)]);
    const tbody = listNav(h('tbody'));
    const rows = new Map();
    const row = (e) => {
      const tr = navRow(
        `/executions/${enc(e.id)}`,
        h('td', { class: 'mono' }, h('a', { href: `#/executions/${enc(e.id)}` }, shortId(e.id))),
        h('td', null, h('a', { href: `#/workflows/${enc(e.workflow)}` }, e.workflow), h('span', { class: 'muted' }, ` v${e.workflow_version}`)),
        h('td', { class: 'state' }, badge(e.state)),
        h('td', { class: 'hide-narrow' }, (e.trigger && e.trigger.type) || '—'),
        h('td', null, time(e.created_at)),
        h('td', { class: 'hide-narrow dur' }, e.ended_at ? dur(new Date(e.ended_at) - new Date(e.started_at || e.created_at)) : '…'),
      );
      rows.set(e.id, tr);
      return tr;
    };
    first.items.forEach((e) => tbody.append(row(e)));
    let cursor = first.next_cursor;
    const more = h('button', { hidden: !cursor }, 'Older executions');
    more.addEventListener('click', async () => {
      const page = await get(`/executions${qs({ ...filter, order: 'desc', limit: 50, cursor })}`);
      page.items.forEach((e) => tbody.append(row(e)));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    });
    const wfSelect = h('select', { name: 'workflow' }, h('option', { value: '' }, 'all'), workflows.map((w) => h('option', { value: w.name, selected: w.name === filter.workflow }, w.name)));
    const stSelect = h('select', { name: 'state' }, h('option', { value: '' }, 'all'), STATES.map((s) => h('option', { value: s, selected: s === filter.state }, s.toLowerCase())));
    const apply = () => (location.hash = `/executions${qs({ workflow: wfSelect.value, state: stSelect.value })}`);
    wfSelect.addEventListener('change', apply);
    stSelect.addEventListener('change', apply);
    ctx.render(
      h('h1', null, 'Executions'),
      h('div', { class: 'toolbar' }, h('label', null, 'Workflow', wfSelect), h('label', null, 'State', stSelect)),
      table(['Execution', 'Workflow', 'State', h('th', { class: 'hide-narrow' }, 'Trigger'), 'Created', h('th', { class: 'hide-narrow' }, 'Duration')], tbody, { id: 'executions' }),
      first.items.length ? null : h('p', { class: 'muted' }, 'No executions match.'),
      h('p', null, more),
    );
    subscribe(ctx, { event_type: 'WORKFLOW_STATUS' }, async (ev) => {
      const id = ev.context && ev.context.execution;
      if (!id) return;
      const e = await get(`/executions/${enc(id)}`).catch(() => null);
      if (!e) return;
      const tr = rows.get(id);
      if (tr) {
        tr.querySelector('.state').replaceChildren(badge(ev.value));
        if (e.ended_at) tr.querySelector('.dur').textContent = dur(new Date(e.ended_at) - new Date(e.started_at || e.created_at));
      } else if ((!filter.workflow || filter.workflow === e.workflow) && (!filter.state || filter.state === ev.value)) {
        const n = row({ ...e, state: ev.value });
        n.classList.add('fresh');
        tbody.prepend(n);
      }
    });
  }

  // A job's state from the table and from events: whichever is further along wins (rows are
  // written a moment after the event announcing them).
  const JOB_RANK = { WAITING: 0, QUEUED: 1, RUNNING: 2, RETRYING: 3, SUCCEEDED: 4, FAILED: 4, STOPPED: 4 };
  const further = (a, b) => (!b ? a : !a ? b : (JOB_RANK[b] ?? 0) > (JOB_RANK[a] ?? 0) ? b : a);

  function gantt(exec, jobs, width) {
    const t0 = new Date(exec.started_at || exec.created_at).getTime();
    const now = Date.now();
    const t1 = Math.max(t0 + 1000, exec.ended_at ? new Date(exec.ended_at).getTime() : now, ...jobs.map((j) => (j.ended_at ? new Date(j.ended_at).getTime() : 0)));
    const narrow = width < 600;
    const left = narrow ? 96 : 170;
    const right = 16;
    const rowH = 24;
    const top = 22;
    const plot = Math.max(50, width - left - right);
    const sx = (t) => left + ((t - t0) / (t1 - t0)) * plot;
    const height = top + jobs.length * rowH + 8;
    const out = [`<svg xmlns="${SVGNS}" class="gantt" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="job timeline">`];
    const ticks = narrow ? 2 : 4;
    for (let k = 0; k <= ticks; k++) {
      const x = left + (plot * k) / ticks;
      out.push(`<line x1="${x}" y1="${top - 6}" x2="${x}" y2="${height - 4}" stroke="#e2e8f0"/>`);
      out.push(`<text x="${x}" y="${top - 9}" text-anchor="${k === 0 ? 'start' : k === ticks ? 'end' : 'middle'}">+${esc(dur(((t1 - t0) * k) / ticks))}</text>`);
    }
    jobs.forEach((j, i) => {
      const y = top + i * rowH;
      const s = j.started_at ? new Date(j.started_at).getTime() : null;
      const e = j.ended_at ? new Date(j.ended_at).getTime() : TERMINAL.has(j.state) ? s : now;
      const label = j.attempt > 1 ? `${j.job} #${j.attempt}` : j.job;
      out.push(`<text x="4" y="${y + 16}">${esc(label.length > (narrow ? 12 : 22) ? label.slice(0, narrow ? 11 : 21) + '…' : label)}</text>`);
      if (s !== null) {
        const x = sx(s);
        const w = Math.max(3, sx(e === null ? now : e) - x);
        out.push(`<rect class="bar" data-job="${esc(j.job)}" x="${x}" y="${y + 4}" width="${w}" height="${rowH - 8}" rx="3" fill="${STATE_FILL[j.state] || '#e2e8f0'}" stroke="#64748b"><title>${esc(`${label}: ${j.state}, ${dur((e === null ? now : e) - s)}`)}</title></rect>`);
      } else {
        out.push(`<text x="${left}" y="${y + 16}" fill="#94a3b8">${esc(j.state.toLowerCase())}</text>`);
      }
    });
    out.push('</svg>');
    return out.join('');
  }

  async function pageExecution(ctx, id) {
    let exec = null;
    let jobs = [];
    const seen = new Map(); // "job#attempt" → {state, at} from events
    let execEvent = null;
    let refetch = null;
    let tries = 0;
    // Rows are written a moment after the events announcing them: read again until they agree.
    const behind = () =>
      (execEvent && TERMINAL.has(execEvent.state) && exec.state !== execEvent.state) ||
      jobs.some((j) => {
        const e = seen.get(`${j.job}#${j.attempt}`);
        return e && further(j.state, e.state) !== j.state;
      });
    const reload = (ms) => {
      clearTimeout(refetch);
      refetch = setTimeout(async () => {
        try {
          await load();
          show();
          if (behind() && tries++ < 20) reload(300);
        } catch (_) {
          /* the next event tries again */
        }
      }, ms);
    };
    const onEvent = (ev) => {
      const c = ev.context || {};
      if (c.execution !== id) return;
      if (ev.event_type === 'JOB_STATUS') seen.set(`${c.job}#${c.attempt}`, { state: ev.value, at: ev.created_at });
      else execEvent = { state: ev.value, at: ev.created_at };
      if (exec) {
        show();
        tries = 0;
        reload(200);
      }
    };
    const load = async () => {
      [exec, jobs] = await Promise.all([get(`/executions/${enc(id)}`), get(`/executions/${enc(id)}/jobs`)]);
    };
    // The stream and the state are read together; once the stream is open the state is read
    // again, so no change falls between the two.
    const opened = subscribeFirst(ctx, { event_type: 'JOB_STATUS,WORKFLOW_STATUS' }, onEvent);
    await load();
    opened.then(() => reload(0));

    const stateCell = h('span', { id: 'exec-state' });
    const stop = h('button', { class: 'danger', id: 'stop' }, 'Stop');
    stop.addEventListener('click', async () => {
      stop.disabled = true;
      try {
        await post(`/executions/${enc(id)}/stop`);
        toast('Stopping…');
      } catch (err) {
        toast(err.message, true);
        stop.disabled = false;
      }
    });
    const again = h('button', { class: 'primary', onclick: () => startWorkflow(exec.workflow) }, 'Start again');
    const facts = h('div');
    const tbody = h('tbody');
    const timeline = h('div', { class: 'panel', id: 'timeline' });
    const show = () => {
      const state = execEvent && TERMINAL.has(execEvent.state) ? execEvent.state : exec.state;
      const ended = exec.ended_at || (TERMINAL.has(state) && execEvent ? execEvent.at : null);
      stateCell.replaceChildren(badge(state));
      stop.disabled = TERMINAL.has(state);
      facts.replaceChildren(
        kv([
          ['Workflow', h('a', { href: `#/workflows/${enc(exec.workflow)}` }, `${exec.workflow} v${exec.workflow_version}`)],
          ['Trigger', exec.trigger ? h('code', null, JSON.stringify(exec.trigger)) : '—'],
          ['Created', fmtTime(exec.created_at)],
          ['Started', fmtTime(exec.started_at)],
          ['Ended', fmtTime(ended)],
          ['Duration', dur((ended ? new Date(ended) : new Date()) - new Date(exec.started_at || exec.created_at))],
        ]),
      );
      const merged = jobs.map((j) => {
        const e = seen.get(`${j.job}#${j.attempt}`);
        const st = further(j.state, e && e.state);
        if (st === j.state || !e) return j;
        return {
          ...j,
          state: st,
          started_at: j.started_at || (st === 'RUNNING' ? e.at : null),
          ended_at: j.ended_at || (TERMINAL.has(st) ? e.at : null),
        };
      });
      tbody.replaceChildren(
        ...merged.map((j) =>
          navRow(
            `/executions/${enc(id)}/jobs/${enc(j.job)}${qs({ attempt: j.attempt })}`,
            h('td', null, h('a', { href: `#/executions/${enc(id)}/jobs/${enc(j.job)}${qs({ attempt: j.attempt })}` }, j.job)),
            h('td', { class: 'num' }, j.attempt),
            h('td', { 'data-job': j.job, class: 'job-state' }, badge(j.state)),
            h('td', { class: 'hide-narrow' }, fmtTime(j.started_at)),
            h('td', null, j.started_at ? dur((j.ended_at ? new Date(j.ended_at) : TERMINAL.has(j.state) ? new Date(j.started_at) : new Date()) - new Date(j.started_at)) : '—'),
            h('td', { class: 'num hide-narrow' }, j.exit_code ?? '—'),
            h('td', null, h('a', { href: `#/lineage${qs({ node: `job_execution:${j.id}` })}` }, 'lineage')),
          ),
        ),
      );
      timeline.innerHTML = merged.length ? gantt({ ...exec, ended_at: ended }, merged, timeline.clientWidth - 26 || 900) : '<p class="muted">No job has started.</p>';
    };
    listNav(tbody);
    ctx.render(
      crumbs(['Executions', '/executions'], shortId(id)),
      h('h1', null, h('span', { class: 'mono' }, id), stateCell, h('span', { class: 'actions' }, stop, again)),
      facts,
      h('h2', null, 'Timeline'),
      timeline,
      h('h2', null, 'Jobs'),
      table(['Job', h('th', { class: 'num' }, 'Attempt'), 'State', h('th', { class: 'hide-narrow' }, 'Started'), 'Duration', h('th', { class: 'num hide-narrow' }, 'Exit'), 'Lineage'], tbody, { id: 'jobs' }),
    );
    show();
    ctx.every(1000, () => {
      if (!TERMINAL.has(exec.state) || behind()) show();
    });
  }

  // ---- one job: why it ran (or waits), and its log followed live

  async function pageJob(ctx, id, job) {
    const wantAttempt = Number(ctx.query.get('attempt')) || null;
    let attempts = [];
    const live = new Map();
    let logCtl = null;
    const pre = h('pre', { class: 'log', id: 'log', tabindex: '0', 'aria-label': 'job log' });
    const logState = h('span', { class: 'muted' });
    const follow = h('input', { type: 'checkbox', checked: true });
    const whyBody = h('tbody');
    const head = h('span');
    const attemptsNav = h('span', { class: 'actions' });
    let current = null;

    const loadWhy = async () => {
      const rows = await get(`/executions/${enc(id)}/jobs/${enc(job)}/why`);
      whyBody.replaceChildren(
        ...(rows.length
          ? rows.map((r) =>
              h(
                'tr',
                null,
                h('td', null, fmtTime(r.created_at)),
                h('td', { class: 'num' }, r.rule),
                h('td', { class: 'wrap' }, r.signal, r.event_offset ? h('div', null, h('a', { href: `#/events${qs({ after: r.event_offset - 1 })}` }, `event ${r.event_offset}`)) : null),
                h('td', null, r.fired ? badge(r.fired) : '—'),
                h('td', { class: 'wrap' }, h('strong', null, r.decision), h('div', { class: 'muted' }, r.explanation)),
              ),
            )
          : [h('tr', null, h('td', { colspan: 5, class: 'muted' }, 'No rule evaluation recorded for this job: it starts with the execution, or no rule has matched yet.'))]),
      );
    };
    const stateOf = (a) => further(a.state, live.get(a.attempt));
    const started = (a) => !['WAITING', 'QUEUED'].includes(stateOf(a));
    let logFor = null;
    const loadLog = async (a) => {
      logFor = a.attempt;
      if (!started(a)) {
        // No output before the process exists: the status event brings us back here.
        logFor = null;
        pre.textContent = '';
        logState.textContent = 'not started yet';
        return;
      }
      if (logCtl) logCtl.abort();
      const ctl = (logCtl = new AbortController());
      ctx.cleanup(() => ctl.abort());
      pre.textContent = '';
      const text = document.createTextNode('');
      pre.append(text);
      for (;;) {
        logState.textContent = 'loading…';
        try {
          const res = await request('GET', `/executions/${enc(id)}/jobs/${enc(job)}/logs${qs({ attempt: a.attempt, follow: follow.checked })}`, undefined, { signal: ctl.signal, raw: true });
          logState.textContent = follow.checked ? 'following' : '';
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
            text.appendData(value);
            if (atEnd && follow.checked) pre.scrollTop = pre.scrollHeight;
          }
          logState.textContent = TERMINAL.has(stateOf(a)) || !follow.checked ? 'end of log' : 'attempt ended';
          return;
        } catch (err) {
          if (ctl.signal.aborted) return;
          if (err.status !== 404 || TERMINAL.has(stateOf(a))) {
            logState.textContent = err.message;
            return;
          }
          logState.textContent = 'no output yet; waiting…';
          await sleep(700);
          if (ctl.signal.aborted) return;
        }
      }
    };
    const showHead = () => {
      head.replaceChildren(current ? badge(stateOf(current)) : badge('WAITING'));
      attemptsNav.replaceChildren(
        ...(attempts.length > 1
          ? attempts.map((a) =>
              h('a', { href: `#/executions/${enc(id)}/jobs/${enc(job)}${qs({ attempt: a.attempt })}`, 'aria-current': current && a.attempt === current.attempt ? 'page' : null }, `attempt ${a.attempt}`),
            )
          : []),
      );
    };
    const loadAttempts = async () => {
      attempts = (await get(`/executions/${enc(id)}/jobs`)).filter((j) => j.job === job).sort((a, b) => a.attempt - b.attempt);
    };
    follow.addEventListener('change', () => current && loadLog(current));

    const opened = subscribeFirst(ctx, { event_type: 'JOB_STATUS' }, async (ev) => {
      const c = ev.context || {};
      if (c.execution !== id || c.job !== job) return;
      live.set(c.attempt, ev.value);
      if (!attempts.some((a) => a.attempt === c.attempt)) {
        await loadAttempts().catch(() => {});
        const next = attempts.find((a) => a.attempt === c.attempt);
        if (next && !wantAttempt) {
          current = next;
          loadLog(current);
        }
      } else if (current && current.attempt === c.attempt && logFor !== c.attempt && started(current)) {
        loadLog(current);
      }
      showHead();
      loadWhy().catch(() => {});
    });
    await Promise.all([loadAttempts(), loadWhy()]);
    // Read again once the stream is open: a change between the two shows too.
    opened.then(async () => {
      const before = attempts.length;
      await Promise.all([loadAttempts(), loadWhy()]).catch(() => {});
      if (!current && attempts.length) current = attempts[attempts.length - 1];
      showHead();
      if (current && (attempts.length !== before || logFor === null) && !wantAttempt) loadLog(current);
    });
    current = attempts.find((a) => a.attempt === wantAttempt) || attempts[attempts.length - 1] || null;
    ctx.render(
      crumbs(['Executions', '/executions'], ['' + shortId(id), `/executions/${enc(id)}`], job),
      h('h1', null, `job ${job}`, head, attemptsNav),
      h('h2', null, 'Why'),
      table(['Time', h('th', { class: 'num' }, 'Rule'), 'Signal', 'Fired', 'Decision'], whyBody, { id: 'why' }),
      h('h2', null, 'Log ', h('label', { class: 'muted' }, follow, ' follow'), ' ', logState),
      pre,
    );
    showHead();
    if (current) loadLog(current);
    else logState.textContent = 'The job has not started in this execution.';
  }

  // ---- events: a live feed with filters, and a search by key and offset

  const EVENT_FIELDS = ['namespace', 'key', 'event_type', 'sender'];

  async function pageEvents(ctx) {
    const filter = {};
    for (const f of EVENT_FIELDS) filter[f] = ctx.query.get(f) || '';
    const afterParam = ctx.query.get('after');
    const search = afterParam !== null && afterParam !== '';
    const tbody = listNav(h('tbody'));
    const seen = new Set();
    let newest = 0;
    const row = (ev, fresh) => {
      const c = ev.context || {};
      const value = ev.value.length > 80 ? ev.value.slice(0, 79) + '…' : ev.value;
      const tr = navRow(
        `/events${qs({ ...filter, key: ev.key })}`,
        h('td', { class: 'num mono' }, ev.offset),
        h('td', { class: 'hide-narrow' }, h('time', { datetime: ev.created_at, title: ev.created_at }, fmtTime(ev.created_at))),
        h('td', { class: 'wrap' }, h('a', { href: `#/events${qs({ key: ev.key })}` }, ev.key), h('span', { class: 'muted hide-narrow' }, ev.namespace === 'default' ? '' : ` (${ev.namespace})`)),
        h('td', null, badge(ev.event_type)),
        h('td', { class: 'wrap', title: ev.value }, value),
        h('td', { class: 'hide-narrow' }, ev.sender || '—'),
        h('td', null, c.execution ? h('a', { href: `#/executions/${enc(c.execution)}${c.job ? `/jobs/${enc(c.job)}` : ''}` }, shortId(c.execution)) : '—'),
      );
      if (fresh) tr.classList.add('fresh');
      return tr;
    };
    const add = (ev, top) => {
      if (seen.has(ev.offset)) return;
      seen.add(ev.offset);
      newest = Math.max(newest, ev.offset);
      if (top) tbody.prepend(row(ev, true));
      else tbody.append(row(ev, false));
      while (tbody.children.length > 1000) tbody.lastElementChild.remove();
      status.textContent = `${seen.size} event${seen.size === 1 ? '' : 's'}`;
    };

    const inputs = {};
    const form = h('form', { class: 'toolbar', id: 'event-filters' });
    for (const [f, label, ph] of [
      ['key', 'Key', 'dataset/raw/*'],
      ['event_type', 'Type', 'JOB_STATUS'],
      ['namespace', 'Namespace', 'default'],
      ['sender', 'Sender', ''],
    ]) {
      inputs[f] = h('input', { name: f, value: filter[f], placeholder: ph, autocomplete: 'off' });
      form.append(h('label', null, label, inputs[f]));
    }
    inputs.after = h('input', { name: 'after', value: afterParam || '', inputmode: 'numeric', placeholder: 'offset', autocomplete: 'off' });
    form.append(h('label', null, 'After offset', inputs.after), h('button', { class: 'primary', type: 'submit' }, search ? 'Search' : 'Filter'), h('a', { href: '#/events', class: 'muted' }, 'clear'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const q = {};
      for (const [k, el] of Object.entries(inputs)) q[k] = el.value.trim();
      location.hash = `/events${qs(q)}`;
    });
    const status = h('span', { class: 'muted', id: 'event-count' });
    const liveBox = h('input', { type: 'checkbox', checked: !search, id: 'live-events' });
    const more = h('button', { hidden: true }, 'Next page');
    let liveCtl = null;
    const startLive = (from) => {
      if (liveCtl) liveCtl.abort();
      liveCtl = subscribe(ctx, { ...filter, from }, (ev) => add(ev, !search));
    };
    liveBox.addEventListener('change', () => {
      if (liveBox.checked) startLive(newest + 1);
      else if (liveCtl) liveCtl.abort();
    });

    let opened = null;
    if (search) {
      const page = await get(`/events${qs({ ...filter, after: afterParam, limit: 100 })}`);
      page.items.forEach((ev) => add(ev, false));
      let cursor = page.next_cursor;
      more.hidden = !cursor;
      more.addEventListener('click', async () => {
        const next = await get(`/events${qs({ ...filter, cursor, limit: 100 })}`);
        next.items.forEach((ev) => add(ev, false));
        cursor = next.next_cursor;
        more.hidden = !cursor;
      });
    } else {
      // Live: the stream tells the offset it starts after; the latest events up to it are read
      // from the store, newer ones arrive on the stream.
      const buffered = [];
      let ready = false;
      opened = await new Promise((resolve) => {
        const t = setTimeout(() => resolve(null), 1500);
        liveCtl = subscribe(ctx, filter, (ev) => (ready ? add(ev, true) : buffered.push(ev)), (offset) => {
          clearTimeout(t);
          resolve(offset);
        });
      });
      if (opened !== null && opened > 0) {
        const page = await get(`/events${qs({ ...filter, after: Math.max(0, opened - 500), limit: 500 })}`);
        page.items
          .filter((ev) => ev.offset <= opened)
          .reverse()
          .forEach((ev) => add(ev, false));
      }
      ready = true;
      buffered.forEach((ev) => add(ev, true));
    }
    status.textContent = `${seen.size} event${seen.size === 1 ? '' : 's'}`;
    ctx.render(
      h('h1', null, 'Events'),
      form,
      h(
        'p',
        { class: 'muted' },
        search
          ? `Events after offset ${afterParam}, oldest first. `
          : opened !== null
            ? `Newest first: the matching events among the latest 500, then live. Give an offset to search further back. `
            : '',
        h('label', null, liveBox, ' live'),
        ' · ',
        status,
      ),
      table([h('th', { class: 'num' }, 'Offset'), h('th', { class: 'hide-narrow' }, 'Time'), 'Key', 'Type', 'Value', h('th', { class: 'hide-narrow' }, 'Sender'), 'Execution'], tbody, { id: 'events' }),
      h('p', null, more),
    );
    if (search && liveBox.checked) startLive(newest + 1);
  }

  // ---- models

  async function pageModels(ctx) {
    const models = await getAll('/models');
    const tbody = listNav(h('tbody'));
    for (const m of models) {
      tbody.append(
        navRow(
          `/models/${enc(m.name)}`,
          h('td', null, h('a', { href: `#/models/${enc(m.name)}` }, h('strong', null, m.name)), m.description ? h('div', { class: 'muted hide-narrow' }, m.description) : null),
          h('td', { class: 'hide-narrow' }, m.project || '—'),
          h('td', { class: 'num' }, m.latest_version),
          h('td', null, Object.entries(m.aliases || {}).map(([a, v]) => [h('span', { class: 'badge alias' }, `${a} → v${v}`), ' '])),
          h('td', { class: 'hide-narrow' }, time(m.updated_at)),
        ),
      );
    }
    ctx.render(
      h('h1', null, 'Models'),
      models.length
        ? table(['Model', h('th', { class: 'hide-narrow' }, 'Project'), h('th', { class: 'num' }, 'Latest'), 'Aliases', h('th', { class: 'hide-narrow' }, 'Updated')], tbody, { id: 'models' })
        : h('p', { class: 'panel empty' }, 'No models yet.'),
    );
  }

  // A small line chart: series = [{name, points: [[x, y]]}], x numeric.
  function lineChart(title, series, xLabel) {
    const W = 560;
    const H = 220;
    const L = 48;
    const R = 12;
    const T = 24;
    const B = 34;
    const all = series.flatMap((s) => s.points);
    if (!all.length) return null;
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
    if (y0 === y1) [y0, y1] = [y0 - Math.abs(y0 || 1) * 0.1, y1 + Math.abs(y1 || 1) * 0.1];
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const fmt = (v) => (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(Math.round(v * 100) / 100) : v.toPrecision(3));
    const out = [`<svg xmlns="${SVGNS}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">`];
    out.push(`<text x="${L}" y="14" font-weight="600" font-size="12" fill="#0f172a">${esc(title)}</text>`);
    out.push(`<line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/><line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/>`);
    for (let k = 0; k <= 4; k++) {
      const yv = y0 + ((y1 - y0) * k) / 4;
      out.push(`<text x="${L - 4}" y="${sy(yv) + 4}" text-anchor="end">${esc(fmt(yv))}</text><line x1="${L}" x2="${W - R}" y1="${sy(yv)}" y2="${sy(yv)}" stroke="#f1f5f9"/>`);
    }
    const xs = [...new Set(all.map((p) => p[0]))].sort((a, b) => a - b);
    const step = Math.max(1, Math.ceil(xs.length / 8));
    xs.filter((_, i) => i % step === 0).forEach((xv) => out.push(`<text x="${sx(xv)}" y="${H - B + 14}" text-anchor="middle">${esc(xLabel === 'version' ? `v${xv}` : fmt(xv))}</text>`));
    out.push(`<text x="${(L + W - R) / 2}" y="${H - 4}" text-anchor="middle">${esc(xLabel)}</text>`);
    series.forEach((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      const pts = s.points.slice().sort((a, b) => a[0] - b[0]);
      if (pts.length > 1) out.push(`<polyline class="line" stroke="${color}" points="${pts.map((p) => `${sx(p[0])},${sy(p[1])}`).join(' ')}"/>`);
      if (pts.length <= 60) {
        for (const p of pts) out.push(`<circle class="pt" fill="${color}" cx="${sx(p[0])}" cy="${sy(p[1])}" r="3.5"><title>${esc(`${s.name}: ${fmt(p[1])} at ${xLabel} ${p[0]}`)}</title></circle>`);
      }
    });
    if (series.length > 1) series.forEach((s, i) => out.push(`<text x="${W - R}" y="${T + 12 * i}" text-anchor="end" fill="${PALETTE[i % PALETTE.length]}">${esc(s.name)}</text>`));
    out.push('</svg>');
    const box = h('div', { class: 'chart' });
    box.innerHTML = out.join('');
    return box;
  }

  async function pageModel(ctx, name) {
    const [model, versions, metrics] = await Promise.all([get(`/models/${enc(name)}`), getAll(`/models/${enc(name)}/versions`), getAll('/metrics').catch(() => [])]);
    versions.sort((a, b) => b.version - a.version);
    const byId = new Map(versions.map((v) => [v.id, v.version]));
    const aliases = Object.entries(model.aliases || {});
    // Metrics about this model: one chart per metric key, a line over versions (or over steps
    // within each version when a version has several points).
    const mine = metrics.filter((m) => m.subject === name);
    const [histories, stages, charted] = await Promise.all([
      Promise.all(aliases.map(([a]) => get(`/models/${enc(name)}/aliases/${enc(a)}/history`).catch(() => []))),
      Promise.all(versions.slice(0, 20).map((v) => get(`/models/${enc(name)}/versions/${v.version}/stages`).catch(() => []))),
      Promise.all(
        mine.map(async (m) => {
          const keys = Object.keys(await get(`/metrics/${enc(m.name)}/keys`).catch(() => ({})));
          return Promise.all(
            keys.map(async (k) => {
              const s = await get(`/metrics/${enc(m.name)}/points${qs({ key: k, limit: 10000 })}`);
              const per = new Map();
              for (const p of s.points) {
                const v = p.model_version !== undefined && p.model_version !== null ? byId.get(p.model_version) ?? `id ${p.model_version}` : 'none';
                if (!per.has(v)) per.set(v, []);
                per.get(v).push(p);
              }
              const single = [...per.values()].every((ps) => ps.length === 1);
              const title = keys.length > 1 || k !== m.name ? `${m.name} · ${k}` : m.name;
              if (single) {
                const pts = [...per].filter(([v]) => typeof v === 'number').map(([v, ps]) => [v, ps[0].value]);
                return lineChart(title, [{ name: k, points: pts }], 'version');
              }
              return lineChart(title, [...per].map(([v, ps]) => ({ name: typeof v === 'number' ? `v${v}` : String(v), points: ps.map((p) => [p.step, p.value]) })), 'step');
            }),
          );
        }),
      ),
    ]);
    const charts = charted.flat().filter(Boolean);

    const aliasBody = h('tbody');
    aliases.forEach(([a, v], i) => {
      const moves = histories[i] || [];
      aliasBody.append(
        h(
          'tr',
          { 'data-alias': a },
          h('td', null, h('span', { class: 'badge alias' }, a)),
          h('td', null, `v${v}`),
          h('td', { class: 'wrap' }, moves.length ? moves.map((mv) => h('div', null, `${mv.from_version ? 'v' + mv.from_version : '—'} → ${mv.to_version ? 'v' + mv.to_version : 'removed'} `, h('span', { class: 'muted' }, fmtTime(mv.moved_at)))) : '—'),
        ),
      );
    });
    const vBody = listNav(h('tbody'));
    versions.forEach((v, i) => {
      const st = stages[i];
      vBody.append(
        navRow(
          `/lineage${qs({ node: `model:${name}@${v.version}`, depth: 2 })}`,
          h('td', { class: 'num' }, h('strong', null, `v${v.version}`)),
          h('td', null, badge(v.stage), ' ', v.status !== 'READY' ? badge(v.status) : null),
          h('td', null, (v.aliases || []).map((a) => [h('span', { class: 'badge alias' }, a), ' '])),
          h('td', { class: 'hide-narrow' }, time(v.created_at)),
          h('td', { class: 'wrap hide-narrow' }, st ? st.map((c) => c.to_stage.toLowerCase()).join(' → ') : '…'),
          h('td', { class: 'wrap' }, (v.input_dataset_versions || []).map((d) => h('div', null, h('a', { href: `#/datasets/${enc(d.dataset)}` }, `${d.dataset}@${d.version}`)))),
          h('td', null, h('a', { href: `#/lineage${qs({ node: `model:${name}@${v.version}`, depth: 2 })}` }, 'lineage')),
        ),
      );
    });
    ctx.render(
      crumbs(['Models', '/models'], name),
      h('h1', null, name),
      kv([
        ['Project', model.project],
        ['Latest version', `v${model.latest_version}`],
        ['Updated', fmtTime(model.updated_at)],
        model.description ? ['Description', model.description] : null,
      ]),
      h('h2', null, 'Aliases'),
      aliases.length ? table(['Alias', 'Version', 'History'], aliasBody, { id: 'aliases' }) : h('p', { class: 'muted' }, 'No alias.'),
      h('h2', null, 'Metrics'),
      charts.length ? h('div', { class: 'cards', id: 'metric-charts' }, charts) : h('p', { class: 'muted' }, `No metric with subject ${name}.`),
      h('h2', null, 'Versions'),
      table([h('th', { class: 'num' }, 'Version'), 'Stage', 'Aliases', h('th', { class: 'hide-narrow' }, 'Created'), h('th', { class: 'hide-narrow' }, 'Stage history'), 'Inputs', 'Lineage'], vBody, { id: 'versions' }),
    );
  }

  // ---- datasets

  async function pageDatasets(ctx) {
    const datasets = await getAll('/datasets');
    const tbody = listNav(h('tbody'));
    for (const d of datasets) {
      tbody.append(
        navRow(
          `/datasets/${enc(d.name)}`,
          h('td', null, h('a', { href: `#/datasets/${enc(d.name)}` }, h('strong', null, d.name)), d.description ? h('div', { class: 'muted hide-narrow' }, d.description) : null),
          h('td', null, d.kind),
          h('td', { class: 'hide-narrow' }, d.format || '—'),
          h('td', { class: 'num' }, d.latest_version),
          h('td', { class: 'wrap hide-narrow' }, d.uri || '—'),
          h('td', { class: 'hide-narrow' }, time(d.updated_at)),
        ),
      );
    }
    ctx.render(
      h('h1', null, 'Datasets'),
      datasets.length
        ? table(['Dataset', 'Kind', h('th', { class: 'hide-narrow' }, 'Format'), h('th', { class: 'num' }, 'Latest'), h('th', { class: 'hide-narrow' }, 'URI'), h('th', { class: 'hide-narrow' }, 'Updated')], tbody, { id: 'datasets' })
        : h('p', { class: 'panel empty' }, 'No datasets yet.'),
    );
  }

  async function pageDataset(ctx, name) {
    const [d, versions] = await Promise.all([get(`/datasets/${enc(name)}`), getAll(`/datasets/${enc(name)}/versions`)]);
    versions.sort((a, b) => b.version - a.version);
    const schema = h('tbody', null, d.schema.map((f) => h('tr', null, h('td', null, f.name), h('td', null, h('code', null, f.type)))));
    const vBody = listNav(h('tbody'));
    for (const v of versions) {
      const node = `dataset:${name}@${v.version}`;
      vBody.append(
        navRow(
          `/lineage${qs({ node, depth: 2 })}`,
          h('td', { class: 'num' }, h('strong', null, `v${v.version}`)),
          h('td', { class: 'num' }, v.row_count ?? '—'),
          h('td', { class: 'wrap hide-narrow' }, v.uri || '—'),
          h('td', null, v.produced_by ? h('a', { href: `#/lineage${qs({ node: `job_execution:${v.produced_by}` })}` }, shortId(v.produced_by)) : '—'),
          h('td', { class: 'hide-narrow' }, time(v.created_at)),
          h('td', null, h('a', { href: `#/lineage${qs({ node, depth: 2 })}` }, 'lineage')),
        ),
      );
    }
    ctx.render(
      crumbs(['Datasets', '/datasets'], name),
      h('h1', null, name, badge(d.kind)),
      kv([
        ['Project', d.project],
        ['Format', d.format],
        ['URI', d.uri],
        ['Latest version', `v${d.latest_version}`],
        d.description ? ['Description', d.description] : null,
      ]),
      h('h2', null, 'Schema'),
      d.schema.length ? table(['Field', 'Type'], schema, { id: 'schema' }) : h('p', { class: 'muted' }, 'No schema recorded.'),
      h('h2', null, 'Versions'),
      versions.length
        ? table([h('th', { class: 'num' }, 'Version'), h('th', { class: 'num' }, 'Rows'), h('th', { class: 'hide-narrow' }, 'URI'), 'Produced by', h('th', { class: 'hide-narrow' }, 'Created'), 'Lineage'], vBody, { id: 'dataset-versions' })
        : h('p', { class: 'muted' }, 'No versions yet.'),
    );
  }

  // ---- lineage: the graph around a dataset version, model version or job execution

  const KIND_FILL = { dataset_version: '#dcfce7', model_version: '#ede9fe', job_execution: '#dbeafe' };

  async function pageLineage(ctx) {
    const node = ctx.query.get('node') || '';
    const depth = Number(ctx.query.get('depth')) || 2;
    const input = h('input', { name: 'node', value: node, placeholder: 'dataset:NAME@1, model:NAME@1, job_execution:ID', style: 'width: 100%; max-width: 420px' });
    const depthSel = h('select', { name: 'depth' }, [1, 2, 3, 4, 5].map((d) => h('option', { value: d, selected: d === depth }, d)));
    const form = h('form', { class: 'toolbar' }, h('label', { style: 'flex: 1' }, 'Node', input), h('label', null, 'Depth', depthSel), h('button', { class: 'primary', type: 'submit' }, 'Show'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      location.hash = `/lineage${qs({ node: input.value.trim(), depth: depthSel.value })}`;
    });
    depthSel.addEventListener('change', () => node && (location.hash = `/lineage${qs({ node, depth: depthSel.value })}`));
    if (!node) {
      const [datasets, models] = await Promise.all([getAll('/datasets').catch(() => []), getAll('/models').catch(() => [])]);
      const starts = [
        ...datasets.filter((d) => d.latest_version > 0).map((d) => `dataset:${d.name}@${d.latest_version}`),
        ...models.filter((m) => m.latest_version > 0).map((m) => `model:${m.name}@${m.latest_version}`),
      ];
      ctx.render(
        h('h1', null, 'Lineage'),
        form,
        starts.length ? h('p', null, 'Start from: ', starts.map((s) => [h('a', { href: `#/lineage${qs({ node: s, depth: 2 })}` }, s), ' '])) : h('p', { class: 'muted' }, 'No dataset or model version yet.'),
      );
      return;
    }
    const g = await get(`/lineage${qs({ node, depth })}`);
    const index = new Map(g.nodes.map((n, i) => [n.id, i]));
    const label = (n) => (n.kind === 'job_execution' ? n.name : n.id.replace(/^[a-z_]+:/, ''));
    const vertices = g.nodes.map((n) => ({
      id: n.id,
      label: label(n),
      sub: n.kind === 'job_execution' ? `job execution ${shortId(n.id.slice('job_execution:'.length))}` : n.kind.replace('_', ' '),
      fill: KIND_FILL[n.kind] || '#fff',
      shape: n.kind === 'job_execution' ? 'ellipse' : 'box',
      href: `/lineage${qs({ node: n.id, depth })}`,
      cls: n.id === g.root ? 'root' : '',
      attrs: { 'data-kind': n.kind },
    }));
    const arrows = g.edges.filter((e) => index.has(e.from) && index.has(e.to)).map((e) => ({ from: index.get(e.from), to: index.get(e.to), control: false, label: '' }));
    const box = h('div', { class: 'graph-box', id: 'lineage' });
    // Where each node is described: the dataset or model page, or the job's page.
    const openCell = (n) => {
      const td = h('td');
      if (n.kind === 'dataset_version') td.append(h('a', { href: `#/datasets/${enc(n.name)}` }, 'dataset'));
      else if (n.kind === 'model_version') td.append(h('a', { href: `#/models/${enc(n.name)}` }, 'model'));
      else {
        get(`/job_executions/${enc(n.id.slice('job_execution:'.length))}`)
          .then((j) => j.workflow_execution && td.append(h('a', { href: `#/executions/${enc(j.workflow_execution)}/jobs/${enc(j.job)}${qs({ attempt: j.attempt })}` }, 'job')))
          .catch(() => {});
      }
      return td;
    };
    const tbody = listNav(h('tbody'));
    for (const n of g.nodes) {
      tbody.append(navRow(`/lineage${qs({ node: n.id, depth })}`, h('td', { class: 'wrap' }, h('a', { href: `#/lineage${qs({ node: n.id, depth })}` }, n.id)), h('td', null, n.kind.replace('_', ' ')), h('td', { class: 'num' }, n.distance), openCell(n)));
    }
    ctx.render(
      crumbs(['Lineage', '/lineage'], node),
      h('h1', null, 'Lineage'),
      form,
      h('div', { class: 'legend' }, Object.entries(KIND_FILL).map(([k, c]) => h('span', null, h('span', { class: 'dot', style: `background:${c}` }), k.replace('_', ' '))), h('span', null, 'click a node to centre on it')),
      box,
      h('h2', null, 'Nodes'),
      table(['Node', 'Kind', h('th', { class: 'num' }, 'Hops'), 'Open'], tbody, { id: 'lineage-nodes' }),
    );
    showGraph(box, drawGraph(vertices, arrows));
  }

  // ------------------------------------------------------------------------------------------
  // router

  function notFound(ctx) {
    ctx.render(h('h1', null, 'Not found'), h('p', null, 'No such page. ', h('a', { href: '#/workflows' }, 'Workflows')));
  }

  function resolve(seg) {
    switch (seg[0]) {
      case undefined:
      case '':
      case 'workflows':
        return seg[1] ? ['workflow', pageWorkflow, seg[1]] : ['workflows', pageWorkflows];
      case 'executions':
        if (seg[1] && seg[2] === 'jobs' && seg[3]) return ['job', pageJob, seg[1], seg[3]];
        return seg[1] ? ['execution', pageExecution, seg[1]] : ['executions', pageExecutions];
      case 'events':
        return ['events', pageEvents];
      case 'models':
        return seg[1] ? ['model', pageModel, seg[1]] : ['models', pageModels];
      case 'datasets':
        return seg[1] ? ['dataset', pageDataset, seg[1]] : ['datasets', pageDatasets];
      case 'lineage':
        return ['lineage', pageLineage];
      default:
        return ['not-found', notFound];
    }
  }

  let current = null;
  async function navigate() {
    if (current) current.close();
    const raw = location.hash.replace(/^#\/?/, '');
    const [path, query] = raw.split('?');
    const seg = path.split('/').filter(Boolean).map(decodeURIComponent);
    const [name, page, ...args] = resolve(seg);
    const cleanups = [];
    const ctx = {
      query: new URLSearchParams(query || ''),
      alive: true,
      cleanup: (fn) => cleanups.push(fn),
      every: (ms, fn) => {
        const t = setInterval(fn, ms);
        cleanups.push(() => clearInterval(t));
      },
      render: (...nodes) => {
        if (ctx.alive) main.replaceChildren(...nodes.flat().filter(Boolean));
      },
      close: () => {
        ctx.alive = false;
        cleanups.splice(0).forEach((fn) => fn());
      },
    };
    current = ctx;
    delete document.body.dataset.ready;
    probe.page = name;
    probe.readyAt = null;
    const section = seg[0] || 'workflows';
    for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === section);
    document.title = `${[...args].reverse().join(' · ') || name} · AI Flow`;
    try {
      await page(ctx, ...args);
    } catch (err) {
      console.warn(err);
      ctx.render(
        h('h1', null, err.status === 404 ? 'Not found' : 'Cannot show this page'),
        h('p', { class: 'error page-error' }, err.message),
        h('p', null, h('a', { href: '#/workflows' }, 'Workflows')),
      );
    }
    if (!ctx.alive) return;
    probe.readyAt = performance.now();
    probe.loads++;
    document.body.dataset.ready = name;
  }

  window.addEventListener('hashchange', navigate);
  navigate();
})();
