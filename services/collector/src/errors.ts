/**
 * The collector's one error type. `code` is stable and part of the HTTP surface;
 * the edge maps every CollectorError to `{ error: { code, message } }` with `status`.
 */
export class CollectorError extends Error {
  override readonly name = 'CollectorError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string = code,
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}

export const isCollectorError = (e: unknown): e is CollectorError => e instanceof CollectorError;
