// Unit tests of the browser client (src/tidings.js), with fake WebSocket,
// EventSource, document, fetch and timers: `node --test tests/js/`.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  backoffDelay, buildUrl, connect, createCoalescer, parseFrame, toWebSocketUrl,
} from "../../src/tidings.js";

// ---- fakes -------------------------------------------------------------------

/** Lets pending promise callbacks (and the client's start microtask) run. */
async function settle(rounds = 10) {
  for (let i = 0; i < rounds; i++) await Promise.resolve();
}

/** A promise with its resolve/reject functions, for slow reloads. */
function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

/** A fake browser environment; `env.options` goes into `connect`. */
function fakeEnvironment() {
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

const hello = (cursor, session = "00000000000000a1") => ({ type: "hello", session, cursor });
const note = (collection, cursor, data) => ({ collection, op: "insert", data, cursor });

// ---- pure helpers --------------------------------------------------------------

test("backoffDelay grows exponentially, is capped, and uses the given random", () => {
  const top = () => 0.999999;
  assert.equal(backoffDelay(0, top), 249);
  assert.equal(backoffDelay(1, top), 499);
  assert.equal(backoffDelay(2, top), 999);
  assert.equal(backoffDelay(5, top), 7999);
  assert.equal(backoffDelay(6, top), 9999, "capped at 10 s");
  assert.equal(backoffDelay(60, top), 9999, "no overflow for large attempts");
  assert.equal(backoffDelay(3, () => 0), 0, "full jitter starts at 0");
  assert.equal(backoffDelay(3, () => 0.5), 1000);
  assert.equal(backoffDelay(1, () => 0.5, { base: 100, cap: 150 }), 75);
  for (let attempt = 0; attempt < 20; attempt++) {
    const d = backoffDelay(attempt);
    assert.ok(d >= 0 && d < Math.min(10000, 250 * 2 ** attempt), `attempt ${attempt}: ${d}`);
  }
});

test("buildUrl adds collections and cursor, leaving out empty ones", () => {
  assert.equal(buildUrl("/ws"), "/ws");
  assert.equal(buildUrl("/ws", { cursor: null, collections: [] }), "/ws");
  assert.equal(buildUrl("/ws", { cursor: "ab-7" }), "/ws?cursor=ab-7");
  assert.equal(buildUrl("/ws", { collections: ["forums", "posts"] }), "/ws?collections=forums,posts");
  assert.equal(buildUrl("/events", { cursor: "ab-7", collections: new Set(["forums"]) }),
    "/events?collections=forums&cursor=ab-7");
  assert.equal(buildUrl("/ws?x=1", { cursor: "a b" }), "/ws?x=1&cursor=a%20b");
  assert.equal(toWebSocketUrl("/ws?cursor=1", "https://example.test/p?q"), "wss://example.test/ws?cursor=1");
  assert.equal(toWebSocketUrl("/ws", "http://127.0.0.1:3000/"), "ws://127.0.0.1:3000/ws");
});

test("parseFrame accepts JSON objects only", () => {
  assert.deepEqual(parseFrame('{"type":"hello"}'), { type: "hello" });
  assert.equal(parseFrame("not json"), null);
  assert.equal(parseFrame("[1]"), null);
  assert.equal(parseFrame("null"), null);
});

// ---- single-flight coalescing ----------------------------------------------------

test("coalescer: 5 triggers during a slow reload cause exactly 2 reloads", async () => {
  const gates = [];
  let runs = 0;
  const coalescer = createCoalescer(() => {
    runs += 1;
    const gate = deferred();
    gates.push(gate);
    return gate.promise;
  });
  const first = coalescer.trigger();
  assert.equal(runs, 1, "the first trigger reloads at once");
  for (let i = 0; i < 5; i++) coalescer.trigger();
  assert.equal(runs, 1, "no second reload while the first runs");
  gates[0].resolve();
  await settle();
  assert.equal(runs, 2, "exactly one follow-up reload");
  gates[1].resolve();
  await first;
  assert.equal(runs, 2);
  assert.equal(coalescer.running, false);
  coalescer.trigger();
  assert.equal(runs, 3, "a later trigger reloads again");
  gates[2].resolve();
});

test("coalescer: a throwing reload is reported and does not block later reloads", async () => {
  const errors = [];
  let runs = 0;
  const coalescer = createCoalescer(async () => {
    runs += 1;
    if (runs === 1) throw new Error("boom");
  }, { onError: (e) => errors.push(e.message) });
  await coalescer.trigger();
  assert.deepEqual(errors, ["boom"]);
  await coalescer.trigger();
  assert.equal(runs, 2);
  assert.equal(coalescer.running, false);
});

test("coalescer: minInterval spaces reloads of trickling notifications", async () => {
  let clock = 1000;
  const timers = [];
  let runs = 0;
  const coalescer = createCoalescer(async () => { runs += 1; }, {
    minInterval: 200,
    now: () => clock,
    setTimeout: (fn, ms) => timers.push({ fn, ms }),
  });
  await coalescer.trigger();
  assert.equal(runs, 1, "the first reload starts at once");
  clock += 30;
  coalescer.trigger(); // one notification every 30 ms, each after the reload finished
  await settle();
  assert.equal(runs, 1, "waits for the interval");
  assert.deepEqual(timers.map((t) => t.ms), [170]);
  for (let i = 0; i < 4; i++) { clock += 30; coalescer.trigger(); }
  await settle();
  assert.equal(timers.length, 1, "further notifications only mark it dirty");
  clock += 50;
  timers.shift().fn();
  await settle();
  assert.equal(runs, 2, "6 notifications in 200 ms: 2 reloads");
  clock += 1000;
  coalescer.trigger();
  assert.equal(runs, 3, "after a quiet interval a reload starts at once");
});

test("client: notifications coalesce per collection, independently", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options, start: false });
  const forumGates = [];
  let forums = 0;
  let posts = 0;
  live.subscribe("forums", () => {
    forums += 1;
    const gate = deferred();
    forumGates.push(gate);
    return gate.promise;
  });
  live.subscribe("posts", async () => { posts += 1; });
  live.subscribe("other", async () => { throw new Error("never called"); });

  for (let i = 1; i <= 5; i++) live.handleFrame(note("forums", `e-${i}`));
  assert.equal(forums, 1);
  live.handleFrame(note("posts", "e-6"));
  await settle();
  assert.equal(posts, 1, "posts reload while forums is still reloading");
  live.handleFrame(note("posts", "e-7"));
  await settle();
  assert.equal(posts, 2);
  live.handleFrame(note("unsubscribed", "e-8"));
  assert.equal(live.cursor, "e-8", "every notification moves the cursor");
  forumGates[0].resolve();
  await settle();
  assert.equal(forums, 2, "5 notifications during a reload: 2 reloads in total");
  forumGates[1].resolve();
  await settle();
  assert.equal(forums, 2);
});

