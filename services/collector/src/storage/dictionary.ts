/** The dictionary: each pseudonym's encrypted plaintext (metric names, tag keys, tag values), per key version. */
import { bytes, str, time, u64, uint } from './tsv.js';
import type { DictKind, DictRow, DictionaryStore } from './types.js';
import { fromBase64, ms, num, type Db, type Raw } from './sql.js';

const DICT_COLUMNS = ['account_id', 'kind', 'pseudonym', 'key_version', 'ciphertext', 'first_seen'] as const;

function toDict(r: Raw): DictRow {
  return {
    accountId: String(r.accountId),
    kind: num(r.kind) as DictKind,
    pseudonym: String(r.pseudonym),
    keyVersion: num(r.keyVersion),
    ciphertext: fromBase64(r.ciphertextBase64),
    firstSeen: num(r.firstSeen),
  };
}

export function dictionaryRepository(db: Db): DictionaryStore {
  return {
    insertDictionary: (rows) =>
      db.insert('dictionary', DICT_COLUMNS, rows, (r) => [
        str(r.accountId), uint(r.kind, 2), u64(r.pseudonym), uint(r.keyVersion), bytes(r.ciphertext), time(r.firstSeen),
      ]),

    async dictionary(accountId, kind) {
      const rows = await db.conn.query(
        `SELECT account_id AS accountId, kind, pseudonym, key_version AS keyVersion, base64Encode(ciphertext) AS ciphertextBase64,
           ${ms('first_seen', 'firstSeen')}
         FROM ${db.t('dictionary')} FINAL
         WHERE account_id = {id:String}${kind === undefined ? '' : ' AND kind = {kind:UInt8}'}
         ORDER BY kind, pseudonym`,
        kind === undefined ? { id: accountId } : { id: accountId, kind },
      );
      return rows.map(toDict);
    },
  };
}
