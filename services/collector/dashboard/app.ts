/**
 * The Cipherstat dashboard: vanilla TypeScript, one module, strict-CSP friendly (no inline
 * script or style, no innerHTML — Trusted Types are enforced — styles only through classes
 * and CSSOM). Everything shown comes from GET /v1/metrics and POST /v1/query with the read
 * token kept in sessionStorage. Metric names and tag values are tenant input: they only ever
 * reach the page as textContent.
 */
import uPlot from 'uplot';

// ---- API -----------------------------------------------------------------------

interface MetricTag {
  key: string;
  values: string[] | null;
  distinctValues: number;
}
interface MetricInfo {
  name: string;
  kind: string;
  tags: MetricTag[];
  points24h: number;
}
interface Listing {
  accountId: string;
  metrics: MetricInfo[];
  rejects: Record<string, number>;
  /** What to do about a reject code, when the collector knows. */
  advice?: Record<string, string>;
}
type Point = [number, number | null];
interface Series {
  tags: Record<string, string>;
  points: Point[];
}
interface QueryBody {
  metric: string;
  aggregation: string;
  from: number;
  to: number;
  interval: 'minute' | 'hour' | 'day';
  timezone: string;
  groupBy?: string[];
  filter?: Record<string, string>;
}
interface QueryResult {
  series: Series[];
  meta: { from: number; to: number; level: string; rows: number; failedRows: number; cached: boolean };
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const TOKEN_KEY = 'cipherstat.readToken';

/**
 * The collector runs at most CIPHERSTAT_QUERY_CONCURRENCY (default 2) queries per read token at
 * once and answers more with 429 `too_many_queries`: the page never has more than that many
 * requests in flight (the overview tiles and the chart start together and queue here), and a
 * 429 `too_many_queries` (a lower setting, another tab) is retried after its Retry-After.
 */
const MAX_IN_FLIGHT = 2;
const RETRIES_429 = 3;
let inFlight = 0;
const waiting: (() => void)[] = [];

async function slot(): Promise<() => void> {
  if (inFlight >= MAX_IN_FLIGHT) await new Promise<void>((resolve) => waiting.push(resolve));
  else inFlight++;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const next = waiting.shift();
    if (next) next(); // the slot passes on
    else inFlight--;
  };
}

async function api<T>(path: string, body?: unknown): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const release = await slot();
    let res: Response;
    let json: { error?: { code: string; message: string } } | null;
    try {
      const token = sessionStorage.getItem(TOKEN_KEY) ?? '';
      res = await fetch(path, {
        method: body === undefined ? 'GET' : 'POST',
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? null : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
      json = (await res.json().catch(() => null)) as typeof json;
    } finally {
      release();
    }
    if (res.status === 429 && json?.error?.code === 'too_many_queries' && attempt < RETRIES_429) {
      const seconds = Math.min(Number(res.headers.get('retry-after')) || 1, 5);
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
      continue;
    }
    if (!res.ok) throw new ApiError(res.status, json?.error?.code ?? 'http_error', json?.error?.message ?? `HTTP ${res.status}`);
    return json as T;
  }
}

// ---- DOM helpers ---------------------------------------------------------------

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
};

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: { className?: string; text?: string; title?: string } = {}, ...children: Node[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (props.className) e.className = props.className;
  if (props.text !== undefined) e.textContent = props.text;
  if (props.title) e.title = props.title;
  e.append(...children);
  return e;
}

function options(select: HTMLSelectElement, items: [value: string, label: string][], selected?: string): void {
  select.replaceChildren(...items.map(([value, label]) => {
    const o = el('option', { text: label });
    o.value = value;
    return o;
  }));
  if (selected !== undefined && items.some(([v]) => v === selected)) select.value = selected;
}

function setStatus(text: string, kind: 'info' | 'error' = 'info'): void {
  const s = $('status');
  s.textContent = text;
  s.className = `status ${kind}`;
}

const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const formatValue = (v: number | null): string => (v === null ? '—' : numberFormat.format(v));