test("client: a failing reload is logged and later notifications still reload", async () => {
  const env = fakeEnvironment();
  const errors = [];
  const live = connect({ ...env.options, start: false, onError: (e, c) => errors.push(`${c}: ${e.message}`) });
  let calls = 0;
  live.subscribe("forums", async () => {
    calls += 1;
    if (calls === 1) throw new Error("503");
  });
  live.handleFrame(note("forums", "e-1"));
  await settle();
  live.handleFrame(note("forums", "e-2"));
  await settle();
  assert.equal(calls, 2);
  assert.deepEqual(errors, ["forums: 503"]);
});

test("client: subscribe filters and unsubscribe", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options, start: false });
  let calls = 0;
  const unsubscribe = live.subscribe("posts", async () => { calls += 1; },
    { filter: (frame) => frame.data?.forum_id === 1 });
  live.handleFrame(note("posts", "e-1", { id: 5, forum_id: 2 }));
  await settle();
  assert.equal(calls, 0, "filtered out");
  live.handleFrame(note("posts", "e-2", { id: 6, forum_id: 1 }));
  await settle();
  assert.equal(calls, 1);
  live.handleFrame({ type: "resync", cursor: "e-9" });
  await settle();
  assert.equal(calls, 2, "resync reloads regardless of the filter");
  unsubscribe();
  live.handleFrame(note("posts", "e-10", { id: 7, forum_id: 1 }));
  await settle();
  assert.equal(calls, 2);
});

// ---- cursors and reconnects ------------------------------------------------------

