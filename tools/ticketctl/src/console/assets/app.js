// The saga console: one page, one view per hash route (#/live, #/saga/<id>,
// #/stuck, #/dead-letters, #/health). No framework and no build step: the
// DOM is built with h(), and each view registers what to stop when the
// route changes (an open event stream, a timer).

const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? '';

// The producers in saga order: the timeline's lanes, left to right.
const SERVICES = ['concert', 'queue', 'reservation', 'member-balance', 'payment'];
const TOPICS = SERVICES.map((service) => `${service}.events`);
const OUTCOMES = ['completed', 'payment_failed', 'hold_rejected', 'hold_expired', 'reservation_cancelled', 'refunded'];
// Every other event is keyed by its reservation id, so its key opens a saga.
const NOT_KEYED_BY_RESERVATION = new Set(['ConcertScheduled', 'QueueTokenAdmitted', 'QueuePassEnded', 'BalanceCharged']);
const EVENT_TYPES = [
  'ConcertScheduled', 'SeatHeld', 'SeatHoldRejected', 'SeatReleased', 'SeatSold', 'SeatSaleRejected',
  'QueueTokenAdmitted', 'QueuePassEnded', 'ReservationRequested', 'ReservationHeld', 'ReservationRejected',
  'ReservationExpired', 'ReservationCancelled', 'ReservationConfirmed', 'ReservationConfirmationRejected',
  'BalanceCharged', 'BalanceDebited', 'BalanceDebitRejected', 'BalanceRefunded',
  'PaymentRequested', 'PaymentCompleted', 'PaymentFailed',
];
// Bound what the live table costs the browser during a load run: at most
// this many rows, redrawn at most this often (and less often when drawing
// is slow, see renderLive).
const MAX_LIVE_ROWS = 500;
const MIN_DRAW_INTERVAL_MS = 200;
const CHART_SECONDS = 60;
const SVG_NS = 'http://www.w3.org/2000/svg';

// ---- DOM and formatting helpers -------------------------------------------

/** An element: `on…` props become listeners, `value`/`checked` properties, the rest attributes. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'value' || name === 'checked') el[name] = value;
    else el.setAttribute(name, value === true ? '' : value);
  }
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return el;
}

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  return el;
}

/** UTC, as everything in the system is: "2026-12-03 19:32:45.123Z". */
function utc(at, { date = true } = {}) {
  if (at == null || at === '') return '—';
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return String(at);
  const iso = d.toISOString();
  return date ? `${iso.slice(0, 10)} ${iso.slice(11, 23)}Z` : `${iso.slice(11, 23)}Z`;
}

function timeEl(at, options) {
  return h('time', { datetime: at ?? '' }, utc(at, options));
}

function duration(ms) {
  if (ms == null) return '—';
  const s = Math.round(ms / 1000);
  if (s < 60) return ms < 1000 ? `${ms} ms` : `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// One formatter: toLocaleString would build one per call, per record.
const numberFormat = new Intl.NumberFormat('en');

function count(n) {
  return n == null ? '—' : numberFormat.format(n);
}

function sagaLink(id) {
  return h('a', { href: `#/saga/${encodeURIComponent(id)}`, class: 'id' }, id);
}

function statusLine(text) {
  return h('p', { role: 'status', class: 'muted' }, text);
}

function alertBox(error) {
  const code = error.code ? ` (${error.code})` : '';
  return h('p', { role: 'alert', class: 'error' }, `${error.message}${code}`);
}

// ---- The server's API ------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** JSON in and out; non-GET requests carry the CSRF token; a lost session goes back to sign-in. */
async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = csrfToken;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'unreachable', 'The console server did not answer.');
  }
  const data = await response.json().catch(() => null);
  if (response.status === 401) {
    location.assign('/sign-in');
    throw new ApiError(401, 'signed_out', 'Signed out.');
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.code ?? `http_${response.status}`, data?.message ?? response.statusText);
  }
  return data;
}

// ---- Routing ---------------------------------------------------------------

const views = {
  live: { title: 'Live', render: renderLive },
  saga: { title: 'Saga', render: renderSaga },
  stuck: { title: 'Stuck', render: renderStuck },
  'dead-letters': { title: 'Dead letters', render: renderDeadLetters },
  health: { title: 'Health', render: renderHealth },
};

let current = null;

/** A view's lifetime: async work checks `alive` before touching a page that was left. */
function newContext() {
  const stops = [];
  return {
    alive: true,
    onStop(fn) { stops.push(fn); },
    stop() {
      this.alive = false;
      for (const fn of stops) fn();
    },
  };
}

