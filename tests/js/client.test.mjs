// Tests of the whole client through `connect()` (src/client/tidings.js), with
// fake WebSocket, EventSource, document, fetch and timers: `node --test tests/js/`.

import { test } from "node:test";
import assert from "node:assert/strict";

import * as entry from "../../src/client/tidings.js";
import { backoffDelay } from "../../src/client/backoff.js";
import { createCoalescer } from "../../src/client/coalescer.js";
import { parseFrame } from "../../src/client/session.js";
import { buildUrl, toWebSocketUrl } from "../../src/client/transport.js";
import { deferred, fakeEnvironment, hello, note, settle } from "./fake-browser.mjs";

const { connect } = entry;

test("the entry exports the documented API, and only that", () => {
  assert.deepEqual(Object.keys(entry).sort(), [
    "SESSION_HEADER", "STATES", "backoffDelay", "buildUrl", "connect", "createCoalescer", "parseFrame",
    "toWebSocketUrl",
  ]);
  assert.deepEqual(entry.STATES, ["connecting", "live", "offline"]);
  assert.equal(entry.SESSION_HEADER, "tidings-session");
  assert.equal(entry.backoffDelay, backoffDelay, "the helpers are the modules' own");
  assert.equal(entry.createCoalescer, createCoalescer);
  assert.equal(entry.parseFrame, parseFrame);
  assert.equal(entry.buildUrl, buildUrl);
  assert.equal(entry.toWebSocketUrl, toWebSocketUrl);
  const live = connect({ ...fakeEnvironment().options, start: false });
  assert.deepEqual(Object.keys(live), [
    "subscribe", "onState", "fetch", "close", "handleFrame", "reconnect", "sessionId", "cursor", "state", "transport",
  ]);
  live.close();
});

// ---- reloads ----------------------------------------------------------------------

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

test("client: a reload that throws synchronously does not end its subscription", async () => {
  const env = fakeEnvironment();
  const errors = [];
  const live = connect({ ...env.options, start: false, onError: (e, c) => errors.push(`${c}: ${e.message}`) });
  let calls = 0;
  live.subscribe("forums", () => {
    calls += 1;
    if (calls === 1) throw new Error("sync boom");
  });
  live.handleFrame(note("forums", "e-1"));
  await settle();
  assert.deepEqual(errors, ["forums: sync boom"]);
  live.handleFrame(note("forums", "e-2"));
  await settle();
  assert.equal(calls, 2, "a later notification reloads again");
  live.handleFrame({ type: "resync", cursor: "e-3" });
  await settle();
  assert.equal(calls, 3, "and so does a resync");
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

test("client: a resync naming collections reloads those subscriptions, each once", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options, start: false });
  const reloaded = [];
  live.subscribe("forums", async (c) => { reloaded.push(c); });
  live.subscribe("posts", async (c) => { reloaded.push(c); });
  live.handleFrame({ type: "resync", cursor: "e-5", collections: ["posts"] });
  await settle();
  assert.deepEqual(reloaded, ["posts"], "forums did not change");
  assert.equal(live.cursor, "e-5");
  live.handleFrame({ type: "resync", cursor: "e-6" });
  await settle();
  assert.deepEqual(reloaded.sort(), ["forums", "posts", "posts"], "without a list: everything");
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
  assert.deepEqual(ws.sent, [{ type: "subscribe", collections: ["posts"], cursor: "e-1" }],
    "from the session's cursor: what comes after it is replayed");
  ws.receive(note("posts", "e-2"));
  await settle();
  assert.equal(posts, 1);
  unsubscribe();
  assert.deepEqual(ws.sent.at(-1), { type: "unsubscribe", collections: ["posts"] });
  assert.equal(env.sockets.length, 1, "no reconnect on a WebSocket");
  live.close();
});

