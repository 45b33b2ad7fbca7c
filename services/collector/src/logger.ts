/**
 * Structured logs with pino. Payloads, tokens and keys are never passed to the logger;
 * redaction is a second line of defence for fields that could carry them by mistake.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export const REDACT = [
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'headers.authorization',
  'token',
  '*.token',
  'readToken',
  '*.readToken',
  'secretKey',
  '*.secretKey',
  'dataKey',
  'macKey',
  'masterKey',
  'body',
  '*.body',
];

/** `level`: config.ts `logLevel` (CIPHERSTAT_LOG_LEVEL) where the process has a configuration; default info. */
export function createLogger(opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: { service: 'cipherstat' },
      redact: { paths: REDACT, censor: '[redacted]' },
    },
    opts.destination,
  );
}

/**
 * Rate limit for a log line that can repeat per request: `limited(key, log)` runs `log` at most
 * once per `intervalMs` for each key (an error message: a new kind of failure is logged at
 * once), saying how many were held back since. `reset()` (the thing works again) makes the next
 * failure a new incident, logged at once.
 */
export function everyFewSeconds(intervalMs = 10_000): ((key: string, log: (suppressed: number) => void) => void) & { reset(): void } {
  const last = new Map<string, { at: number; suppressed: number }>();
  const limited = (key: string, log: (suppressed: number) => void) => {
    const now = performance.now();
    const seen = last.get(key);
    if (seen && now - seen.at < intervalMs) {
      seen.suppressed++;
      return;
    }
    if (last.size >= 100) last.clear(); // bounded: at worst a few extra lines
    last.set(key, { at: now, suppressed: 0 });
    log(seen?.suppressed ?? 0);
  };
  return Object.assign(limited, { reset: () => last.clear() });
}