function timeFormat(interval: string, timeZone: string): Intl.DateTimeFormat {
  const o: Intl.DateTimeFormatOptions = { timeZone, year: 'numeric', month: 'short', day: '2-digit' };
  if (interval !== 'day') Object.assign(o, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  return new Intl.DateTimeFormat(undefined, o);
}

const seriesLabel = (s: Series): string => {
  const entries = Object.entries(s.tags);
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(', ') : 'all';
};

// ---- state ---------------------------------------------------------------------

let listing: Listing | undefined;
let chart: uPlot | undefined;
const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
const RANGE_INTERVALS: Record<string, { allowed: string[]; preferred: string }> = {
  '3600000': { allowed: ['minute', 'hour'], preferred: 'minute' },
  '86400000': { allowed: ['minute', 'hour', 'day'], preferred: 'hour' },
  '604800000': { allowed: ['hour', 'day'], preferred: 'hour' },
  '2592000000': { allowed: ['hour', 'day'], preferred: 'day' },
};
const DEFAULT_AGGREGATION: Record<string, string> = { counter: 'sum', gauge: 'avg', histogram: 'p95' };
const COLORS = ['#1f6feb', '#d9480f', '#2f9e44', '#ae3ec9', '#f08c00', '#0c8599', '#e03131', '#5c7cfa', '#66a80f', '#862e9c'];

const metricInfo = (name: string): MetricInfo | undefined => listing?.metrics.find((m) => m.name === name);

// ---- login ---------------------------------------------------------------------

async function connect(): Promise<void> {
  setStatus('Loading metrics…');
  try {
    listing = await api<Listing>('/v1/metrics');
  } catch (e) {
    listing = undefined;
    if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 410)) sessionStorage.removeItem(TOKEN_KEY);
    showSession(false);
    setStatus(e instanceof ApiError ? `${e.message} (${e.code})` : 'The collector is not reachable.', 'error');
    return;
  }
  showSession(true);
  $('account').textContent = listing.accountId;
  renderCatalog(listing);
  fillMetricPicker(listing);
  setStatus(listing.metrics.length ? '' : 'No metrics recorded yet.');
  await Promise.all([renderOverview(listing), listing.metrics.length ? runQuery() : Promise.resolve()]);
}

function showSession(on: boolean): void {
  $('login').hidden = on;
  $('session').hidden = !on;
  $('intro').hidden = on;
  for (const id of ['explorer', 'catalog']) $(id).hidden = !on;
  if (!on) $('overview').hidden = $('problems').hidden = true;
}

// ---- catalog -------------------------------------------------------------------

function renderCatalog(l: Listing): void {
  const body = $('metrics').querySelector('tbody')!;
  body.replaceChildren(
    ...l.metrics.map((m) => {
      const tags = m.tags.map((t) => `${t.key} (${t.values ? t.values.join(', ') : `${t.distinctValues}+ values`})`).join('; ');
      return el('tr', {}, el('td', { text: m.name }), el('td', { text: m.kind }), el('td', { className: 'num', text: numberFormat.format(m.points24h) }), el('td', { text: tags || '—' }));
    }),
  );
  const rejects = Object.entries(l.rejects);
  $('rejects').textContent = rejects.length ? rejects.map(([code, n]) => `${code}: ${numberFormat.format(n)}`).join(' · ') : 'None.';
  // Refusals with advice go to the top of the page: data that never arrived must be seen.
  const advice = Object.entries(l.advice ?? {});
  $('problems').hidden = !advice.length;
  $('problem-list').replaceChildren(
    ...advice.map(([code, text]) => {
      // `text` may quote a command between backticks: shown as code, still as text only
      const parts = text.split('`').map((t, i) => (i % 2 ? el('code', { text: t }) : document.createTextNode(t)));
      return el('li', {}, el('strong', { text: `${numberFormat.format(l.rejects[code] ?? 0)} × ${code}: ` }), ...parts);
    }),
  );
}

// ---- controls ------------------------------------------------------------------

function fillMetricPicker(l: Listing): void {
  const metric = $<HTMLSelectElement>('metric');
  const previous = metric.value;
  options(metric, l.metrics.map((m) => [m.name, m.name]), previous);
  const tz = $<HTMLInputElement>('timezone');
  if (!tz.value) tz.value = browserZone;
  const zones = (Intl as { supportedValuesOf?: (k: string) => string[] }).supportedValuesOf?.('timeZone') ?? [];
  $('timezones').replaceChildren(...['UTC', ...zones].map((z) => {
    const o = el('option');
    o.value = z;
    return o;
  }));
  onMetricChange();
  onRangeChange();
}

function onMetricChange(): void {
  const m = metricInfo($<HTMLSelectElement>('metric').value);
  if (!m) return;
  $<HTMLSelectElement>('aggregation').value = DEFAULT_AGGREGATION[m.kind] ?? 'count';
  const keys: [string, string][] = [['', '(none)'], ...m.tags.map((t): [string, string] => [t.key, t.key])];
  options($<HTMLSelectElement>('group-by'), keys, '');
  options($<HTMLSelectElement>('filter-key'), keys, '');
  onFilterKeyChange();
}