function route({ moveFocus }) {
  const hash = location.hash.startsWith('#/') ? location.hash.slice(2) : 'live';
  const [name, ...rest] = hash.split('/');
  const key = views[name] ? name : 'live';
  const arg = rest.length ? decodeURIComponent(rest.join('/')) : '';
  current?.stop();
  current = newContext();
  const main = document.getElementById('main');
  const heading = h('h1', { tabindex: '-1' }, views[key].title);
  main.replaceChildren(heading);
  document.title = `${views[key].title} · Saga console`;
  for (const link of document.querySelectorAll('nav a')) {
    if (link.getAttribute('href') === `#/${key}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  views[key].render(main, current, arg);
  // Keyboard and screen-reader users land on the new view, not back at the top.
  if (moveFocus) heading.focus();
}

async function signOut() {
  try {
    await fetch('/sign-out', { method: 'POST', headers: { 'X-CSRF-Token': csrfToken }, credentials: 'same-origin' });
  } finally {
    location.assign('/sign-in');
  }
}

// ---- Live ------------------------------------------------------------------

// Kept across visits so coming back to Live keeps the same filters.
const liveFilters = { topic: '', type: '', key: '' };

function renderLive(main, ctx) {
  const topic = h('select', { id: 'live-topic', name: 'topic' },
    h('option', { value: '' }, 'all'),
    TOPICS.map((t) => h('option', { value: t }, t)));
  topic.value = liveFilters.topic;
  const type = h('input', { id: 'live-type', name: 'type', list: 'event-types', value: liveFilters.type, autocomplete: 'off', spellcheck: 'false' });
  const key = h('input', { id: 'live-key', name: 'key', value: liveFilters.key, autocomplete: 'off', spellcheck: 'false' });
  const form = h('form', { class: 'filters', 'aria-label': 'Filter the live flow' },
    h('div', { class: 'field' }, h('label', { for: 'live-topic' }, 'Topic'), topic),
    h('div', { class: 'field' }, h('label', { for: 'live-type' }, 'Event type'), type,
      h('datalist', { id: 'event-types' }, EVENT_TYPES.map((t) => h('option', { value: t })))),
    h('div', { class: 'field' }, h('label', { for: 'live-key' }, 'Key'), key),
    h('button', { type: 'submit' }, 'Apply filters'));

  const connection = h('span', { role: 'status', class: 'connection' }, 'connecting…');
  const dropped = h('span', { 'data-testid': 'live-dropped', class: 'dropped' }, '0 dropped');
  const pause = h('button', { type: 'button', 'data-testid': 'live-pause', 'aria-pressed': 'false' }, 'Pause');
  const pausedCount = h('span', { 'data-testid': 'live-paused-count', class: 'paused-count', hidden: true });
  const bar = h('div', { class: 'toolbar' }, connection, dropped, pause, pausedCount);

  const chart = outcomeChart();
  const tbody = h('tbody');
  const table = h('table', { 'data-testid': 'live-table', class: 'live' },
    h('caption', { class: 'visually-hidden' }, `Latest records, newest first (at most ${MAX_LIVE_ROWS})`),
    h('thead', {}, h('tr', {}, ['Time', 'Topic', 'Event', 'Key', 'Producer', 'Payload'].map((c) => h('th', { scope: 'col' }, c)))),
    tbody);
  main.append(form, bar, chart.figure, h('div', { class: 'scroll' }, table));

  let source = null;
  let retry = 0;
  let droppedTotal = 0;
  let paused = false;
  let whilePaused = 0;
  let pending = [];
  let timer = 0;
  let frame = 0;
  let nextDrawAt = 0;
  // The addresses in the table: the server resends recent history when the
  // stream reconnects, and a record must not show twice.
  const shown = new Set();

  // Records are drawn in batches, never more than the table keeps, and the
  // pause between batches grows with what a batch cost: under a load run,
  // thousands of records a second must not take the whole main thread.
  function scheduleDraw() {
    if (timer || frame) return;
    timer = setTimeout(() => {
      timer = 0;
      frame = requestAnimationFrame(draw);
    }, Math.max(0, nextDrawAt - performance.now()));
  }

  function draw() {
    frame = 0;
    const started = performance.now();
    if (paused) pausedCount.textContent = `${count(whilePaused)} arrived while paused`;
    const fragment = document.createDocumentFragment();
    // Newest first: the last record received goes on top. Only what the
    // table keeps is parsed at all.
    for (let i = pending.length - 1; i >= Math.max(0, pending.length - MAX_LIVE_ROWS); i -= 1) {
      const record = parseData(pending[i]);
      if (!record) continue;
      const address = `${record.topic}/${record.partition}@${record.offset}`;
      if (shown.has(address)) continue;
      shown.add(address);
      fragment.append(liveRow(record, address));
    }
    pending = [];
    tbody.prepend(fragment);
    while (tbody.rows.length > MAX_LIVE_ROWS) {
      shown.delete(tbody.lastElementChild.dataset.address);
      tbody.lastElementChild.remove();
    }
    // Reading the height makes the layout part of what the batch cost.
    void tbody.offsetHeight;
    nextDrawAt = performance.now() + Math.max(MIN_DRAW_INTERVAL_MS, 4 * (performance.now() - started));
  }

  function onRecord(event) {
    if (paused) {
      whilePaused += 1;
      scheduleDraw();
      return;
    }
    pending.push(event.data);
    // Trimmed now and then rather than per record: the draw takes the newest.
    if (pending.length > 2 * MAX_LIVE_ROWS) pending = pending.slice(-MAX_LIVE_ROWS);
    scheduleDraw();
  }

  function connect() {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(liveFilters)) if (value) params.set(name, value);
    source = new EventSource(`/api/events/live?${params}`);
    connection.textContent = 'connecting…';
    source.addEventListener('open', () => { retry = 0; connection.textContent = 'live'; });
    source.addEventListener('record', onRecord);
    source.addEventListener('dropped', (event) => {
      droppedTotal += parse(event)?.dropped ?? 0;
      dropped.textContent = `${count(droppedTotal)} dropped`;
      dropped.classList.toggle('warn', droppedTotal > 0);
    });
    source.addEventListener('outcomes', (event) => {
      const second = parse(event);
      if (second) chart.add(second);
    });
    source.addEventListener('error', () => {
      // EventSource retries network errors itself; it gives up (CLOSED) on an
      // HTTP error, which may mean the session ended: ask, then retry.
      if (source.readyState !== EventSource.CLOSED) { connection.textContent = 'reconnecting…'; return; }
      connection.textContent = 'disconnected, retrying…';
      const delay = Math.min(30_000, 1000 * 2 ** retry);
      retry += 1;
      api('/api/health').catch(() => {});
      const timer = setTimeout(() => { if (ctx.alive) connect(); }, delay);
      ctx.onStop(() => clearTimeout(timer));
    });
  }

  function stopDrawing() {
    clearTimeout(timer);
    cancelAnimationFrame(frame);
    timer = 0;
    frame = 0;
  }

  function reconnect() {
    source?.close();
    stopDrawing();
    pending = [];
    shown.clear();
    tbody.replaceChildren();
    chart.clear();
    connect();
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    Object.assign(liveFilters, { topic: topic.value, type: type.value.trim(), key: key.value.trim() });
    reconnect();
  });
  topic.addEventListener('change', () => form.requestSubmit());
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(paused));
    if (paused) {
      whilePaused = 0;
      pausedCount.textContent = '0 arrived while paused';
      pausedCount.hidden = false;
    } else {
      // Resuming adds nothing retroactively: say what was skipped, if anything.
      pausedCount.textContent = `${count(whilePaused)} skipped while paused`;
      pausedCount.hidden = whilePaused === 0;
    }
  });

  ctx.onStop(() => { source?.close(); stopDrawing(); });
  connect();
}

function parse(event) {
  return parseData(event.data);
}

function parseData(data) {
  try {
    return JSON.parse(data);
  } catch {
    return null;
  }
}

function liveRow(record, address) {
  const envelope = record.event;
  const type = envelope?.event_type
    ?? (record.not_an_event != null ? h('span', { class: 'bad', title: record.not_an_event }, 'not an event') : null)
    ?? (record.unknown_event_type != null ? h('span', { class: 'bad' }, `unknown: ${record.unknown_event_type}`) : '—');
  const sagaKey = record.key && !record.topic.endsWith('queue.events')
    && !(envelope && NOT_KEYED_BY_RESERVATION.has(envelope.event_type));
  return h('tr', { 'data-testid': 'live-row', 'data-address': address },
    h('td', { class: 'nowrap' }, timeEl(record.timestamp ?? envelope?.occurred_at, { date: false })),
    h('td', { class: 'nowrap', title: address }, record.topic),
    h('td', {}, type),
    h('td', {}, record.key == null ? '—' : sagaKey ? sagaLink(record.key) : h('span', { class: 'id' }, record.key)),
    h('td', {}, envelope?.producer ? h('span', { class: `service lane-${envelope.producer}` }, envelope.producer) : '—'),
    h('td', { class: 'summary' }, summary(record)));
}

/** A payload in one short line: plain values first, ids last and shortened. */
function summary(record) {
  if (!record.event) return truncate(record.not_an_event ?? record.raw ?? '', 100);
  const payload = record.event.payload ?? {};
  const plain = [];
  const ids = [];
  for (const [name, value] of Object.entries(payload)) {
    if (value === record.key) continue;
    const text = typeof value === 'object' ? JSON.stringify(value) : String(value);
    if (/_id$|^token$/.test(name)) ids.push(`${name}=…${text.slice(-6)}`);
    else plain.push(`${name}=${text}`);
  }
  return truncate([...plain, ...ids].join(' '), 100);
}

function truncate(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

/** Saga outcomes per second over the last minute: stacked bars with a legend and a text summary. */
function outcomeChart() {
  const width = 600;
  const height = 120;
  const seconds = [];
  // Bars stretch with the page; text stays in HTML so it never stretches.
  const plot = svg('svg', { viewBox: `0 0 ${width} ${height}`, 'aria-hidden': 'true', class: 'chart', preserveAspectRatio: 'none' });
  const scale = h('p', { class: 'muted small chart-scale' });
  const caption = h('figcaption', { class: 'chart-summary' });
  const legend = h('ul', { class: 'legend' },
    OUTCOMES.map((outcome) => h('li', {}, h('span', { class: `swatch outcome-${outcome}` }), outcome)));
  const figure = h('figure', { 'data-testid': 'outcome-chart', class: 'card chart-card' },
    h('h2', {}, 'Saga outcomes per second'), plot, scale, legend, caption);

  function draw() {
    const totals = seconds.map((s) => OUTCOMES.reduce((sum, o) => sum + (s.counts?.[o] ?? 0), 0));
    const peak = Math.max(1, ...totals);
    const bar = width / CHART_SECONDS;
    const shapes = [];
    seconds.forEach((second, i) => {
      // Right-aligned: the newest second is the rightmost bar.
      const x = width - (seconds.length - i) * bar;
      let y = height;
      for (const outcome of OUTCOMES) {
        const n = second.counts?.[outcome] ?? 0;
        if (!n) continue;
        const barHeight = (n / peak) * (height - 2);
        y -= barHeight;
        shapes.push(svg('rect', { x: x + 1, y, width: bar - 2, height: barHeight, class: `outcome-${outcome}` }));
      }
    });
    plot.replaceChildren(...shapes);
    scale.textContent = `Top of the chart: ${count(peak)} per second; the last ${CHART_SECONDS} s, newest on the right.`;

    const sums = OUTCOMES.map((o) => [o, seconds.reduce((sum, s) => sum + (s.counts?.[o] ?? 0), 0)]).filter(([, n]) => n > 0);
    figure.dataset.seconds = String(seconds.length);
    if (!seconds.length) caption.textContent = 'Waiting for the first second of outcomes…';
    else if (!sums.length) caption.textContent = `No saga ended in the last ${seconds.length} s.`;
    else caption.textContent = `Last ${seconds.length} s: ${sums.map(([o, n]) => `${count(n)} ${o}`).join(', ')}; peak ${count(Math.max(...totals))} per second.`;
  }

  draw();
  return {
    figure,
    add(second) {
      seconds.push(second);
      if (seconds.length > CHART_SECONDS) seconds.shift();
      draw();
    },
    clear() {
      seconds.length = 0;
      draw();
    },
  };
}

// ---- Saga ------------------------------------------------------------------

function renderSaga(main, ctx, id) {
  const input = h('input', { id: 'saga-id', name: 'id', value: id, required: true, autocomplete: 'off', spellcheck: 'false' });
  const form = h('form', { 'data-testid': 'saga-search', class: 'filters', role: 'search' },
    h('div', { class: 'field wide' }, h('label', { for: 'saga-id' }, 'Reservation, payment or fan id'), input),
    h('button', { type: 'submit', class: 'primary' }, 'Find'),
    id ? h('button', { type: 'button', 'data-testid': 'saga-refresh', onclick: () => load() }, 'Refresh') : null);
  const out = h('div', { class: 'saga-out' });
  main.append(form, out);

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const wanted = input.value.trim();
    if (!wanted) return;
    const hash = `#/saga/${encodeURIComponent(wanted)}`;
    // The same id again is a refresh: the hash would not change.
    if (location.hash === hash) load(); else location.hash = hash;
  });

  async function load() {
    out.setAttribute('aria-busy', 'true');
    out.replaceChildren(statusLine(`Reading the saga of ${id} from Kafka…`));
    try {
      const saga = await api(`/api/sagas/${encodeURIComponent(id)}`);
      if (ctx.alive) out.replaceChildren(...sagaView(saga));
    } catch (error) {
      if (!ctx.alive) return;
      if (error.code === 'saga_not_found') await loadFanSagas();
      else out.replaceChildren(alertBox(error));
    } finally {
      out.removeAttribute('aria-busy');
    }
  }

  // Not a reservation or payment id: it may be a fan's.
  async function loadFanSagas() {
    try {
      const { sagas } = await api(`/api/sagas?fan=${encodeURIComponent(id)}`);
      if (!ctx.alive) return;
      if (!sagas.length) {
        out.replaceChildren(h('p', { role: 'status', class: 'empty' }, `No saga has ${id} as its reservation, payment or fan id.`));
        return;
      }
      out.replaceChildren(
        h('h2', {}, `Sagas of fan ${id}`),
        h('ul', { 'data-testid': 'fan-sagas', class: 'fan-sagas' }, sagas.map((saga) => h('li', {},
          sagaLink(saga.reservation_id), ' ',
          h('span', { class: `verdict verdict-${saga.verdict}` }, saga.verdict),
          saga.detail ? ` ${saga.detail}` : '',
          h('span', { class: 'muted' }, ' · started ', timeEl(saga.started_at), ', last step ', timeEl(saga.last_at))))));
    } catch (error) {
      if (ctx.alive) out.replaceChildren(alertBox(error));
    }
  }

  if (id) load();
  else out.append(h('p', { class: 'muted' }, 'A payment id finds its reservation\'s saga; a fan id lists that fan\'s sagas.'));
}

