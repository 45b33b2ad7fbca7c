export { RollupError, type RollupErrorCode } from './errors.js';
export {
  DEFAULT_ALPHA,
  DEFAULT_MAX_BUCKETS,
  MIN_INDEXABLE,
  type Sketch,
  type SketchOptions,
  createSketch,
  cloneSketch,
  add as addToSketch,
  merge as mergeSketch,
  quantile,
  count as sketchCount,
  sketchEquals,
} from './sketch.js';
export {
  AGGREGATIONS,
  type Aggregate,
  type Aggregation,
  emptyAggregate,
  emptyScalars,
  cloneAggregate,
  addPoint,
  mergeInto,
  mergeEncoded,
  mergeEncodedDeferred,
  settleSketch,
  mergeAggregates,
  finalize,
  encodeAggregate,
  encodeAggregateTo,
  decodeAggregate,
} from './aggregate.js';
export {
  INTERVALS,
  type Interval,
  bucketStart,
  nextBucketStart,
  buckets,
  sourceLevel,
  isValidTimeZone,
} from './time.js';
export { encodeDayPack, daySlots } from './pack.js';
export { LEVEL, type QueryLevel, type RollupLevel } from './levels.js';
export { type Distinct, DISTINCT_P, emptyDistinct, addHash, mergeDistinct, estimateDistinct } from './distinct.js';