function onFilterKeyChange(): void {
  const m = metricInfo($<HTMLSelectElement>('metric').value);
  const key = $<HTMLSelectElement>('filter-key').value;
  const values = m?.tags.find((t) => t.key === key)?.values ?? [];
  $('filter-values').replaceChildren(...values.map((v) => {
    const o = el('option');
    o.value = v;
    return o;
  }));
  const input = $<HTMLInputElement>('filter-value');
  input.disabled = !key;
  if (!key || (values.length && !values.includes(input.value))) input.value = values.length === 1 ? values[0]! : '';
}

function onRangeChange(): void {
  const rule = RANGE_INTERVALS[$<HTMLSelectElement>('range').value]!;
  const interval = $<HTMLSelectElement>('interval');
  for (const o of Array.from(interval.options)) o.disabled = !rule.allowed.includes(o.value);
  if (!rule.allowed.includes(interval.value)) interval.value = rule.preferred;
}

function currentQuery(): QueryBody {
  const range = Number($<HTMLSelectElement>('range').value);
  // Align `to` to the minute so that refreshes within a minute are answered from the cache.
  const to = Math.ceil(Date.now() / 60_000) * 60_000;
  const body: QueryBody = {
    metric: $<HTMLSelectElement>('metric').value,
    aggregation: $<HTMLSelectElement>('aggregation').value,
    from: to - range,
    to,
    interval: $<HTMLSelectElement>('interval').value as QueryBody['interval'],
    timezone: $<HTMLInputElement>('timezone').value.trim() || browserZone,
  };
  const groupBy = $<HTMLSelectElement>('group-by').value;
  if (groupBy) body.groupBy = [groupBy];
  const fk = $<HTMLSelectElement>('filter-key').value;
  const fv = $<HTMLInputElement>('filter-value').value;
  if (fk && fv) body.filter = { [fk]: fv };
  return body;
}

// ---- query, chart, table --------------------------------------------------------

let running = 0;

async function runQuery(body: QueryBody = currentQuery()): Promise<void> {
  const ticket = ++running;
  $('run').toggleAttribute('disabled', true);
  setStatus('Querying…');
  try {
    const result = await api<QueryResult>('/v1/query', body);
    if (ticket !== running) return;
    renderChart(result, body);
    renderTable(result, body);
    const m = result.meta;
    $('meta').textContent =
      `${result.series.length} series · ${m.rows} encrypted rows (${m.level} rollups) opened${m.cached ? ' · cached' : ''}` +
      (m.failedRows ? ` · ${m.failedRows} rows failed to open and were left out` : '');
    setStatus(m.failedRows ? 'Some stored rows could not be opened; the answer leaves them out.' : '', m.failedRows ? 'error' : 'info');
  } catch (e) {
    if (ticket !== running) return;
    setStatus(e instanceof ApiError ? `${e.message} (${e.code})` : String(e), 'error');
  } finally {
    if (ticket === running) $('run').toggleAttribute('disabled', false);
  }
}

function renderChart(result: QueryResult, body: QueryBody): void {
  const host = $('chart');
  chart?.destroy();
  chart = undefined;
  host.replaceChildren();
  const xs = result.series[0]?.points.map(([t]) => t) ?? [];
  if (!xs.length) {
    host.append(el('p', { className: 'empty', text: 'No data in this range.' }));
    return;
  }
  const data: uPlot.AlignedData = [xs, ...result.series.map((s) => s.points.map(([, v]) => v))];
  const fmt = timeFormat(body.interval, body.timezone);
  const opts: uPlot.Options = {
    width: Math.max(320, host.clientWidth || 800),
    height: 320,
    ms: 1,
    tzDate: (ts) => uPlot.tzDate(new Date(ts), body.timezone),
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true } },
    axes: [{ stroke: '#57606a', grid: { stroke: '#eaeef2' } }, { stroke: '#57606a', grid: { stroke: '#eaeef2' }, size: 70 }],
    series: [
      { label: 'Time', value: (_u, v) => (v == null ? '—' : fmt.format(v)) },
      ...result.series.map((s, i) => ({
        label: seriesLabel(s),
        stroke: COLORS[i % COLORS.length]!,
        width: 2,
        spanGaps: false,
        points: { show: xs.length <= 60 },
        value: (_u: uPlot, v: number | null) => formatValue(v),
      })),
    ],
  };
  chart = new uPlot(opts, data, host);
}

const MAX_TABLE_ROWS = 1000;

