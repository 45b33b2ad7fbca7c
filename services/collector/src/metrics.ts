/**
 * /metrics: Prometheus text via prom-client. Service health only: no label carries an
 * account id, metric name or anything a tenant sent.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Cumulative lookups of one per-account cache. */
export type CacheStats = () => { hit: number; miss: number };

/** Storage calls so far by kind (Store.callStats). */
export type StorageCallSource = () => Record<string, { calls: number; waitSeconds: number; runSeconds: number }>;

export function createMetrics(opts: { rotationIncomplete?: () => boolean } = {}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  /** Per-account caches (account state, keys, tick state, pseudonyms), read at each scrape. */
  const cacheSources = new Map<string, CacheStats>();
  /** Where storage calls come from (the store's engine lane), read at each scrape. */
  const storageCalls: { source?: StorageCallSource } = {};
  const m = {
    cacheSources,
    storageCalls,
    storageCallSeconds: new Counter({
      name: 'cipherstat_storage_call_seconds_total',
      help: 'Seconds storage calls spent by kind (`insert <table>`, or the statement verb and first table) and phase: wait (for the embedded engine, which runs one call at a time) and run',
      labelNames: ['call', 'phase'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [call, s] of Object.entries(storageCalls.source?.() ?? {})) {
          this.inc({ call, phase: 'wait' }, s.waitSeconds);
          this.inc({ call, phase: 'run' }, s.runSeconds);
        }
      },
    }),
    storageCallCount: new Counter({
      name: 'cipherstat_storage_calls_total',
      help: 'Storage calls by kind (see cipherstat_storage_call_seconds_total)',
      labelNames: ['call'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [call, s] of Object.entries(storageCalls.source?.() ?? {})) this.inc({ call }, s.calls);
      },
    }),
    cacheLookups: new Counter({
      name: 'cipherstat_cache_lookups_total',
      help: 'Lookups in per-account caches by cache and outcome (hit, miss)',
      labelNames: ['cache', 'outcome'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [cache, stats] of cacheSources) {
          const { hit, miss } = stats();
          this.inc({ cache, outcome: 'hit' }, hit);
          this.inc({ cache, outcome: 'miss' }, miss);
        }
      },
    }),
    registry,
    requests: new Counter({ name: 'cipherstat_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'status'], registers: [registry] }),
    batches: new Counter({ name: 'cipherstat_batches_total', help: 'Batches by outcome (accepted, duplicate, rejected, dropped)', labelNames: ['outcome'], registers: [registry] }),
    envelopes: new Counter({ name: 'cipherstat_batches_by_envelope_version_total', help: 'Batches stored by envelope version (1: NaCl, deprecated; 2: HPKE)', labelNames: ['version'], registers: [registry] }),
    batchTwins: new Counter({ name: 'cipherstat_batch_twins_total', help: 'Batches a processing tick left out because they already had a live processed marker (a batch stored again, e.g. a retry after a restart)', registers: [registry] }),
    batchRejects: new Counter({ name: 'cipherstat_batch_rejects_total', help: 'Refused or dropped batches by error code', labelNames: ['code'], registers: [registry] }),
    ingestBodyBytes: new Counter({ name: 'cipherstat_ingest_body_bytes_total', help: 'Request body bytes ingest read off the network (admitted requests only)', registers: [registry] }),
    ingestOpenedBytes: new Counter({ name: 'cipherstat_ingest_opened_bytes_total', help: 'Envelope bytes ingest decoded and handed to the outer-layer open', registers: [registry] }),
    points: new Counter({ name: 'cipherstat_points_total', help: 'Points by outcome (processed, rejected)', labelNames: ['outcome'], registers: [registry] }),
    ingestAckSeconds: new Counter({
      name: 'cipherstat_ingest_ack_seconds_total',
      help: "Where stored batches' 202s waited, summed over batches: queued (behind the group commit in flight), dedup (the duplicate check), insert (the durable insert); the storage calls' own wait for the engine is in cipherstat_storage_call_seconds_total",
      labelNames: ['phase'],
      registers: [registry],
    }),
    ingestGroupWaitSeconds: new Counter({
      name: 'cipherstat_ingest_group_wait_seconds_total',
      help: 'Seconds the group commit held its next insert to fill it, by reason: interval (CIPHERSTAT_INGEST_GROUP_MS) or behind (CIPHERSTAT_INGEST_GROUP_BEHIND_MS, while processing is behind)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    ingestAckBatches: new Counter({ name: 'cipherstat_ingest_ack_batches_total', help: 'Batches whose group commit succeeded (the count behind cipherstat_ingest_ack_seconds_total)', registers: [registry] }),
    insertSeconds: new Histogram({ name: 'cipherstat_storage_insert_seconds', help: 'Latency of storage inserts', labelNames: ['table'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] }),
    tickPhaseSeconds: new Histogram({
      name: 'cipherstat_tick_phase_seconds',
      help: "Where a processing tick's time goes (wall time) before its writes (cipherstat_storage_insert_seconds): accounts (state and keys read), open, aggregate, seal, encode (its CPU part, in the tick worker), wait (for that CPU part once the previous tick is written)",
      labelNames: ['phase'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    rollupRowsWritten: new Counter({ name: 'cipherstat_rollup_rows_written_total', help: 'Rollup rows processing wrote (minute, quarter-hour and hour rows per series and tick)', registers: [registry] }),
    processingLag: new Histogram({ name: 'cipherstat_processing_lag_seconds', help: 'Time from durable ingest (202) to processed', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 7.5, 10, 30, 60], registers: [registry] }),
    writerQueue: new Gauge({ name: 'cipherstat_ingest_queue_batches', help: 'Batches waiting for a durable insert', registers: [registry] }),
    processQueue: new Gauge({ name: 'cipherstat_process_queue_batches', help: 'Batches waiting to be processed', registers: [registry] }),
    keyUnavailable: new Gauge({ name: 'cipherstat_accounts_key_unavailable', help: 'Accounts whose key entry cannot be read (missing without tombstone, damaged, wrapped under a missing master key): their batches are refused or wait', registers: [registry] }),
    masterRotationIncomplete: new Gauge({
      name: 'cipherstat_master_key_rotation_incomplete',
      help: '1 while a master key rotation has started and not finished (it is resumed by the lifecycle pass); old versions stay readable until then',
      registers: [registry],
      collect() {
        if (opts.rotationIncomplete) this.set(opts.rotationIncomplete() ? 1 : 0);
      },
    }),
    purgePending: new Gauge({ name: 'cipherstat_purge_pending_rows', help: 'Ciphertext rows of shredded accounts still to purge', registers: [registry] }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