function sagaView(saga) {
  const seat = saga.seat ? `seat ${saga.seat.seat_no} of schedule ${saga.seat.schedule_id}` : 'no seat named';
  const summaryCard = h('section', { class: 'card saga-summary', 'aria-labelledby': 'saga-heading' },
    h('h2', { id: 'saga-heading' }, 'Reservation ', h('span', { class: 'id' }, saga.reservation_id)),
    h('p', { class: 'verdict-line' },
      'Verdict ', h('strong', { 'data-testid': 'saga-verdict', class: `verdict verdict-${saga.verdict}` }, saga.verdict)),
    saga.detail ? h('p', {}, saga.detail) : null,
    h('dl', { class: 'facts' },
      h('dt', {}, 'Seat'), h('dd', {}, seat),
      h('dt', {}, 'Compensations'),
      h('dd', {}, h('ul', { 'data-testid': 'saga-branches', class: 'branches' },
        saga.branches?.length
          ? saga.branches.map((b) => h('li', { class: 'compensation-text' }, b.reason ? `${b.outcome} (${b.reason})` : b.outcome))
          : h('li', { class: 'muted' }, 'none'))),
      saga.waiting_for ? [h('dt', {}, 'Waiting for'),
        h('dd', {}, h('span', { class: `service lane-${saga.waiting_for}` }, saga.waiting_for),
          saga.expected?.length ? ` to send ${saga.expected.join(' or ')}` : '')] : null),
    saga.trace_url ? h('p', {}, h('a', { href: saga.trace_url, target: '_blank', rel: 'noopener noreferrer' },
      'Trace', h('span', { class: 'visually-hidden' }, ' (opens in a new tab)'))) : null);

  const heads = h('div', { class: 'lanes lane-heads', 'aria-hidden': 'true' },
    SERVICES.map((service) => h('div', { class: `lane-head lane-${service}` }, service)));
  const timeline = h('ol', { 'data-testid': 'saga-timeline', class: 'timeline', 'aria-label': 'Steps, oldest first' },
    (saga.steps ?? []).map(stepItem));
  const toCome = saga.still_to_come ?? [];
  const upcoming = h('ol', { 'data-testid': 'saga-to-come', class: 'timeline', 'aria-label': 'Steps still to come' },
    toCome.map((step) => h('li', { class: 'step-row' }, h('div', { class: `step to-come lane-${step.by}` },
      h('span', { class: 'event-type' }, step.event_type),
      h('span', { class: 'muted small' }, ` expected from ${step.by}`)))));
  const timelineCard = h('section', { class: 'card', 'aria-labelledby': 'timeline-heading' },
    h('h2', { id: 'timeline-heading' }, `Timeline (${saga.steps?.length ?? 0} steps)`),
    heads, timeline,
    h('h3', {}, 'Still to come'),
    toCome.length ? null : h('p', { class: 'muted' }, 'Nothing more is expected from the contract.'),
    upcoming,
    h('p', { class: 'muted small' }, `Read ${count(saga.messages_read)} messages in ${count(saga.elapsed_ms)} ms.`));
  return [summaryCard, timelineCard];
}

