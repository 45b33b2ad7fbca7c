/**
 * A Node platform for unit tests: real fetch and timers, but page lifecycle, GPC,
 * offline state and the persistent store under the test's control.
 */
import { create, type Library } from '../../src/library.js';
import type { DropInfo, DropReason, LibraryOptions } from '../../src/options.js';
import { memoryStore, type Store } from '../../src/persist.js';
import { platform as nodePlatform } from '../../src/platform/node.js';
import type { Platform } from '../../src/platform/types.js';
import type { LibraryError } from '../../src/errors.js';

export interface Harness {
  lib: Library;
  platform: Platform;
  store: Store;
  drops: [DropReason, DropInfo][];
  errors: LibraryError[];
  /** Simulates pagehide / beforeExit. */
  hide(): void;
  /** Simulates the `online` event. */
  online(): void;
  /** Dropped point count per reason. */
  dropped(reason: DropReason): number;
}

export function harness(
  options: Partial<LibraryOptions> & Pick<LibraryOptions, 'endpoint' | 'accountId' | 'writeKey'>,
  over: Partial<Omit<Platform, 'store'>> & { storage?: Store | null } = {},
): Harness {
  let hide = () => {};
  let online = () => {};
  const { storage, ...rest } = over;
  const store = storage ?? memoryStore(); // null: the platform has no store (Node without persistPath)
  const drops: [DropReason, DropInfo][] = [];
  const errors: LibraryError[] = [];
  const platform: Platform = {
    ...nodePlatform(),
    listen(h, o) {
      hide = h;
      online = o;
      return () => {
        hide = online = () => {};
      };
    },
    ...rest,
    store: () => (storage === null ? undefined : store),
  };
  const lib = create(
    {
      onDrop: (reason, info) => drops.push([reason, info]),
      onError: (e) => errors.push(e),
      ...options,
    },
    platform,
  );
  return {
    lib,
    platform,
    store,
    drops,
    errors,
    hide: () => hide(),
    online: () => online(),
    dropped: (reason) => drops.filter(([r]) => r === reason).reduce((n, [, i]) => n + i.count, 0),
  };
}
