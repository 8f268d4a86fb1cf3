/**
 * tidings.js — the browser client of tidings (guide: docs/client.md; wire
 * protocol: docs/protocol.md).
 *
 * A small, dependency-free ES module. It keeps one connection to the server
 * (a WebSocket at `/ws`, or Server-Sent Events at `/events` where WebSockets
 * are blocked), remembers the last cursor it saw so a reconnect gets what it
 * missed, and calls your reload function for every collection that changed.
 * The server serves it at `/tidings.js`; it can also be copied into a page's
 * assets (it has no imports).
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
 *   // Called after a notification for "forums" or a resync; returns an
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

/** The states reported to `onState`. */
export const STATES = Object.freeze(["connecting", "live", "offline"]);

/** The header that marks a request as made by this page's session. */
export const SESSION_HEADER = "tidings-session";

const WEBSOCKET_OPEN = 1;

/** Close codes that announce a restart: 1001 going away, 1012 service restart. */
const RESTART_CLOSE_CODES = new Set([1001, 1012]);

/**
 * How many reconnect attempts after a restart close use `restartCap`: about
 * 10 s of attempts (0.5 s apart on average), longer than a typical restart or
 * deploy. A server that is still down after that gets the usual schedule.
 */
const RESTART_ATTEMPTS = 20;

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry):
 * exponential backoff with full jitter, `random() * min(cap, base * 2^attempt)`.
 * Hidden tabs do not retry at all, so every retry is for a page someone is
 * looking at: `cap` (5 s) bounds how long they see "offline" after the server
 * is back. After a restart close (`afterRestart`), the first
 * `RESTART_ATTEMPTS` attempts use `restartCap` (1 s) instead: the server is
 * expected back within seconds, and the page should follow within a second,
 * still spread out so that all pages do not arrive at once.
 * @param {number} attempt
 * @param {() => number} [random] returns a number in [0, 1)
 * @param {{base?: number, cap?: number, restartCap?: number, afterRestart?: boolean}} [options]
 *   milliseconds (250, 5000, 1000), and whether the last connection was closed for a restart
 * @returns {number} milliseconds, an integer in [0, ceiling)
 */
