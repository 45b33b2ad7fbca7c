/** The one error type of the keyring. `code` is stable: callers map it to HTTP/CLI errors. */
export type KeyringErrorCode =
  | 'invalid_account_id'
  | 'account_exists'
  | 'account_tombstoned'
  | 'account_not_found'
  /** A file's bound kind/id does not match where it was found (swapped or copied file). */
  | 'entry_mismatch'
  /** Wrong master key, or the file was altered. */
  | 'unwrap_failed'
  | 'corrupt_entry'
  /** An entry is wrapped under a master key version this provider does not have. */
  | 'master_key_missing'
  | 'master_key_invalid'
  | 'master_key_config'
  /** rotate()/destroy() on a provider that is configured from outside (env, key file, KMS). */
  | 'master_key_readonly'
  | 'master_key_in_use'
  | 'admin_token_invalid'
  | 'backup_invalid'
  | 'invalid_argument'
  /** Another process held the keyring lock for too long. */
  | 'keyring_busy'
  /** This process's lock expired and was taken over (a holder elsewhere presumed it gone): the operation stopped before writing. */
  | 'keyring_lock_lost'
  /** An account's entry is missing without a tombstone, or cannot be read: its data waits, nothing is deleted. */
  | 'account_key_unavailable'
  /** The keyring has entries but this start lacks what opens them (master key, transport.json): nothing was written. */
  | 'keyring_incomplete'
  /** A transport-only keyring (an ingest node's) was asked for account keys or a change: it holds transport keys only. */
  | 'transport_only'
  /** An ingest-only node found account entries it could read: it refuses to start rather than hold them. */
  | 'keyring_has_accounts';

export class KeyringError extends Error {
  readonly code: KeyringErrorCode;
  /** The file at fault (absolute path) and why, when one entry is at fault. */
  readonly file?: string;
  readonly reason?: string;

  constructor(code: KeyringErrorCode, message: string, options?: { cause?: unknown; file?: string; reason?: string }) {
    super(message, options);
    this.name = 'KeyringError';
    this.code = code;
    this.file = options?.file;
    this.reason = options?.reason;
  }
}

export const isKeyringError = (e: unknown): e is KeyringError => e instanceof KeyringError;
