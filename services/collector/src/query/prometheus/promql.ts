/**
 * The PromQL subset the Prometheus-compatible API answers, parsed with Prometheus's own
 * grammar (@prometheus-io/lezer-promql) into a small expression tree. Anything outside the
 * subset is a CollectorError(400, 'bad_data') that names the unsupported part.
 *
 * Subset (README "Grafana"):
 *   expr      := selector | fn(selector[range]) | quantile_over_time(φ, selector[range])
 *              | agg [by|without (labels)] (expr without agg) | number | number (+-*∕) number
 *   agg       := sum | avg | min | max | count
 *   fn        := increase | rate | sum_over_time | avg_over_time | min_over_time
 *              | max_over_time | count_over_time | last_over_time
 *   selector  := name{matchers} | {"dotted.name", matchers} | {__name__="name", matchers}
 *   matcher   := label (= | != | =~ | !~) "string"
 */
import { setFlagsFromString } from 'node:v8';
import { parser } from '@prometheus-io/lezer-promql';
import type { SyntaxNode } from '@lezer/common';
import { CollectorError } from '../../errors.js';

/** A query outside the subset or malformed: 400, errorType bad_data. */
const badData = (message: string) => new CollectorError(400, 'bad_data', message);

// V8's linear-time regular expression engine: the `l` flag of matcherRegex. Process-wide, set
// before any such expression is compiled; regular expressions without the flag are untouched.
setFlagsFromString('--enable-experimental-regexp-engine');

/**
 * A matcher's regular expression, anchored as in Prometheus (`^(?:…)$`), compiled for V8's
 * linear-time engine: its time is linear in the value it tests, like Prometheus's RE2. With the
 * backtracking engine a pattern such as `(a+)+` against a recorded value of 40 a's and a `!`
 * held the main thread (ingest, every account's queries) for minutes. What the linear engine
 * cannot run is refused with 400 bad_data: backreferences and lookarounds (which RE2 refuses
 * too) and counted repetitions above 16 (`a{1,20}`). It has no Unicode mode in this Node: `.`
 * and classes match UTF-16 code units (a character outside the BMP is two).
 */
export function matcherRegex(pattern: string, where: string): RegExp {
  try {
    return new RegExp(`^(?:${pattern})$`, 'l');
  } catch (e) {
    const linear = e instanceof Error && /linear time/.test(e.message);
    throw badData(
      linear
        ? `${where}: regular expression ${JSON.stringify(pattern)} cannot run in linear time (backreferences, lookarounds and repetition counts above 16 are not supported)`
        : `${where}: invalid regular expression ${JSON.stringify(pattern)}`,
    );
  }
}

export type MatchOp = '=' | '!=' | '=~' | '!~';
export interface Matcher {
  label: string;
  op: MatchOp;
  value: string;
}
export interface Selector {
  kind: 'selector';
  /** The metric name as written (after unquoting). */
  name: string;
  matchers: Matcher[];
}
export const RANGE_FUNCTIONS = ['increase', 'rate', 'sum_over_time', 'avg_over_time', 'min_over_time', 'max_over_time', 'count_over_time', 'last_over_time', 'quantile_over_time'] as const;
export type RangeFunction = (typeof RANGE_FUNCTIONS)[number];
export interface Call {
  kind: 'call';
  fn: RangeFunction;
  selector: Selector;
  /** The range of the matrix selector, in ms. */
  rangeMs: number;
  /** quantile_over_time's φ. */
  phi?: number;
}
export const AGGREGATIONS = ['sum', 'avg', 'min', 'max', 'count'] as const;
export type AggregationOp = (typeof AGGREGATIONS)[number];
export interface Aggregate {
  kind: 'aggregate';
  op: AggregationOp;
  /** by (labels) or without (labels); absent: everything aggregated into one series. */
  grouping?: { mode: 'by' | 'without'; labels: string[] };
  inner: Selector | Call;
}
export interface Scalar {
  kind: 'scalar';
  value: number;
}
export type Expr = Selector | Call | Aggregate | Scalar;

const unsupported = (what: string, src: string, n: SyntaxNode) => badData(`unsupported ${what}: ${src.slice(n.from, n.to)}`);