/** A step is a full-width row (time runs down); its card sits in its producer's lane. */
function stepItem(step) {
  const delay = step.since_previous_ms == null ? 'start' : `+${count(step.since_previous_ms)} ms`;
  return h('li', { 'data-testid': 'saga-step', class: `step-row${step.compensation ? ' compensation' : ''}` },
    h('div', { class: `step lane-${step.producer}` },
      h('div', { class: 'step-head' },
        h('span', { class: 'event-type' }, step.event_type),
        h('span', { class: 'delay' }, delay)),
      step.compensation ? h('span', { class: 'compensation-label' }, '↩ compensation') : null,
      h('div', { class: 'muted small' }, `by ${step.producer} · `, timeEl(step.at, { date: false })),
      h('details', {},
        h('summary', {}, 'details'),
        h('dl', { class: 'facts small' },
          h('dt', {}, 'address'), h('dd', {}, step.address),
          h('dt', {}, 'event'), h('dd', { class: 'id' }, step.event_id),
          h('dt', {}, 'correlation'), h('dd', { class: 'id' }, step.correlation_id ?? '—'),
          h('dt', {}, 'causation'), h('dd', { class: 'id' }, step.causation_id ?? '—')),
        h('pre', {}, JSON.stringify(step.payload, null, 2)))));
}

