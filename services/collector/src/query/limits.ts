/**
 * What one read token may cost the query node: at most `concurrency` queries at once
 * (429 `too_many_queries`) and a budget of stored rows opened per minute (a token bucket of
 * `rowsPerMinute`, burst one minute's worth; 429 `query_budget_exceeded` with Retry-After while
 * it is spent). A query's rows are known only once storage answered: they are charged then,
 * and may leave the bucket in debt, which later queries wait out. Answers from the cache cost
 * nothing. Kept in memory, keyed by account (a read token selects exactly one account).
 */
import { CollectorError } from '../errors.js';
import { RateLimiter } from '../ingest/rate-limit.js';

export class QueryLimits {
  private readonly running = new Map<string, number>();
  private readonly rows: RateLimiter;

  constructor(
    private readonly o: { concurrency: number; rowsPerMinute: number; now?: () => number },
  ) {
    this.rows = new RateLimiter(o.rowsPerMinute / 60, o.rowsPerMinute, o.now);
  }

  /** Starts a query for `key`, or throws the 429; call the returned function once with the rows it read. */
  begin(key: string): (rows: number) => void {
    const n = this.running.get(key) ?? 0;
    if (n >= this.o.concurrency) {
      throw new CollectorError(429, 'too_many_queries', `at most ${this.o.concurrency} queries at once per read token`, 1);
    }
    const wait = this.rows.wait(key, 1);
    if (wait) throw new CollectorError(429, 'query_budget_exceeded', `this read token opened more than ${this.o.rowsPerMinute} stored rows in the last minute`, wait);
    this.running.set(key, n + 1);
    let ended = false;
    return (rows) => {
      if (ended) return;
      ended = true;
      const left = (this.running.get(key) ?? 1) - 1;
      if (left > 0) this.running.set(key, left);
      else this.running.delete(key);
      if (rows > 0) this.rows.charge(key, rows);
    };
  }
}
