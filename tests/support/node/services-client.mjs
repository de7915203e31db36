// @jupyterlab/services, JupyterLab's own client library, driving a fps-remote-kernels front.
//
// Usage: node services-client.mjs FRONT_URL FRONT_TOKEN REMOTE_URL REMOTE_TOKEN [v1|legacy]
//
// Each step prints `ok - <step>`; the first failing step prints `not ok - <step>: <error>` and
// the process exits 1. The last line is a JSON summary that tests/test_jupyterlab_services.py
// reads. The remote's URL and token are used only to check that kernels really start and end
// there; everything else goes through the front.

import {
  KernelManager,
  KernelSpecManager,
  ServerConnection,
  SessionManager,
} from '@jupyterlab/services';

import {
  check,
  connected,
  execute,
  login,
  openedSockets,
  settingsFor,
  step,
  withTimeout,
} from './harness.mjs';

const [frontUrl, frontToken, remoteUrl, remoteToken, protocol = 'v1'] = process.argv.slice(2);
if (!remoteToken || !['v1', 'legacy'].includes(protocol)) {
  console.error('usage: node services-client.mjs FRONT_URL FRONT_TOKEN REMOTE_URL REMOTE_TOKEN [v1|legacy]');
  process.exit(2);
}

const created = { kernels: [], sessions: [] };

/** The ids of the kernels running on the remote, asked of the remote itself. */
async function remoteKernelIds() {
  const response = await fetch(`${remoteUrl}api/kernels?token=${encodeURIComponent(remoteToken)}`);
  check(response.status === 200, `remote GET /api/kernels answered ${response.status}`);
  return (await response.json()).map((kernel) => kernel.id);
}

function bytesOf(buffer) {
  if (ArrayBuffer.isView(buffer)) {
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }
  return new Uint8Array(buffer);
}

// Registered in the kernel: a comm target that sends every message back with its buffers.
const ECHO_TARGET = `
def _echo_target(comm, open_msg):
    @comm.on_msg
    def _echo(msg):
        comm.send({"echo": msg["content"]["data"]}, buffers=msg["buffers"])
get_ipython().kernel.comm_manager.register_target("echo", _echo_target)
print("registered")
`;

// ------------------------------------------------------------------ the scenario

