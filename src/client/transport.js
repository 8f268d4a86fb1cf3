/**
 * transport.js — the two ways to reach the server, made to look alike.
 *
 * A WebSocket and an EventSource differ in everything but what matters
 * here: frames come in, and at some point the connection ends. `openTransport`
 * turns either into that one shape, so the rest of the client never asks
 * which one it has (except to send upstream, which only a WebSocket can).
 * `createFallback` is the rule of transport "auto": which of the two to open
 * next, given how earlier attempts went. The URLs of both are built here too.
 */

/** The values of the `transport` option of `connect`. */
export const TRANSPORT_MODES = Object.freeze(["auto", "websocket", "sse"]);

const WEBSOCKET_OPEN = 1;

/**
 * Appends the tidings query to an endpoint URL: `collections` (comma
 * separated), `where` (the filters of listed collections, as JSON) and
 * `cursor`, each left out when empty.
 * @param {string} base e.g. "/ws" or "/events"
 * @param {{cursor?: string|null, collections?: Iterable<string>, filters?: Record<string, object[]>}} [query]
 * @returns {string}
 */
export function buildUrl(base, { cursor, collections, filters } = {}) {
  const params = [];
  const names = [...(collections || [])].filter(Boolean);
  if (names.length > 0) params.push(`collections=${names.map(encodeURIComponent).join(",")}`);
  // Only for collections in the list: `where` narrows named collections.
  const wanted = Object.entries(filters || {}).filter(([name]) => names.includes(name));
  if (names.length > 0 && wanted.length > 0) {
    params.push(`where=${encodeURIComponent(JSON.stringify(Object.fromEntries(wanted)))}`);
  }
  if (cursor) params.push(`cursor=${encodeURIComponent(cursor)}`);
  if (params.length === 0) return base;
  return base + (base.includes("?") ? "&" : "?") + params.join("&");
}

/**
 * Resolves `url` against `baseHref` and gives it a ws: or wss: scheme.
 * @param {string} url
 * @param {string} baseHref the page's address
 * @returns {string}
 */
export function toWebSocketUrl(url, baseHref) {
  const absolute = new URL(url, baseHref);
  if (absolute.protocol === "http:") absolute.protocol = "ws:";
  else if (absolute.protocol === "https:") absolute.protocol = "wss:";
  return absolute.href;
}

/**
 * The address to open a connection of `kind` at: the endpoint with the
 * query; for a WebSocket, absolute with a ws:/wss: scheme (an EventSource
 * resolves a relative URL itself).
 * @param {"websocket"|"sse"} kind
 * @param {{url: string, sseUrl: string}} endpoints
 * @param {{cursor?: string|null, collections?: Iterable<string>, filters?: Record<string, object[]>}} query
 * @param {string} pageHref the page's address
 * @returns {string}
 */
export function transportUrl(kind, { url, sseUrl }, query, pageHref) {
  if (kind === "sse") return buildUrl(sseUrl, query);
  return toWebSocketUrl(buildUrl(url, query), pageHref);
}

/**
 * @typedef {object} Transport
 * @property {"websocket"|"sse"} kind
 * @property {(frame: object) => void} send  sends a frame upstream on an open
 *   WebSocket; does nothing otherwise (SSE has no upstream channel)
 * @property {() => void} close  closes it; no callback runs after this
 */

/**
 * Opens a WebSocket or an EventSource at `address` and reports what it does
 * as frames (`onFrame(data)`, the text of a message) and one end
 * (`onDrop(code)`: the first error or close, with the WebSocket close code
 * if it was a close). At the end the connection is closed and its handlers
 * removed: an EventSource in particular is closed on any error, because the
 * client reconnects by itself (with backoff and its cursor) rather than
 * letting the browser retry on its own.
 * @param {"websocket"|"sse"} kind
 * @param {string} address
 * @param {{WebSocket?: any, EventSource?: any}} constructors
 * @param {{onFrame: (data: string) => void, onDrop: (code?: number) => void}} handlers
 * @returns {Transport} throws if the constructor does
 */
export function openTransport(kind, address, constructors, { onFrame, onDrop }) {
  const channel = kind === "sse" ? new constructors.EventSource(address) : new constructors.WebSocket(address);
  let ended = false;
  function close() {
    ended = true;
    channel.onmessage = channel.onerror = channel.onclose = null;
    try { channel.close(); } catch { /* already closed */ }
  }
  function end(code) {
    if (ended) return;
    close();
    onDrop(code);
  }
  channel.onmessage = (event) => onFrame(event.data);
  channel.onerror = () => end();
  if (kind !== "sse") channel.onclose = (event) => end(event && event.code);
  return {
    kind,
    send(frame) {
      if (kind !== "sse" && channel.readyState === WEBSOCKET_OPEN) channel.send(JSON.stringify(frame));
    },
    close,
  };
}

/**
 * @typedef {object} Fallback
 * @property {"websocket"|"sse"} kind  the transport to open next (read-only)
 * @property {(kind: "websocket"|"sse") => void} failed  an attempt on `kind` ended before its `hello`
 * @property {(kind: "websocket"|"sse") => boolean} succeeded  `hello` arrived on `kind`; returns
 *   whether to try the WebSocket again later (this is a fallback SSE on a page where a WebSocket worked)
 * @property {() => void} upgrade  prefer the WebSocket again from the next attempt on
 */

/**
 * Which transport to open, by the rule of `mode`. "websocket" and "sse" are
 * fixed. "auto" starts with the WebSocket and uses SSE after `fallbackAfter`
 * WebSocket attempts in a row that never got `hello` (refused, closed, or
 * silent): a proxy that blocks WebSockets looks like that. If SSE fails too
 * before its `hello`, the server is probably down rather than blocked, so
 * the next attempt is a WebSocket again. If a WebSocket worked earlier on
 * this page, the failures were most likely a restart, not a proxy:
 * `succeeded` then says to try the WebSocket again later.
 * @param {{mode?: "auto"|"websocket"|"sse", fallbackAfter?: number,
 *   log?: {info?: (...args: unknown[]) => void}}} [options]
 * @returns {Fallback}
 */
export function createFallback({ mode = "auto", fallbackAfter = 2, log = console } = {}) {
  let useSse = mode === "sse";
  let webSocketFailures = 0; // WebSocket attempts in a row that never got hello
  let webSocketWorked = false; // a WebSocket got hello at least once
  return {
    get kind() { return useSse ? "sse" : "websocket"; },
    failed(kind) {
      if (mode !== "auto") return;
      if (kind === "websocket") {
        webSocketFailures += 1;
        if (webSocketFailures >= fallbackAfter) {
          if (!useSse) log.info?.("tidings: WebSocket unavailable, using Server-Sent Events");
          useSse = true;
        }
      } else {
        useSse = false;
        webSocketFailures = 0;
      }
    },
    succeeded(kind) {
      if (kind === "websocket") {
        webSocketFailures = 0;
        webSocketWorked = true;
        return false;
      }
      return mode === "auto" && webSocketWorked;
    },
    upgrade() {
      useSse = false;
      webSocketFailures = 0;
    },
  };
}
