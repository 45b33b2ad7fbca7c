/** libsodium's X25519 as the collector builds it (sodium-native is the collector's dependency; a root devDependency for these tests). */
import { createRequire } from 'node:module';
import { libsodiumX25519, type SodiumX25519 } from '@cipherstat/protocol/node';

export const libsodium = libsodiumX25519(createRequire(import.meta.url)('sodium-native') as SodiumX25519);