async function main() {
  const cookie = await step('log in with ?token= and keep the cookie', () =>
    login(frontUrl, frontToken),
  );
  const serverSettings = settingsFor(frontUrl, cookie, protocol);
  const specManager = new KernelSpecManager({ serverSettings });
  const kernelManager = new KernelManager({ serverSettings });
  const sessionManager = new SessionManager({ kernelManager, serverSettings });
  try {
    await step('KernelSpecManager lists the remote specs', async () => {
      await specManager.ready;
      await specManager.refreshSpecs();
      const specs = specManager.specs;
      check(specs?.default === 'python3', `default spec: ${specs?.default}`);
      const python = specs.kernelspecs.python3;
      check(python?.language === 'python', `python3 spec: ${JSON.stringify(python)}`);
      const logo = python.resources['logo-64x64'];
      check(logo === '/kernelspecs/python3/logo-64x64.png', `logo URL: ${logo}`);
    });

    const kernel = await step('KernelManager.startNew starts a kernel on the remote', async () => {
      const kernel = await kernelManager.startNew({ name: 'python3' });
      created.kernels.push(kernel.id);
      check((await remoteKernelIds()).includes(kernel.id), `kernel ${kernel.id} not on the remote`);
      return kernel;
    });

    await step('requestKernelInfo answers with the kernel language', async () => {
      await connected(kernel);
      const reply = await kernel.requestKernelInfo();
      check(reply?.content.status === 'ok', `kernel_info_reply: ${JSON.stringify(reply?.content)}`);
      check(reply.content.language_info.name === 'python', 'language is not python');
    });

    await step('the WebSocket speaks the expected protocol', () => {
      const expected = protocol === 'v1' ? 'v1.kernel.websocket.jupyter.org' : '';
      const used = openedSockets.map((ws) => ws.protocol);
      check(used.length > 0 && used.every((p) => p === expected),
        `subprotocols ${JSON.stringify(used)}, expected ${JSON.stringify(expected)}`);
    });

    await step('execute print(6*7) streams 42', async () => {
      const { stdout, reply } = await execute(kernel, 'print(6*7)');
      check(reply.content.status === 'ok', `execute_reply: ${JSON.stringify(reply.content)}`);
      check(stdout === '42\n', `stdout ${JSON.stringify(stdout)}`);
    });

    await step('comm open and message round-trip a binary buffer', async () => {
      const { stdout } = await execute(kernel, ECHO_TARGET);
      check(stdout === 'registered\n', `echo target: ${JSON.stringify(stdout)}`);
      // Every byte value, including ones that are not valid UTF-8.
      const sent = new Uint8Array(512).map((_, i) => (i * 7) % 256);
      const comm = kernel.createComm('echo');
      const echoed = new Promise((resolve) => {
        comm.onMsg = resolve;
      });
      await comm.open({}).done;
      await comm.send({ hello: 'buffers' }, undefined, [sent]).done;
      const msg = await echoed;
      check(msg.content.data.echo.hello === 'buffers', `echo data: ${JSON.stringify(msg.content.data)}`);
      check(msg.buffers?.length === 1, `${msg.buffers?.length} buffers came back`);
      const received = bytesOf(msg.buffers[0]);
      check(received.length === sent.length && received.every((b, i) => b === sent[i]),
        'the buffer came back changed');
      comm.close();
    });

    await step('interrupt stops a running cell with KeyboardInterrupt', async () => {
      const future = kernel.requestExecute({ code: 'import time; time.sleep(60)' });
      const busy = new Promise((resolve) => {
        future.onIOPub = (msg) => {
          if (msg.header.msg_type === 'execute_input') resolve();
        };
      });
      await busy;
      const started = Date.now();
      await kernel.interrupt();
      const reply = await withTimeout(future.done.catch((e) => e), 'interrupted cell', 10_000);
      const content = reply.content ?? {};
      check(content.status === 'error' && content.ename === 'KeyboardInterrupt',
        `reply after interrupt: ${JSON.stringify(content)}`);
      check(Date.now() - started < 10_000, 'interrupt took more than 10 s');
    });

    await step('restart then execute again from a fresh count', async () => {
      await execute(kernel, 'before_restart = 1');
      await kernel.restart();
      const { stdout, reply } = await execute(kernel, "print('before_restart' in globals())");
      check(stdout === 'False\n', `state survived the restart: ${JSON.stringify(stdout)}`);
      check(reply.content.execution_count === 1, `execution_count ${reply.content.execution_count}`);
    });

    const session = await step('SessionManager.startNew creates a session on the remote', async () => {
      const session = await sessionManager.startNew({
        path: 'scripted.ipynb', name: 'scripted.ipynb', type: 'notebook',
      }, {});
      created.sessions.push(session.id);
      created.kernels.push(session.kernel.id);
      check(session.kernel.id !== kernel.id, 'the session reused the first kernel');
      check((await remoteKernelIds()).includes(session.kernel.id), 'session kernel not on the remote');
      const { stdout } = await execute(session.kernel, 'print(6*7)');
      check(stdout === '42\n', `session kernel stdout ${JSON.stringify(stdout)}`);
      return session;
    });

    await step('session setPath and setName are PATCHed on the server', async () => {
      await session.setPath('renamed/scripted.ipynb');
      await session.setName('renamed.ipynb');
      const models = [];
      for await (const model of listSessions(serverSettings)) models.push(model);
      const model = models.find((m) => m.id === session.id);
      check(model?.path === 'renamed/scripted.ipynb', `path on the server: ${model?.path}`);
      check(model?.name === 'renamed.ipynb', `name on the server: ${model?.name}`);
    });

    await step('session and kernel shut down, and are gone from the remote', async () => {
      const sessionKernel = session.kernel.id;
      await session.shutdown();
      await kernel.shutdown();
      const left = await remoteKernelIds();
      check(!left.includes(kernel.id), `kernel ${kernel.id} still on the remote`);
      check(!left.includes(sessionKernel), `session kernel ${sessionKernel} still on the remote`);
      await sessionManager.refreshRunning();
      check(![...sessionManager.running()].some((m) => m.id === session.id), 'session still listed');
    });
  } finally {
    sessionManager.dispose();
    kernelManager.dispose();
    specManager.dispose();
  }
}

async function* listSessions(serverSettings) {
  const response = await ServerConnection.makeRequest(
    `${serverSettings.baseUrl}api/sessions`, {}, serverSettings,
  );
  check(response.status === 200, `GET /api/sessions answered ${response.status}`);
  yield* await response.json();
}

let failed = false;
try {
  await main();
} catch {
  failed = true;
}
console.log(JSON.stringify({
  protocol,
  subprotocols: openedSockets.map((ws) => ws.protocol),
  ...created,
}));
// Sockets still open (after a failure) must not keep the process alive.
for (const ws of openedSockets) ws.terminate();
process.exit(failed ? 1 : 0);