/** Parses `src` into the subset; throws CollectorError(400, 'bad_data') naming what is outside it. */
export function parsePromQL(src: string): Expr {
  if (src.trim() === '') throw badData('empty query');
  const tree = parser.parse(src);
  let error: number | undefined;
  tree.iterate({
    enter(n) {
      if (error === undefined && n.type.isError) error = n.from;
    },
  });
  if (error !== undefined) throw badData(`parse error at position ${error + 1}: ${JSON.stringify(src.slice(Math.max(0, error - 10), error + 10))}`);
  const top = tree.topNode.firstChild;
  if (!top) throw badData('empty query');
  return expr(src, top, 0);
}

const children = (n: SyntaxNode): SyntaxNode[] => {
  const out: SyntaxNode[] = [];
  for (let c = n.firstChild; c; c = c.nextSibling) out.push(c);
  return out;
};

function expr(src: string, n: SyntaxNode, depth: number): Expr {
  switch (n.name) {
    case 'ParenExpr': {
      const inner = children(n)[0];
      if (!inner) throw unsupported('expression', src, n);
      return expr(src, inner, depth);
    }
    case 'NumberDurationLiteral':
    case 'NumberLiteral': {
      const value = Number(src.slice(n.from, n.to));
      if (!Number.isFinite(value)) throw unsupported('number', src, n);
      return { kind: 'scalar', value };
    }
    case 'BinaryExpr':
      return binary(src, n, depth);
    case 'VectorSelector':
      return selector(src, n);
    case 'FunctionCall':
      return call(src, n);
    case 'AggregateExpr': {
      if (depth > 0) throw unsupported('nested aggregation', src, n);
      return aggregate(src, n);
    }
    case 'MatrixSelector':
      throw unsupported('range vector outside a function (wrap it in e.g. sum_over_time)', src, n);
    case 'OffsetExpr':
      throw unsupported('offset modifier', src, n);
    case 'StepInvariantExpr':
      throw unsupported('@ modifier', src, n);
    case 'SubqueryExpr':
      throw unsupported('subquery', src, n);
    case 'UnaryExpr':
      throw unsupported('unary operator', src, n);
    case 'StringLiteral':
      throw unsupported('string expression', src, n);
    default:
      throw unsupported(`expression (${n.name})`, src, n);
  }
}

/** Only number op number (Grafana's health check sends `1+1`). */
function binary(src: string, n: SyntaxNode, depth: number): Scalar {
  const [l, op, r, ...rest] = children(n);
  if (!l || !op || !r || rest.length) throw unsupported('binary expression', src, n);
  const a = expr(src, l, depth + 1);
  const b = expr(src, r, depth + 1);
  if (a.kind !== 'scalar' || b.kind !== 'scalar') throw unsupported('binary operator between series (only number op number)', src, n);
  const v = { Add: a.value + b.value, Sub: a.value - b.value, Mul: a.value * b.value, Div: a.value / b.value }[op.name];
  if (v === undefined) throw unsupported('binary operator', src, op);
  return { kind: 'scalar', value: v };
}

/** A PromQL string literal ("…" with Go escapes, '…', or `raw`). */
export function unquote(s: string): string {
  if (s.startsWith('`')) return s.slice(1, -1);
  if (s.startsWith("'")) s = `"${s.slice(1, -1).replace(/\\'/g, "'").replace(/"/g, '\\"')}"`;
  try {
    return JSON.parse(s) as string;
  } catch {
    throw badData(`unsupported string literal: ${s}`);
  }
}

const OPS: Record<string, MatchOp> = { EqlSingle: '=', Neq: '!=', EqlRegex: '=~', NeqRegex: '!~' };

