/**
 * connection.js — keeps one connection to the server, whatever happens to it.
 *
 * Opens it (in the transport the fallback rule picks, with the query the
 * session gives), counts it as failed when no `hello` comes within
 * `helloTimeout`, and after any drop reopens it on the backoff schedule:
 * not while the tab is hidden (the entry reopens it when the tab is
 * visible again) and never after `close`. It also tells the server about
 * collections subscribed or dropped while a connection is open. What the
 * frames mean is session.js's business; this module only passes them on.
 */

import { createBackoff } from "./backoff.js";

/** The close code of a session that must re-authenticate (docs/protocol.md). */
export const REAUTHENTICATE = 4401;
import { createFallback, openTransport, transportUrl } from "./transport.js";

/**
 * @typedef {object} Environment
 * @property {any} WebSocket
 * @property {any} EventSource
 * @property {{href?: string}|undefined} location
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(id: unknown) => void} clearTimeout
 * @property {() => number} random
 * @property {{info?: (...args: unknown[]) => void, warn: (...args: unknown[]) => void}} log
 */

/**
 * @typedef {object} ConnectionOptions
 * @property {Environment} env
 * @property {"auto"|"websocket"|"sse"} mode
 * @property {string} url  the WebSocket endpoint
 * @property {string} sseUrl  the Server-Sent Events endpoint
 * @property {number} helloTimeout  ms
 * @property {number} fallbackAfter
 * @property {number} upgradeAfter  ms
 * @property {{base?: number, cap?: number, restartCap?: number}} backoff
 * @property {() => {cursor: string|null, collections: string[], filters?: Record<string, object[]>}} query
 *   where a new connection resumes, and with which filters
 * @property {() => boolean} isHidden  whether the tab is hidden (no reconnects then)
 * @property {(data: string) => void} onFrame  a frame from the current connection
 * @property {(state: "connecting"|"offline") => void} onState
 * @property {() => void} onDrop  the current connection ended (its session with it)
 * @property {() => unknown} onReauthenticate  the server closed with 4401: re-authorize
 *   (a returned promise is awaited) before the next connection
 */

/**
 * @typedef {object} Connection
 * @property {() => void} open  opens a connection, unless one is open or opening
 * @property {() => void} reconnect  closes the connection (if any) and opens a new one now
 * @property {() => void} confirmed  `hello` arrived: the connection is live
 * @property {(collections: string[], filters?: Record<string, object[]>, cursors?: Record<string, string[]>) => boolean} announce
 *   the page subscribes to `collections` (with these filters, from these cursors: the server
 *   replays what came after them): sends `subscribe` frames for those the connection lacks,
 *   has with another filter, or that start at a cursor (on SSE, reconnects with them);
 *   false when no connection is live (the next `hello` announces them)
 * @property {(collection: string) => void} retract  the page no longer shows `collection`
 * @property {() => void} reauthenticate  the server said the session must re-authenticate
 *   (an SSE `reauthenticate` frame): as a 4401 close
 * @property {() => void} close  closes for good
 * @property {boolean} closed  (read-only)
 * @property {"websocket"|"sse"|null} transport  the kind of the connection open or
 *   opening, null if none (read-only)
 */

/**
 * @param {ConnectionOptions} options
 * @returns {Connection}
 */
