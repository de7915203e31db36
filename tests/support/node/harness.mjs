// What the @jupyterlab/services scenarios share: logging in as a browser does, server settings
// whose requests and sockets carry the cookie, bounded steps that print `ok - ...`.

import { ServerConnection } from '@jupyterlab/services';
import WebSocket from 'ws';

export const STEP_MS = 30_000;
// Every kernel WebSocket the scenario opened (their protocols are checked, and they are
// closed at the end).
export const openedSockets = [];

// ------------------------------------------------------------------ authentication

/**
 * Log in as a browser does: any authenticated route called with `?token=` answers with the
 * `fastapiusersauth` cookie (fps-auth, token mode). Jupyverse does not read the
 * `Authorization: token` header that @jupyterlab/services sends, so the cookie is what
 * authenticates every later request and the kernel WebSocket.
 */
export async function login(baseUrl, token) {
  const response = await fetch(`${baseUrl}api/me?token=${encodeURIComponent(token)}`);
  if (response.status !== 200) {
    throw new Error(`login: GET /api/me?token=... answered ${response.status}`);
  }
  const cookie = response.headers
    .getSetCookie()
    .map((header) => header.split(';')[0])
    .find((pair) => pair.startsWith('fastapiusersauth='));
  if (!cookie) {
    throw new Error('login: the front set no fastapiusersauth cookie');
  }
  return cookie;
}

/** Server settings whose requests and WebSockets all carry the cookie. */
export function settingsFor(baseUrl, cookie, protocol) {
  class CookieWebSocket extends WebSocket {
    constructor(url, protocols) {
      // The legacy run offers no subprotocol, as an older client would.
      super(url, protocol === 'legacy' ? [] : protocols, { headers: { Cookie: cookie } });
      openedSockets.push(this);
    }
  }
  return ServerConnection.makeSettings({
    baseUrl,
    wsUrl: 'ws' + baseUrl.slice('http'.length),
    // No token: it would go out as an `Authorization` header and a `token` query parameter
    // on the WebSocket URL, both ignored by Jupyverse. The cookie is enough.
    token: '',
    fetch: (request) => {
      request.headers.set('Cookie', cookie);
      return fetch(request);
    },
    WebSocket: CookieWebSocket,
  });
}

// ------------------------------------------------------------------ helpers


export function withTimeout(promise, what, ms = STEP_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

export async function step(name, fn, ms = STEP_MS) {
  try {
    const result = await withTimeout(Promise.resolve().then(fn), name, ms);
    console.log(`ok - ${name}`);
    return result;
  } catch (error) {
    console.log(`not ok - ${name}: ${error?.stack ?? error}`);
    throw error;
  }
}

/** Run `code`; the stdout it printed and the execute reply. */
export async function execute(kernel, code) {
  let stdout = '';
  const future = kernel.requestExecute({ code });
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream' && msg.content.name === 'stdout') {
      stdout += msg.content.text;
    }
  };
  const reply = await future.done;
  return { stdout, reply };
}

/** Resolves once the kernel's WebSocket is connected (kernel_info is not queued before). */
export function connected(kernel) {
  if (kernel.connectionStatus === 'connected') {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const onChange = (_, status) => {
      if (status === 'connected') {
        kernel.connectionStatusChanged.disconnect(onChange);
        resolve();
      }
    };
    kernel.connectionStatusChanged.connect(onChange);
  });
}
