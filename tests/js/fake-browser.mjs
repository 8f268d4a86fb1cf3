// Fakes of the browser for the unit tests of the client (src/client/): a
// WebSocket, an EventSource, a document and timers that the tests drive by
// hand. Not a test file itself (node --test skips it by its name).

/** Lets pending promise callbacks (and the client's start microtask) run. */
export async function settle(rounds = 10) {
  for (let i = 0; i < rounds; i++) await Promise.resolve();
}

/** A promise with its resolve/reject functions, for slow reloads. */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

/** A fake browser environment; `env.options` goes into `connect`. */
export function fakeEnvironment() {
  const sockets = [];
  const sources = [];
  const requests = [];
  const timers = new Map(); // id → { fn, ms }
  let nextTimer = 1;

  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedByClient = false;
      sockets.push(this);
    }
    send(text) { this.sent.push(JSON.parse(text)); }
    close() { this.closedByClient = true; this.readyState = 3; }
    // What the server (or the network) does:
    open() { this.readyState = 1; this.onopen?.({}); }
    receive(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    serverClose(code = 1001) { this.readyState = 3; this.onclose?.({ code }); }
    refuse() { this.readyState = 3; this.onerror?.({}); this.onclose?.({ code: 1006 }); }
  }

  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.closed = false;
      sources.push(this);
    }
    close() { this.closed = true; }
    receive(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    fail() { this.onerror?.({}); }
  }

  const listeners = new Map();
  const document = {
    hidden: false,
    addEventListener(type, fn) { listeners.set(type, [...(listeners.get(type) ?? []), fn]); },
    removeEventListener(type, fn) { listeners.set(type, (listeners.get(type) ?? []).filter((f) => f !== fn)); },
    setHidden(hidden) {
      this.hidden = hidden;
      for (const fn of listeners.get("visibilitychange") ?? []) fn({});
    },
  };

  const env = {
    sockets, sources, requests, timers, document,
    /** Runs the pending timers whose delay satisfies `pred` (all by default). */
    runTimers(pred = () => true) {
      const due = [...timers].filter(([, t]) => pred(t.ms));
      for (const [id, t] of due) {
        timers.delete(id);
        t.fn();
      }
      return due.length;
    },
    /** Runs the pending reconnect timer (any timer but the hello timeout). */
    runRetry() { return env.runTimers((ms) => ms !== 5000 && ms !== 30000); },
    retryDelays() { return [...timers.values()].map((t) => t.ms).filter((ms) => ms !== 5000 && ms !== 30000); },
    options: {
      WebSocket: FakeWebSocket,
      EventSource: FakeEventSource,
      document,
      location: { href: "http://example.test/page" },
      fetch: async (input, init) => { requests.push({ input, init }); return { ok: true, status: 204 }; },
      setTimeout: (fn, ms) => { const id = nextTimer++; timers.set(id, { fn, ms }); return id; },
      clearTimeout: (id) => { timers.delete(id); },
      random: () => 0.5,
      log: { info() {}, warn() {}, error() {} },
    },
  };
  return env;
}

/** A `hello` frame; without `token`, as older servers send it. */
/** A `hello`; the token defaults to one made from the session id (`null`: none). */
export const hello = (cursor, session = "00000000000000a1", token = `${session}${session}`) => (
  token === null ? { type: "hello", session, cursor } : { type: "hello", session, token, cursor });
export const note = (collection, cursor, data) => ({ collection, op: "insert", data, cursor });
