/* exact-proxy dashboard: the page's only script (served at /_proxy/dashboard.js).
 *
 * Reads:   GET /_proxy/glance (JSON) once, then SSE /_proxy/events ("glance" events carry the same
 *          JSON). After repeated SSE errors (or without EventSource) it polls /_proxy/glance every 2 s
 *          and tries SSE again after a minute.
 * Renders: each section of index.html into its container (#meta, #banner, #divisions, #errors,
 *          #chains, #tools, #decisions, #cluster-body, #advice, #tables-body). A section that fails
 *          to render shows "could not show this section"; the others still render.
 * Rules:   every data string goes through textContent / setAttribute (never innerHTML); styles only
 *          via classes and CSSOM (el.style.width). Countdowns tick locally once a second from the
 *          received value. body[data-updated] = `now` of the last JSON rendered.
 * Hooks:   .banner-item[data-kind][data-level], .division[data-app][data-division],
 *          .bar[data-window=minute|day|errors|share-day|tool][data-level] (role=meter, .figure "used/limit"),
 *          .queue, .error-row[data-endpoint], .chain[data-chain][data-state], .tool-row[data-tool] .figure,
 *          .decision-row[data-kind], .node[data-node][data-live], #connection[data-state].
 */
'use strict';
(() => {
  const POLL_MS = 2000, STALE_MS = 10000, SSE_MAX_ERRORS = 3, SSE_RETRY_MS = 60000;
  const LEVELS = ['ok', 'near', 'over'];
  const MARK = { ok: '', near: '▲ near limit', over: '■ at limit' };
  const BANNER_KIND = { blocked: 'Blocked', reauth: 'Re-authorize', expiring: 'Expiring', state: 'State store', cluster: 'Cluster' };

  let last = null;        // last JSON rendered
  let receivedAt = 0;     // Date.now() when `last` arrived
  let ticking = [];       // local countdowns: {node, base, fmt}
  let bannerKey = null;   // banner is only rebuilt when it changes (so role=alert is not re-announced)
  const conn = { mode: 'start', reachable: true, sseErrors: 0, es: null, pollTimer: null, sseRetryAt: 0 };

  // ---------- helpers ----------
  const $ = (id) => document.getElementById(id);
  const list = (x) => (Array.isArray(x) ? x : []);
  const str = (x) => (x === null || x === undefined ? '' : String(x));
  const num = (x) => (typeof x === 'number' && Number.isFinite(x) ? x : null);
  const lvl = (x) => (LEVELS.includes(x) ? x : 'ok');
  const worst = (...ls) => LEVELS[Math.max(0, ...ls.map((l) => LEVELS.indexOf(l)))];
  const round1 = (x) => String(Math.round(x * 10) / 10);

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v; else e.setAttribute(k, String(v));
    }
    for (const k of kids) if (k !== null && k !== undefined && k !== false) e.append(k instanceof Node ? k : String(k));
    return e;
  }

  /** A duration for people: "12 s", "4 m 5 s", "47 m", "22 h 34 m", "3 d 4 h". */
  function dur(s) {
    if (num(s) === null) return '–';
    const t = Math.floor(Math.max(0, s));
    if (t < 60) return `${t} s`;
    if (t < 600) return `${Math.floor(t / 60)} m ${t % 60} s`;
    if (t < 3600) return `${Math.floor(t / 60)} m`;
    const m = Math.round(t / 60);
    if (t < 86400) return `${Math.floor(m / 60)} h ${m % 60} m`;
    return `${Math.floor(t / 86400)} d ${Math.floor((t % 86400) / 3600)} h`;
  }

  const pad = (n) => String(n).padStart(2, '0');
  function clock(date) { return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`; }
  /** ISO timestamp -> local HH:MM:SS (with the date when it is not today); raw text if unparsable. */
  function hms(iso) {
    if (!iso) return '–';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return str(iso);
    const sameDay = d.toDateString() === new Date((num(last && last.now) || Date.now() / 1000) * 1000).toDateString();
    return sameDay ? clock(d) : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(d)}`;
  }
  /** ISO timestamp -> local date YYYY-MM-DD. */
  function ymd(iso) {
    const d = new Date(iso || '');
    return Number.isNaN(d.getTime()) ? str(iso) : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  }
  /** Seconds from the JSON's `now` until an ISO time (null when unknown). */
  function secondsUntil(iso, d) {
    const t = Date.parse(iso || ''), now = num(d.now);
    return Number.isNaN(t) || now === null ? null : t / 1000 - now;
  }

  /** A node whose text counts down locally from `base` seconds: fmt(remaining) -> text. */
  function countdown(node, base, fmt) {
    const item = { node, base: num(base), fmt };
    ticking.push(item);
    paintCountdown(item, 0);
    return node;
  }
  function paintCountdown(item, elapsed) {
    item.node.textContent = item.fmt(item.base === null ? null : Math.max(0, item.base - elapsed));
  }

  /** A bar: role=meter with a track, a visible "used/limit" .figure and a text marker for the level. */
  function meter(win, used, max, level, label) {
    const u = num(used), m = num(max), lv = lvl(level);
    const text = `${u ?? '?'} of ${m ?? '?'}${lv === 'ok' ? '' : ', ' + MARK[lv].slice(2)}`;
    const bar = el('div', { class: 'bar', role: 'meter', 'data-window': win, 'data-level': lv,
      'aria-valuemin': 0, 'aria-valuenow': u ?? 0, 'aria-valuemax': m, 'aria-valuetext': text,
      'aria-label': `${label}: ${u ?? '?'} of ${m ?? '?'}` });
    const fill = el('span', { class: 'fill' });
    fill.style.width = `${m ? Math.min(100, Math.max(0, ((u || 0) / m) * 100)) : 0}%`;
    bar.append(el('span', { class: 'track' }, fill), el('span', { class: 'figure' }, `${u ?? '–'}/${m ?? '–'}`),
      el('span', { class: 'mark', 'aria-hidden': 'true' }, MARK[lv]));
    return bar;
  }
  const empty = (text) => el('p', { class: 'empty' }, text);
  const line = (cls, key, ...value) => el('div', { class: `line ${cls}` }, el('span', { class: 'k' }, key), ...value);

  // ---------- sections ----------
  function renderMeta(d, box) {
    const parts = [['policy', d.policy], ['now', d.now_text], ['up', num(d.uptime_s) === null ? null : dur(d.uptime_s)],
      ['node', d.node]].filter(([, v]) => v !== null && v !== undefined && v !== '');
    box.replaceChildren(...parts.map(([k, v]) => el('span', { class: `meta-item meta-${k}` }, el('span', { class: 'k' }, k), str(v))));
  }

  function renderBanner(d, box) {
    const items = list(d.banner), key = JSON.stringify(items);
    if (key === bannerKey) return;
    box.replaceChildren();
    if (!items.length) {
      box.removeAttribute('role');
      box.setAttribute('aria-live', 'polite');
      box.append(el('p', { class: 'banner-ok' }, 'Nothing needs a person now.'));
    } else {
      box.setAttribute('role', 'alert');
      box.setAttribute('aria-live', 'assertive');
      for (const b of items) {
        box.append(el('div', { class: 'banner-item', 'data-kind': str(b.kind), 'data-level': lvl(b.level) },
          el('span', { class: 'banner-kind' }, BANNER_KIND[b.kind] || str(b.kind) || 'Notice'),
          el('span', { class: 'banner-text' }, str(b.text))));
      }
    }
    bannerKey = key;
  }

  function windowRow(v, win, title, name) {
    const w = v[win] || {};
    return el('div', { class: 'window' }, el('span', { class: 'window-name' }, title),
      meter(win, w.used, w.limit, w.level, `${name}, ${win} window`),
      countdown(el('span', { class: 'resets' }), w.resets_in_s, (s) => (s === null ? '' : s > 0 ? `resets in ${dur(s)}` : 'resetting…')));
  }

  function shareRow(s, name) {
    const state = s.held ? 'held' : s.paced ? 'paced' : 'free';
    const row = el('li', { class: 'share', 'data-share': str(s.share), 'data-state': state, 'data-level': lvl(s.level) },
      el('span', { class: 'share-name' }, str(s.share)));
    row.append(num(s.cap_day) !== null
      ? meter('share-day', s.today, s.cap_day, s.level, `${name}, share ${str(s.share)}, today`)
      : el('span', { class: 'share-today' }, `${str(s.today)} today`));
    const bits = el('span', { class: 'share-bits' }, num(s.minute) === null ? '' : el('span', null, `${s.minute} this minute`));
    if (s.reserve_left) bits.append(el('span', null, `reserve left ${str(s.reserve_left)}`));
    if (s.paced) bits.append(el('span', { class: 'tag tag-paced' }, `paced ${str(s.paced)}`));
    if (s.held) bits.append(el('span', { class: 'tag tag-held' }, `held (${str(s.held)})`));
    if (num(s.next_call_in_s) !== null) bits.append(countdown(el('span', { class: 'next-call' }), s.next_call_in_s, (t) => `next call in ${dur(t)}`));
    row.append(bits);
    return row;
  }

  function divisionCard(v) {
    const name = `${str(v.app)} division ${str(v.division)}`;
    const level = worst(lvl((v.minute || {}).level), lvl((v.day || {}).level));
    const card = el('article', { class: 'division card', 'data-app': str(v.app), 'data-division': str(v.division),
      'data-level': level, 'data-paused': v.paused_until ? 'true' : 'false' },
      el('h3', null, str(v.app), el('span', { class: 'sep' }, ' · '), `division ${str(v.division)}`));
    if (v.paused_until) {
      const until = hms(v.paused_until);
      card.append(countdown(el('p', { class: 'paused' }), v.paused_for_s,
        (s) => `paused after a 429 until ${until}${s === null ? '' : ` (${dur(s)})`}`));
    }
    card.append(windowRow(v, 'minute', 'Minute', name), windowRow(v, 'day', 'Day', name));
    const left = v.exact_left || {};
    if (num(left.minute) !== null || num(left.day) !== null) {
      const parts = [];
      if (num(left.minute) !== null) parts.push(`${left.minute} this minute`);
      if (num(left.day) !== null) parts.push(`${left.day} today`);
      card.append(line('exact-left', 'Exact says left', parts.join(' · ')));
    }
    const q = v.queue || {}, waiting = num(q.waiting) || 0;
    card.append(line('queue-line', 'Queue', el('span', { class: 'queue', 'data-waiting': waiting },
      waiting > 0 ? `${waiting} waiting, longest ${round1(num(q.longest_wait_s) || 0)} s` : 'no queue')));
    const shares = list(v.shares);
    if (shares.length) card.append(el('h4', null, 'Shares'), el('ul', { class: 'shares' }, ...shares.map((s) => shareRow(s, name))));
    return card;
  }

  function renderDivisions(d, box) {
    const rows = list(d.divisions);
    box.replaceChildren(...(rows.length ? rows.map(divisionCard) : [empty('No app or division has been seen yet.')]));
  }

  function renderErrors(d, box) {
    const rows = list(d.errors);
    box.replaceChildren(...(rows.length ? rows.map((e) => {
      const where = [e.app, e.division === null || e.division === undefined ? null : `division ${e.division}`].filter(Boolean).join(' · ');
      const row = el('div', { class: 'error-row', 'data-endpoint': str(e.endpoint), 'data-level': lvl(e.level),
        'data-blocked': e.blocked_until ? 'true' : 'false' },
        el('div', { class: 'row-head' }, el('span', { class: 'endpoint' }, str(e.endpoint)), el('span', { class: 'where' }, where)),
        meter('errors', e.used, e.budget, e.level, `${where}, ${str(e.endpoint)}, errors this hour`));
      if (num(e.oldest_leaves_in_s) !== null) {
        row.append(countdown(el('p', { class: 'note' }), e.oldest_leaves_in_s, (s) => `oldest error leaves the hour in ${dur(s)}`));
      }
      if (e.blocked_until) {
        const until = hms(e.blocked_until);
        row.append(countdown(el('p', { class: 'blocked' }), secondsUntil(e.blocked_until, d),
          (s) => `BLOCKED by Exact until ${until}${s === null ? '' : ` (${dur(s)})`}`));
      }
      return row;
    }) : [empty('No errors in the last hour.')]));
  }

  function renderChains(d, box) {
    const rows = list(d.chains);
    box.replaceChildren(...(rows.length ? rows.map((c) => {
      const facts = el('dl', { class: 'facts' });
      const fact = (k, v) => facts.append(el('div', null, el('dt', null, k), el('dd', null, v)));
      fact('last refresh', hms(c.last_refresh_at));
      fact('next refresh', hms(c.next_refresh_at));
      fact('access token', countdown(el('span'), c.access_expires_in_s, (s) => (s === null ? '–' : s > 0 ? `expires in ${dur(s)}` : 'expired')));
      fact('days to expiry', num(c.days_to_expiry) === null ? '–' : `${round1(c.days_to_expiry)} days${c.refresh_expires_at ? ` (${ymd(c.refresh_expires_at)})` : ''}`);
      fact('token calls today', str(c.token_calls_today ?? '–'));
      const card = el('article', { class: 'chain card', 'data-chain': str(c.chain), 'data-state': str(c.state), 'data-level': lvl(c.level) },
        el('div', { class: 'row-head' },
          el('span', { class: 'chain-id' }, str(c.chain)),
          el('span', { class: 'where' }, str(c.app), c.user ? ' · user ' : '', c.user ? el('span', { class: 'user', title: str(c.user) }, str(c.user)) : ''),
          el('span', { class: 'state', 'data-level': lvl(c.level) }, str(c.state) || 'unknown')),
        facts);
      if (c.why) card.append(el('p', { class: 'why' }, `why: ${str(c.why)}`));
      return card;
    }) : [empty('No token chains.')]));
  }

  function renderTools(d, box) {
    const tools = d.tools || {}, rows = list(tools.rows);
    const max = Math.max(1, ...rows.map((r) => num(r.requests) || 0));
    const legend = el('p', { class: 'legend', 'aria-hidden': 'true' },
      el('span', { class: 'swatch seg-exact' }), 'sent to Exact', el('span', { class: 'swatch seg-local' }), 'answered by the proxy (local)',
      tools.day ? el('span', { class: 'day' }, `day ${str(tools.day)}`) : '');
    const chart = rows.map((r) => {
      const req = num(r.requests) || 0, ex = num(r.exact_calls) || 0, lo = num(r.local) || 0;
      const bar = el('div', { class: 'bar tool-bar', role: 'meter', 'data-window': 'tool', 'aria-valuemin': 0, 'aria-valuenow': req,
        'aria-valuemax': max, 'aria-label': `${str(r.tool)}: ${req} requests today, ${ex} sent to Exact, ${lo} answered locally` });
      const track = el('span', { class: 'track' });
      for (const [cls, n] of [['seg-exact', ex], ['seg-local', lo]]) {
        const seg = el('span', { class: `seg ${cls}` });
        seg.style.width = `${Math.min(100, (n / max) * 100)}%`;
        track.append(seg);
      }
      bar.append(track);
      return el('div', { class: 'tool-row', 'data-tool': str(r.tool) },
        el('span', { class: 'tool-name', title: str(r.tool) }, str(r.tool)), bar,
        el('span', { class: 'figure' }, String(req)), el('span', { class: 'split' }, `${ex} Exact · ${lo} local`));
    });
    const t = tools.total || null;
    const total = t ? el('p', { class: 'total' }, `Total today: ${str(t.requests)} requests, ${str(t.exact_calls)} sent to Exact, ${str(t.local)} answered locally`) : '';
    box.replaceChildren(...(rows.length ? [legend, el('div', { class: 'tool-chart' }, ...chart), total] : [empty('No calls today yet.')]));
  }

  function renderDecisions(d, box) {
    const rows = list(d.decisions);
    box.replaceChildren(rows.length ? el('ol', { class: 'decisions' }, ...rows.map((x) => {
      const status = num(x.status);
      return el('li', { class: 'decision-row', 'data-kind': str(x.kind) || 'other', 'data-id': str(x.id) },
        el('span', { class: 'at' }, hms(x.at)),
        el('span', { class: 'tag kind', 'data-kind': str(x.kind) || 'other' }, str(x.kind) || 'other'),
        el('span', { class: 'status', 'data-class': status === null ? '' : `${Math.floor(status / 100)}xx` }, str(x.status)),
        el('span', { class: 'req' }, el('span', { class: 'method' }, str(x.method)), ' ', el('span', { class: 'path' }, str(x.path))),
        el('span', { class: 'tool' }, str(x.tool)),
        el('span', { class: 'what' }, list(x.decisions).map(str).join(' · ')));
    })) : empty('Nothing unusual recently.'));
  }

  function renderCluster(d, box) {
    const c = d.cluster;
    $('cluster').hidden = !c;
    if (!c) { box.replaceChildren(); return; }
    const server = el('p', { class: 'server', 'data-reachable': c.reachable ? 'true' : 'false' },
      el('span', { class: 'dot', 'aria-hidden': 'true' }), el('span', { class: 'k' }, 'server'), str(c.server), ' — ',
      c.reachable ? 'reachable' : `NOT reachable${c.reason ? ` (${str(c.reason)})` : ''}`);
    const nodes = el('ul', { class: 'nodes' }, ...list(c.nodes).map((n) => el('li', { class: 'node', 'data-node': str(n.node),
      'data-live': n.live ? 'true' : 'false', 'data-this': n.this ? 'true' : 'false' },
      el('span', { class: 'dot', 'aria-hidden': 'true' }), el('span', { class: 'node-name' }, str(n.node)),
      el('span', { class: 'node-state' }, n.live ? 'live' : 'down'),
      n.this ? el('span', { class: 'tag this' }, 'this node') : '',
      el('span', { class: 'seen' }, num(n.last_seen_s) === null ? '' : `seen ${round1(n.last_seen_s)} s ago`))));
    box.replaceChildren(server, nodes);
  }

  function renderAdvice(d, box) {
    const rows = list(d.advice);
    box.replaceChildren(rows.length ? el('ul', { class: 'advice' }, ...rows.map((a) => el('li', null,
      el('span', { class: 'where' }, [a.tool, a.endpoint].filter(Boolean).map(str).join(' · ')), el('span', null, str(a.text)))))
      : empty('No advice right now.'));
  }

  // ---------- table fallback (for screen readers and copying figures) ----------
  function table(caption, heads, rows) {
    return el('table', null, el('caption', null, caption),
      el('thead', null, el('tr', null, ...heads.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', null, ...(rows.length ? rows : [[`none`]]).map((r) => el('tr', null, ...r.map((c) => el('td', null, str(c)))))));
  }
  // The tables are rebuilt only when a figure in them changed (a screen reader keeps its place between
  // updates): times in them are clock times (now + seconds), which stay the same from one update to the next.
  let tablesKey = null;
  function at(now, s) { return (s == null || !isFinite(s)) ? '–' : clock(new Date((Number(now) + Number(s)) * 1000)); }
  function renderTables(d, box) {
    const sec = (fn) => { try { return fn(); } catch (e) { return null; } };
    const specs = [
      sec(() => ['Apps and divisions', ['app', 'division', 'minute used', 'minute limit', 'minute resets at', 'day used', 'day limit',
        'day resets at', 'Exact left (minute)', 'Exact left (day)', 'waiting', 'longest wait (s)', 'paused until'],
      list(d.divisions).map((v) => { const m = v.minute || {}, y = v.day || {}, l = v.exact_left || {}, q = v.queue || {};
        return [v.app, v.division, m.used, m.limit, at(d.now, m.resets_in_s), y.used, y.limit, at(d.now, y.resets_in_s), l.minute ?? '–', l.day ?? '–',
          q.waiting, q.longest_wait_s, v.paused_until ? hms(v.paused_until) : '–']; })]),
      sec(() => ['Error budget per endpoint', ['app', 'division', 'endpoint', 'errors', 'budget', 'level', 'oldest leaves at', 'blocked until'],
        list(d.errors).map((e) => [e.app, e.division ?? '–', e.endpoint, e.used, e.budget, e.level, e.oldest_leaves_at ? hms(e.oldest_leaves_at) : '–', e.blocked_until ? hms(e.blocked_until) : '–'])]),
      sec(() => ['Token chains', ['chain', 'app', 'user', 'state', 'why', 'last refresh', 'next refresh', 'days to expiry', 'token calls today'],
        list(d.chains).map((c) => [c.chain, c.app, c.user ?? '–', c.state, c.why ?? '–', hms(c.last_refresh_at), hms(c.next_refresh_at), c.days_to_expiry, c.token_calls_today])]),
      sec(() => ["Today's calls by tool", ['tool', 'requests', 'sent to Exact', 'answered locally'],
        list((d.tools || {}).rows).map((r) => [r.tool, r.requests, r.exact_calls, r.local])]),
      sec(() => ['Last decisions that were not routine', ['time', 'kind', 'method', 'path', 'status', 'tool', 'decision'],
        list(d.decisions).map((x) => [hms(x.at), x.kind, x.method, x.path, x.status, x.tool, list(x.decisions).join(' · ')])])];
    const key = JSON.stringify(specs);
    if (key === tablesKey && box.firstChild) return;
    tablesKey = key;
    box.replaceChildren(...specs.map((spec) => spec ? table(...spec) : empty('could not show this section')));
  }

  const SECTIONS = [['meta', renderMeta], ['banner', renderBanner], ['divisions', renderDivisions], ['errors', renderErrors],
    ['chains', renderChains], ['tools', renderTools], ['decisions', renderDecisions], ['cluster-body', renderCluster],
    ['advice', renderAdvice], ['tables-body', renderTables]];

  function render(d) {
    ticking = [];
    for (const [id, fn] of SECTIONS) {
      const box = $(id);
      try { fn(d, box); } catch (e) {
        if (id === 'banner') bannerKey = null;
        console.warn(`dashboard: section ${id} failed`, e);
        box.replaceChildren(el('p', { class: 'section-error' }, 'could not show this section'));
      }
    }
    document.body.dataset.updated = str(d.now);
  }

  // ---------- data and connection ----------
  function accept(data) {
    let d = data;
    if (typeof d === 'string') { try { d = JSON.parse(d); } catch (e) { return; } }
    if (!d || typeof d !== 'object') return;
    last = d;
    receivedAt = Date.now();
    conn.reachable = true;
    render(d);
    updateConn();
  }

  async function load() {
    try {
      const r = await fetch('/_proxy/glance', { cache: 'no-store', headers: { Accept: 'application/json' } });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      accept(await r.json());
      return true;
    } catch (e) {
      conn.reachable = false;
      updateConn();
      return false;
    }
  }

  function startSSE() {
    if (!('EventSource' in window)) { startPolling(); return; }
    clearInterval(conn.pollTimer);
    conn.mode = 'reconnecting';
    conn.sseErrors = 0;
    const es = new EventSource('/_proxy/events');
    conn.es = es;
    es.addEventListener('open', () => { conn.mode = 'live'; updateConn(); });
    es.addEventListener('glance', (ev) => { conn.sseErrors = 0; conn.mode = 'live'; accept(ev.data); });
    es.addEventListener('error', () => {
      conn.sseErrors += 1;
      conn.mode = 'reconnecting';
      if (conn.sseErrors >= SSE_MAX_ERRORS || es.readyState === EventSource.CLOSED) {
        es.close();
        conn.es = null;
        startPolling();
      } else {
        load(); // tells a dropped stream from an unreachable proxy, and keeps figures fresh meanwhile
      }
      updateConn();
    });
  }

  function startPolling() {
    conn.mode = 'polling';
    conn.sseRetryAt = Date.now() + SSE_RETRY_MS;
    clearInterval(conn.pollTimer);
    conn.pollTimer = setInterval(async () => {
      if (await load() && 'EventSource' in window && Date.now() > conn.sseRetryAt) startSSE();
    }, POLL_MS);
    updateConn();
  }

  function updateConn() {
    const box = $('connection'), age = Date.now() - receivedAt;
    let state, text;
    if (last && age > STALE_MS) {
      state = 'stale';
      text = `${conn.reachable ? '' : 'proxy unreachable · '}stale: last update ${clock(new Date(receivedAt))}`;
    } else if (!conn.reachable) {
      state = conn.mode === 'polling' ? 'polling' : 'reconnecting';
      text = 'proxy unreachable, retrying…';
    } else if (conn.mode === 'live') {
      state = 'live'; text = 'live';
    } else if (conn.mode === 'polling') {
      state = 'polling'; text = 'polling every 2 s';
    } else {
      state = 'reconnecting'; text = last ? 'reconnecting…' : 'connecting…';
    }
    box.dataset.state = state;
    box.dataset.reachable = conn.reachable ? 'true' : 'false';
    box.querySelector('.conn-text').textContent = text;
    document.body.classList.toggle('is-stale', state === 'stale' || !conn.reachable);
  }

  function tick() {
    const elapsed = (Date.now() - receivedAt) / 1000;
    for (const item of ticking) { try { paintCountdown(item, elapsed); } catch (e) { /* keep ticking the others */ } }
    updateConn();
  }

  async function start() {
    setInterval(tick, 1000);
    await load();
    startSSE();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
