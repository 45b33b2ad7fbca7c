// `npm run test:stress`: the whole suite while CPU hogs keep every core busy (one busy-looping
// process per core, at normal priority), to prove the tests do not depend on the clock: no
// assertion on timing, limits configured explicitly, timeouts sized for a loaded machine.
import { spawn } from 'node:child_process';
import os from 'node:os';

const cores = os.availableParallelism();
const hogs = Array.from({ length: cores }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
console.log(`test:stress: ${hogs.length} CPU hogs busy on ${cores} cores while npm test runs`);
const stop = () => hogs.forEach((h) => h.kill('SIGKILL'));
process.on('exit', stop);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const started = Date.now();
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const test = spawn(npm, ['test', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])], { stdio: 'inherit' });
test.on('exit', (code, signal) => {
  stop();
  console.log(`test:stress: npm test ${code === 0 ? 'passed' : 'FAILED'} under load in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  process.exit(code ?? (signal ? 1 : 0));
});
