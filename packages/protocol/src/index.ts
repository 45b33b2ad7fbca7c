export { LIMITS, POINT_KINDS, pointError, tagsError, validName, ACCOUNT_ID_PATTERN, BATCH_ID_PATTERN, TAG_VALUE_PATTERN } from './limits.js';
export type { Point, PointKind } from './limits.js';
export { ERROR_CODES, ProtocolError, isProtocolError } from './errors.js';
export type { ErrorCode, Result } from './errors.js';
export {
  VERSION,
  VERSION_2,
  INFO_OUTER,
  INFO_INNER,
  FLAG_DEFLATE,
  innerAad,
  envelopePrefix,
  outerPlaintext,
  wrapOuterV2,
  sealBatchV2,
  MIN_ENVELOPE_BYTES,
  sealBatch,
  openEnvelope,
  openInner,
  fromTextForm,
  encodeInner,
  encodeHeader,
  wrapOuter,
} from './envelope.js';
export type { HpkeSeal, HpkeOpen, Deflate, Inflate, BatchHeader, SealKeys, OpenedEnvelope, OpenedBatch, PointReject, OpenEnvelopeOptions, OpenInnerOptions } from './envelope.js';
export {
  keyPair,
  publicKeyOf,
  sharedKey,
  seal,
  sealWith,
  openSeal,
  secretSeal,
  secretOpen,
  hmacSha512,
  sha512,
  equalBytes,
  isZero,
  randomBytes,
  naclX25519,
  concat,
} from './crypto.js';
export type { KeyPair, Random, X25519, OpenResult } from './crypto.js';
export { toBase64, fromBase64, base64DecodedLength, toHex, fromHex, utf8, fromUtf8 } from './codec.js';
export { webSeal, keySchedule, HPKE_KEM_ID, HPKE_KDF_ID, HPKE_AEAD_ID } from './hpke.js';
export type { WebHpkeOptions, AsyncX25519 } from './hpke.js';
