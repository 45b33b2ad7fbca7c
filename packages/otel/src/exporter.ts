/**
 * CipherstatMetricExporter: a PushMetricExporter for @opentelemetry/sdk-metrics that records
 * every data point into a Cipherstat Library (created here, from the same options), which seals
 * it on this host and sends it end-to-end encrypted.
 *
 * - Sums (counters, up-down counters, observable ones) → `count(name, delta)`; gauges →
 *   `gauge(name, value)`; histograms → one `observe` per observation (histogram.ts).
 * - Temporality: delta for every instrument by default (the Library's counters are deltas).
 *   With `temporality: 'cumulative'` (or any cumulative point) the exporter keeps each stream's
 *   previous point and sends the difference; a new start time (restart, reset) sends the whole
 *   point. State is kept per stream, across exports (the SDK may split one collection into
 *   several exports, `maxExportBatchSize`): as long as the SDK keeps the stream's cumulative state.
 * - export() records, then awaits the Library's flush(): SUCCESS when nothing was dropped and
 *   the Library reported no error meanwhile, FAILED (with the LibraryError or a drop summary)
 *   otherwise, and after shutdown(). Exports run one after another.
 * - forceFlush() and shutdown() flush (and shut down) the Library.
 */
import { diag } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import {
  AggregationTemporality,
  AggregationType,
  DataPointType,
  InstrumentType,
  type AggregationOption,
  type ExponentialHistogram,
  type Histogram,
  type MetricData,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { createLibrary, type DropInfo, type DropReason, type Library, type LibraryError, type LibraryOptions } from '@cipherstat/library';
import { explicitBuckets, exponentialBuckets, observations, type Buckets } from './histogram.js';
import { toTags, type AttributeDrop, type TagRule } from './tags.js';

export interface CipherstatExporterOptions extends LibraryOptions {
  /** 'delta' (default) or 'cumulative': what the SDK is asked for (selectAggregationTemporality). */
  temporality?: 'delta' | 'cumulative';
  /** Aggregation asked for histogram instruments: 'exponential' (default) or 'explicit' (the SDK's buckets). */
  histogram?: 'exponential' | 'explicit';
  /** Resource attributes sent as tags, in this order. Default: service.name, service.namespace, service.version, deployment.environment.name. */
  resourceAttributes?: string[];
  /** Send the instrumentation scope's name as tag `otel.scope.name`. Default true. */
  scopeName?: boolean;
  /** Tags per point, 0..16. Default 16. */
  maxTags?: number;
  /** Characters per tag value, 1..256; longer values are cut. Default 128. */
  maxTagValueLength?: number;
  /**
   * Longest wait (ms) of one export for the Library's delivery (each of its flushes), default
   * 15,000: half the SDK reader's own export timeout (30 s), so an export ends before the reader
   * gives up on it (which would skip the rest of a collection split by maxExportBatchSize).
   * Past it the export ends; what is not delivered yet stays with the Library (retried, kept in
   * persistPath, reported if dropped).
   */
  exportTimeout?: number;
}

export interface ExporterStats {
  exports: { success: number; failed: number };
  /** Attributes not sent as tags (or cut), by reason. */
  attributes: Partial<Record<AttributeDrop, number>>;
  /** Points the Library dropped, by reason (LibraryOptions.onDrop is still called). */
  points: Partial<Record<DropReason, number>>;
}

export const DEFAULT_RESOURCE_ATTRIBUTES = ['service.name', 'service.namespace', 'service.version', 'deployment.environment.name'];

/** What the Library counts for a batch before its points (packages/library/src/batch.ts OVERHEAD). */
const BATCH_OVERHEAD = 400;

type Window = { drops: number; reasons: Partial<Record<DropReason, number>>; error?: LibraryError };
type Previous = { start: string; value: number | Histogram | ExponentialHistogram };

export class CipherstatMetricExporter implements PushMetricExporter {
  readonly library: Library;
  private readonly temporality: AggregationTemporality;
  private readonly exponential: boolean;
  private readonly resourceAttributes: string[];
  private readonly scopeName: boolean;
  private readonly rule: TagRule;
  private readonly chunk: { batches: number; chars: number; batchPoints: number; batchBytes: number };
  private readonly counts: ExporterStats = { exports: { success: 0, failed: 0 }, attributes: {}, points: {} };
  /** Drops and errors seen during the export in progress. */
  private window: Window | undefined;
  private previous = new Map<string, Previous>();
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;
  /** Waits for delivery in progress: shutdown() ends them (the Library's shutdown bounds delivery then). */
  private readonly waits = new Set<() => void>();
  /** Ends the wait for delivery of the export before the newest one (whose flush covers its points too). */
  private wake: () => void = () => {};
  private readonly exportTimeout: number;

  constructor(options: CipherstatExporterOptions) {
    const { temporality = 'delta', histogram = 'exponential', resourceAttributes = DEFAULT_RESOURCE_ATTRIBUTES, scopeName = true, maxTags = 16, maxTagValueLength = 128, exportTimeout = 15_000, ...library } = options;
    const bad = (what: string) => {
      throw new TypeError('@cipherstat/otel: invalid option ' + what);
    };
    if (temporality != 'delta' && temporality != 'cumulative') bad('temporality');
    if (histogram != 'exponential' && histogram != 'explicit') bad('histogram');
    if (!Number.isInteger(maxTags) || maxTags < 0 || maxTags > 16) bad('maxTags: 0..16');
    if (!Number.isInteger(maxTagValueLength) || maxTagValueLength < 1 || maxTagValueLength > 256) bad('maxTagValueLength: 1..256');
    if (!Array.isArray(resourceAttributes) || !resourceAttributes.every((a) => typeof a == 'string')) bad('resourceAttributes');
    if (!(exportTimeout > 0)) bad('exportTimeout');
    this.exportTimeout = exportTimeout;
    this.temporality = temporality == 'delta' ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE;
    this.exponential = histogram == 'exponential';
    this.resourceAttributes = resourceAttributes;
    this.scopeName = scopeName;
    this.rule = { maxTags, maxTagValueLength };
    // Never hand the Library more than half of what it holds unsent (maxPersistedBatches
    // batches — each cut at maxBatchSize points or maxBatchBytes, as it estimates them —
    // and maxPersistedBytes characters) before awaiting its flush: past that it would drop
    // the oldest batches (queue_full, persist_overflow).
    this.chunk = {
      batches: Math.max(1, Math.floor((library.maxPersistedBatches ?? 50) / 2)),
      chars: (library.maxPersistedBytes ?? 1e6) / 2,
      batchPoints: library.maxBatchSize ?? 500,
      batchBytes: library.maxBatchBytes ?? 32 * 1024,
    };
    const { onDrop, onError } = library;
    this.library = createLibrary({
      ...library,
      onDrop: (reason: DropReason, info: DropInfo) => {
        this.counts.points[reason] = (this.counts.points[reason] ?? 0) + info.count;
        if (this.window) (this.window.drops += info.count), (this.window.reasons[reason] = (this.window.reasons[reason] ?? 0) + info.count);
        onDrop?.(reason, info);
      },
      onError: (e: LibraryError) => {
        if (this.window) this.window.error ??= e;
        onError?.(e);
      },
    });
  }

  selectAggregationTemporality(_type: InstrumentType): AggregationTemporality {
    return this.temporality;
  }

  selectAggregation(type: InstrumentType): AggregationOption {
    return type == InstrumentType.HISTOGRAM && this.exponential ? { type: AggregationType.EXPONENTIAL_HISTOGRAM } : { type: AggregationType.DEFAULT };
  }

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    // a callback that throws must not break the chain every later export waits on
    const answer = (result: ExportResult) => {
      try {
        resultCallback(result);
      } catch (e) {
        diag.error('@cipherstat/otel: the export result callback threw', e);
      }
    };
    if (this.stopped) return this.counts.exports.failed++, resultCallback({ code: ExportResultCode.FAILED, error: new Error('@cipherstat/otel: exporter is shut down') });
    this.wake(); // the export waiting for delivery (if any) ends: this one's flush covers its points too
    const woken = new Promise<void>((r) => (this.wake = r));
    this.chain = this.chain.then(() =>
      this.send(metrics, woken).then(
        (result) => {
          this.counts.exports[result.code == ExportResultCode.SUCCESS ? 'success' : 'failed']++;
          answer(result);
        },
        (error) => {
          this.counts.exports.failed++;
          answer({ code: ExportResultCode.FAILED, error });
        },
      ),
    );
  }

  async forceFlush(): Promise<void> {
    await this.chain;
    await this.delivered(); // the SDK's reader calls this after each forced export, and at shutdown before shutdown()
  }

  /** The Library's flush, at most exportTimeout, and not past the start of shutdown() (nor `also`). */
  private delivered(also?: Promise<void>): Promise<void> | undefined {
    if (this.stopped) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stop!: () => void;
    // one waiter per wait, released when it ends (not a reaction on one long-lived promise per export)
    const stopped = new Promise<void>((r) => this.waits.add((stop = r)));
    const timeout = new Promise<void>((r) => (timer = setTimeout(r, this.exportTimeout)).unref?.());
    return Promise.race([this.library.flush(), stopped, timeout, ...(also ? [also] : [])]).finally(() => (clearTimeout(timer), this.waits.delete(stop)));
  }

  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const stop of this.waits) stop(); // exports queued or in progress hand their points over without waiting for delivery
    await this.chain;
    await this.library.shutdown();
  }

  /** Counters since creation: exports, attributes not sent (or cut), points the Library dropped. */
  stats(): ExporterStats {
    return structuredClone(this.counts);
  }

  private async send(metrics: ResourceMetrics, woken: Promise<void>): Promise<ExportResult> {
    const window: Window = (this.window = { drops: 0, reasons: {} });
    const countAttr = (r: AttributeDrop) => (this.counts.attributes[r] = (this.counts.attributes[r] ?? 0) + 1);
    const resource = metrics.resource.attributes;
    const resourceTags: [string, unknown][] = this.resourceAttributes.filter((k) => resource[k] !== undefined).map((k) => [k, resource[k]]);
    // what was handed to the Library since its last flush: whole batches (as it cuts them), the
    // batch being filled, and stored characters (a point's envelope share as the Library
    // estimates it, in base64, with a batch's overhead)
    let batches = 0;
    let points = 0;
    let bytes = BATCH_OVERHEAD;
    let chars = 0;
    const lib = this.library;
    /** The Library's flush, bounded (`delivered`); the last one also ends once a newer export is queued. */
    const flushed = (last = false) => this.delivered(last ? woken : undefined);
    /** Counts one point handed over; past the chunk, the Library's flush to await. */
    const queued = (name: string, tags: Record<string, string>): Promise<void> | undefined => {
      let size = 50 + name.length;
      for (const k in tags) size += k.length + 3 * tags[k]!.length + 6;
      // a new batch where the Library would cut one (it starts each at BATCH_OVERHEAD estimated bytes);
      // past the chunk's whole batches, flush: what is handed over is then those batches and this point
      let full = false;
      if (points && (points >= this.chunk.batchPoints || bytes + size > this.chunk.batchBytes)) (full = ++batches >= this.chunk.batches), (points = 0), (bytes = BATCH_OVERHEAD);
      points++;
      bytes += size;
      chars += (size * 4) / 3 + 1;
      if (full || chars >= this.chunk.chars) return (batches = points = chars = 0), (bytes = BATCH_OVERHEAD), flushed();
    };
    try {
      for (const { scope, metrics: list } of metrics.scopeMetrics) {
        const extra: [string, unknown][] = this.scopeName ? [['otel.scope.name', scope.name], ...resourceTags] : resourceTags;
        for (const m of list) {
          const name = m.descriptor.name;
          for (const dp of m.dataPoints as MetricData['dataPoints']) {
            const tags = toTags(dp.attributes, extra, this.rule, countAttr);
            let prev: Previous['value'] | undefined;
            if (m.aggregationTemporality == AggregationTemporality.CUMULATIVE && m.dataPointType != DataPointType.GAUGE) {
              const key = JSON.stringify([scope.name, scope.version, name, Object.entries(dp.attributes).sort()]);
              const start = dp.startTime.join('.');
              const p = this.previous.get(key);
              if (p && p.start == start) prev = p.value;
              this.previous.set(key, { start, value: dp.value }); // one stream, one entry: never dropped because another export carried it
            }
            switch (m.dataPointType) {
              case DataPointType.GAUGE:
                lib.gauge(name, dp.value as number, tags);
                await queued(name, tags);
                break;
              case DataPointType.SUM: {
                let delta = (dp.value as number) - ((prev as number | undefined) ?? 0);
                if (m.isMonotonic && delta < 0) delta = dp.value as number; // a reset the start time did not show
                if (delta != 0) lib.count(name, delta, tags), await queued(name, tags);
                break;
              }
              case DataPointType.HISTOGRAM:
              case DataPointType.EXPONENTIAL_HISTOGRAM: {
                const b: Buckets =
                  m.dataPointType == DataPointType.HISTOGRAM
                    ? explicitBuckets(dp.value as Histogram, prev as Histogram | undefined)
                    : exponentialBuckets(dp.value as ExponentialHistogram, prev as ExponentialHistogram | undefined);
                for (const [value, times] of observations(b)) {
                  for (let i = 0; i < times; i++) {
                    lib.observe(name, value, tags);
                    const wait = queued(name, tags);
                    if (wait) await wait;
                  }
                }
                break;
              }
            }
          }
        }
      }
      await flushed(true);
    } finally {
      this.window = undefined;
    }
    const attrs = Object.entries(this.counts.attributes);
    if (attrs.length) diag.debug('@cipherstat/otel: attributes not sent as tags (so far)', Object.fromEntries(attrs));
    if (window.error) return { code: ExportResultCode.FAILED, error: window.error };
    if (window.drops) {
      const reasons = Object.entries(window.reasons).map(([r, n]) => `${r}: ${n}`);
      return { code: ExportResultCode.FAILED, error: new Error(`@cipherstat/otel: the Library dropped ${window.drops} points (${reasons.join(', ')})`) };
    }
    return { code: ExportResultCode.SUCCESS };
  }
}
