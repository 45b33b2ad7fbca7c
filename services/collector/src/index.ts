/**
 * @cipherstat/collector from code: what `cipherstat serve` does, for embedding a collector in
 * another Node process (tests, benchmarks, a custom launcher).
 *
 *   const config = loadConfig({ port: '8787', 'data-dir': './data' });
 *   const running = await startCollector(config);   // running.url, running.close()
 */
export { loadConfig, loadSecrets, type Config, type Secrets } from './config.js';
export { startCollector, type RunningCollector } from './server.js';
export { openServices, type OpenOptions, type Services } from './services.js';
export { createLogger, type Logger } from './logger.js';