// ---- Stuck -----------------------------------------------------------------

let stuckThreshold = 60;

function renderStuck(main, ctx) {
  const input = h('input', { id: 'stuck-secs', name: 'older_than_secs', type: 'number', min: '0', step: '1', value: String(stuckThreshold), required: true });
  const form = h('form', { class: 'filters' },
    h('div', { class: 'field' }, h('label', { for: 'stuck-secs' }, 'In flight longer than (seconds)'), input),
    h('button', { type: 'submit', class: 'primary' }, 'Show'));
  const out = h('div');
  main.append(form, out);

  async function load() {
    const secs = stuckThreshold;
    out.replaceChildren(statusLine('Looking for sagas in flight…'));
    try {
      const { sagas } = await api(`/api/stuck?older_than_secs=${secs}`);
      if (!ctx.alive) return;
      if (!sagas.length) {
        out.replaceChildren(h('p', { 'data-testid': 'stuck-empty', role: 'status', class: 'empty' }, `No saga is in flight for longer than ${secs} s`));
        return;
      }
      out.replaceChildren(h('div', { class: 'scroll' }, h('table', { 'data-testid': 'stuck-table' },
        h('caption', {}, `${sagas.length} saga(s) in flight for longer than ${secs} s, stalest first`),
        h('thead', {}, h('tr', {}, ['Reservation', 'Verdict', 'Waiting for', 'Waiting since', 'Age', 'Detail'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, sagas.map((saga) => h('tr', { 'data-testid': 'stuck-row' },
          h('td', {}, sagaLink(saga.reservation_id)),
          h('td', {}, h('span', { class: `verdict verdict-${saga.verdict}` }, saga.verdict)),
          h('td', {}, saga.waiting_for ? h('span', { class: `service lane-${saga.waiting_for}` }, saga.waiting_for) : '—'),
          h('td', { class: 'nowrap' }, timeEl(saga.waiting_since)),
          h('td', { class: 'nowrap' }, duration(saga.age_ms)),
          h('td', {}, saga.detail ?? '')))))));
    } catch (error) {
      if (ctx.alive) out.replaceChildren(alertBox(error));
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    stuckThreshold = Math.max(0, Math.floor(Number(input.value) || 0));
    load();
  });
  load();
}

// ---- Dead letters ------------------------------------------------------------

function renderDeadLetters(main, ctx) {
  const message = h('div', { class: 'message' });
  const dryRun = h('button', { type: 'button', 'data-testid': 'dlq-dry-run' }, 'Dry run');
  const redrive = h('button', { type: 'button', 'data-testid': 'dlq-redrive', class: 'primary' }, 'Redrive');
  const reload = h('button', { type: 'button', onclick: () => load() }, 'Reload');
  const confirmText = h('p', { id: 'dlq-confirm-text' });
  const confirm = h('button', { type: 'button', 'data-testid': 'dlq-confirm', class: 'danger' });
  const cancel = h('button', { type: 'button' }, 'Cancel');
  const confirmBox = h('div', { class: 'confirm', role: 'group', 'aria-labelledby': 'dlq-confirm-text', hidden: true },
    confirmText, confirm, ' ', cancel);
  const outcomes = h('section', { class: 'outcomes', 'aria-live': 'polite' });
  const list = h('div');
  main.append(h('div', { class: 'toolbar' }, dryRun, redrive, reload), confirmBox, message, outcomes, list);

  let letters = [];
  // The ids the confirmation was asked for: a change of selection cancels it.
  let pendingRedrive = null;

  const selected = () => [...list.querySelectorAll('input[data-letter]:checked')].map((box) => box.value);

  function hideConfirm() {
    pendingRedrive = null;
    confirmBox.hidden = true;
  }

  async function load() {
    list.setAttribute('aria-busy', 'true');
    try {
      ({ letters } = await api('/api/dead-letters'));
      if (ctx.alive) list.replaceChildren(lettersTable(letters));
    } catch (error) {
      if (ctx.alive) list.replaceChildren(alertBox(error));
    } finally {
      list.removeAttribute('aria-busy');
    }
  }

  async function send(ids, dry) {
    message.replaceChildren(statusLine(dry ? 'Checking what would be replayed…' : 'Redriving…'));
    try {
      const result = await api('/api/dead-letters/redrive', { method: 'POST', body: { letters: ids, dry_run: dry } });
      if (!ctx.alive) return;
      message.replaceChildren();
      outcomes.replaceChildren(
        h('h2', {}, dry ? 'Dry run: nothing was sent' : 'Redrive outcome'),
        h('ul', { 'data-testid': 'dlq-outcomes' }, result.outcomes.map((o) => h('li', { 'data-testid': 'dlq-outcome', 'data-outcome': o.outcome, 'data-letter-id': o.id },
          h('span', { class: 'id' }, o.id), ' ', h('strong', { class: `outcome-text outcome-${o.outcome}` }, o.outcome),
          o.detail ? ` — ${o.detail}` : ''))));
      if (!dry) await load();
    } catch (error) {
      if (ctx.alive) message.replaceChildren(alertBox(error));
    }
  }

  function needSelection() {
    const ids = selected();
    if (!ids.length) message.replaceChildren(h('p', { role: 'alert', class: 'error' }, 'Select at least one letter first.'));
    else message.replaceChildren();
    return ids;
  }

  dryRun.addEventListener('click', () => {
    hideConfirm();
    const ids = needSelection();
    if (ids.length) send(ids, true);
  });
  redrive.addEventListener('click', () => {
    const ids = needSelection();
    if (!ids.length) return;
    // An in-page step rather than window.confirm: it can be styled, read by
    // screen readers and driven by the browser test.
    pendingRedrive = ids;
    const noun = ids.length === 1 ? 'letter' : 'letters';
    confirmText.textContent = `Send ${ids.length} ${noun} back to ${ids.length === 1 ? 'its topic' : 'their topics'}? A letter already replayed is refused, never applied twice.`;
    confirm.textContent = `Redrive ${ids.length} ${noun}`;
    confirmBox.hidden = false;
    confirm.focus();
  });
  confirm.addEventListener('click', () => {
    const ids = pendingRedrive;
    hideConfirm();
    if (ids) send(ids, false);
  });
  cancel.addEventListener('click', () => { hideConfirm(); redrive.focus(); });
  confirmBox.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') { hideConfirm(); redrive.focus(); }
  });
  list.addEventListener('change', (event) => {
    if (event.target.matches('input[data-select-all]')) {
      for (const box of list.querySelectorAll('input[data-letter]')) box.checked = event.target.checked;
    }
    if (pendingRedrive) hideConfirm();
  });

  load();
}

