/**
 * OTel attributes → Cipherstat tags, by one bounded rule (README "OpenTelemetry"):
 *
 * 1. Candidates, in this order: the data point's attributes (sorted by key), then the scope
 *    name as `otel.scope.name` (option `scopeName`), then the resource attributes named in
 *    `resourceAttributes` (in that order; default service.name, service.namespace,
 *    service.version, deployment.environment.name). On a key clash the earlier one wins.
 * 2. Keys: characters outside `[A-Za-z0-9_.-]` become `_`, a key not starting with a letter or
 *    `_` gets a `_` prefix; a key longer than 64 characters is dropped.
 * 3. Values: strings, numbers and booleans (as `String(v)`); arrays and empty values are
 *    dropped; a value longer than `maxTagValueLength` (default 128, at most 256) is cut to it.
 * 4. At most `maxTags` tags (default 16, the protocol's limit): later candidates are dropped.
 *
 * Every attribute dropped or cut is counted by reason (exporter.stats()).
 */
import type { Attributes } from '@opentelemetry/api';

export type AttributeDrop = 'too_many' | 'key_too_long' | 'duplicate_key' | 'unsupported_value' | 'truncated';

export interface TagRule {
  maxTags: number;
  maxTagValueLength: number;
}

const KEY_MAX = 64;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

export const tagKey = (key: string): string => {
  const k = key.replace(/[^A-Za-z0-9_.-]/g, '_');
  return /^[A-Za-z_]/.test(k) ? k : '_' + k;
};

/** The value as a tag value, or undefined when it cannot be one. */
function tagValue(v: unknown, max: number, count: (r: AttributeDrop) => void): string | undefined {
  if (typeof v != 'string' && typeof v != 'number' && typeof v != 'boolean') return undefined;
  let s = String(v).replace(/\u0000/g, '').replace(LONE_SURROGATE, '\ufffd');
  if (s === '') return undefined;
  if (s.length > max) {
    s = s.slice(0, /[\ud800-\udbff]/.test(s[max - 1]!) ? max - 1 : max);
    count('truncated');
  }
  return s;
}

/**
 * Tags for one data point: `attributes` first, then `extra` (scope and resource tags, already
 * in their order). Counts what it drops or cuts through `count`.
 */
export function toTags(attributes: Attributes, extra: [string, unknown][], rule: TagRule, count: (r: AttributeDrop) => void): Record<string, string> {
  const tags: Record<string, string> = {};
  let n = 0;
  const keys = Object.keys(attributes).sort();
  const candidates: [string, unknown][] = keys.map((k) => [k, attributes[k]]);
  for (const [key, value] of candidates.concat(extra)) {
    const k = tagKey(key);
    if (k.length > KEY_MAX) {
      count('key_too_long');
      continue;
    }
    if (k in tags) {
      count('duplicate_key');
      continue;
    }
    const v = tagValue(value, rule.maxTagValueLength, count);
    if (v === undefined) {
      count('unsupported_value');
      continue;
    }
    if (n == rule.maxTags) {
      count('too_many');
      continue;
    }
    tags[k] = v;
    n++;
  }
  return tags;
}
