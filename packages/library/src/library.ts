/**
 * The Library: record → queue → batch → seal → transport → persist, wired together.
 *
 * Recording only validates and pushes to an array. A timer (flushInterval), a full queue
 * (maxBatchSize / maxBatchBytes), flush(), or the page being hidden cuts the queue into
 * batches; each is sealed once (inner layer) and stored. One sender loop delivers the
 * outbox oldest first, with backoff, and removes a batch from storage on 202 only (or on
 * a permanent refusal, reported through onDrop).
 */
import { tagsError, toBase64, validName, type PointKind } from '@cipherstat/protocol';
import { fits, OVERHEAD, pointSize, type QueuedPoint } from './batch.js';
import { LibraryError, type LibraryErrorCode } from './errors.js';
import { parseKey, resolve, type DropInfo, type DropReason, type Key, type LibraryOptions, type Tags } from './options.js';
import { memoryStore, outbox } from './persist.js';
import { platform } from './platform/index.js';
import { loadFallback } from './platform/fallback.js';
import type { Platform } from './platform/types.js';
import { envelope, form, revive, type Batch } from './seal.js';
import { backoff, deadline, jittered, permanent, post } from './transport.js';

export interface Library {
  /** Adds `value` (default 1) to a counter. */
  count(name: string, value?: number, tags?: Tags): void;
  /** Records the current value of a gauge. */
  gauge(name: string, value: number, tags?: Tags): void;
  /** Records one observation of a histogram (percentiles are computed by the collector). */
  observe(name: string, value: number, tags?: Tags): void;
  /** Resolves once everything recorded so far was acknowledged, dropped, or parked
   * (offline, no consent, or retries exhausted with persistence on). Never rejects. */
  flush(): Promise<void>;
  /** Flushes (at most shutdownTimeout ms), then stops timers and listeners. */
  shutdown(): Promise<void>;
  /** Grants or withdraws consent; withdrawing drops queued and persisted batches. */
  setConsent(granted: boolean): void;
}

/** How long a batch handed to sendBeacon waits before a normal POST confirms it. */
const BEACON_GRACE = 60e3;
const EMPTY: Tags = {};

export function createLibrary(options: LibraryOptions): Library {
  return create(options, platform());
}