function selector(src: string, n: SyntaxNode): Selector {
  let name: string | undefined;
  const matchers: Matcher[] = [];
  const setName = (v: string, at: SyntaxNode) => {
    if (name !== undefined) throw unsupported('selector with two metric names', src, at);
    name = v;
  };
  for (const c of children(n)) {
    if (c.name === 'Identifier') setName(src.slice(c.from, c.to), c);
    else if (c.name === 'LabelMatchers') {
      for (const m of children(c)) {
        if (m.name === 'QuotedLabelName') {
          setName(unquote(src.slice(m.from, m.to)), m);
          continue;
        }
        if (m.name !== 'UnquotedLabelMatcher' && m.name !== 'QuotedLabelMatcher') throw unsupported('label matcher', src, m);
        const [l, op, v] = children(m);
        if (!l || !op || !v) throw unsupported('label matcher', src, m);
        const label = l.name === 'QuotedLabelName' ? unquote(src.slice(l.from, l.to)) : src.slice(l.from, l.to);
        const mop = OPS[op.firstChild?.name ?? ''];
        if (!mop) throw unsupported('match operator', src, op);
        const value = unquote(src.slice(v.from, v.to));
        if (label === '__name__') {
          if (mop !== '=') throw unsupported('__name__ matcher other than = in a query', src, m);
          setName(value, m);
        } else matchers.push({ label, op: mop, value });
      }
    } else throw unsupported('selector part', src, c);
  }
  if (name === undefined) throw badData(`a selector needs a metric name: ${src.slice(n.from, n.to)}`);
  return { kind: 'selector', name, matchers };
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000, y: 31_536_000_000 };

/** A Prometheus duration (`1m`, `1h30m`, `90s`) or seconds as a number, in ms. */
export function parseDuration(s: string): number | undefined {
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  if (!/^(\d+(ms|s|m|h|d|w|y))+$/.test(s)) return undefined;
  let ms = 0;
  for (const [, n, u] of s.matchAll(/(\d+)(ms|s|m|h|d|w|y)/g)) ms += Number(n) * UNITS[u!]!;
  return ms;
}

function call(src: string, n: SyntaxNode): Call {
  const id = n.getChild('FunctionIdentifier');
  const fname = id ? src.slice(id.from, id.to) : '';
  const fn = RANGE_FUNCTIONS.find((f) => f === fname);
  if (!fn) throw badData(`unsupported function: ${fname || src.slice(n.from, n.to)} (supported: ${RANGE_FUNCTIONS.join(', ')})`);
  const args = children(n.getChild('FunctionCallBody')!);
  let phi: number | undefined;
  if (fn === 'quantile_over_time') {
    const p = args.shift();
    const e = p ? expr(src, p, 1) : undefined;
    if (!e || e.kind !== 'scalar') throw badData(`quantile_over_time needs a number φ first: ${src.slice(n.from, n.to)}`);
    phi = e.value;
  }
  const [m, ...rest] = args;
  if (!m || rest.length) throw badData(`${fn} takes ${fn === 'quantile_over_time' ? 'φ and ' : ''}one range vector: ${src.slice(n.from, n.to)}`);
  if (m.name !== 'MatrixSelector') throw badData(`${fn} needs a range vector selector like x[1m], not: ${src.slice(m.from, m.to)}`);
  const vs = m.getChild('VectorSelector');
  const d = m.getChild('DurationExpr');
  if (!vs || !d) throw unsupported('range selector', src, m);
  const rangeMs = parseDuration(src.slice(d.from, d.to));
  if (!rangeMs) throw unsupported('range duration', src, d);
  return { kind: 'call', fn, selector: selector(src, vs), rangeMs, ...(phi !== undefined ? { phi } : {}) };
}

function aggregate(src: string, n: SyntaxNode): Aggregate {
  const opNode = n.getChild('AggregateOp');
  const opName = opNode ? src.slice(opNode.from, opNode.to) : '';
  const op = AGGREGATIONS.find((a) => a === opName);
  if (!op) throw badData(`unsupported aggregation: ${opName} (supported: ${AGGREGATIONS.join(', ')})`);
  const mod = n.getChild('AggregateModifier');
  let grouping: Aggregate['grouping'];
  if (mod) {
    const mode = mod.getChild('By') ? 'by' : 'without';
    const labels = children(mod.getChild('GroupingLabels')!).map((l) => (l.name === 'QuotedLabelName' ? unquote(src.slice(l.from, l.to)) : src.slice(l.from, l.to)));
    grouping = { mode, labels };
  }
  const args = children(n.getChild('FunctionCallBody')!);
  if (args.length !== 1) throw badData(`${op} takes one expression: ${src.slice(n.from, n.to)}`);
  const inner = expr(src, args[0]!, 1);
  if (inner.kind !== 'selector' && inner.kind !== 'call') throw unsupported(`argument of ${op}`, src, args[0]!);
  return { kind: 'aggregate', op, ...(grouping ? { grouping } : {}), inner };
}