function lettersTable(letters) {
  if (!letters.length) return h('p', { role: 'status', class: 'empty' }, 'No dead letters.');
  return h('div', { class: 'scroll' }, h('table', { 'data-testid': 'dlq-table', class: 'dlq' },
    h('caption', {}, `${letters.length} dead letter(s)`),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, h('input', { type: 'checkbox', id: 'dlq-all', 'data-select-all': true }), h('label', { for: 'dlq-all', class: 'visually-hidden' }, 'Select all')),
      ['Letter', 'Reason', 'Origin', 'Consumer', 'Attempts', 'Failed at', 'Replayed', 'Payload'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, letters.map((letter) => {
      const boxId = `letter-${letter.id}`;
      return h('tr', { 'data-testid': 'dlq-row', 'data-letter-id': letter.id, class: letter.replayed_at ? 'replayed' : null },
        h('td', {}, h('input', { type: 'checkbox', id: boxId, value: letter.id, 'data-letter': true })),
        h('td', {}, h('label', { for: boxId, class: 'id' }, letter.id),
          h('div', { class: 'small muted' }, letter.event_type ?? 'not an event', letter.key ? [' · ', sagaLink(letter.key)] : null)),
        h('td', { class: 'reason' }, letter.reason),
        h('td', { class: 'nowrap' }, `${letter.origin_topic}/${letter.origin_partition}@${letter.origin_offset}`),
        h('td', {}, letter.consumer),
        h('td', { class: 'num' }, count(letter.attempts)),
        h('td', { class: 'nowrap' }, timeEl(letter.failed_at)),
        h('td', { class: 'nowrap' }, letter.replayed_at ? ['replayed at ', timeEl(letter.replayed_at)] : '—'),
        h('td', {}, h('details', {}, h('summary', {}, 'payload'), h('pre', {}, letter.payload ?? ''))));
    }))));
}

