/**
 * Worker thread of the processor: computes ticks (tick.ts) off the main thread, which keeps
 * ingest. Owns the tick caches and its key copies; the main thread never tells it what to
 * forget (worker-client.ts): it only sends ticks, and `retire` when the thread is to end
 * (shred, wipe), after which nothing of this thread is used again.
 */
import { writeFileSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { computeTick, forTransfer, TickState, transferables, unpackInput, type TickOutput, type WorkerReply, type WorkerRequest } from './tick.js';

const port = parentPort;
if (!port) throw new Error('tick-worker.js runs as a worker thread');
const state = new TickState(true); // its key copies are its own: zeroed when dropped
// The thread's name for `top -H` and the storefront bench's CPU split (Linux; elsewhere nothing).
try {
  writeFileSync('/proc/thread-self/comm', 'cs-tick-worker');
} catch {}

port.on('message', (msg: WorkerRequest) => {
  switch (msg.type) {
    case 'tick': {
      let output: TickOutput | undefined;
      try {
        output = computeTick(state, unpackInput(msg.input));
        const sent = forTransfer(output); // the rows stay here: the main thread writes `insert`
        port.postMessage({ id: msg.id, ok: true, output: sent } satisfies WorkerReply, transferables(sent));
      } catch (e) {
        if (output) state.forgetDict(output.dict); // never sent: its entries are not written
        port.postMessage({ id: msg.id, ok: false, error: e instanceof Error ? e.message : String(e) } satisfies WorkerReply);
      }
      break;
    }
    case 'retire':
      state.forgetAll(); // zeroes the key copies before the main thread ends this thread
      port.postMessage({ id: msg.id, ok: true } satisfies WorkerReply);
      break;
  }
});