test("client: where is sent in the connect query and in subscribe frames, and applied to frames", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options });
  const seen = [];
  live.subscribe("posts", async () => { seen.push("three"); }, { where: { forum_id: 3 } });
  await settle();
  const [ws] = env.sockets;
  const query = new URL(ws.url).searchParams;
  assert.equal(query.get("collections"), "posts");
  assert.deepEqual(JSON.parse(query.get("where")), { posts: [{ forum_id: 3 }] });
  ws.open();
  ws.receive(hello("e-1"));
  // A second subscriber of the same collection: the server is asked for the union.
  const unsubscribe = live.subscribe("posts", async () => { seen.push("five"); }, { where: { forum_id: [5] } });
  assert.deepEqual(ws.sent, [
    { type: "subscribe", collections: ["posts"], where: [{ forum_id: 3 }, { forum_id: [5] }], cursor: "e-1" },
  ]);
  // Each subscriber gets only what its own `where` passes; a move reaches both sides.
  ws.receive({ collection: "posts", op: "insert", data: { id: 1, forum_id: 5 }, cursor: "e-2" });
  await settle();
  assert.deepEqual(seen, ["five"]);
  ws.receive({ collection: "posts", op: "update", data: { id: 1, forum_id: 3, before: { forum_id: 5 } }, cursor: "e-3" });
  await settle();
  assert.deepEqual(seen.sort(), ["five", "five", "three"]);
  unsubscribe();
  assert.deepEqual(ws.sent.at(-1), { type: "subscribe", collections: ["posts"], where: [{ forum_id: 3 }] },
    "narrowed to the filter that is left");
  // An unfiltered subscriber widens the subscription to everything.
  live.subscribe("posts", async () => { seen.push("all"); });
  assert.deepEqual(ws.sent.at(-1), { type: "subscribe", collections: ["posts"], cursor: "e-3" });
  // Then the client filters as the server does: no data passes every
  // filter (a condensed batch), data that is not an object passes none.
  seen.length = 0;
  ws.receive({ collection: "posts", op: "delete", data: 7, cursor: "e-4" });
  await settle();
  assert.deepEqual(seen, ["all"], "data that is not an object reaches only the unfiltered subscriber");
  seen.length = 0;
  ws.receive({ collection: "posts", op: "update", cursor: "e-5" });
  await settle();
  assert.deepEqual(seen.sort(), ["all", "three"], "no data reaches every subscriber");
  assert.throws(() => live.subscribe("posts", async () => {}, { where: { forum_id: { gt: 3 } } }), TypeError);
  assert.throws(() => live.subscribe("posts", async () => {}, { where: "forum_id=3" }), TypeError);
  live.close();
});

test("client: a subscription on a live connection starts at the read's cursor; `subscribed` restores the position", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options });
  live.subscribe("forums", async () => {});
  await settle();
  const [ws] = env.sockets;
  ws.open();
  ws.receive(hello("e-1"));
  ws.receive(note("forums", "e-2"));
  let posts = 0;
  // Read, then subscribe: the read's cursor, not the session's, is where the server starts.
  live.subscribe("posts", async () => { posts += 1; }, { where: { forum_id: 3 }, cursor: "e-1" });
  assert.deepEqual(ws.sent.at(-1), { type: "subscribe", collections: ["posts"], where: [{ forum_id: 3 }], cursor: "e-1" });
  // The server replays the post written after the read, then acknowledges
  // with the session's position (the replayed frame's cursor is older).
  ws.receive({ collection: "posts", op: "insert", data: { id: 9, forum_id: 3 }, cursor: "e-1a" });
  assert.equal(live.cursor, "e-1a");
  ws.receive({ type: "subscribed", collections: ["posts"], all: false, count: 2, cursor: "e-2" });
  assert.equal(live.cursor, "e-2", "the position after the replay");
  await settle();
  assert.equal(posts, 1, "the replayed post reloads the posts");
  // An acknowledgement without a cursor moves nothing.
  ws.receive({ type: "subscribed", collections: ["tags"], all: false, count: 3 });
  assert.equal(live.cursor, "e-2");
  assert.throws(() => live.subscribe("posts", async () => {}, { cursor: 42 }), TypeError);
  live.close();
});

test("client: subscribers added while connecting start at each of their cursors, once", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options, cursor: "e-0" });
  live.subscribe("forums", async () => {});
  await settle();
  const [ws] = env.sockets;
  assert.equal(ws.url, "ws://example.test/ws?collections=forums&cursor=e-0");
  // Two reads, then their subscriptions, before the connection is live.
  const unsubscribe7 = live.subscribe("posts", async () => {}, { where: { forum_id: 7 }, cursor: "e-1" });
  live.subscribe("posts", async () => {}, { where: { forum_id: 8 }, cursor: "e-5" });
  ws.open();
  ws.receive(hello("e-0"));
  const where = [{ forum_id: 7 }, { forum_id: 8 }];
  assert.deepEqual(ws.sent, [
    { type: "subscribe", collections: ["posts"], where, cursor: "e-1" },
    { type: "subscribe", collections: ["posts"], where, cursor: "e-5" },
  ], "one frame per cursor: the oldest read is covered whatever the order");
  assert.ok(!ws.sent.some((f) => f.collections.includes("forums")), "forums starts where the URL resumed");
  // Once carried, a cursor is not sent again: narrowing sends none.
  unsubscribe7();
  assert.deepEqual(ws.sent.at(-1), { type: "subscribe", collections: ["posts"], where: [{ forum_id: 8 }] });
  live.close();
});