/** createLibrary with an explicit platform (tests, other runtimes). */
export function create(options: LibraryOptions, p: Platform): Library {
  const c = resolve(options);
  const { accountId, maxBatchSize, maxBatchBytes, rate, onDrop, onError, collectorKey, persist } = c;
  const url = c.endpoint + '/v1/batches';
  /** Where unsent batches outlive this page or process; absent: memory only (Node without persistPath). */
  const kept = persist && p.store(c);
  const store = outbox(kept || memoryStore(), c.maxPersistedBatches, c.maxPersistedBytes);
  const maxPending = maxBatchSize * c.maxPersistedBatches;

  let key: Key | undefined = collectorKey;
  let keyFetch: Promise<Key> | undefined;
  let consent = !(c.requireConsent || (c.respectGlobalPrivacyControl && p.gpc));
  /** Set once shut down or gone: recording is refused from then on. */
  let stopped = false;
  let pending: QueuedPoint[] = [];
  let bytes = OVERHEAD;
  /** Formed batches not yet acknowledged, oldest first. A batch given up on for now
   * (persisted) waits with `_wait = Infinity` until the next 202 or `online`. */
  let queue: Batch[] = [];
  let inFlight: Batch | undefined;
  let seq = 0;
  let notBefore = 0;
  /** The account is deactivated (restorable): nothing is sent before this epoch ms. */
  let pausedUntil = 0;
  let sending = false;
  let cutTimer: ReturnType<typeof setTimeout> | undefined;
  let sendTimer: ReturnType<typeof setTimeout> | undefined;
  let urgent = false;
  let waiters: [seq: number, resolve: () => void][] = [];
  /** Batches are sealed (asynchronously) one after another, in the order they were cut. */
  let sealing: Promise<unknown> = Promise.resolve();
  /** Points cut but not sealed yet; `epoch` changes when everything queued is dropped. */
  let unsealed = 0;
  let epoch = 0;
  const load = { ...p, load: p.fallback || loadFallback }; // and the platform's hpke and deflate, where it has them

  const drop = (reason: DropReason, info: DropInfo) => {
    try {
      onDrop?.(reason, info);
    } catch {}
  };
  const dropPoint = (reason: DropReason, name: string) => drop(reason, { count: 1, name });
  const dropBatch = (b: Batch, reason: DropReason, info?: Partial<DropInfo>) =>
    drop(reason, { count: b._stored[2], batchId: b._stored[0], ...info });
  const report = (code: LibraryErrorCode, collector?: { status: number; code?: string }, message?: string) => {
    try {
      onError?.(new LibraryError(code, message, collector));
    } catch {}
  };

  // ---- restore what a previous page or process left unsent
  const saved = store.load();
  key ||= parseKey(saved.k);
  for (const s of saved.q) {
    const b = revive(s, seq++);
    b ? queue.push(b) : store.remove(s[0]);
  }

  // ---- record: validate cheaply, push, arm a timer
  function record(kind: PointKind, name: string, value: number, tags?: Tags): void {
    if (stopped || !consent) return dropPoint(stopped ? 'stopped' : 'no_consent', name);
    if (!validName(name)) return dropPoint('invalid_name', name);
    if (!Number.isFinite(value)) return dropPoint('invalid_value', name);
    if (tags) {
      if (tagsError(tags)) return dropPoint('invalid_tags', name);
      tags = { ...tags };
    }
    if (rate && Math.random() >= rate(name)) return; // sampled out: not a drop
    if (pending.length >= maxPending) return dropPoint('queue_full', name);
    const _size = pointSize(name, tags);
    pending.push({ id: 0, kind, name, value, time: Date.now(), tags: tags || EMPTY, _size });
    if ((bytes += _size) >= maxBatchBytes || pending.length >= maxBatchSize) {
      if (!urgent) {
        urgent = true;
        clearTimeout(cutTimer);
        cutTimer = p.timer(cutAndSend, 0);
      }
    } else cutTimer ??= p.timer(cutAndSend, c.flushInterval);
  }

  // ---- batch + seal + persist
  /** Cuts the queue into batches and seals them in the background; resolves when all are sealed and stored. */
  function cut(): Promise<unknown> {
    clearTimeout(cutTimer);
    cutTimer = undefined;
    urgent = false;
    bytes = OVERHEAD;
    while (pending[0]) {
      const points = pending.splice(0, fits(pending, maxBatchSize, maxBatchBytes));
      const e = epoch;
      unsealed += points.length;
      sealing = sealing
        .then(() => form(accountId, c.writeKey, points, load))
        .then(
          async (b: Batch) => {
            // sealed ahead for the known collector key, and stored once with it: a beacon can send it at once
            if (key) await envelope(b, key, accountId, load).catch(() => {});
            if (e != epoch) return; // dropped meanwhile (and reported by clear())
            unsealed -= points.length;
            b._seq = seq++;
            queue.push(b);
            // Evicted batches are reported here whoever stored them: another tab's batch is gone
            // from the shared entry, and that tab may be closed before it could send it.
            for (const s of store.add(b._stored)) {
              const b = queue.find((b) => b._stored[0] == s[0]);
              if (b) remove(b);
              drop('persist_overflow', { count: s[2], batchId: s[0] });
            }
          },
          (err) => {
            if (e != epoch) return;
            unsealed -= points.length;
            // Never sent unsealed, never thrown at the page: the fallback chunk did not load
            // (fallback_failed), or the write key is a low-order point (cannot be sealed to).
            drop('rejected', { count: points.length });
            err instanceof LibraryError ? report(err.code, undefined, err.message) : report('invalid_option', undefined, 'invalid option writeKey');
          },
        )
        .catch(() => {}); // the chain never breaks: the next batch is sealed whatever became of this one
    }
    return sealing;
  }

  const cutAndSend = () => cut().then(send);

  // ---- transport
  const fetchKey = (): Promise<Key> =>
    (keyFetch ||= p
      .fetch(c.endpoint + '/v1/collector-key', { cache: 'no-cache', signal: deadline(p) }) // revalidate: after a rotation a cached key is stale
      .then((r) => r.json())
      .then((j) => {
        const k = parseKey(j);
        if (!k) throw 0;
        store.key(j);
        return (key = k);
      })
      .finally(() => (keyFetch = undefined)));

  const blocked = () => stopped || !consent || p.offline() || Date.now() < pausedUntil;
  const remove = (b: Batch) => (queue = queue.filter((x) => x != b));
  /** Removes a batch here and in storage; with a reason, reports it dropped. */
  const forget = (b: Batch, reason?: DropReason, info?: Partial<DropInfo>) => {
    store.remove(b._stored[0]);
    remove(b);
    if (reason) dropBatch(b, reason, info);
  };
  const unpark = () => {
    for (const b of queue) if (b._wait == Infinity) b._wait = b._attempts = 0;
  };

  /** The sender loop: one batch at a time, oldest first, respecting backoff. */
  async function send(): Promise<void> {
    if (sending) return;
    sending = true;
    clearTimeout(sendTimer);
    try {
      while (!blocked()) {
        const now = Date.now();
        const b = now >= notBefore && queue.find((b) => b._wait <= now);
        if (!b) {
          const next = now < notBefore ? notBefore : Math.min(...queue.map((b) => b._wait));
          if (next < Infinity) sendTimer = p.timer(send, next - now, waiters.length > 0);
          break;
        }
        await deliver((inFlight = b));
      }
    } catch {
      // never reaches the host application; the next send() starts over
    } finally {
      sending = false;
      inFlight = undefined;
      // Deactivated: one batch asks again when the pause ends (the queue is kept meanwhile).
      const wake = pausedUntil - Date.now();
      if (wake > 0 && !stopped) sendTimer = p.timer(send, wake);
      settle();
    }
  }

  async function deliver(b: Batch) {
    const [id] = b._stored;
    let out;
    try {
      out = await post(p, url, await envelope(b, key || (await fetchKey()), accountId, load, undefined, store.update));
    } catch {
      key = collectorKey; // no key yet, or an unusable one: fetch it again next time
    }
    const { status = 0, code, after } = out || {};
    const col = { status, code };
    if (status == 202) {
      forget(b);
      notBefore = pausedUntil = 0;
      unpark();
    } else if (!queue.includes(b)) {
      // dropped meanwhile (consent withdrawn, 410, overflow)
    } else if (status == 410) {
      stop('account_gone', col);
      report('account_gone', col);
    } else if (code == 'account_deactivated') {
      // Restorable: pause without spending retries; resume by itself once restored.
      if (!pausedUntil) report('account_deactivated', col);
      pausedUntil = Date.now() + Math.min(after ?? c.recheckInterval, c.recheckInterval);
    } else if (code == 'unknown_key_id' && !collectorKey && !b._rekeyed) {
      b._rekeyed = true; // the collector rotated its key: fetch it again, re-seal the outer layer once
      key = undefined;
    } else if (permanent(status)) {
      forget(b, 'rejected', col);
    } else {
      notBefore = Date.now() + (after === undefined ? backoff(b._attempts, c.retryBaseDelay, c.retryMaxDelay) : jittered(after));
      if (++b._attempts > c.maxRetries) {
        if (persist) {
          b._wait = Infinity;
          report('send_failed', col, 'batch ' + id);
        } else forget(b, 'retries_exhausted', col);
      }
    }
  }

  /** Resolves flush() waiters whose batches were all acknowledged, dropped or parked. */
  function settle() {
    let first = Infinity;
    if (!blocked()) for (const b of queue) if (b._wait < Infinity) first = Math.min(first, b._seq);
    waiters = waiters.filter(([s, resolve]) => s >= first || void resolve());
  }

  /** Drops everything queued, here and in storage (consent withdrawn, account gone). */
  function clear(reason: DropReason, info?: Partial<DropInfo>) {
    if (pending[0] || unsealed) drop(reason, { count: pending.length + unsealed, ...info });
    epoch++;
    unsealed = 0;
    for (const b of queue) dropBatch(b, reason, info);
    pending = [];
    queue = [];
    store.clear();
    cut();
    settle();
  }

  function stop(reason: DropReason, info?: Partial<DropInfo>) {
    clear(reason, info);
    stopped = true;
    clearTimeout(sendTimer);
    unlisten();
  }

  // ---- page hidden or unloaded: seal now and hand everything to sendBeacon
  //      (Node, beforeExit: send what is left)
  function hide() {
    const beacon = () => {
      const now = Date.now();
      const k = key;
      if (p.beacon && k && !blocked()) {
        for (const b of queue) {
          if (b != inFlight && b._wait <= now) {
            // Sealed ahead of time (the usual case): sent within this task.
            b._wait = now + BEACON_GRACE;
            envelope(b, k, accountId, load, undefined, store.update).then(
              (env) => p.beacon!(url, toBase64(env)) || (b._wait = 0),
              () => (b._wait = 0),
            );
          }
        }
      }
    };
    beacon();
    // Points not yet in a batch: sealed (asynchronously) and beaconed if the page lives that long;
    // stored as soon as sealed, so the next page sends them otherwise.
    cut().then(beacon).then(send); // Node: deliver what is left; browser: confirm beaconed batches later if the page lives on
  }
  const unlisten = p.listen(hide, () => {
    unpark();
    send();
  });

  const start = () => {
    if (!key) fetchKey().catch(() => {});
    send();
  };
  if (consent) start();

  function flush() {
    return (stopped ? sealing : cut()).then(() => {
      const done = new Promise<void>((resolve) => waiters.push([seq - 1, resolve]));
      send();
      return done;
    });
  }

  return {
    count: (name, value = 1, tags) => record('counter', name, value, tags),
    gauge: (name, value, tags) => record('gauge', name, value, tags),
    observe: (name, value, tags) => record('histogram', name, value, tags),
    flush,
    setConsent(granted) {
      if (!stopped) (consent = !!granted) ? start() : clear('consent_withdrawn');
    },
    async shutdown() {
      if (stopped) return;
      unlisten();
      let timer;
      await Promise.race([flush(), new Promise((r) => (timer = p.timer(r as () => void, c.shutdownTimeout, true)))]);
      clearTimeout(timer);
      if (!kept) {
        // memory only: what is left goes with this process, batches still being sealed included
        if (unsealed) drop('stopped', { count: unsealed });
        epoch++;
        for (const b of queue) dropBatch(b, 'stopped');
      }
      stopped = true;
      queue = [];
      clearTimeout(sendTimer);
      await store.settle();
    },
  };
}
