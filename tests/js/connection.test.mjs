// Unit tests of keeping the connection (src/client/connection.js) on its own,
// without a session: the query, the frames and the drops are stubs here.
// `node --test tests/js/`.

import { test } from "node:test";
import assert from "node:assert/strict";

import { keepConnection } from "../../src/client/connection.js";
import { fakeEnvironment, settle } from "./fake-browser.mjs";

/** A connection on the fake environment, recording what it reports. */
function recordedConnection({ env: environment, ...overrides } = {}) {
  const env = fakeEnvironment();
  const record = { frames: [], states: [], drops: 0, query: { cursor: "e-1", collections: ["forums"] } };
  const connection = keepConnection({
    env: { ...env.options, ...environment },
    mode: "auto",
    url: "/ws",
    sseUrl: "/events",
    helloTimeout: 5000,
    fallbackAfter: 2,
    upgradeAfter: 30000,
    backoff: {},
    query: () => record.query,
    isHidden: () => env.document.hidden,
    onFrame: (data) => record.frames.push(JSON.parse(data)),
    onState: (state) => record.states.push(state),
    onDrop: () => { record.drops += 1; },
    ...overrides,
  });
  return { env, connection, record };
}

test("connection: opens one connection with the query, passes its frames on", () => {
  const { env, connection, record } = recordedConnection();
  assert.equal(connection.transport, null);
  connection.open();
  connection.open(); // already opening: nothing
  assert.equal(env.sockets.length, 1);
  assert.equal(env.sockets[0].url, "ws://example.test/ws?collections=forums&cursor=e-1");
  assert.equal(connection.transport, "websocket");
  assert.deepEqual(record.states, ["connecting"]);
  env.sockets[0].open();
  env.sockets[0].receive({ type: "hello", session: "s" });
  assert.deepEqual(record.frames, [{ type: "hello", session: "s" }]);
  connection.close();
});

test("connection: no hello within helloTimeout is a drop; the retry waits for the backoff delay", () => {
  const { env, connection, record } = recordedConnection();
  connection.open();
  env.sockets[0].open();
  assert.equal(env.runTimers((ms) => ms === 5000), 1, "the hello timeout");
  assert.equal(env.sockets[0].closedByClient, true);
  assert.equal(record.drops, 1);
  assert.deepEqual(record.states, ["connecting", "offline"]);
  assert.equal(connection.transport, null);
  assert.deepEqual(env.retryDelays(), [125], "random 0.5 × 250 ms");
  env.runRetry();
  assert.equal(env.sockets.length, 2);
  connection.close();
});

test("connection: confirmed() stops the hello timeout and resets the backoff", () => {
  const { env, connection } = recordedConnection({ mode: "websocket" }); // "auto" would fall back to SSE
  connection.open();
  env.sockets[0].refuse();
  assert.deepEqual(env.retryDelays(), [125]);
  env.runRetry();
  env.sockets[1].refuse();
  assert.deepEqual(env.retryDelays(), [250], "the delay grows");
  env.runRetry();
  env.sockets[2].open();
  connection.confirmed();
  assert.deepEqual([...env.timers.values()], [], "the hello timeout is cancelled");
  env.sockets[2].serverClose(1000);
  assert.deepEqual(env.retryDelays(), [125], "the backoff started over");
  connection.close();
});

test("connection: a hidden tab neither opens nor retries; reconnect() opens at once", () => {
  const { env, connection, record } = recordedConnection();
  env.document.hidden = true;
  connection.open();
  assert.equal(env.sockets.length, 0);
  assert.deepEqual(record.states, ["offline"]);
  env.document.hidden = false;
  connection.open();
  env.sockets[0].open();
  connection.confirmed();
  env.document.hidden = true;
  env.sockets[0].serverClose(1001);
  assert.equal(env.timers.size, 0, "no retry while hidden");
  env.document.hidden = false;
  connection.reconnect();
  assert.equal(env.sockets.length, 2);
  connection.reconnect(); // closes the opening one, opens another
  assert.equal(env.sockets[1].closedByClient, true);
  assert.equal(env.sockets.length, 3);
  assert.equal(record.drops, 2, "each connection ended once");
  connection.close();
});

test("connection: a constructor that throws is a drop, in a microtask", async () => {
  const warnings = [];
  const { env, connection, record } = recordedConnection({
    env: {
      WebSocket: class { constructor() { throw new SyntaxError("bad URL"); } },
      log: { info() {}, warn: (message) => warnings.push(message), error() {} },
    },
  });
  connection.open();
  assert.equal(connection.transport, "websocket", "opening");
  await settle();
  assert.equal(connection.transport, null);
  assert.deepEqual(record.states, ["connecting", "offline"]);
  assert.equal(record.drops, 1);
  assert.match(warnings[0], /cannot open a websocket connection/);
  assert.deepEqual(env.retryDelays(), [125], "a retry is scheduled");
  connection.close();
});

test("connection: announce() subscribes a live WebSocket to the collections it lacks; retract() unsubscribes", () => {
  const { env, connection } = recordedConnection();
  connection.open();
  const [socket] = env.sockets;
  socket.open();
  connection.announce(["forums", "posts"]);
  assert.deepEqual(socket.sent, [], "nothing before hello");
  connection.confirmed();
  connection.announce(["forums", "posts"]);
  connection.announce(["forums", "posts"]);
  assert.deepEqual(socket.sent, [{ type: "subscribe", collections: ["posts"] }], "once, and only what it lacks");
  connection.retract("comments"); // never subscribed on this connection
  connection.retract("posts");
  connection.retract("posts");
  assert.deepEqual(socket.sent.slice(1), [{ type: "unsubscribe", collections: ["posts"] }]);
  connection.close();

  // Opened without collections: it receives all, there is nothing to add.
  const all = recordedConnection({ query: () => ({ cursor: null, collections: [] }) });
  all.connection.open();
  all.env.sockets[0].open();
  all.connection.confirmed();
  all.connection.announce(["forums"]);
  all.connection.retract("forums");
  assert.deepEqual(all.env.sockets[0].sent, []);
  assert.equal(all.env.sockets[0].url, "ws://example.test/ws");
  all.connection.close();
});

test("connection: announce() on SSE reconnects with the new list; retract() leaves it", () => {
  const { env, connection, record } = recordedConnection({ mode: "sse" });
  connection.open();
  assert.equal(env.sources[0].url, "/events?collections=forums&cursor=e-1");
  connection.confirmed();
  connection.retract("forums");
  assert.equal(env.sources.length, 1, "no reconnect to drop a collection");
  record.query = { cursor: "e-2", collections: ["forums", "posts"] };
  connection.announce(record.query.collections);
  assert.equal(env.sources[0].closed, true);
  assert.equal(env.sources[1].url, "/events?collections=forums,posts&cursor=e-2");
  connection.close();
});

test("connection: close() cancels every timer, closes the connection and stays closed", () => {
  const { env, connection, record } = recordedConnection();
  connection.open();
  env.sockets[0].refuse();
  env.runRetry();
  assert.equal(env.sockets.length, 2);
  connection.close();
  connection.close();
  assert.equal(connection.closed, true);
  assert.equal(env.timers.size, 0);
  assert.equal(env.sockets[1].closedByClient, true);
  assert.deepEqual(record.states, ["connecting", "offline", "connecting"], "close() reports no state: the entry does");
  connection.open();
  connection.reconnect();
  assert.equal(env.sockets.length, 2, "closed for good");
});
