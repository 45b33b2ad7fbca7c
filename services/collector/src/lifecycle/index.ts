export {
  Lifecycle,
  DEFAULT_GRACE_DAYS,
  DEFAULT_LIFECYCLE_INTERVAL_MS,
  DEFAULT_RETENTION_INTERVAL_MS,
  WIPE_SECOND_PASS_MS,
} from './lifecycle.js';
export type {
  LifecycleOptions,
  DeactivateReport,
  ShredReport,
  PurgeReport,
  WipeReport,
  RetentionReport,
  TickReport,
  AccountDetails,
  AccountSettings,
} from './lifecycle.js';
export { verifyAccount } from './verify.js';
export type { VerifyReport, VerifyOptions, TrialResult } from './verify.js';
export { rotateMaster, lastRotation, rotationDue, rotationPending, readRotationState, DEFAULT_MASTER_ROTATION_DAYS } from './master-rotation.js';
export type { MasterRotationReport, RotationState } from './master-rotation.js';
export { registerLifecycleRoutes } from './routes.js';