function renderTable(result: QueryResult, body: QueryBody): void {
  const table = $('table');
  const fmt = timeFormat(body.interval, body.timezone);
  const head = el('tr', {}, el('th', { text: `Time (${body.timezone})` }), ...result.series.map((s) => el('th', { className: 'num', text: seriesLabel(s) })));
  table.querySelector('thead')!.replaceChildren(head);
  const n = result.series[0]?.points.length ?? 0;
  const rows: HTMLTableRowElement[] = [];
  for (let i = Math.max(0, n - MAX_TABLE_ROWS); i < n; i++) {
    const t = result.series[0]!.points[i]![0];
    const cells = result.series.map((s) => {
      const v = s.points[i]![1];
      const td = el('td', { className: 'num', text: formatValue(v) });
      td.dataset.value = v === null ? '' : String(v);
      return td;
    });
    const th = el('th', { text: fmt.format(t) });
    th.scope = 'row';
    const tr = el('tr', {}, th, ...cells);
    tr.dataset.time = String(t);
    rows.push(tr);
  }
  table.querySelector('tbody')!.replaceChildren(...rows);
  table.classList.toggle('truncated', n > MAX_TABLE_ROWS);
}

// ---- shop overview ---------------------------------------------------------------

const SHOP_TILES: { title: string; match: RegExp; aggregation: (kind: string) => string; unit?: string }[] = [
  { title: 'Orders', match: /(^|[._:/-])orders?($|[._:/-])/i, aggregation: (k) => (k === 'counter' ? 'sum' : 'count') },
  { title: 'Revenue', match: /revenue|sales/i, aggregation: () => 'sum' },
  { title: 'Page load p95', match: /page[._-]?load|load[._-]?time|lcp/i, aggregation: () => 'p95', unit: 'ms' },
];

async function renderOverview(l: Listing): Promise<void> {
  const tiles = $('tiles');
  const found = SHOP_TILES.map((t) => ({ ...t, metric: l.metrics.find((m) => t.match.test(m.name)) })).filter((t) => t.metric);
  $('overview').hidden = found.length === 0;
  if (!found.length) return;
  const timezone = $<HTMLInputElement>('timezone').value.trim() || browserZone;
  $('overview-note').textContent = `today vs. yesterday, ${timezone}`;
  const now = Date.now();
  tiles.replaceChildren(
    ...(await Promise.all(
      found.map(async (t) => {
        const m = t.metric!;
        const aggregation = t.aggregation(m.kind);
        const tile = el('button', { className: 'tile', title: `${m.name} · ${aggregation}` });
        tile.type = 'button';
        tile.dataset.metric = m.name;
        tile.addEventListener('click', () => {
          $<HTMLSelectElement>('metric').value = m.name;
          onMetricChange();
          $<HTMLSelectElement>('aggregation').value = aggregation;
          void runQuery();
        });
        const value = el('span', { className: 'value', text: '…' });
        const delta = el('span', { className: 'delta' });
        tile.append(el('span', { className: 'title', text: t.title }), value, delta, el('span', { className: 'name', text: m.name }));
        try {
          const r = await api<QueryResult>('/v1/query', { metric: m.name, aggregation, interval: 'day', timezone, from: now - 86_400_000, to: now + 1 });
          const pts = r.series[0]?.points ?? [];
          const today = pts.at(-1)?.[1] ?? null;
          const yesterday = pts.length > 1 ? pts.at(-2)![1] : null;
          value.textContent = formatValue(today) + (t.unit && today !== null ? ` ${t.unit}` : '');
          tile.dataset.value = today === null ? '' : String(today);
          if (today !== null && yesterday) {
            const pct = ((today - yesterday) / Math.abs(yesterday)) * 100;
            delta.textContent = `${pct >= 0 ? '+' : ''}${pct.toFixed(1)}% vs. yesterday`;
            delta.classList.add(pct >= 0 ? 'up' : 'down');
          }
        } catch (e) {
          value.textContent = '—';
          delta.textContent = e instanceof ApiError ? e.code : 'error';
        }
        return tile;
      }),
    )),
  );
}

// ---- wiring --------------------------------------------------------------------

function init(): void {
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $<HTMLInputElement>('token');
    const token = input.value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = '';
    void connect();
  });
  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    listing = undefined;
    chart?.destroy();
    chart = undefined;
    $('chart').replaceChildren();
    $('table').querySelector('thead')!.replaceChildren();
    $('table').querySelector('tbody')!.replaceChildren();
    showSession(false);
    setStatus('Disconnected.');
  });
  $('controls').addEventListener('submit', (ev) => {
    ev.preventDefault();
    void runQuery();
  });
  $('metric').addEventListener('change', () => {
    onMetricChange();
    void runQuery();
  });
  $('range').addEventListener('change', onRangeChange);
  $('filter-key').addEventListener('change', onFilterKeyChange);
  let resizeTimer: number | undefined;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(() => chart?.setSize({ width: Math.max(320, $('chart').clientWidth), height: 320 }), 100);
  });
  if (sessionStorage.getItem(TOKEN_KEY)) void connect();
}

init();
