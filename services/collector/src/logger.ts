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

export function createLogger(opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.CIPHERSTAT_LOG_LEVEL ?? 'info',
      base: { service: 'cipherstat' },
      redact: { paths: REDACT, censor: '[redacted]' },
    },
    opts.destination,
  );
}
