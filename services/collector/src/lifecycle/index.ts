export { Lifecycle, DEFAULT_GRACE_DAYS, WIPE_SECOND_PASS_MS, type LifecycleOptions } from './lifecycle.js';
export { LifecycleSweep, DEFAULT_LIFECYCLE_INTERVAL_MS } from './sweep.js';
export { DEFAULT_RETENTION_INTERVAL_MS, deleteExpired } from './retention.js';
export type {
  DeactivateReport,
  ShredReport,
  PurgeReport,
  WipeReport,
  RetentionReport,
  SweepReport,
  AccountDetails,
  AccountSettings,
} from './reports.js';
export { verifyAccount } from './verify.js';
export type { VerifyReport, VerifyOptions, TrialResult } from './verify.js';
export { rotateMaster, lastRotation, rotationDue, rotationPending, readRotationState, DEFAULT_MASTER_ROTATION_DAYS } from './master-rotation.js';
export type { MasterRotationReport, RotationState } from './master-rotation.js';
export { registerLifecycleRoutes } from './routes.js';
