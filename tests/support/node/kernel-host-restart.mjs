// What JupyterLab's client library makes of a kernel whose kernel host restarted under it.
//
// Usage: node kernel-host-restart.mjs FRONT_URL FRONT_TOKEN
//
// Starts a kernel through the front, runs a cell that sleeps, prints `ready`, then waits
// (bounded) for what JupyterLab shows a user: the kernel `dead` and the running cell ended,
// rather than "Disconnected" with the cell `[*]` for good. The test restarts the kernel host
// once it reads `ready`. The last line is a JSON summary.

import { KernelManager } from '@jupyterlab/services';

import { check, connected, login, openedSockets, settingsFor, step, withTimeout } from './harness.mjs';

const [frontUrl, frontToken] = process.argv.slice(2);
const DEAD_MS = 150_000;
const seen = { statuses: [], connection: [] };

async function main() {
  const cookie = await step('log in with ?token= and keep the cookie', () =>
    login(frontUrl, frontToken),
  );
  const kernels = new KernelManager({ serverSettings: settingsFor(frontUrl, cookie, 'v1') });
  const kernel = await step('a kernel starts and connects', async () => {
    const started = await kernels.startNew({ name: 'python3' });
    await connected(started);
    return started;
  });
  kernel.statusChanged.connect((_, status) => seen.statuses.push(status));
  kernel.connectionStatusChanged.connect((_, status) => seen.connection.push(status));
  const future = kernel.requestExecute({ code: 'import time; time.sleep(600)' });
  const cellEnded = future.done.then(
    () => 'replied',
    () => 'ended',
  );
  await step('the cell runs', () =>
    new Promise((resolve) => {
      future.onIOPub = (msg) => {
        if (msg.header.msg_type === 'execute_input') resolve();
      };
    }),
  );
  console.log('ready');
  const dead = new Promise((resolve) => {
    if (kernel.status === 'dead') resolve();
    kernel.statusChanged.connect((_, status) => status === 'dead' && resolve());
  });
  await step('the kernel is dead once its host restarted', () => dead, DEAD_MS);
  const ending = await step('the running cell ended', () => withTimeout(cellEnded, 'cell', 10_000));
  check(ending === 'ended', `the cell ${ending}`);
}

let failed = false;
try {
  await main();
} catch {
  failed = true;
}
console.log(JSON.stringify(seen));
for (const ws of openedSockets) ws.terminate();
process.exit(failed ? 1 : 0);