// ---- Health ------------------------------------------------------------------

function renderHealth(main, ctx) {
  const refresh = h('button', { type: 'button', onclick: () => load() }, 'Refresh');
  const audit = h('button', { type: 'button', 'data-testid': 'audit-run', class: 'primary' }, 'Run audit');
  const out = h('div');
  const auditOut = h('section', { 'aria-live': 'polite' });
  main.append(h('div', { class: 'toolbar' }, refresh, audit), out, auditOut);

  async function load() {
    out.setAttribute('aria-busy', 'true');
    try {
      const health = await api('/api/health');
      if (ctx.alive) out.replaceChildren(healthTable(health));
    } catch (error) {
      if (ctx.alive) out.replaceChildren(alertBox(error));
    } finally {
      out.removeAttribute('aria-busy');
    }
  }

  audit.addEventListener('click', async () => {
    audit.disabled = true;
    auditOut.replaceChildren(statusLine('Running the audit over every topic…'));
    try {
      const result = await api('/api/audit', { method: 'POST' });
      if (ctx.alive) auditOut.replaceChildren(auditView(result));
    } catch (error) {
      if (ctx.alive) auditOut.replaceChildren(alertBox(error));
    } finally {
      audit.disabled = false;
    }
  });

  load();
}

function healthTable(health) {
  const columns = ['Service', 'Ready', 'Version', 'Lag', 'Outbox pending', 'Oldest outbox', 'Dead letters', 'Problems'];
  const rows = health.services.flatMap((service) => {
    const partitions = service.lag_by_partition ?? [];
    return [
      h('tr', { 'data-testid': 'health-row', 'data-service': service.service, 'data-ready': String(Boolean(service.ready)) },
        h('th', { scope: 'row' }, h('span', { class: `service lane-${service.service}` }, service.service)),
        h('td', {}, h('span', { class: service.ready ? 'ok' : 'bad' }, service.ready ? '✓ ready' : '✗ not ready')),
        h('td', {}, service.version ?? '—'),
        h('td', { class: 'num' }, count(service.lag)),
        h('td', { class: 'num' }, count(service.outbox_pending)),
        h('td', { class: 'num' }, service.outbox_oldest_age_secs == null ? '—' : duration(service.outbox_oldest_age_secs * 1000)),
        h('td', { class: 'num' }, count(service.dead_letters)),
        h('td', {}, service.problems?.length ? h('ul', { class: 'problems' }, service.problems.map((p) => h('li', { class: 'bad' }, p))) : 'none')),
      h('tr', { class: 'details-row' }, h('td', { colspan: String(columns.length) },
        h('details', {}, h('summary', {}, `Lag of ${service.service} by group and partition (${partitions.length})`),
          partitions.length ? h('table', { class: 'inner' },
            h('thead', {}, h('tr', {}, ['Group', 'Topic', 'Partition', 'Committed', 'End', 'Lag'].map((c) => h('th', { scope: 'col' }, c)))),
            h('tbody', {}, partitions.map((p) => h('tr', {},
              h('td', {}, p.group), h('td', {}, p.topic), h('td', { class: 'num' }, p.partition),
              h('td', { class: 'num' }, count(p.committed)), h('td', { class: 'num' }, count(p.end)), h('td', { class: 'num' }, count(p.lag))))))
            : h('p', { class: 'muted' }, 'No committed offsets.')))),
    ];
  });
  return h('div', {},
    h('div', { class: 'scroll' }, h('table', { 'data-testid': 'health-table' },
      h('caption', {}, 'Services'),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows))),
    h('p', { class: 'muted' }, `Failed sign-ins since the console started: ${count(health.sign_in_failures)}`));
}

