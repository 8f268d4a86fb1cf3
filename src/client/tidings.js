/**
 * tidings.js — the browser client of tidings (guide: docs/client.md; wire
 * protocol: docs/protocol.md). This is its entry: `connect()` wires the
 * other modules together and adds what belongs to the page (state events,
 * `live.fetch`, hidden tabs).
 *
 * A small, dependency-free set of ES modules. It keeps one connection to the
 * server (a WebSocket at `/ws`, or Server-Sent Events at `/events` where
 * WebSockets are blocked), remembers the last cursor it saw so a reconnect
 * gets what it missed, and calls your reload function for every collection
 * that changed. The server serves this module at `/tidings/tidings.js` and
 * the others next to it, with `/tidings.js` re-exporting this one.
 *
 *   backoff.js     when to retry (the reconnect schedule)
 *   coalescer.js   single-flight reloads
 *   transport.js   WebSocket and EventSource as one shape; the fallback rule
 *   session.js     the protocol state: hello, token, cursor, subscriptions
 *   connection.js  opening, timing out and reopening the connection
 *
 * @example
 *   import { connect } from "/tidings.js";
 *
 *   const live = connect({
 *     url: "/ws",            // WebSocket endpoint (default "/ws")
 *     sseUrl: "/events",     // Server-Sent Events endpoint (default "/events")
 *     transport: "auto",     // "auto" (WebSocket, SSE fallback) | "websocket" | "sse"
 *     cursor: document.body.dataset.cursor, // the cursor the server rendered into the page
 *   });
 *
 *   // Only posts of forum 3 are sent by the server (`where`: equality, or an
 *   // array for `in`, on top-level fields of `data`, combined with AND):
 *   live.subscribe("posts", reloadPosts, { where: { forum_id: 3 } });
 *
 *   // A subscription made on a live connection starts at a cursor: the
 *   // server replays what came after it, so a write that lands between the
 *   // page's read and the server's receipt of the subscription is not lost.
 *   // By default the session's cursor when `subscribe` is called (right for
 *   // "subscribe, then read"); after "read, then subscribe", pass the read's:
 *   const response = await live.fetch(`/api/forums/${id}/posts`);
 *   live.subscribe("posts", reloadPosts, {
 *     where: { forum_id: id },
 *     cursor: response.headers.get("tidings-cursor"),
 *   });
 *
 *   // Called after a notification for "forums" or a resync that names it
 *   // (or does not say what changed); returns an
 *   // unsubscribe function. Reloads are single-flight: while one runs,
 *   // further notifications only schedule exactly one more.
 *   const unsubscribe = live.subscribe("forums", async () => {
 *     const forums = await (await fetch("/api/forums")).json();
 *     render(forums);
 *   });
 *
 *   live.onState((state) => badge.textContent = state); // "connecting" | "live" | "offline"
 *
 *   // Your own writes: window.fetch plus the `tidings-session` header (the
 *   // secret token from `hello`), so the server does not notify this page of
 *   // its own change (update the page from the response instead).
 *   const response = await live.fetch("/api/forums", { method: "POST", ... });
 *
 *   // Your reads: a response's `tidings-cursor` header (a snapshot cursor,
 *   // taken before the server read) is recorded, and the first connection,
 *   // which waits for the reads made before it opens, resumes from it.
 *   const forums = await (await live.fetch("/api/forums")).json();
 *
 *   live.sessionId; live.cursor; live.state; live.transport; live.close();
 *
 * Options of `connect` (all optional):
 *   url, sseUrl, transport, cursor  — as above;
 *   helloTimeout  — ms to wait for `hello` after opening (5000);
 *   fallbackAfter — failed WebSocket attempts in a row before "auto" uses SSE (2);
 *   upgradeAfter  — ms on a fallback SSE connection before trying the
 *                   WebSocket again, if one worked earlier on this page (30000);
 *   backoffBase, backoffCap, restartBackoffCap — reconnect delay: full
 *                   jitter in [0, min(cap, base * 2^attempt)) ms, with the cap
 *                   lowered to restartBackoffCap for the first 20 attempts
 *                   after a 1001/1012 close (250, 5000, 1000); see backoffDelay;
 *   minReloadInterval — ms; a subscription's reloads start at least this
 *                   far apart (0: only single-flight); see createCoalescer;
 *   onError(error, collection) — a reload failed (default: console.error);
 *   onReauthenticate() — the server closed with 4401 (the session was revoked
 *                   or its identity expired): re-authorize, e.g. refresh a
 *                   cookie; the client reconnects when the returned promise
 *                   settles and resumes from its cursor (default: reconnect);
 *   start         — false: do not connect (drive it with `handleFrame`);
 *   WebSocket, EventSource, document, fetch, location, setTimeout,
 *   clearTimeout, random, log — the environment, replaceable for tests.
 *
 * Behaviour:
 *   - The first connection is opened in a microtask, so `subscribe` calls
 *     made right after `connect` are in its `?collections=` list.
 *   - Reconnects (after any close or error) use exponential backoff with full
 *     jitter, reset once `hello` arrives, and resume with `?cursor=`. After a
 *     close with 1001 (going away: a restart or deploy) or 1012 (service
 *     restart) the delays stay under 1 s for 20 attempts (about 10 s).
 *   - While `document.hidden`, a dropped connection is not reopened; it is
 *     reopened at once when the page becomes visible again.
 *   - "auto": after `fallbackAfter` WebSocket attempts in a row that never
 *     got `hello` (refused, closed, or silent for `helloTimeout`), the client
 *     uses SSE. If SSE fails too before its `hello` (the server is probably
 *     down), it goes back to trying WebSockets first. If a WebSocket worked
 *     earlier on this page (the failures were a server restart, not a
 *     blocking proxy), it tries the WebSocket again `upgradeAfter` ms after
 *     the SSE connection went live.
 *   - On SSE the client closes the EventSource on any error and reconnects by
 *     itself (with backoff and its cursor); subscribing to a new collection
 *     reconnects with the new list (SSE has no upstream channel).
 */