export function keepConnection(options) {
  const { env, onState, onDrop } = options;
  const backoff = createBackoff({ ...options.backoff, random: env.random });
  const fallback = createFallback({ mode: options.mode, fallbackAfter: options.fallbackAfter, log: env.log });
  let closed = false;
  // { kind, transport, gotHello, collections, helloTimer }, opening or live;
  // `collections` maps each name to its filter as sent (JSON, "null": none).
  let current = null;
  let retryTimer = null; // the scheduled reconnect, or null
  let upgradeTimer = null; // the retry of the WebSocket while on a fallback SSE

  function open() {
    retryTimer = null;
    if (closed || current) return;
    if (options.isHidden()) {
      onState("offline"); // reopened when the tab is visible
      return;
    }
    onState("connecting");
    const query = options.query();
    const c = {
      kind: fallback.kind,
      transport: null,
      gotHello: false,
      // null: all ("*")
      collections: query.collections.length > 0
        ? new Map(query.collections.map((name) => [name, filterKey(query.filters, name)]))
        : null,
      helloTimer: null,
    };
    current = c;
    try {
      const pageHref = env.location?.href || "http://localhost/";
      c.transport = openTransport(c.kind, transportUrl(c.kind, options, query, pageHref), env, {
        onFrame: (data) => { if (c === current) options.onFrame(data); },
        onDrop: (code) => dropped(c, code),
      });
    } catch (error) {
      env.log.warn(`tidings: cannot open a ${c.kind} connection:`, error);
      queueMicrotask(() => dropped(c));
      return;
    }
    c.helloTimer = env.setTimeout(() => dropped(c), options.helloTimeout);
  }

  /** Forgets the current connection and closes it. */
  function detach() {
    const c = current;
    current = null;
    env.clearTimeout(c.helloTimer);
    c.transport?.close();
    onDrop();
  }

  /** The connection `c` failed or closed (with a WebSocket close `code`): retry. */
  function dropped(c, code) {
    if (c !== current) return;
    detach();
    backoff.closed(code);
    if (!c.gotHello) fallback.failed(c.kind);
    if (closed) return;
    onState("offline");
    if (code === REAUTHENTICATE) {
      reauthorize();
      return;
    }
    if (retryTimer === null && !options.isHidden()) retryTimer = env.setTimeout(open, backoff.next());
  }

  /**
   * After a 4401: the page re-authorizes (`onReauthenticate`, default
   * nothing: the next connect runs the server's authorize hook anyway), then
   * the connection reopens on the backoff schedule, resuming from its
   * cursor. A failed re-authorization is logged and retried the same way.
   */
  function reauthorize() {
    let done;
    try {
      done = Promise.resolve(options.onReauthenticate());
    } catch (error) {
      done = Promise.reject(error);
    }
    done.catch((error) => env.log.warn("tidings: re-authorizing failed:", error)).then(() => {
      if (closed || current || retryTimer !== null || options.isHidden()) return;
      retryTimer = env.setTimeout(open, backoff.next());
    });
  }

  function reconnect() {
    if (closed) return;
    if (current) detach();
    env.clearTimeout(retryTimer);
    retryTimer = null;
    open();
  }

  function confirmed() {
    backoff.reset();
    const c = current;
    if (!c) return; // a frame handed in by hand (`live.handleFrame`)
    c.gotHello = true;
    env.clearTimeout(c.helloTimer);
    if (fallback.succeeded(c.kind)) scheduleUpgrade(c);
  }

  /** On a fallback SSE, tries the WebSocket again after `upgradeAfter` ms. */
  function scheduleUpgrade(c) {
    env.clearTimeout(upgradeTimer);
    upgradeTimer = env.setTimeout(() => {
      upgradeTimer = null;
      if (c !== current || closed) return;
      fallback.upgrade();
      reconnect(); // resumes with the cursor
    }, options.upgradeAfter);
  }

  function announce(collections, filters, cursors) {
    const c = current;
    if (!c || !c.gotHello) return false;
    if (c.collections === null) return true; // it receives all
    // What the connection lacks or has with another filter, and what must
    // start at a cursor (a subscriber added since: its read may be older
    // than what the connection has seen).
    const differs = (name) => c.collections.get(name) !== filterKey(filters, name);
    if (c.kind === "sse") {
      // The list is in the URL: reconnect, resuming from the session's
      // cursor (SSE has no way to start one collection at another).
      if (collections.some(differs)) reconnect();
      return true;
    }
    const frame = (names, where, cursor) =>
      ({ type: "subscribe", collections: names, ...(where ? { where } : {}), ...(cursor ? { cursor } : {}) });
    // Names without filter or cursor go in one frame; the others one frame
    // per cursor (the server replays after each: one notification may come
    // twice, none is missed).
    const plain = [];
    const others = [];
    for (const name of collections) {
      const key = filterKey(filters, name);
      const starts = cursors?.[name] ?? [];
      if (c.collections.get(name) === key && starts.length === 0) continue;
      c.collections.set(name, key);
      const where = filters?.[name];
      if (!where && starts.length === 0) plain.push(name);
      else for (const cursor of starts.length > 0 ? starts : [undefined]) others.push(frame([name], where, cursor));
    }
    if (plain.length > 0) c.transport.send(frame(plain));
    for (const f of others) c.transport.send(f);
    return true;
  }

  function retract(collection) {
    const c = current;
    // On SSE the server keeps sending it until the next reconnect; the
    // session ignores it.
    if (!c || !c.gotHello || c.kind === "sse" || !c.collections?.has(collection)) return;
    c.collections.delete(collection);
    c.transport.send({ type: "unsubscribe", collections: [collection] });
  }

  /** The filter of `name` as a comparable string ("null": none). */
  function filterKey(filters, name) {
    return JSON.stringify(filters?.[name] ?? null);
  }

  function close() {
    if (closed) return;
    closed = true;
    env.clearTimeout(retryTimer);
    retryTimer = null;
    env.clearTimeout(upgradeTimer);
    upgradeTimer = null;
    if (current) detach();
  }

  return {
    open,
    reconnect,
    confirmed,
    reauthenticate: () => { if (current) dropped(current, REAUTHENTICATE); },
    announce,
    retract,
    close,
    get closed() { return closed; },
    get transport() { return current ? current.kind : null; },
  };
}
