/** Codes carried by LibraryError: stable, part of the public surface. */
export type LibraryErrorCode =
  /** A bad option passed to createLibrary (thrown). */
  | 'invalid_option'
  /** The collector answered 410: the account was deleted; the Library stopped. */
  | 'account_gone'
  /** The collector answered 503 account_deactivated (restorable): sending paused, the queue
   * kept; the Library asks again every recheckInterval at most and resumes by itself. */
  | 'account_deactivated'
  /** A batch could not be delivered after maxRetries; it stays queued (stored, where a store exists) and is retried later. */
  | 'send_failed'
  /** The persistence layer (localStorage / file) refused a read or write. */
  | 'persist_failed'
  /** A browser that needs the fallback chunk (WebCrypto without X25519, or no crypto.subtle)
   * could not load it — refused by its integrity check, or a network or CSP failure. The
   * batch was dropped (onDrop 'rejected'), nothing was sent unsealed; the next batch tries again. */
  | 'fallback_failed';

/** The one error type of the Library. */
export class LibraryError extends Error {
  override readonly name = 'LibraryError';
  constructor(
    readonly code: LibraryErrorCode,
    message: string = code,
    /** The collector's answer behind it, when there was one: HTTP status and `error.code`. */
    readonly collector?: { status: number; code?: string },
  ) {
    super(message);
  }
}

export const isLibraryError = (e: unknown): e is LibraryError => e instanceof LibraryError;
