export { createLibrary } from './library.js';
export type { Library } from './library.js';
export { LibraryError, isLibraryError } from './errors.js';
export type { LibraryErrorCode } from './errors.js';
export type { LibraryOptions, CollectorKey, DropReason, DropInfo, Tags } from './options.js';