export function backoffDelay(attempt, random = Math.random, options = {}) {
  const base = options.base ?? 250;
  let cap = options.cap ?? 5000;
  if (options.afterRestart && attempt < RESTART_ATTEMPTS) cap = Math.min(cap, options.restartCap ?? 1000);
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

/**
 * Appends the tidings query to an endpoint URL: `collections` (comma
 * separated) and `cursor`, each left out when empty.
 * @param {string} base e.g. "/ws" or "/events"
 * @param {{cursor?: string|null, collections?: Iterable<string>}} [query]
 * @returns {string}
 */
export function buildUrl(base, { cursor, collections } = {}) {
  const params = [];
  const names = [...(collections || [])].filter(Boolean);
  if (names.length > 0) params.push(`collections=${names.map(encodeURIComponent).join(",")}`);
  if (cursor) params.push(`cursor=${encodeURIComponent(cursor)}`);
  if (params.length === 0) return base;
  return base + (base.includes("?") ? "&" : "?") + params.join("&");
}

/**
 * Resolves `url` against `baseHref` and gives it a ws: or wss: scheme.
 * @param {string} url
 * @param {string} baseHref the page's address
 */
export function toWebSocketUrl(url, baseHref) {
  const absolute = new URL(url, baseHref);
  if (absolute.protocol === "http:") absolute.protocol = "ws:";
  else if (absolute.protocol === "https:") absolute.protocol = "wss:";
  return absolute.href;
}

/**
 * Parses a frame (the text of a WebSocket message or an SSE event's data).
 * @returns {object|null} the frame, or null if it is not a JSON object
 */
export function parseFrame(data) {
  if (data !== null && typeof data === "object") return data;
  try {
    const frame = JSON.parse(data);
    return frame !== null && typeof frame === "object" && !Array.isArray(frame) ? frame : null;
  } catch {
    return null;
  }
}

/**
 * Single-flight: `trigger()` starts `reload()` at once if it is not running;
 * while it runs, further triggers only mark it dirty, and exactly one more
 * reload runs after it finishes (however many triggers came meanwhile).
 * Errors thrown by `reload` go to `onError` and do not stop later reloads.
 * With `minInterval` (ms, default 0), a reload also starts no sooner than
 * that after the previous one started: notifications that keep trickling in
 * (one every few ms, each after the previous reload finished) then cause at
 * most one reload per interval, not one each.
 * @param {() => (Promise<void>|void)} reload
 * @param {{onError?: (error: unknown) => void, minInterval?: number,
 *   setTimeout?: Function, now?: () => number}} [options]
 * @returns {{trigger: () => Promise<void>, readonly running: boolean, readonly runs: number}}
 *   `trigger` resolves when the reloads it caused are done
 */
export function createCoalescer(reload, options = {}) {
  const onError = options.onError ?? ((error) => console.error("tidings: reload failed:", error));
  const minInterval = options.minInterval ?? 0;
  const sleep = (ms) => new Promise((resolve) => (options.setTimeout ?? setTimeout)(resolve, ms));
  const now = options.now ?? (() => Date.now());
  // `running` is set before a cycle starts and cleared when it ends. A
  // reload that throws synchronously ends its cycle before `cycle()` even
  // returns, so "running" cannot be "a cycle's promise is stored": that
  // promise would be stored after the cycle had already finished, and every
  // later trigger would only mark it dirty.
  let running = false;
  let done = null; // resolves when the running cycle ends
  let dirty = false;
  let runs = 0;
  let lastStart = -Infinity;

  async function cycle() {
    try {
      do {
        if (minInterval > 0) {
          const wait = lastStart + minInterval - now();
          if (wait > 0) await sleep(wait);
          lastStart = now();
        }
        dirty = false;
        runs += 1;
        try {
          await reload();
        } catch (error) {
          try { onError(error); } catch { /* a broken logger must not stop reloads */ }
        }
      } while (dirty);
    } finally {
      running = false;
    }
  }

  return {
    trigger() {
      if (running) {
        dirty = true;
        return done;
      }
      running = true;
      // Created before the cycle starts, so that a trigger from inside a
      // reload that has not reached an `await` yet gets it too.
      let finished;
      done = new Promise((resolve) => { finished = resolve; });
      cycle().then(finished, finished);
      return done;
    },
    get running() { return running; },
    get runs() { return runs; },
  };
}

/**
 * Connects to the server and keeps the connection; see the header comment.
 * @param {object} [options]
 * @returns the live connection: `subscribe`, `onState`, `fetch`, `close`,
 *   `handleFrame`, and the getters `sessionId`, `cursor`, `state`, `transport`
 */
export function connect(options = {}) {
  const env = {
    WebSocket: options.WebSocket ?? globalThis.WebSocket,
    EventSource: options.EventSource ?? globalThis.EventSource,
    document: options.document ?? globalThis.document,
    fetch: options.fetch ?? ((...args) => globalThis.fetch(...args)),
    location: options.location ?? globalThis.location,
    setTimeout: options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms)),
    clearTimeout: options.clearTimeout ?? ((id) => globalThis.clearTimeout(id)),
    random: options.random ?? Math.random,
    log: options.log ?? console,
  };
  const url = options.url ?? "/ws";
  const sseUrl = options.sseUrl ?? "/events";
  const mode = options.transport ?? "auto";
  if (!["auto", "websocket", "sse"].includes(mode)) {
    throw new TypeError(`tidings: transport must be "auto", "websocket" or "sse", not ${JSON.stringify(mode)}`);
  }
  const helloTimeout = options.helloTimeout ?? 5000;
  const fallbackAfter = options.fallbackAfter ?? 2;
  const upgradeAfter = options.upgradeAfter ?? 30000;
  const backoff = {
    base: options.backoffBase ?? 250,
    cap: options.backoffCap ?? 5000,
    restartCap: options.restartBackoffCap ?? 1000,
  };
  const minReloadInterval = options.minReloadInterval ?? 0;
  const onError = options.onError
    ?? ((error, collection) => env.log.error(`tidings: reloading ${collection} failed:`, error));
  const doc = env.document;

  let closed = false;
  let state = "connecting";
  let conn = null;         // the current connection (opening or live), or null
  let retryTimer = null;   // the scheduled reconnect, or null
  let attempt = 0;         // reconnects since the last hello: the backoff exponent
  let afterRestart = false; // closed with 1001/1012 and not live since: retry soon
  let wsFailures = 0;      // WebSocket attempts in a row that never got hello
  let wsWorked = false;    // a WebSocket got hello at least once
  let upgradeTimer = null; // the retry of the WebSocket while on a fallback SSE
  let useSse = mode === "sse";
  let sessionId = null;
  // The secret from `hello` that goes in the `tidings-session` header. Kept
  // in this closure only: not a property, never logged.
  let sessionToken = null;
  let cursor = options.cursor || null;
  const subscriptions = new Map(); // collection → Set of { filter, coalescer }
  const stateListeners = new Set();

  // ---- state ---------------------------------------------------------------

  function setState(next) {
    if (next === state) return;
    state = next;
    for (const listener of [...stateListeners]) {
      try { listener(next); } catch (error) { env.log.error("tidings: state listener failed:", error); }
    }
  }

  function baseHref() {
    return (env.location && env.location.href) || "http://localhost/";
  }

  // ---- connecting ----------------------------------------------------------

  function open() {
    retryTimer = null;
    if (closed || conn) return;
    if (doc && doc.hidden) {
      setState("offline"); // reopened by the visibilitychange listener
      return;
    }
    setState("connecting");
    const names = [...subscriptions.keys()];
    const query = { cursor, collections: names };
    const c = {
      kind: useSse ? "sse" : "websocket",
      gotHello: false,
      collections: names.length > 0 ? new Set(names) : null, // null: all ("*")
      helloTimer: null,
      close() {},
      send: null,
    };
    conn = c;
    try {
      if (c.kind === "sse") openEventSource(c, buildUrl(sseUrl, query));
      else openWebSocket(c, toWebSocketUrl(buildUrl(url, query), baseHref()));
    } catch (error) {
      env.log.warn(`tidings: cannot open a ${c.kind} connection:`, error);
      queueMicrotask(() => dropped(c));
      return;
    }
    c.helloTimer = env.setTimeout(() => dropped(c), helloTimeout);
  }

  function openWebSocket(c, address) {
    const socket = new env.WebSocket(address);
    socket.onmessage = (event) => { if (c === conn) handleFrame(event.data); };
    socket.onerror = () => dropped(c);
    socket.onclose = (event) => dropped(c, event && event.code);
    c.send = (frame) => {
      if (socket.readyState === WEBSOCKET_OPEN) socket.send(JSON.stringify(frame));
    };
    c.close = () => {
      socket.onmessage = socket.onerror = socket.onclose = null;
      try { socket.close(); } catch { /* already closed */ }
    };
  }

  function openEventSource(c, address) {
    const source = new env.EventSource(address);
    source.onmessage = (event) => { if (c === conn) handleFrame(event.data); };
    // Closed on any error: we reconnect ourselves, with backoff and our
    // cursor, rather than letting EventSource retry on its own.
    source.onerror = () => dropped(c);
    c.close = () => {
      source.onmessage = source.onerror = null;
      source.close();
    };
  }

  /**
   * The connection `c` failed or closed (with the WebSocket close `code`, if
   * any): forget it and schedule a retry.
   */
  function dropped(c, code) {
    if (c !== conn) return;
    conn = null;
    env.clearTimeout(c.helloTimer);
    c.close();
    forgetSession();
    if (RESTART_CLOSE_CODES.has(code)) afterRestart = true;
    if (!c.gotHello && mode === "auto") {
      if (c.kind === "websocket") {
        wsFailures += 1;
        if (wsFailures >= fallbackAfter) {
          if (!useSse) env.log.info?.("tidings: WebSocket unavailable, using Server-Sent Events");
          useSse = true;
        }
      } else {
        // SSE failed as well: the server is probably down. Prefer the
        // WebSocket again once it is back.
        useSse = false;
        wsFailures = 0;
      }
    }
    if (closed) return;
    setState("offline");
    scheduleRetry();
  }

  function scheduleRetry() {
    if (closed || conn || retryTimer !== null) return;
    if (doc && doc.hidden) return; // the visibilitychange listener reconnects
    const delay = backoffDelay(attempt, env.random, { ...backoff, afterRestart });
    attempt += 1;
    retryTimer = env.setTimeout(open, delay);
  }

  /** Forgets the current connection and closes it. */
  function dropConnection() {
    const c = conn;
    conn = null;
    env.clearTimeout(c.helloTimer);
    c.close();
    forgetSession();
  }

  /** The session ended with its connection: its id and token mean nothing now. */
  function forgetSession() {
    sessionId = null;
    sessionToken = null;
  }

  /** Closes the current connection (if any) and opens a new one at once. */
  function reconnectNow() {
    if (closed) return;
    if (conn) dropConnection();
    if (retryTimer !== null) {
      env.clearTimeout(retryTimer);
      retryTimer = null;
    }
    open();
  }

  function onVisibilityChange() {
    if (closed || doc.hidden || conn) return;
    reconnectNow(); // resumes with the cursor
  }
  if (doc && typeof doc.addEventListener === "function") {
    doc.addEventListener("visibilitychange", onVisibilityChange);
  }

  // ---- frames --------------------------------------------------------------

  /**
   * Handles one frame from the server (a string or an already parsed
   * object). Used by the transports; exposed for tests and custom transports.
   */
  function handleFrame(data) {
    const frame = parseFrame(data);
    if (!frame) {
      env.log.warn("tidings: ignoring a frame that is not a JSON object:", data);
      return;
    }
    switch (frame.type) {
      case undefined: // a notification
        if (typeof frame.cursor === "string") cursor = frame.cursor;
        for (const sub of subscriptions.get(frame.collection) ?? []) {
          if (!sub.filter || sub.filter(frame)) sub.coalescer.trigger();
        }
        break;
      case "hello":
        sessionId = frame.session ?? null;
        // Servers before the token was added take the session id instead.
        sessionToken = typeof frame.token === "string" ? frame.token : sessionId;
        if (typeof frame.cursor === "string") cursor = frame.cursor;
        attempt = 0;
        afterRestart = false;
        if (conn) {
          conn.gotHello = true;
          env.clearTimeout(conn.helloTimer);
          if (conn.kind === "websocket") {
            wsFailures = 0;
            wsWorked = true;
          } else if (mode === "auto" && wsWorked) {
            scheduleUpgrade(conn);
          }
        }
        setState("live");
        if (conn) syncSubscriptions(conn);
        break;
      case "resync": // notifications were lost: reload everything
        if (typeof frame.cursor === "string") cursor = frame.cursor;
        for (const subs of subscriptions.values()) {
          for (const sub of subs) sub.coalescer.trigger();
        }
        break;
      case "error":
        env.log.warn(`tidings: the server refused a frame: ${frame.code}: ${frame.message}`);
        break;
      default: // "subscribed", and types added later
        break;
    }
  }

  /**
   * On an SSE connection the "auto" mode fell back to although WebSockets
   * worked before on this page (the server was probably restarting): tries
   * the WebSocket again after `upgradeAfter` ms, resuming with the cursor.
   */
  function scheduleUpgrade(c) {
    env.clearTimeout(upgradeTimer);
    upgradeTimer = env.setTimeout(() => {
      upgradeTimer = null;
      if (c !== conn || closed) return;
      useSse = false;
      wsFailures = 0;
      reconnectNow();
    }, upgradeAfter);
  }

  /** Tells the server about collections subscribed after `c` was opened. */
  function syncSubscriptions(c) {
    if (!c.gotHello || c.collections === null) return; // null: receives all
    const missing = [...subscriptions.keys()].filter((name) => !c.collections.has(name));
    if (missing.length === 0) return;
    if (c.kind === "websocket") {
      for (const name of missing) c.collections.add(name);
      c.send({ type: "subscribe", collections: missing });
    } else {
      reconnectNow(); // SSE: the list is in the URL
    }
  }

  // ---- the API -------------------------------------------------------------

  function subscribe(collection, reload, { filter } = {}) {
    if (typeof collection !== "string" || collection === "") {
      throw new TypeError("tidings: subscribe needs a collection name");
    }
    if (typeof reload !== "function") throw new TypeError("tidings: subscribe needs a reload function");
    const sub = {
      filter,
      coalescer: createCoalescer(() => reload(collection), {
        onError: (error) => onError(error, collection),
        minInterval: minReloadInterval,
        setTimeout: env.setTimeout,
      }),
    };
    let subs = subscriptions.get(collection);
    if (!subs) {
      subs = new Set();
      subscriptions.set(collection, subs);
    }
    subs.add(sub);
    if (conn) syncSubscriptions(conn);
    return function unsubscribe() {
      if (!subs.delete(sub) || subs.size > 0 || subscriptions.get(collection) !== subs) return;
      subscriptions.delete(collection);
      const c = conn;
      if (c && c.gotHello && c.kind === "websocket" && c.collections && c.collections.has(collection)) {
        c.collections.delete(collection);
        c.send({ type: "unsubscribe", collections: [collection] });
      }
      // On SSE the server keeps sending it until the next reconnect; it is
      // ignored here.
    };
  }

  function onState(listener) {
    stateListeners.add(listener);
    try { listener(state); } catch (error) { env.log.error("tidings: state listener failed:", error); }
    return () => stateListeners.delete(listener);
  }

  function fetchWithSession(input, init = {}) {
    const fromRequest = typeof Request !== "undefined" && input instanceof Request ? input.headers : undefined;
    const headers = new Headers(init.headers ?? fromRequest);
    if (sessionToken) headers.set(SESSION_HEADER, sessionToken);
    return env.fetch(input, { ...init, headers });
  }

  function close() {
    if (closed) return;
    closed = true;
    if (retryTimer !== null) env.clearTimeout(retryTimer);
    retryTimer = null;
    env.clearTimeout(upgradeTimer);
    upgradeTimer = null;
    if (conn) dropConnection();
    forgetSession();
    if (doc && typeof doc.removeEventListener === "function") {
      doc.removeEventListener("visibilitychange", onVisibilityChange);
    }
    setState("offline");
  }

  if (options.start !== false) queueMicrotask(open);

  return {
    subscribe,
    onState,
    fetch: fetchWithSession,
    close,
    handleFrame,
    /** Reopens the connection now (resuming with the cursor). */
    reconnect: reconnectNow,
    /** The session id from the last `hello`; null while not live. */
    get sessionId() { return sessionId; },
    /** The last cursor seen (from the page, `hello`, `resync` or a notification). */
    get cursor() { return cursor; },
    /** "connecting", "live" or "offline". */
    get state() { return state; },
    /** "websocket" or "sse" while a connection is open or opening; null otherwise. */
    get transport() { return conn ? conn.kind : null; },
  };
}