test("client: hello, resync and notifications move the cursor; reconnect resumes from it", async () => {
  const env = fakeEnvironment();
  const states = [];
  const live = connect({ ...env.options, cursor: "e-1" });
  live.onState((s) => states.push(s));
  let forums = 0;
  let posts = 0;
  live.subscribe("forums", async () => { forums += 1; });
  live.subscribe("posts", async () => { posts += 1; });
  await settle();

  assert.equal(env.sockets.length, 1);
  const [ws] = env.sockets;
  assert.equal(ws.url, "ws://example.test/ws?collections=forums,posts&cursor=e-1");
  assert.equal(live.state, "connecting");
  ws.open();
  ws.receive(hello("e-1"));
  assert.equal(live.state, "live");
  assert.equal(live.sessionId, "00000000000000a1");
  assert.equal(live.cursor, "e-1");
  assert.equal(forums + posts, 0, "a resumed hello reloads nothing by itself");

  ws.receive({ type: "resync", cursor: "f-40" });
  assert.equal(live.cursor, "f-40");
  await settle();
  assert.equal(forums, 1, "resync reloads every subscribed collection");
  assert.equal(posts, 1);

  ws.receive(note("forums", "f-41", { id: 3 }));
  assert.equal(live.cursor, "f-41");
  await settle();
  assert.equal(forums, 2);

  ws.serverClose(1001);
  assert.equal(live.state, "offline");
  assert.equal(live.sessionId, null);
  assert.deepEqual(env.retryDelays(), [125], "first retry: random 0.5 × 250 ms");
  env.runRetry();
  assert.equal(env.sockets.length, 2);
  assert.equal(env.sockets[1].url, "ws://example.test/ws?collections=forums,posts&cursor=f-41");
  assert.equal(live.state, "connecting");

  // Refused twice: the delay grows; after a hello it starts over.
  env.sockets[1].refuse();
  env.sockets[1].refuse(); // error + close: counted once
  assert.deepEqual(env.retryDelays(), [250]);
  env.runRetry();
  env.sockets[2].open();
  env.sockets[2].receive(hello("f-41"));
  env.sockets[2].serverClose(1001);
  assert.deepEqual(env.retryDelays(), [125], "backoff reset once live");
  assert.deepEqual(states, ["connecting", "live", "offline", "connecting", "offline", "connecting", "live", "offline"]);
  live.close();
  assert.equal(env.timers.size, 0, "close cancels every timer");
});

test("client: subscribing after connect sends a subscribe frame on a WebSocket", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options });
  live.subscribe("forums", async () => {});
  await settle();
  const [ws] = env.sockets;
  assert.equal(ws.url, "ws://example.test/ws?collections=forums");
  ws.open();
  ws.receive(hello("e-1"));
  let posts = 0;
  const unsubscribe = live.subscribe("posts", async () => { posts += 1; });
  assert.deepEqual(ws.sent, [{ type: "subscribe", collections: ["posts"] }]);
  ws.receive(note("posts", "e-2"));
  await settle();
  assert.equal(posts, 1);
  unsubscribe();
  assert.deepEqual(ws.sent.at(-1), { type: "unsubscribe", collections: ["posts"] });
  assert.equal(env.sockets.length, 1, "no reconnect on a WebSocket");
  live.close();
});

test("client: fetch adds the session header once live", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options });
  await settle();
  await live.fetch("/api/forums");
  assert.equal(env.requests[0].init.headers.get("tidings-session"), null, "no session yet");
  env.sockets[0].open();
  env.sockets[0].receive(hello("e-1", "00000000000000b2"));
  await live.fetch("/api/forums", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  const { input, init } = env.requests[1];
  assert.equal(input, "/api/forums");
  assert.equal(init.method, "POST");
  assert.equal(init.body, "{}");
  assert.equal(init.headers.get("tidings-session"), "00000000000000b2");
  assert.equal(init.headers.get("content-type"), "application/json");
  live.close();
});

// ---- fallback to Server-Sent Events -------------------------------------------------

test("auto: two failed WebSocket opens switch to SSE, with the same query", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options, cursor: "e-3" });
  live.subscribe("forums", async () => {});
  await settle();
  env.sockets[0].refuse();
  assert.equal(env.sources.length, 0);
  env.runRetry();
  assert.equal(env.sockets.length, 2, "the second attempt is a WebSocket again");
  env.sockets[1].refuse();
  env.runRetry();
  assert.equal(env.sockets.length, 2, "no third WebSocket");
  assert.equal(env.sources.length, 1);
  const [es] = env.sources;
  assert.equal(es.url, "/events?collections=forums&cursor=e-3");
  assert.equal(live.transport, "sse");
  es.receive(hello("e-3"));
  assert.equal(live.state, "live");
  es.receive(note("forums", "e-4"));
  assert.equal(live.cursor, "e-4");

  // On an error the client closes the EventSource and reconnects itself.
  es.fail();
  assert.equal(es.closed, true);
  assert.equal(live.state, "offline");
  env.runRetry();
  assert.equal(env.sources.length, 2, "stays on SSE once it worked");
  assert.equal(env.sources[1].url, "/events?collections=forums&cursor=e-4");

  // Subscribing on SSE reconnects with the new list.
  env.sources[1].receive(hello("e-4"));
  live.subscribe("posts", async () => {});
  assert.equal(env.sources[1].closed, true);
  assert.equal(env.sources.length, 3);
  assert.equal(env.sources[2].url, "/events?collections=forums,posts&cursor=e-4");
  live.close();
});

