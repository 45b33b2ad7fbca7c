export { createLibrary } from './library.js';
export type { Library } from './library.js';
export { LibraryError, isLibraryError } from './errors.js';
export type { LibraryErrorCode } from './errors.js';
export type { LibraryOptions, CollectorKey, DropReason, DropInfo, Tags } from './options.js';
export { createStorefront } from './storefront/index.js';
export type { Storefront, StorefrontOptions } from './storefront/index.js';
export type { AutocaptureOptions } from './storefront/autocapture.js';
export type { Commerce, CommerceEvent, PurchaseEvent } from './storefront/commerce.js';
