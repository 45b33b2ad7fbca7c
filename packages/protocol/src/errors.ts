/**
 * Every way a batch can be refused, as a stable snake_case code. Codes are part of the
 * public surface (HTTP error bodies, counters, test vectors): add new ones, never rename.
 */
export const ERROR_CODES = [
  // envelope (ingest role, before and while opening the outer layer)
  'envelope_empty',
  'envelope_too_large',
  'envelope_truncated',
  'not_an_envelope',
  'unsupported_version',
  'unsupported_flags',
  'unknown_key_id',
  'low_order_key',
  'outer_auth_failed',
  'invalid_header',
  'invalid_account_id',
  'invalid_batch_id',
  'timestamp_out_of_range',
  'too_many_points',
  // inner layer (process role)
  'inner_auth_failed',
  'account_mismatch',
  'batch_mismatch',
  'invalid_payload',
  'point_count_mismatch',
  'inflated_too_large',
  // single points (the rest of the batch is kept; each reject is counted)
  'invalid_point',
  'invalid_kind',
  'invalid_name',
  'invalid_value',
  'invalid_tags',
  'invalid_timestamp',
  'duplicate_point',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** The one error type of the protocol package, for callers that prefer exceptions. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    readonly code: ErrorCode,
    message: string = code,
  ) {
    super(message);
  }
}

export const isProtocolError = (e: unknown): e is ProtocolError => e instanceof ProtocolError;

export type Result<T> = { ok: true; value: T } | { ok: false; code: ErrorCode; message: string };

export const fail = (code: ErrorCode, message: string = code): { ok: false; code: ErrorCode; message: string } => ({
  ok: false,
  code,
  message,
});
