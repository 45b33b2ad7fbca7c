export { KeyringError, isKeyringError } from './errors.js';
export type { KeyringErrorCode } from './errors.js';
export { loadMasterKeys, staticMasterKeys, parseMasterKeys, MASTER_KEY_BYTES, readRotationRecord, writeRotationRecord } from './master-key.js';
export type { MasterKeyProvider, ManagedMasterKeys, KeyringLog, LoadOptions, RotationRecord } from './master-key.js';
export { Keyring, rotateMasterKey, DEFAULT_TRANSPORT_OVERLAP_MS, DEFAULT_CACHE_TTL_MS } from './keyring.js';
export type {
  AccountKeys,
  TransportKey,
  Tombstone,
  ShredReport,
  KeyringOptions,
  RotateDataKeysOptions,
  RestoreReport,
  KeyringCheck,
} from './keyring.js';
export { newToken, tokenKind, hashToken, tokenMatches, adminProof, loadAdminToken, TOKEN_BYTES, MIN_ADMIN_TOKEN_LENGTH } from './tokens.js';
export type { TokenKind, AdminToken } from './tokens.js';
