// Types of bench/records-previous.mjs (used by services/collector/test/records.test.ts).
/** Seals a format-1 record the way records.ts did before sodium-native (a random nonce unless given). */
export function previousSeal(key: Uint8Array, ad: string, plain: Uint8Array, nonce?: Uint8Array): Uint8Array;
/** Opens a format-1 record the way records.ts did before sodium-native; null when it does not verify. */
export function previousOpen(key: Uint8Array, ad: string, sealed: Uint8Array): Uint8Array | null;
