/** Stable error codes for the rollup layer; callers map them to HTTP 4xx/5xx. */
export type RollupErrorCode =
  | 'malformed_aggregate' // decodeAggregate got bytes it cannot trust
  | 'invalid_argument' // a non-finite value, bad count, bad quantile, unknown aggregation...
  | 'incompatible_sketch' // merging sketches with different relative accuracy
  | 'invalid_time_zone'
  | 'too_many_buckets';

export class RollupError extends Error {
  readonly code: RollupErrorCode;
  constructor(code: RollupErrorCode, message: string) {
    super(message);
    this.name = 'RollupError';
    this.code = code;
  }
}

export const malformed = (why: string): RollupError => new RollupError('malformed_aggregate', `malformed aggregate: ${why}`);
export const invalid = (why: string): RollupError => new RollupError('invalid_argument', why);