test("client: the first connection waits for live.fetch reads and resumes from their tidings-cursor", async () => {
  const env = fakeEnvironment();
  const gate = deferred();
  const live = connect({
    ...env.options,
    fetch: async () => { await gate.promise; return { ok: true, status: 200, headers: new Headers({ "tidings-cursor": "e-7" }) }; },
  });
  live.subscribe("forums", async () => {});
  const read = live.fetch("/api/forums");
  await settle();
  assert.equal(env.sockets.length, 0, "no connection while the first read is in flight");
  gate.resolve();
  await read;
  await settle();
  assert.equal(env.sockets.length, 1);
  assert.equal(new URL(env.sockets[0].url).searchParams.get("cursor"), "e-7", "resumes from the snapshot");
  env.sockets[0].open();
  env.sockets[0].receive(hello("e-9"));
  assert.equal(live.cursor, "e-9");
  live.close();
});

test("client: a snapshot cursor does not replace a cursor already held", async () => {
  const env = fakeEnvironment();
  const live = connect({
    ...env.options, cursor: "e-3",
    fetch: async () => ({ ok: true, status: 200, headers: new Headers({ "tidings-cursor": "e-7" }) }),
  });
  await live.fetch("/api/forums");
  await settle();
  assert.equal(new URL(env.sockets[0].url).searchParams.get("cursor"), "e-3", "the older cursor loses nothing");
  live.close();
});

test("client: a 4401 close re-authorizes, then reconnects and resumes from the cursor", async () => {
  const env = fakeEnvironment();
  const gate = deferred();
  let asked = 0;
  const live = connect({ ...env.options, onReauthenticate: () => { asked += 1; return gate.promise; } });
  live.subscribe("forums", async () => {});
  await settle();
  env.sockets[0].open();
  env.sockets[0].receive(hello("e-1"));
  env.sockets[0].receive(note("forums", "e-2"));
  env.sockets[0].serverClose(4401);
  assert.equal(asked, 1);
  assert.equal(live.state, "offline");
  await settle();
  assert.deepEqual(env.retryDelays(), [], "no reconnect before the re-authorization settles");
  gate.resolve();
  await settle();
  env.runRetry();
  assert.equal(env.sockets.length, 2);
  assert.equal(env.sockets[1].url, "ws://example.test/ws?collections=forums&cursor=e-2");
  live.close();
});

test("client: an SSE reauthenticate frame is handled as a 4401 close", async () => {
  const env = fakeEnvironment();
  let asked = 0;
  const live = connect({ ...env.options, transport: "sse", onReauthenticate: async () => { asked += 1; } });
  live.subscribe("forums", async () => {});
  await settle();
  const [source] = env.sources;

  source.receive(hello("e-1"));
  source.receive({ type: "reauthenticate" });
  assert.equal(asked, 1);
  assert.equal(live.state, "offline");
  await settle();
  env.runRetry();
  assert.equal(env.sources.length, 2, "reconnected after re-authorizing");
  live.close();
});

test("client: fetch adds the session header once live", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options });
  await settle();
  await live.fetch("/api/forums");
  assert.equal(env.requests[0].init.headers.get("tidings-session"), null, "no session yet");
  env.sockets[0].open();
  env.sockets[0].receive(hello("e-1", "00000000000000b2", "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"));
  await live.fetch("/api/forums", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  const { input, init } = env.requests[1];
  assert.equal(input, "/api/forums");
  assert.equal(init.method, "POST");
  assert.equal(init.body, "{}");
  assert.equal(init.headers.get("tidings-session"), "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2");
  assert.equal(init.headers.get("content-type"), "application/json");
  live.close();
});