function auditView(result) {
  const checked = ['reservations', 'payments', 'wallets', 'debits', 'taken_seats']
    .map((name) => `${count(result[name])} ${name.replace('_', ' ')}`).join(', ');
  const settled = typeof result.settled === 'boolean'
    ? (result.settled ? 'the cluster had settled' : 'sagas were still in flight, figures may move')
    : `settled: ${result.settled}`;
  const violations = result.violations ?? [];
  return h('div', { 'data-testid': 'audit-result', class: `card audit ${violations.length ? 'has-violations' : 'clean'}` },
    h('h2', {}, 'Audit'),
    violations.length
      ? [h('p', { class: 'bad' }, `${violations.length} violation(s)`),
        h('ul', {}, violations.map((v) => h('li', {}, h('strong', {}, v.invariant), ' ', h('span', { class: 'id' }, v.subject), ` — ${v.detail}`)))]
      : h('p', { class: 'ok' }, '✓ no violations'),
    h('p', { class: 'muted' }, `Checked ${checked}; ${settled}.`));
}

// ---- Start -------------------------------------------------------------------

document.querySelector('[data-testid="sign-out"]').addEventListener('click', signOut);
// The skip link must not change the hash: the hash is the route.
document.querySelector('[data-skip]').addEventListener('click', (event) => {
  event.preventDefault();
  (document.querySelector('#main h1') ?? document.getElementById('main')).focus();
});
window.addEventListener('hashchange', () => route({ moveFocus: true }));
route({ moveFocus: false });