import { createCoalescer } from "./coalescer.js";
import { keepConnection } from "./connection.js";
import { CURSOR_HEADER, checkSubscription, checkWhere, createSession } from "./session.js";
import { TRANSPORT_MODES } from "./transport.js";

// The pure helpers, part of the documented API (docs/client.md).
export { backoffDelay } from "./backoff.js";
export { createCoalescer } from "./coalescer.js";
export { SESSION_HEADER, parseFrame } from "./session.js";
export { buildUrl, toWebSocketUrl } from "./transport.js";

/** The states reported to `onState`. */
export const STATES = Object.freeze(["connecting", "live", "offline"]);

/** @typedef {"connecting"|"live"|"offline"} State */

/**
 * @typedef {object} ConnectOptions  all optional; see the header comment and docs/client.md
 * @property {string} [url]
 * @property {string} [sseUrl]
 * @property {"auto"|"websocket"|"sse"} [transport]
 * @property {string|null} [cursor]
 * @property {number} [helloTimeout]
 * @property {number} [fallbackAfter]
 * @property {number} [upgradeAfter]
 * @property {number} [backoffBase]
 * @property {number} [backoffCap]
 * @property {number} [restartBackoffCap]
 * @property {number} [minReloadInterval]
 * @property {(error: unknown, collection: string) => void} [onError]
 * @property {() => unknown} [onReauthenticate]  called after a 4401 close (or SSE
 *   `reauthenticate` frame); the reconnect waits for the promise it returns
 * @property {boolean} [start]
 * @property {any} [WebSocket]
 * @property {any} [EventSource]
 * @property {any} [document]
 * @property {typeof fetch} [fetch]
 * @property {{href?: string}} [location]
 * @property {(fn: () => void, ms: number) => unknown} [setTimeout]
 * @property {(id: unknown) => void} [clearTimeout]
 * @property {() => number} [random]
 * @property {{info?: Function, warn: Function, error: Function}} [log]
 */