test("client: fetch sends the token from hello, never exposing it", async () => {
  const env = fakeEnvironment();
  const token = "0123456789abcdef0123456789abcdef";
  const live = connect({ ...env.options });
  await settle();
  env.sockets[0].open();
  env.sockets[0].receive(hello("e-1", "00000000000000c3", token));
  assert.equal(live.sessionId, "00000000000000c3", "sessionId is the public id");
  await live.fetch("/api/forums", { method: "POST" });
  assert.equal(env.requests[0].init.headers.get("tidings-session"), token, "the header carries the token");
  const visible = JSON.stringify(Object.fromEntries(Object.keys(live).map((k) => [k, live[k]])));
  assert.ok(!visible.includes(token), `the token is not readable from the client object: ${visible}`);

  // A dropped connection forgets the token; the next hello brings a new one.
  env.sockets[0].serverClose(1001);
  await live.fetch("/api/forums", { method: "POST" });
  assert.equal(env.requests[1].init.headers.get("tidings-session"), null, "no header while offline");
  env.runRetry();
  env.sockets[1].open();
  env.sockets[1].receive(hello("e-1", "00000000000000d4", null)); // a hello without a token
  await live.fetch("/api/forums", { method: "POST" });
  assert.equal(env.requests[2].init.headers.get("tidings-session"), null,
    "without a token no header: the public session id proves nothing");
  live.close();
  await live.fetch("/api/forums", { method: "POST" });
  assert.equal(env.requests[3].init.headers.get("tidings-session"), null, "closed: no header");
});

// ---- reconnect schedule ------------------------------------------------------------

/** Drives `live` through one failed reconnect and returns the delay of the next retry. */
function nextRetryDelay(env) {
  const delays = env.retryDelays();
  assert.equal(delays.length, 1, `one retry pending: ${delays}`);
  return delays[0];
}

test("client: after a 1001 close retries are capped at 1 s; other closes use the usual schedule", async () => {
  for (const [code, expected] of [
    [1001, [249, 499, 999, 999, 999, 999]],  // going away: a restart or a deploy
    [1012, [249, 499, 999, 999, 999, 999]],  // service restart
    [1006, [249, 499, 999, 1999, 3999, 4999]], // abnormal closure: the usual backoff
    [1000, [249, 499, 999, 1999, 3999, 4999]],
  ]) {
    const env = fakeEnvironment();
    const live = connect({ ...env.options, transport: "websocket", random: () => 0.999999 });
    await settle();
    env.sockets[0].open();
    env.sockets[0].receive(hello("e-1"));
    env.sockets[0].serverClose(code);
    const delays = [];
    for (let i = 1; i <= expected.length; i++) {
      delays.push(nextRetryDelay(env));
      env.runRetry();
      env.sockets[i].refuse(); // the server is not back yet
    }
    assert.deepEqual(delays, expected, `close code ${code}`);
    live.close();
  }
});

test("client: the restart schedule lasts 20 attempts, and a hello ends it", async () => {
  const env = fakeEnvironment();
  const live = connect({ ...env.options, transport: "websocket", random: () => 0.999999 });
  await settle();
  env.sockets[0].open();
  env.sockets[0].receive(hello("e-1"));
  env.sockets[0].serverClose(1001);
  const delays = [];
  for (let i = 1; i <= 22; i++) {
    delays.push(nextRetryDelay(env));
    env.runRetry();
    env.sockets[i].refuse();
  }
  assert.deepEqual(delays.slice(17), [999, 999, 999, 4999, 4999], "attempts 17–21");
  // Back: live again; an ordinary drop now uses the usual schedule from the start.
  env.runRetry();
  env.sockets[23].open();
  env.sockets[23].receive(hello("e-1"));
  env.sockets[23].refuse();
  assert.equal(nextRetryDelay(env), 249);
  env.runRetry();
  env.sockets[24].refuse();
  env.runRetry();
  env.sockets[25].refuse();
  env.runRetry();
  env.sockets[26].refuse();
  assert.equal(nextRetryDelay(env), 1999, "attempt 3 of the usual schedule");
  live.close();
});

/** A deterministic Math.random-like generator (mulberry32): numbers in [0, 1). */
function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * One simulated restart, on a simulated clock: a live page ("auto"
 * transport) gets 1001; the server accepts connections again `outage` ms
 * later. Every connection attempt is answered after 1–30 ms of
 * network latency: refused while the server is down, with `hello` once it is
 * up. Returns how long after the server came back the page was live again.
 */
