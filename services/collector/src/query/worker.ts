/**
 * A query worker thread (mergers.ts): opens and merges the rows of heavy queries off the main
 * thread. Requests are handled in order; a merge's groups stay here until `finish` or `drop`
 * (or `export`, when this worker helped another's merge).
 * The thread first lowers its own scheduling priority (mergers.ts `lowerThreadPriority`), so a
 * heavy query takes the CPU that the main thread, the tick worker and storage leave.
 */
import { writeFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { handleMergeRequest, lowerThreadPriority, QUERY_WORKER_NICE, replyTransfer, type MergeRequest, type MergeState } from './mergers.js';

const port = parentPort;
if (!port) throw new Error('query/worker.js runs as a worker thread');
lowerThreadPriority((workerData as { nice?: number } | null)?.nice ?? QUERY_WORKER_NICE);
// The thread's name for `top -H` and the query bench's CPU split (Linux; elsewhere nothing).
try {
  writeFileSync('/proc/thread-self/comm', 'cs-query-worker');
} catch {}
const merges = new Map<number, MergeState>();

port.on('message', (msg: MergeRequest) => {
  const reply = handleMergeRequest(merges, msg);
  if (reply) port.postMessage(reply, replyTransfer(reply));
});