/**
 * @typedef {object} Live  the object `connect` returns
 * @property {(collection: string, reload: (collection: string) => unknown,
 *   options?: {filter?: (frame: object) => boolean,
 *     where?: Record<string, string|number|boolean|null|Array<string|number|boolean|null>>,
 *     cursor?: string|null}) => () => void} subscribe
 * @property {(listener: (state: State) => void) => () => void} onState
 * @property {(input: RequestInfo|URL, init?: RequestInit) => Promise<Response>} fetch  window.fetch
 *   with the session header; records the response's `tidings-cursor` (see the header comment)
 * @property {() => void} close
 * @property {(data: unknown) => void} handleFrame  handles one frame (text or object) as if
 *   it came from the server: for tests and custom transports
 * @property {() => void} reconnect  reopens the connection now (resuming with the cursor)
 * @property {string|null} sessionId  the session id from the last `hello`; null while not live
 * @property {string|null} cursor  the last cursor seen (from the page, `hello`, `resync` or a notification)
 * @property {State} state
 * @property {"websocket"|"sse"|null} transport  while a connection is open or opening; null otherwise
 */

/**
 * Connects to the server and keeps the connection; see the header comment.
 * @param {ConnectOptions} [options]
 * @returns {Live}
 */
export function connect(options = {}) {
  const config = readOptions(options);
  const { env } = config;
  const state = createStateEvents(env.log);
  const session = createSession({ cursor: config.cursor, log: env.log });
  const connection = keepConnection({
    ...config,
    query: () => {
      // What the connection resumes from covers the subscribers that start there.
      session.announced(session.cursor);
      return { cursor: session.cursor, collections: session.collections, filters: session.filters };
    },
    isHidden: () => Boolean(env.document?.hidden),
    onFrame: handleFrame,
    onState: state.set,
    onDrop: session.forget,
  });
  // A connection dropped while hidden waits for this; a live one is kept.
  const stopWatching = whenVisible(env.document, () => {
    if (connection.transport === null) connection.reconnect(); // resumes with the cursor
  });

  /** @type {Live["handleFrame"]} */
  function handleFrame(data) {
    const kind = session.receive(data);
    if (kind === "reauthenticate") connection.reauthenticate();
    if (kind !== "hello") return;
    connection.confirmed();
    state.set("live");
    announce();
  }

  /** Tells the live connection what the page subscribes to, and from where. */
  function announce() {
    if (connection.announce(session.collections, session.filters, session.pendingCursors)) session.announced();
  }

  /** @type {Live["subscribe"]} */
  function subscribe(collection, reload, { filter, where, cursor } = {}) {
    checkSubscription(collection, reload);
    checkWhere(where);
    if (cursor !== undefined && cursor !== null && typeof cursor !== "string") {
      throw new TypeError("tidings: `cursor` must be a string (a read's `tidings-cursor`)");
    }
    // Where the server starts this subscription: the read behind it, or
    // else everything after what the session has seen (a read made after
    // this call is later still).
    const from = cursor || session.cursor;
    const coalescer = createCoalescer(() => reload(collection), {
      onError: (error) => config.onError(error, collection),
      minInterval: config.minReloadInterval,
      setTimeout: env.setTimeout,
    });
    const remove = session.subscribe(collection, {
      filter, where: where ?? undefined, trigger: coalescer.trigger, cursor: from,
    });
    announce();
    return function unsubscribe() {
      if (remove()) connection.retract(collection);
      // Another subscriber's filter may be all that is left: narrow to it.
      else announce();
    };
  }

  function close() {
    if (connection.closed) return;
    connection.close();
    session.forget();
    stopWatching();
    state.set("offline");
  }

  // The first connection waits for the page's first reads through
  // `live.fetch`, so that it resumes from their snapshot cursor.
  let opened = false;
  let readsInFlight = 0;
  let openAfterReads = false;
  function openFirst() {
    if (readsInFlight > 0) {
      openAfterReads = true;
      return;
    }
    opened = true;
    connection.open();
  }

  /** @type {Live["fetch"]} */
  async function liveFetch(input, init) {
    const early = !opened;
    if (early) readsInFlight += 1;
    try {
      const response = await env.fetch(input, session.withSessionHeader(input, init));
      const snapshot = response?.headers?.get?.(CURSOR_HEADER);
      if (snapshot) session.adopt(snapshot);
      return response;
    } finally {
      if (early) {
        readsInFlight -= 1;
        if (readsInFlight === 0 && openAfterReads) {
          openAfterReads = false;
          openFirst();
        }
      }
    }
  }

  if (config.start) queueMicrotask(openFirst);
  return {
    subscribe,
    onState: state.listen,
    fetch: liveFetch,
    close,
    handleFrame,
    reconnect: connection.reconnect,
    get sessionId() { return session.sessionId; },
    get cursor() { return session.cursor; },
    get state() { return state.current; },
    get transport() { return connection.transport; },
  };
}