function simulateRestart(seed, outage) {
  const clientRandom = seededRandom(seed);
  const networkRandom = seededRandom(seed ^ 0x9e3779b9);
  let now = 0;
  let nextId = 1;
  const timers = new Map(); // id → { fn, at }
  const setTimeout = (fn, ms) => { const id = nextId++; timers.set(id, { fn, at: now + ms }); return id; };
  const clearTimeout = (id) => { timers.delete(id); };
  let serverUpAt = 0;
  const latency = () => 1 + Math.floor(networkRandom() * 30);
  const answer = (connection, refuse) => {
    const up = now >= serverUpAt;
    setTimeout(() => {
      if (up) connection.onmessage?.({ data: JSON.stringify(hello(`c-${seed}`)) });
      else refuse();
    }, latency());
  };
  const sockets = [];
  class SimulatedWebSocket {
    constructor() {
      this.readyState = 1;
      sockets.push(this);
      answer(this, () => { this.onerror?.({}); this.onclose?.({ code: 1006 }); });
    }
    send() {}
    close() {}
  }
  class SimulatedEventSource {
    constructor() { answer(this, () => this.onerror?.({})); }
    close() {}
  }
  /** Runs the earliest timer; false when none is left. */
  const step = () => {
    let earliest = null;
    for (const [id, t] of timers) if (!earliest || t.at < earliest[1].at) earliest = [id, t];
    if (!earliest) return false;
    timers.delete(earliest[0]);
    now = earliest[1].at;
    earliest[1].fn();
    return true;
  };
  let liveAt = null;
  const live = connect({
    WebSocket: SimulatedWebSocket, EventSource: SimulatedEventSource, fetch: async () => ({}),
    document: { hidden: false, addEventListener() {}, removeEventListener() {} },
    location: { href: "http://example.test/" }, setTimeout, clearTimeout, random: clientRandom,
    log: { info() {}, warn() {}, error() {} }, start: false,
  });
  live.onState((state) => { if (state === "live") liveAt = now; });
  live.reconnect();
  for (let i = 0; i < 100 && liveAt === null; i++) step();
  assert.equal(live.state, "live", "live before the restart");
  // The restart: the server closes the session with 1001 and is down for `outage` ms.
  serverUpAt = now + outage;
  liveAt = null;
  sockets.at(-1).onclose({ code: 1001 });
  for (let i = 0; i < 10000 && liveAt === null && now < serverUpAt + 60000; i++) step();
  live.close();
  assert.notEqual(liveAt, null, `seed ${seed}: never live again`);
  return liveAt - serverUpAt;
}

test("client: after a 2 s restart the page is back within 2 s of the server (1000 simulated runs)", (t) => {
  const backAfter = [];
  for (let seed = 1; seed <= 1000; seed++) backAfter.push(simulateRestart(seed, 2000));
  const sorted = [...backAfter].sort((a, b) => a - b);
  const p50 = sorted[Math.floor(sorted.length * 0.5)];
  const p95 = sorted[Math.floor(sorted.length * 0.95)];
  t.diagnostic(`back after the server: median ${p50} ms, p95 ${p95} ms, max ${sorted.at(-1)} ms`);
  const late = backAfter.map((ms, i) => [i + 1, ms]).filter(([, ms]) => ms > 2000);
  assert.deepEqual(late, [], "runs (seed, ms) back more than 2 s after the server");
  assert.ok(sorted[0] >= 0, "never live before the server was up");
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

// ---- the page's side ------------------------------------------------------------------

test("client: a state listener that throws is logged; the others still hear of the change", async () => {
  const env = fakeEnvironment();
  const errors = [];
  const live = connect({ ...env.options, start: false, log: { info() {}, warn() {}, error: (m) => errors.push(m) } });
  const heard = [];
  live.onState(() => { throw new Error("broken badge"); });
  const stop = live.onState((state) => heard.push(state));
  assert.equal(errors.length, 1, "called at once, with the current state");
  live.handleFrame(hello("e-1"));
  assert.deepEqual(heard, ["connecting", "live"]);
  assert.equal(errors.length, 2);
  stop();
  live.close();
  assert.deepEqual(heard, ["connecting", "live"], "removed");
  assert.equal(live.state, "offline");
  assert.throws(() => live.subscribe("", async () => {}), TypeError);
  assert.throws(() => live.subscribe("forums"), TypeError);
});