test("auto: after a restart forced a fallback, the WebSocket is tried again later", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options, upgradeAfter: 30000 });
  await settle();
  env.sockets[0].open();
  env.sockets[0].receive(hello("e-1"));
  env.sockets[0].serverClose(1001); // the server restarts...
  env.runRetry();
  env.sockets[1].refuse();
  env.runRetry();
  env.sockets[2].refuse();
  env.runRetry();
  assert.equal(env.sources.length, 1, "fell back to SSE");
  env.sources[0].receive(hello("f-0"));
  assert.equal(live.transport, "sse");
  assert.equal(env.runTimers((ms) => ms === 30000), 1, "upgrade timer");
  assert.equal(env.sources[0].closed, true);
  assert.equal(env.sockets.length, 4);
  assert.equal(env.sockets[3].url, "ws://example.test/ws?cursor=f-0");
  env.sockets[3].open();
  env.sockets[3].receive(hello("f-0"));
  assert.equal(live.transport, "websocket");
  live.close();

  // A page where WebSockets never worked stays on SSE.
  const env2 = fakeEnvironment();
  const blocked = connect({ ...env2.options, upgradeAfter: 30000 });
  await settle();
  env2.sockets[0].refuse();
  env2.runRetry();
  env2.sockets[1].refuse();
  env2.runRetry();
  env2.sources[0].receive(hello("e-1"));
  assert.equal(env2.runTimers((ms) => ms === 30000), 0);
  blocked.close();
});

test("auto: a WebSocket that opens but sends no hello counts as failed", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options });
  await settle();
  env.sockets[0].open();
  assert.equal(env.runTimers((ms) => ms === 5000), 1, "hello timeout");
  assert.equal(env.sockets[0].closedByClient, true);
  env.runRetry();
  env.sockets[1].open();
  env.sockets[1].serverClose(1000); // opened, closed before hello
  env.runRetry();
  assert.equal(env.sources.length, 1);
  assert.equal(env.sources[0].url, "/events");
  live.close();
});

test("auto: one failure, then a hello, does not fall back", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options });
  await settle();
  env.sockets[0].refuse();
  env.runRetry();
  env.sockets[1].open();
  env.sockets[1].receive(hello("e-1"));
  env.sockets[1].serverClose(1001);
  env.runRetry();
  env.sockets[2].refuse();
  env.runRetry();
  assert.equal(env.sources.length, 0);
  assert.equal(env.sockets.length, 4);
  live.close();
});

test("websocket mode never falls back; sse mode never opens a WebSocket", async () => {
  const env = fakeEnvironment();
  const ws = connect({ ...env.options, transport: "websocket" });
  await settle();
  for (let i = 0; i < 4; i++) {
    env.sockets[i].refuse();
    env.runRetry();
  }
  assert.equal(env.sockets.length, 5);
  assert.equal(env.sources.length, 0);
  ws.close();

  const env2 = fakeEnvironment();
  const sse = connect({ ...env2.options, transport: "sse" });
  await settle();
  assert.equal(env2.sockets.length, 0);
  assert.equal(env2.sources.length, 1);
  sse.close();
  assert.throws(() => connect({ ...env2.options, transport: "carrier-pigeon" }), TypeError);
});

// ---- hidden tabs --------------------------------------------------------------------

test("hidden tab: no reconnect until visible, then at once with the cursor", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options });
  live.subscribe("forums", async () => {});
  await settle();
  env.sockets[0].open();
  env.sockets[0].receive(hello("e-7"));
  env.document.setHidden(true);
  assert.equal(live.state, "live", "a hidden tab keeps its open connection");
  env.sockets[0].serverClose(1001);
  assert.equal(live.state, "offline");
  assert.equal(env.timers.size, 0, "no retry scheduled while hidden");
  assert.equal(env.sockets.length, 1);
  env.document.setHidden(false);
  assert.equal(env.sockets.length, 2, "reconnected immediately on visible");
  assert.equal(env.sockets[1].url, "ws://example.test/ws?collections=forums&cursor=e-7");
  assert.equal(live.state, "connecting");
  env.document.setHidden(true);
  env.document.setHidden(false);
  assert.equal(env.sockets.length, 2, "visible again with a connection opening: no second one");
  live.close();
});

test("hidden tab: a retry timer that fires while hidden waits for visibility", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options });
  await settle();
  env.sockets[0].refuse();
  env.document.hidden = true; // no event: the tab was hidden meanwhile
  env.runRetry();
  assert.equal(env.sockets.length, 1);
  assert.equal(live.state, "offline");
  env.document.setHidden(false);
  assert.equal(env.sockets.length, 2);
  live.close();
});

test("a tab hidden from the start connects when it becomes visible", async () => {
  const env = fakeEnvironment();
  env.document.hidden = true;
  const live = connect({ ...env.options });
  await settle();
  assert.equal(env.sockets.length, 0);
  env.document.setHidden(false);
  assert.equal(env.sockets.length, 1);
  live.close();
  env.document.setHidden(true);
  env.document.setHidden(false);
  assert.equal(env.sockets.length, 1, "closed: the listener is gone");
});