/** The options of `connect` with their defaults, and the environment. */
function readOptions(options) {
  const log = options.log ?? console;
  const mode = options.transport ?? "auto";
  if (!TRANSPORT_MODES.includes(mode)) {
    throw new TypeError(`tidings: transport must be "auto", "websocket" or "sse", not ${JSON.stringify(mode)}`);
  }
  return {
    env: {
      WebSocket: options.WebSocket ?? globalThis.WebSocket,
      EventSource: options.EventSource ?? globalThis.EventSource,
      document: options.document ?? globalThis.document,
      fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
      location: options.location ?? globalThis.location,
      setTimeout: options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms)),
      clearTimeout: options.clearTimeout ?? ((id) => globalThis.clearTimeout(id)),
      random: options.random ?? Math.random,
      log,
    },
    mode,
    url: options.url ?? "/ws",
    sseUrl: options.sseUrl ?? "/events",
    cursor: options.cursor || null,
    helloTimeout: options.helloTimeout ?? 5000,
    fallbackAfter: options.fallbackAfter ?? 2,
    upgradeAfter: options.upgradeAfter ?? 30000,
    backoff: {
      base: options.backoffBase ?? 250,
      cap: options.backoffCap ?? 5000,
      restartCap: options.restartBackoffCap ?? 1000,
    },
    minReloadInterval: options.minReloadInterval ?? 0,
    onError: options.onError
      ?? ((error, collection) => log.error(`tidings: reloading ${collection} failed:`, error)),
    onReauthenticate: options.onReauthenticate ?? (() => undefined),
    start: options.start !== false,
  };
}

/**
 * The connection state and its listeners. A listener that throws is logged
 * and does not keep the others from hearing about the change.
 * @param {{error: (...args: unknown[]) => void}} log
 */
function createStateEvents(log) {
  /** @type {State} */
  let current = "connecting";
  const listeners = new Set();
  function call(listener) {
    try { listener(current); } catch (error) { log.error("tidings: state listener failed:", error); }
  }
  return {
    get current() { return current; },
    /** @param {State} next */
    set(next) {
      if (next === current) return;
      current = next;
      for (const listener of [...listeners]) call(listener);
    },
    /** Calls `listener` now and on every change; returns its removal. */
    listen(listener) {
      listeners.add(listener);
      call(listener);
      return () => listeners.delete(listener);
    },
  };
}

/**
 * Calls `onVisible` whenever the document becomes visible; returns a
 * function that stops it. Without a document (tests, workers) it does nothing.
 */
function whenVisible(doc, onVisible) {
  if (!doc || typeof doc.addEventListener !== "function") return () => {};
  const listener = () => { if (!doc.hidden) onVisible(); };
  doc.addEventListener("visibilitychange", listener);
  return () => {
    if (typeof doc.removeEventListener === "function") doc.removeEventListener("visibilitychange", listener);
  };
}
