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
  interval: string;
  timezone: string;
  groupBy?: string[];
  filter?: Record<string, string>;
}
interface QueryResult {
  series: Series[];
  meta: { from: number; to: number; level: string; rows: number; failedRows: number; cached: boolean };
}
/** POST /v1/query's `"format": "columns"` answer: every bucket start once, each series' values in that order. */
interface ColumnsAnswer {
  buckets: number[];
  series: { tags: Record<string, string>; values: (number | null)[] }[];
  meta: QueryResult['meta'];
}
/** What a comparison shows: this period's answer and the one of the same length just before it. */
interface Compared {
  body: QueryBody;
  current: QueryResult;
  previous: QueryResult;
  /** Per series key: one figure for each whole period (null: no data, or not combinable). */
  summary: Map<string, { now: number | null; before: number | null }>;
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

/** A same-origin GET without the token (the ingest role's public files), in a request slot too. */
async function publicGet(path: string): Promise<Response | undefined> {
  const release = await slot();
  try {
    const res = await fetch(path, { cache: 'no-store', credentials: 'omit' });
    if (!res.ok) return undefined;
    await res.clone().arrayBuffer(); // read the body before the slot passes on
    return res;
  } catch {
    return undefined;
  } finally {
    release();
  }
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

/** Selects `value` when the select offers it (and it is not disabled); says whether it did. */
function choose(select: HTMLSelectElement, value: string | null): boolean {
  if (value === null || !Array.from(select.options).some((o) => o.value === value && !o.disabled)) return false;
  select.value = value;
  return true;
}

function setStatus(text: string, kind: 'info' | 'error' = 'info'): void {
  const s = $('status');
  s.textContent = text;
  s.className = `status ${kind}`;
}

// ---- numbers, units, time --------------------------------------------------------

const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const CURRENCY = 'currency';

type Unit = { kind: 'none' } | { kind: 'ms' } | { kind: 'bytes' } | { kind: 'currency'; code: string | undefined };
const NONE: Unit = { kind: 'none' };

/**
 * The unit of an answer, from the metric's name (`…_ms`: milliseconds, `…_bytes`: bytes) or a
 * series' `currency` tag (amounts are never added across currencies: such metrics are always
 * split by currency, see currentQuery). A count is a number of events, whatever the metric measures.
 */
function unitOf(metric: string, aggregation: string, tags: Record<string, string> = {}): Unit {
  if (aggregation === 'count') return NONE;
  if (/[._-]ms$/i.test(metric)) return { kind: 'ms' };
  if (/[._-]bytes$/i.test(metric)) return { kind: 'bytes' };
  if (hasCurrency(metric)) return { kind: 'currency', code: tags[CURRENCY] };
  return NONE;
}

const hasCurrency = (metric: string): boolean => !!metricInfo(metric)?.tags.some((t) => t.key === CURRENCY);

const currencyFormats = new Map<string, Intl.NumberFormat | null>();
function currencyFormat(code: string): Intl.NumberFormat | null {
  if (!currencyFormats.has(code)) {
    let f: Intl.NumberFormat | null = null;
    try {
      f = new Intl.NumberFormat(undefined, { style: 'currency', currency: code });
    } catch {
      /* not an ISO 4217 code: the number and the tag value */
    }
    currencyFormats.set(code, f);
  }
  return currencyFormats.get(code)!;
}

const BYTE_UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

function formatValue(v: number | null, unit: Unit = NONE): string {
  if (v === null) return '—';
  switch (unit.kind) {
    case 'ms':
      return Math.abs(v) < 1000 ? `${oneDecimal.format(v)} ms` : `${numberFormat.format(v / 1000)} s`;
    case 'bytes': {
      let x = v;
      let i = 0;
      while (Math.abs(x) >= 1024 && i < BYTE_UNITS.length - 1) {
        x /= 1024;
        i++;
      }
      return `${(i ? oneDecimal : numberFormat).format(x)} ${BYTE_UNITS[i]}`;
    }
    case 'currency': {
      if (!unit.code) return numberFormat.format(v);
      const f = currencyFormat(unit.code);
      return f ? f.format(v) : `${numberFormat.format(v)} ${unit.code}`;
    }
    default:
      return numberFormat.format(v);
  }
}

/** The y axis' caption. */
function axisLabel(units: Unit[], aggregation: string): string {
  if (aggregation === 'count') return 'events';
  const u = units[0] ?? NONE;
  if (u.kind === 'ms') return 'duration';
  if (u.kind === 'bytes') return 'size';
  if (u.kind === 'currency') return units.every((x) => x.kind === 'currency' && x.code === u.code) && u.code ? `amount (${u.code})` : 'amount, per currency';
  return '';
}

/**
 * The page's one time format (chart axis, chart legend, table, comparison): day and month,
 * and a 24-hour clock unless the step is a day or longer, in the zone the viewer chose.
 */
function timeFormatter(interval: string, timeZone: string): (t: number) => string {
  const o: Intl.DateTimeFormatOptions = { timeZone, month: 'short', day: 'numeric' };
  if (interval === 'minute' || interval === 'hour') Object.assign(o, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  if (interval === 'month') Object.assign(o, { day: undefined, year: 'numeric' });
  const f = new Intl.DateTimeFormat(undefined, o);
  return (t) => f.format(t);
}

const seriesKey = (tags: Record<string, string>): string => JSON.stringify(Object.entries(tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

const seriesLabel = (tags: Record<string, string>): string => {
  const entries = Object.entries(tags);
  return entries.length ? entries.map(([k, v]) => `${k}: ${v}`).join(', ') : 'All';
};

// ---- state ---------------------------------------------------------------------

let listing: Listing | undefined;
let chart: uPlot | undefined;
let pollTimer: number | undefined;
/** How often the empty page asks whether the first data arrived. */
const POLL_MS = 3000;
const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
const RANGES: Record<string, { ms: number; words: string; allowed: string[]; preferred: string }> = {
  '1h': { ms: 3_600_000, words: 'hour', allowed: ['minute', 'hour'], preferred: 'minute' },
  '24h': { ms: 86_400_000, words: '24 hours', allowed: ['minute', 'hour', 'day'], preferred: 'hour' },
  '7d': { ms: 604_800_000, words: '7 days', allowed: ['hour', 'day'], preferred: 'hour' },
  '30d': { ms: 30 * 86_400_000, words: '30 days', allowed: ['hour', 'day', 'week'], preferred: 'day' },
  '90d': { ms: 90 * 86_400_000, words: '90 days', allowed: ['day', 'week', 'month'], preferred: 'day' },
  '365d': { ms: 365 * 86_400_000, words: '12 months', allowed: ['day', 'week', 'month'], preferred: 'month' },
};
const DEFAULT_AGGREGATION: Record<string, string> = { counter: 'sum', gauge: 'avg', histogram: 'p95' };
const COLORS = ['#1f6feb', '#d9480f', '#2f9e44', '#ae3ec9', '#f08c00', '#0c8599', '#e03131', '#5c7cfa', '#66a80f', '#862e9c'];
const STEP_WORDS: Record<string, string> = { minute: 'per-minute', hour: 'hourly', 'hour+minute': 'hourly and per-minute' };

const metricInfo = (name: string): MetricInfo | undefined => listing?.metrics.find((m) => m.name === name);

/** The default metric: the busiest (most events in the last 24 hours; ties by name). */
const busiest = (l: Listing): string | undefined => [...l.metrics].sort((a, b) => b.points24h - a.points24h || (a.name < b.name ? -1 : 1))[0]?.name;

const validZone = (zone: string): boolean => {
  try {
    new Intl.DateTimeFormat(undefined, { timeZone: zone });
    return true;
  } catch {
    return false;
  }
};

// ---- login, empty state ----------------------------------------------------------

async function connect(): Promise<void> {
  setStatus('Loading metrics…');
  let l: Listing;
  try {
    l = await api<Listing>('/v1/metrics');
  } catch (e) {
    listing = undefined;
    if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 410)) sessionStorage.removeItem(TOKEN_KEY);
    showSession(false);
    setStatus(e instanceof ApiError ? `${e.message} (${e.code})` : 'The collector is not reachable.', 'error');
    return;
  }
  showSession(true);
  $('account').textContent = l.accountId;
  $('account').title = l.accountId;
  listing = l;
  renderCatalog(l);
  if (l.metrics.length) await showData(l);
  else await showWelcome(l);
}

function showSession(on: boolean): void {
  $('login').hidden = on;
  $('session').hidden = !on;
  $('intro').hidden = on;
  $('catalog').hidden = !on;
  if (!on) $('overview').hidden = $('storefront').hidden = $('problems').hidden = $('explorer').hidden = $('welcome').hidden = true;
}

/** Metrics exist: the explorer (state from the URL, else the busiest metric) and the overview. */
async function showData(l: Listing): Promise<void> {
  clearTimeout(pollTimer);
  listing = l;
  $('welcome').hidden = true;
  $('explorer').hidden = false;
  renderCatalog(l);
  fillPickers(l);
  applyState(new URLSearchParams(location.search));
  setStatus('');
  await Promise.all([renderOverview(l), renderStorefront(l), runQuery(false)]);
}

/** No metric yet: the tag to paste, and a check every few seconds for the first data. */
async function showWelcome(l: Listing): Promise<void> {
  $('welcome').hidden = false;
  $('explorer').hidden = true;
  $('overview').hidden = true;
  setStatus('');
  if (!$('snippet').textContent) {
    const s = await snippetFor(l.accountId);
    $('snippet').textContent = s.text;
    $('snippet-note').textContent = s.note;
  }
  clearTimeout(pollTimer);
  pollTimer = window.setTimeout(() => void poll(), POLL_MS);
}

async function poll(): Promise<void> {
  if (!sessionStorage.getItem(TOKEN_KEY) || $('welcome').hidden) return;
  try {
    const l = await api<Listing>('/v1/metrics');
    if (l.metrics.length) return void (await showData(l));
    renderCatalog(l); // refusals show up while waiting
  } catch {
    /* asked again below */
  }
  if (!$('welcome').hidden) pollTimer = window.setTimeout(() => void poll(), POLL_MS);
}

const WRITE_KEY_PLACEHOLDER = 'YOUR-WRITE-KEY';
const toBase64 = (b: ArrayBuffer): string => btoa(String.fromCharCode(...new Uint8Array(b)));
const toHex = (b: ArrayBuffer): string => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, '0')).join('');

/**
 * The script tag `cipherstat accounts create` prints, as far as this page can know it: this
 * collector's address, the account, the pinned collector key (GET /v1/collector-key) and the
 * script at its content-named path with its integrity hash (computed here from the served
 * script, and used only when the collector serves that path). The write key is not known to a
 * read token: a placeholder the shop replaces.
 */
async function snippetFor(accountId: string): Promise<{ text: string; note: string }> {
  const origin = location.origin;
  const keyRes = await publicGet('/v1/collector-key');
  const key = keyRes ? ((await keyRes.json()) as { keyId: string; publicKey: string }) : undefined;
  const script = await publicGet('/cipherstat.min.js');
  if (!key || !script) {
    return {
      text: [
        `<script src="https://COLLECTOR/cipherstat.min.js" crossorigin="anonymous"`,
        `        data-endpoint="https://COLLECTOR" data-account="${accountId}" data-write-key="${WRITE_KEY_PLACEHOLDER}"></script>`,
      ].join('\n'),
      note: 'This address does not receive data (it only answers queries), so it cannot fill in the collector: use the tag that `cipherstat accounts create` printed.',
    };
  }
  let src = `${origin}/cipherstat.min.js`;
  let integrity = '';
  if (globalThis.crypto?.subtle) {
    const bytes = await script.arrayBuffer();
    const path = `/cipherstat.${toHex(await crypto.subtle.digest('SHA-256', bytes)).slice(0, 16)}.min.js`;
    if (await publicGet(path)) {
      src = origin + path;
      integrity = `sha384-${toBase64(await crypto.subtle.digest('SHA-384', bytes))}`;
    }
  }
  return {
    text: [
      `<script src="${src}"${integrity ? ` integrity="${integrity}"` : ''} crossorigin="anonymous"`,
      `        data-endpoint="${origin}" data-account="${accountId}" data-write-key="${WRITE_KEY_PLACEHOLDER}"`,
      `        data-collector-key-id="${key.keyId}" data-collector-key="${key.publicKey}"></script>`,
    ].join('\n'),
    note: integrity
      ? 'The script comes from this collector at an address named by its content; the integrity hash makes browsers refuse any other copy. Add the shop\'s address as an allowed origin of the account, or its data is turned away.'
      : 'This browser cannot compute the integrity hash on this page (it is not served over HTTPS), so the tag has none: `cipherstat accounts create` prints one with it.',
  };
}

// ---- catalog -------------------------------------------------------------------

function renderCatalog(l: Listing): void {
  const body = $('metrics').querySelector('tbody')!;
  const byVolume = [...l.metrics].sort((a, b) => b.points24h - a.points24h || (a.name < b.name ? -1 : 1));
  const none = el('tr', {}, el('td', { className: 'muted', text: 'None yet.' }));
  (none.firstChild as HTMLTableCellElement).colSpan = 4;
  body.replaceChildren(
    ...(byVolume.length ? [] : [none]),
    ...byVolume.map((m) => {
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

// ---- controls, URL state ----------------------------------------------------------

function fillPickers(l: Listing): void {
  options($<HTMLSelectElement>('metric'), l.metrics.map((m) => [m.name, m.name]).sort(([a], [b]) => (a! < b! ? -1 : 1)) as [string, string][]);
  const zones = (Intl as { supportedValuesOf?: (k: string) => string[] }).supportedValuesOf?.('timeZone') ?? [];
  $('timezones').replaceChildren(...['UTC', ...zones].map((z) => {
    const o = el('option');
    o.value = z;
    return o;
  }));
}

function onMetricChange(): void {
  const m = metricInfo($<HTMLSelectElement>('metric').value);
  if (!m) return;
  $<HTMLSelectElement>('aggregation').value = DEFAULT_AGGREGATION[m.kind] ?? 'count';
  options($<HTMLSelectElement>('group-by'), [['', '(nothing)'], ...m.tags.map((t): [string, string] => [t.key, t.key])], '');
  options($<HTMLSelectElement>('filter-key'), [['', '(everything)'], ...m.tags.map((t): [string, string] => [t.key, t.key])], '');
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
  const rule = RANGES[$<HTMLSelectElement>('range').value]!;
  const interval = $<HTMLSelectElement>('interval');
  for (const o of Array.from(interval.options)) o.disabled = !rule.allowed.includes(o.value);
  if (!rule.allowed.includes(interval.value)) interval.value = rule.preferred;
}

/** The choices on the page as URL parameters (the read token never goes into the URL). */
function stateParams(): URLSearchParams {
  const p = new URLSearchParams();
  p.set('metric', $<HTMLSelectElement>('metric').value);
  p.set('show', $<HTMLSelectElement>('aggregation').value);
  p.set('period', $<HTMLSelectElement>('range').value);
  p.set('step', $<HTMLSelectElement>('interval').value);
  const split = $<HTMLSelectElement>('group-by').value;
  if (split) p.set('split', split);
  const where = $<HTMLSelectElement>('filter-key').value;
  const is = $<HTMLInputElement>('filter-value').value;
  if (where && is) {
    p.set('where', where);
    p.set('is', is);
  }
  const zone = $<HTMLInputElement>('timezone').value.trim();
  p.set('tz', zone && validZone(zone) ? zone : browserZone);
  return p;
}

/** Restores the choices from URL parameters; what is missing or unknown gets its default. */
function applyState(p: URLSearchParams): void {
  const l = listing!;
  const wanted = p.get('metric');
  $<HTMLSelectElement>('metric').value = wanted !== null && metricInfo(wanted) ? wanted : busiest(l)!;
  onMetricChange();
  choose($<HTMLSelectElement>('aggregation'), p.get('show'));
  if (!choose($<HTMLSelectElement>('range'), p.get('period'))) $<HTMLSelectElement>('range').value = '24h';
  onRangeChange();
  choose($<HTMLSelectElement>('interval'), p.get('step'));
  choose($<HTMLSelectElement>('group-by'), p.get('split'));
  if (choose($<HTMLSelectElement>('filter-key'), p.get('where'))) {
    onFilterKeyChange();
    $<HTMLInputElement>('filter-value').value = p.get('is') ?? '';
  } else {
    $<HTMLSelectElement>('filter-key').value = '';
    onFilterKeyChange();
  }
  const tz = p.get('tz');
  $<HTMLInputElement>('timezone').value = tz && validZone(tz) ? tz : browserZone;
}

/** Writes the choices into the URL: a new history entry for a new choice, so Back returns to the previous one. */
function saveState(push: boolean): void {
  const search = `?${stateParams().toString()}`;
  if (search === location.search) return;
  if (push) history.pushState(null, '', search);
  else history.replaceState(null, '', search);
}

function currentQuery(): QueryBody {
  const range = RANGES[$<HTMLSelectElement>('range').value]!.ms;
  // Align `to` to the minute so that refreshes within a minute are answered from the cache.
  const to = Math.ceil(Date.now() / 60_000) * 60_000;
  const zone = $<HTMLInputElement>('timezone').value.trim();
  const body: QueryBody = {
    metric: $<HTMLSelectElement>('metric').value,
    aggregation: $<HTMLSelectElement>('aggregation').value,
    from: to - range,
    to,
    interval: $<HTMLSelectElement>('interval').value,
    timezone: zone && validZone(zone) ? zone : browserZone,
  };
  const groupBy = $<HTMLSelectElement>('group-by').value;
  const fk = $<HTMLSelectElement>('filter-key').value;
  const fv = $<HTMLInputElement>('filter-value').value;
  if (fk && fv) body.filter = { [fk]: fv };
  body.groupBy = groupBy ? [groupBy] : [];
  // Amounts in different currencies are never added up: split by currency unless one is chosen.
  if (body.aggregation !== 'count' && hasCurrency(body.metric) && fk !== CURRENCY && !body.groupBy.includes(CURRENCY)) body.groupBy.unshift(CURRENCY);
  if (!body.groupBy.length) delete body.groupBy;
  return body;
}

// ---- comparison with the previous period ------------------------------------------

/**
 * One figure for a whole period from its buckets, where the aggregation allows it: a total
 * (count, sum), the lowest, the highest, the latest, or an average weighted by each bucket's
 * count. A percentile of a period cannot be made from per-bucket percentiles: null.
 */
function periodFigure(s: Series | undefined, aggregation: string, counts: Series | undefined): number | null {
  const present = (s?.points ?? []).filter((p): p is [number, number] => p[1] !== null);
  if (!present.length) return null;
  const values = present.map(([, v]) => v);
  switch (aggregation) {
    case 'count':
    case 'sum':
      return values.reduce((a, b) => a + b, 0);
    case 'min':
      return Math.min(...values);
    case 'max':
      return Math.max(...values);
    case 'last':
      return values.at(-1)!;
    case 'avg': {
      const n = new Map((counts?.points ?? []).map(([t, c]) => [t, c ?? 0]));
      let count = 0;
      let total = 0;
      for (const [t, v] of present) {
        count += n.get(t) ?? 0;
        total += v * (n.get(t) ?? 0);
      }
      return count ? total / count : null;
    }
    default:
      return null;
  }
}

/** The change from `before` to `now`, in words a shop owner reads (absent and zero handled). */
function changeText(now: number | null, before: number | null): { text: string; pct: number | null; dir: 'up' | 'down' | 'flat' | '' } {
  if (now === null && before === null) return { text: 'no data in either period', pct: null, dir: '' };
  if (before === null) return { text: 'no data in the previous period', pct: null, dir: '' };
  if (now === null) return { text: 'no data in this period', pct: null, dir: '' };
  if (before === 0) return now === 0 ? { text: 'no change', pct: 0, dir: 'flat' } : { text: '▲ new (none before)', pct: null, dir: 'up' };
  const pct = ((now - before) / Math.abs(before)) * 100;
  const dir = pct > 0 ? 'up' : pct < 0 ? 'down' : 'flat';
  return { text: pct === 0 ? 'no change' : `${dir === 'up' ? '▲ +' : '▼ '}${oneDecimal.format(pct)}%`, pct, dir };
}

const findSeries = (r: QueryResult | undefined, key: string): Series | undefined => r?.series.find((s) => seriesKey(s.tags) === key);

/**
 * POST /v1/query in the compact `columns` form (20-54 % of the points form's bytes for grouped answers, so less
 * to move and parse), turned back into the points every view draws from: the same values.
 */
async function query(body: QueryBody | Record<string, unknown>): Promise<QueryResult> {
  const r = await api<ColumnsAnswer>('/v1/query', { ...body, format: 'columns' });
  const { buckets } = r;
  return { series: r.series.map((s) => ({ tags: s.tags, points: s.values.map((v, i): Point => [buckets[i]!, v]) })), meta: r.meta };
}

/** The answer's last `n` buckets (and `meta.from` moved to the first of them). */
function trimTo(r: QueryResult, n: number): QueryResult {
  const longest = Math.max(0, ...r.series.map((s) => s.points.length));
  if (longest <= n) return r;
  const series = r.series.map((s) => ({ ...s, points: s.points.slice(-n) }));
  return { series, meta: { ...r.meta, from: series[0]!.points[0]![0] } };
}

/**
 * Queries the period and the previous period of the same length (the buckets just before the
 * first bucket of the answer), plus the counts when an average needs weighting.
 */
async function compare(body: QueryBody): Promise<Compared> {
  const current = await query(body);
  const length = current.meta.to - current.meta.from;
  const before: QueryBody = { ...body, from: current.meta.from - length, to: current.meta.from };
  const weighted = body.aggregation === 'avg';
  const [earlier, countNow, countBefore] = await Promise.all([
    query(before),
    weighted ? query({ ...body, aggregation: 'count' }) : undefined,
    weighted ? query({ ...before, aggregation: 'count' }) : undefined,
  ]);
  // Days, weeks and months differ in length (DST, 28–31 days): the same length before may
  // start inside one more bucket. The previous period is the same number of buckets.
  const n = current.series[0]?.points.length;
  const previous = n ? trimTo(earlier, n) : earlier;
  const summary: Compared['summary'] = new Map();
  for (const s of [...current.series, ...previous.series]) {
    const key = seriesKey(s.tags);
    if (summary.has(key)) continue;
    summary.set(key, {
      now: periodFigure(findSeries(current, key), body.aggregation, findSeries(countNow, key)),
      before: periodFigure(findSeries(previous, key), body.aggregation, findSeries(countBefore, key)),
    });
  }
  return { body, current, previous, summary };
}

// ---- query, chart, table --------------------------------------------------------

let running = 0;

async function runQuery(push = true): Promise<void> {
  const ticket = ++running;
  saveState(push);
  const body = currentQuery();
  $('run').toggleAttribute('disabled', true);
  setStatus('Loading…');
  try {
    const c = await compare(body);
    if (ticket !== running) return;
    renderCompare(c);
    renderChart(c.current, body);
    renderTable(c);
    const m = c.current.meta;
    const step = STEP_WORDS[m.level] ?? m.level;
    $('meta').textContent = m.rows
      ? `Based on ${numberFormat.format(m.rows)} ${step} ${m.rows === 1 ? 'summary' : 'summaries'} of encrypted data.`
      : 'No data in this period.';
    $('tech').textContent =
      `${m.rows} encrypted rows (${m.level} rollups) opened for this period and ${c.previous.meta.rows} for the previous one; ` +
      `${m.failedRows + c.previous.meta.failedRows} failed to open; ${m.cached ? 'answered from the query cache' : 'computed for this request'}; ` +
      `buckets ${new Date(m.from).toISOString()} – ${new Date(m.to).toISOString()}.`;
    const failed = m.failedRows + c.previous.meta.failedRows;
    setStatus(failed ? `${failed} stored ${failed === 1 ? 'summary' : 'summaries'} could not be read and ${failed === 1 ? 'is' : 'are'} left out of these numbers.` : '', failed ? 'error' : 'info');
  } catch (e) {
    if (ticket !== running) return;
    setStatus(e instanceof ApiError ? `${e.message} (${e.code})` : String(e), 'error');
  } finally {
    if (ticket === running) $('run').toggleAttribute('disabled', false);
  }
}

const AGGREGATION_WORDS: Record<string, string> = {
  count: 'Number of events',
  sum: 'Total',
  avg: 'Average',
  min: 'Lowest',
  max: 'Highest',
  p50: 'Median',
  p75: '75th percentile',
  p90: '90th percentile',
  p95: '95th percentile',
  p99: '99th percentile',
  last: 'Latest value',
};

function renderCompare(c: Compared): void {
  const host = $('compare');
  const { body, current, previous } = c;
  const fmt = timeFormatter(body.interval, body.timezone);
  const words = RANGES[$<HTMLSelectElement>('range').value]?.words ?? 'period';
  const rows: HTMLElement[] = [];
  if (!['count', 'sum', 'min', 'max', 'last', 'avg'].includes(body.aggregation)) {
    rows.push(
      el('p', {
        className: 'muted',
        text: `A ${AGGREGATION_WORDS[body.aggregation]?.toLowerCase() ?? body.aggregation} of a whole period cannot be made from per-${body.interval} figures: the table compares each ${body.interval} with the same ${body.interval} of the previous ${words}.`,
      }),
    );
  } else {
    for (const [key, { now, before }] of [...c.summary].slice(0, 12)) {
      const tags = Object.fromEntries(JSON.parse(key) as [string, string][]);
      const unit = unitOf(body.metric, body.aggregation, tags);
      const ch = changeText(now, before);
      const row = el(
        'div',
        { className: 'cmp' },
        el('span', { className: 'label', text: `${seriesLabel(tags)}:` }),
        el('strong', { className: 'now', text: formatValue(now, unit) }),
        el('span', { className: `change ${ch.dir}`, text: ch.text }),
        ...(before === null ? [] : [el('span', { className: 'before', text: `previous ${words}: ${formatValue(before, unit)}` })]),
      );
      row.dataset.series = seriesLabel(tags);
      row.dataset.now = now === null ? '' : String(now);
      row.dataset.before = before === null ? '' : String(before);
      row.dataset.change = ch.pct === null ? '' : String(ch.pct);
      rows.push(row);
    }
  }
  host.replaceChildren(
    el('p', { className: 'period', text: `${AGGREGATION_WORDS[body.aggregation] ?? body.aggregation}, ${fmt(current.meta.from)} until now, compared with ${fmt(previous.meta.from)} – ${fmt(previous.meta.to)}` }),
    ...rows,
  );
}

function renderChart(result: QueryResult, body: QueryBody): void {
  const host = $('chart');
  chart?.destroy();
  chart = undefined;
  host.replaceChildren();
  const xs = result.series[0]?.points.map(([t]) => t) ?? [];
  if (!xs.length) {
    host.append(el('p', { className: 'empty', text: 'No data in this period.' }));
    return;
  }
  const data: uPlot.AlignedData = [xs, ...result.series.map((s) => s.points.map(([, v]) => v))];
  const fmt = timeFormatter(body.interval, body.timezone);
  const units = result.series.map((s) => unitOf(body.metric, body.aggregation, s.tags));
  const axisUnit = units.every((u) => JSON.stringify(u) === JSON.stringify(units[0])) ? units[0]! : NONE;
  // The axes are drawn on a canvas: their labels are also kept on the element (readable, testable).
  const axisLabels = (name: 'xLabels' | 'yLabels', labels: string[]): string[] => {
    host.dataset[name] = JSON.stringify(labels);
    return labels;
  };
  const opts: uPlot.Options = {
    width: Math.max(200, host.clientWidth || 800),
    height: 320,
    ms: 1,
    tzDate: (ts) => uPlot.tzDate(new Date(ts), body.timezone),
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true } },
    axes: [
      { stroke: '#57606a', grid: { stroke: '#eaeef2' }, space: 110, values: (_u, splits) => axisLabels('xLabels', splits.map((t) => fmt(t))) },
      { stroke: '#57606a', grid: { stroke: '#eaeef2' }, size: 80, label: axisLabel(units, body.aggregation), values: (_u, splits) => axisLabels('yLabels', splits.map((v) => formatValue(v, axisUnit))) },
    ],
    series: [
      { label: 'Time', value: (_u, v) => (v == null ? '—' : fmt(v)) },
      ...result.series.map((s, i) => ({
        label: seriesLabel(s.tags),
        stroke: COLORS[i % COLORS.length]!,
        width: 2,
        spanGaps: false,
        points: { show: xs.length <= 60 },
        value: (_u: uPlot, v: number | null) => formatValue(v, units[i]),
      })),
    ],
  };
  chart = new uPlot(opts, data, host);
}

const MAX_TABLE_ROWS = 1000;

/** Newest first; with a single line, each bucket next to the same bucket of the previous period. */
function renderTable(c: Compared): void {
  const { body, current, previous } = c;
  const table = $('table');
  const fmt = timeFormatter(body.interval, body.timezone);
  const single = current.series.length === 1;
  const earlier = single ? findSeries(previous, seriesKey(current.series[0]!.tags)) : undefined;
  const aligned = !!earlier && earlier.points.length === current.series[0]!.points.length;
  const units = current.series.map((s) => unitOf(body.metric, body.aggregation, s.tags));
  const head = el(
    'tr',
    {},
    el('th', { text: `Time (${body.timezone})` }),
    ...current.series.map((s) => el('th', { className: 'num', text: seriesLabel(s.tags) })),
    ...(aligned ? [el('th', { className: 'num', text: 'Previous period' }), el('th', { className: 'num', text: 'Change' })] : []),
  );
  table.querySelector('thead')!.replaceChildren(head);
  const n = current.series[0]?.points.length ?? 0;
  const rows: HTMLTableRowElement[] = [];
  for (let i = n - 1; i >= Math.max(0, n - MAX_TABLE_ROWS); i--) {
    const t = current.series[0]!.points[i]![0];
    const cells = current.series.map((s, j) => {
      const v = s.points[i]![1];
      const td = el('td', { className: 'num', text: formatValue(v, units[j]) });
      td.dataset.value = v === null ? '' : String(v);
      return td;
    });
    if (aligned) {
      const was = earlier!.points[i]![1];
      const prev = el('td', { className: 'num previous', text: formatValue(was, units[0]) });
      prev.dataset.value = was === null ? '' : String(was);
      const ch = changeText(current.series[0]!.points[i]![1], was);
      cells.push(prev, el('td', { className: `num change ${ch.dir}`, text: ch.pct === null && ch.dir === '' ? '—' : ch.text }));
    }
    const th = el('th', { text: fmt(t) });
    th.scope = 'row';
    const tr = el('tr', {}, th, ...cells);
    tr.dataset.time = String(t);
    rows.push(tr);
  }
  table.querySelector('tbody')!.replaceChildren(...rows);
  table.classList.toggle('truncated', n > MAX_TABLE_ROWS);
}

// ---- shop overview ---------------------------------------------------------------

const SHOP_TILES: { title: string; match: RegExp; aggregation: (kind: string) => string }[] = [
  { title: 'Orders', match: /(^|[._:/-])orders?($|[._:/-])/i, aggregation: (k) => (k === 'counter' ? 'sum' : 'count') },
  { title: 'Revenue', match: /revenue|sales/i, aggregation: () => 'sum' },
  { title: 'Page load, average', match: /page[._-]?load|load[._-]?time|lcp/i, aggregation: () => 'avg' },
];

/** Last 24 hours against the 24 hours before, for the storefront metrics the account records. */
async function renderOverview(l: Listing): Promise<void> {
  const tiles = $('tiles');
  const found = SHOP_TILES.map((t) => ({ ...t, metric: l.metrics.find((m) => t.match.test(m.name)) })).filter((t) => t.metric);
  $('overview').hidden = found.length === 0;
  if (!found.length) return;
  const timezone = $<HTMLInputElement>('timezone').value.trim() || browserZone;
  $('overview-note').textContent = 'last 24 hours, compared with the 24 hours before';
  const to = Math.ceil(Date.now() / 60_000) * 60_000;
  tiles.replaceChildren(
    ...(await Promise.all(
      found.map(async (t) => {
        const m = t.metric!;
        const aggregation = t.aggregation(m.kind);
        const tile = el('button', { className: 'tile', title: `${m.name} · ${AGGREGATION_WORDS[aggregation]}` });
        tile.type = 'button';
        tile.dataset.metric = m.name;
        tile.addEventListener('click', () => {
          $<HTMLSelectElement>('metric').value = m.name;
          onMetricChange();
          $<HTMLSelectElement>('aggregation').value = aggregation;
          $<HTMLSelectElement>('range').value = '24h';
          onRangeChange();
          void runQuery();
        });
        const lines = el('span', { className: 'lines' });
        tile.append(el('span', { className: 'title', text: t.title }), lines, el('span', { className: 'name', text: m.name }));
        try {
          const body: QueryBody = { metric: m.name, aggregation, interval: 'hour', timezone, from: to - 86_400_000, to };
          if (aggregation !== 'count' && m.tags.some((x) => x.key === CURRENCY)) body.groupBy = [CURRENCY];
          const c = await compare(body);
          const figures = [...c.summary].slice(0, 4);
          if (!figures.length) lines.append(el('span', { className: 'value', text: '—' }), el('span', { className: 'delta', text: 'no data in either period' }));
          for (const [key, { now, before }] of figures) {
            const tags = Object.fromEntries(JSON.parse(key) as [string, string][]);
            const unit = unitOf(m.name, aggregation, tags);
            const ch = changeText(now, before);
            const value = el('span', { className: 'value', text: formatValue(now, unit) });
            value.dataset.value = now === null ? '' : String(now);
            lines.append(value, el('span', { className: `delta ${ch.dir}`, text: before === null ? ch.text : `${ch.text} (before: ${formatValue(before, unit)})` }));
          }
        } catch (e) {
          lines.append(el('span', { className: 'value', text: '—' }), el('span', { className: 'delta', text: e instanceof ApiError ? e.code : 'error' }));
        }
        return tile;
      }),
    )),
  );
}

// ---- storefront view -------------------------------------------------------------
//
// The storefront build's metrics (README "Storefront analytics") for one calendar period in the
// viewer's zone (today, this week, this month: one bucket of the query API, so visitors and p75
// are the collector's exact merge of the period, not a sum of smaller ones) next to the period
// before it. Visitors are `uniq` of page views: a visitor counts once per UTC day (README
// "Unique visitors"), so a week's visitors add up its days' visitors.

/** Google's thresholds (web.dev): good ≤ first, poor > second. */
const VITALS: { metric: string; name: string; good: number; poor: number; unit: Unit }[] = [
  { metric: 'vitals.lcp', name: 'Largest Contentful Paint', good: 2500, poor: 4000, unit: { kind: 'ms' } },
  { metric: 'vitals.inp', name: 'Interaction to Next Paint', good: 200, poor: 500, unit: { kind: 'ms' } },
  { metric: 'vitals.cls', name: 'Cumulative Layout Shift', good: 0.1, poor: 0.25, unit: NONE },
  { metric: 'vitals.fcp', name: 'First Contentful Paint', good: 1800, poor: 3000, unit: { kind: 'ms' } },
  { metric: 'vitals.ttfb', name: 'Time to First Byte', good: 800, poor: 1800, unit: { kind: 'ms' } },
];
const FUNNEL: [metric: string, label: string][] = [
  ['commerce.view_item', 'Viewed an item'],
  ['commerce.add_to_cart', 'Added to cart'],
  ['commerce.begin_checkout', 'Began checkout'],
  ['commerce.purchase', 'Purchased'],
];
const PERIODS: Record<string, { span: number; now: string; before: string }> = {
  day: { span: 86_400_000, now: 'today so far', before: 'yesterday' },
  week: { span: 7 * 86_400_000, now: 'this week so far', before: 'last week' },
  month: { span: 31 * 86_400_000, now: 'this month so far', before: 'last month' },
};
const STOREFRONT_METRICS = /^(page\.views|referrals|commerce\.|vitals\.)/;

/** Per series (key: its tag values joined by ' '), [this period, the period before]. */
type PeriodPair = Map<string, [number | null, number | null]>;

async function periodQuery(metric: string, aggregation: string, groupBy: string[] = []): Promise<PeriodPair> {
  const out: PeriodPair = new Map();
  if (!metricInfo(metric)) return out;
  const interval = $<HTMLSelectElement>('sf-period').value;
  const timezone = $<HTMLInputElement>('timezone').value.trim() || browserZone;
  const to = Date.now();
  const r = await query({ metric, aggregation, interval, timezone, from: to - PERIODS[interval]!.span, to, groupBy });
  for (const s of r.series) {
    const n = s.points.length;
    out.set(groupBy.map((k) => s.tags[k] ?? '(none)').join(' · '), [s.points[n - 1]?.[1] ?? null, n > 1 ? s.points[n - 2]![1] : null]);
  }
  return out;
}
const total = (p: PeriodPair): [number | null, number | null] => p.get('') ?? [0, 0];

/** A figure, its change against the period before, and the exact value for tests and copy. */
function figure(now: number | null, before: number | null, unit: Unit = NONE): HTMLElement {
  const ch = changeText(now, before);
  const value = el('span', { className: 'value', text: formatValue(now, unit) });
  value.dataset.value = now === null ? '' : String(now);
  const delta = el('span', { className: `delta ${ch.dir}`, text: ch.text, title: `the period before: ${formatValue(before, unit)}` });
  delta.dataset.before = before === null ? '' : String(before);
  return el('span', { className: 'figure' }, value, delta);
}

function sfTable(id: string, head: string[], rows: (string | Node)[][]): void {
  const table = $(id);
  table.querySelector('thead')!.replaceChildren(el('tr', {}, ...head.map((h, i) => el('th', { text: h, className: i ? 'num' : '' }))));
  table.querySelector('tbody')!.replaceChildren(
    ...(rows.length ? rows : [['no data in this period']]).map((r) => el('tr', {}, ...r.map((c, i) => (typeof c === 'string' ? el('td', { text: c, className: i ? 'num' : '' }) : el('td', { className: 'num' }, c))))),
  );
}

const pct = (part: number | null, whole: number | null): string => (part === null || !whole ? '—' : `${oneDecimal.format((100 * part) / whole)} %`);

async function renderStorefront(l: Listing): Promise<void> {
  const section = $('storefront');
  section.hidden = !l.metrics.some((m) => STOREFRONT_METRICS.test(m.name));
  if (section.hidden) return;
  const period = PERIODS[$<HTMLSelectElement>('sf-period').value]!;
  $('storefront-note').textContent = `${period.now}, compared with ${period.before}`;
  section.dataset.state = 'loading';
  try {
    const [visitors, views, pages, pageVisitors, sources, campaigns, steps, revenue, orders, vitals] = await Promise.all([
      periodQuery('page.views', 'uniq'),
      periodQuery('page.views', 'sum'),
      periodQuery('page.views', 'sum', ['path']),
      periodQuery('page.views', 'uniq', ['path']),
      periodQuery('referrals', 'sum', ['referrer']),
      periodQuery('referrals', 'sum', ['utm_source', 'utm_medium', 'utm_campaign']),
      Promise.all(FUNNEL.map(([m]) => periodQuery(m, 'sum'))),
      periodQuery('commerce.revenue', 'sum', [CURRENCY]),
      periodQuery('commerce.purchase', 'sum', [CURRENCY]),
      Promise.all(VITALS.map((v) => periodQuery(v.metric, 'p75'))),
    ]);
    const kpi = (name: string, title: string, f: HTMLElement) => {
      const tile = el('div', { className: 'tile' }, el('span', { className: 'title', text: title }), f);
      tile.dataset.kpi = name;
      return tile;
    };
    $('sf-kpis').replaceChildren(kpi('visitors', 'Visitors', figure(...total(visitors))), kpi('pageviews', 'Page views', figure(...total(views))));

    const byNow = (p: PeriodPair) => [...p].filter(([, [now]]) => now).sort((a, b) => b[1][0]! - a[1][0]! || (a[0] < b[0] ? -1 : 1));
    sfTable('sf-pages', ['Page', 'Views', 'Visitors'], byNow(pages).slice(0, 10).map(([path, [n, b]]) => [path, figure(n, b), figure(...(pageVisitors.get(path) ?? [null, null]))]));
    sfTable('sf-sources', ['Referrer', 'Visits'], byNow(sources).filter(([k]) => k !== '(none)').slice(0, 10).map(([k, [n, b]]) => [k, figure(n, b)]));
    sfTable('sf-campaigns', ['Source · medium · campaign', 'Visits'], byNow(campaigns).filter(([k]) => k !== '(none) · (none) · (none)').slice(0, 10).map(([k, [n, b]]) => [k, figure(n, b)]));

    const counts = steps.map((s) => total(s));
    sfTable(
      'sf-funnel',
      ['Step', 'Events', 'From the step before', 'From the first step'],
      FUNNEL.map(([, label], i) => [label, figure(...counts[i]!), i ? pct(counts[i]![0], counts[i - 1]![0]) : '', i ? pct(counts[i]![0], counts[0]![0]) : '']),
    );

    sfTable(
      'sf-revenue',
      ['Currency', 'Revenue', 'Orders', 'Average order value'],
      byNow(revenue).map(([cur, [n, b]]) => {
        const [o, ob] = orders.get(cur) ?? [null, null];
        const unit: Unit = { kind: 'currency', code: cur };
        return [cur, figure(n, b, unit), figure(o, ob), figure(n !== null && o ? n / o : null, b !== null && ob ? b / ob : null, unit)];
      }),
    );

    sfTable(
      'sf-vitals',
      ['Metric', 'p75', 'Rating'],
      VITALS.flatMap((v, i) => {
        const [n, b] = total(vitals[i]!);
        if (n === null && b === null) return [];
        const rating = n === null ? '—' : n <= v.good ? 'good' : n <= v.poor ? 'needs improvement' : 'poor';
        const badge = el('span', { className: `rating ${rating.replace(/ /g, '-')}`, text: rating });
        return [[`${v.name} (${v.metric})`, figure(n, b, v.unit), badge]];
      }),
    );
    section.dataset.state = 'ready';
  } catch (e) {
    section.dataset.state = 'error';
    $('storefront-note').textContent = e instanceof ApiError ? `could not load: ${e.code}` : 'could not load';
  }
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
    clearTimeout(pollTimer);
    listing = undefined;
    chart?.destroy();
    chart = undefined;
    for (const id of ['chart', 'compare', 'snippet', 'snippet-note']) $(id).replaceChildren();
    $('table').querySelector('thead')!.replaceChildren();
    $('table').querySelector('tbody')!.replaceChildren();
    showSession(false);
    setStatus('Disconnected.');
  });
  $('copy').addEventListener('click', () => {
    const note = $('copy-note');
    navigator.clipboard?.writeText($('snippet').textContent ?? '').then(
      () => (note.textContent = 'Copied.'),
      () => (note.textContent = 'Select the text above and copy it.'),
    ) ?? (note.textContent = 'Select the text above and copy it.');
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
  $('sf-period').addEventListener('change', () => listing && void renderStorefront(listing));
  $('filter-key').addEventListener('change', onFilterKeyChange);
  window.addEventListener('popstate', () => {
    if (!listing?.metrics.length || $('explorer').hidden) return;
    applyState(new URLSearchParams(location.search));
    void runQuery(false);
  });
  let resizeTimer: number | undefined;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(() => chart?.setSize({ width: Math.max(200, $('chart').clientWidth), height: 320 }), 100);
  });
  if (sessionStorage.getItem(TOKEN_KEY)) void connect();
}

init();
