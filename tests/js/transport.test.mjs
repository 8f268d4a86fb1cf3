// Unit tests of the transports and the fallback rule (src/client/transport.js), with a fake WebSocket and EventSource: `node --test tests/js/`.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  buildUrl, createFallback, openTransport, toWebSocketUrl, transportUrl, TRANSPORT_MODES,
} from "../../src/client/transport.js";
import { fakeEnvironment } from "./fake-browser.mjs";

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

test("transportUrl: SSE keeps the endpoint relative; a WebSocket gets an absolute ws:/wss: URL", () => {
  const endpoints = { url: "/ws", sseUrl: "/events" };
  const query = { cursor: "e-1", collections: ["forums"] };
  assert.equal(transportUrl("sse", endpoints, query, "https://example.test/p"), "/events?collections=forums&cursor=e-1");
  assert.equal(transportUrl("websocket", endpoints, query, "https://example.test/p"),
    "wss://example.test/ws?collections=forums&cursor=e-1");
  assert.equal(transportUrl("websocket", { url: "ws://other.test/live", sseUrl: "/events" }, {}, "http://example.test/"),
    "ws://other.test/live", "an absolute WebSocket URL stays as it is");
});

/** Opens a transport on the fake environment and records what it reports. */
function openRecorded(kind, address = kind === "sse" ? "/events" : "ws://example.test/ws") {
  const env = fakeEnvironment();
  const frames = [];
  const drops = [];
  const transport = openTransport(kind, address, env.options, {
    onFrame: (data) => frames.push(JSON.parse(data)),
    onDrop: (code) => drops.push(code),
  });
  return { env, transport, frames, drops };
}

test("openTransport (WebSocket): frames in, send once open, one drop with the close code", () => {
  const { env, transport, frames, drops } = openRecorded("websocket");
  const [socket] = env.sockets;
  assert.equal(socket.url, "ws://example.test/ws");
  assert.equal(transport.kind, "websocket");
  transport.send({ type: "subscribe", collections: ["a"] });
  assert.deepEqual(socket.sent, [], "nothing is sent before the socket is open");
  socket.open();
  transport.send({ type: "subscribe", collections: ["a"] });
  assert.deepEqual(socket.sent, [{ type: "subscribe", collections: ["a"] }]);
  socket.receive({ type: "hello" });
  assert.deepEqual(frames, [{ type: "hello" }]);
  socket.serverClose(1012);
  assert.deepEqual(drops, [1012]);
  assert.equal(socket.closedByClient, true, "closed at the end");
  assert.equal(socket.onmessage, null, "handlers removed at the end");
  socket.receive({ type: "late" });
  assert.equal(frames.length, 1);
});

test("openTransport (WebSocket): an error then a close is one drop, without a code", () => {
  const { env, drops } = openRecorded("websocket");
  env.sockets[0].refuse(); // error, then close 1006
  assert.deepEqual(drops, [undefined]);
});

test("openTransport: close() ends it silently", () => {
  for (const kind of ["websocket", "sse"]) {
    const { env, transport, frames, drops } = openRecorded(kind);
    const channel = kind === "sse" ? env.sources[0] : env.sockets[0];
    transport.close();
    transport.close(); // twice is harmless
    channel.receive({ type: "hello" });
    if (kind === "sse") channel.fail();
    else channel.serverClose(1001);
    assert.deepEqual(frames, [], kind);
    assert.deepEqual(drops, [], `${kind}: no drop reported after close()`);
  }
});

test("openTransport (SSE): frames in, any error closes the EventSource, send does nothing", () => {
  const { env, transport, frames, drops } = openRecorded("sse", "/events?cursor=e-1");
  const [source] = env.sources;
  assert.equal(source.url, "/events?cursor=e-1");
  assert.equal(env.sockets.length, 0);
  transport.send({ type: "subscribe", collections: ["a"] }); // no upstream channel: ignored
  source.receive({ collection: "forums", cursor: "e-2" });
  assert.deepEqual(frames, [{ collection: "forums", cursor: "e-2" }]);
  source.fail();
  source.fail();
  assert.deepEqual(drops, [undefined], "one drop");
  assert.equal(source.closed, true, "closed, so that the browser does not retry on its own");
});

test("openTransport: a constructor that throws throws", () => {
  const Refusing = class { constructor() { throw new SyntaxError("bad URL"); } };
  assert.throws(() => openTransport("websocket", "x", { WebSocket: Refusing }, { onFrame() {}, onDrop() {} }), SyntaxError);
});

test("createFallback (auto): two WebSocket failures in a row switch to SSE; an SSE failure switches back", () => {
  const infos = [];
  const fallback = createFallback({ mode: "auto", log: { info: (message) => infos.push(message) } });
  assert.equal(fallback.kind, "websocket");
  fallback.failed("websocket");
  assert.equal(fallback.kind, "websocket", "one failure is not enough");
  fallback.failed("websocket");
  assert.equal(fallback.kind, "sse");
  assert.equal(infos.length, 1, "the switch is logged once");
  fallback.failed("sse"); // the server is probably down
  assert.equal(fallback.kind, "websocket");
  fallback.failed("websocket");
  assert.equal(fallback.kind, "websocket", "the count started over");
  fallback.failed("websocket");
  assert.equal(fallback.kind, "sse");
  assert.equal(infos.length, 2);

  const patient = createFallback({ mode: "auto", fallbackAfter: 3, log: {} });
  patient.failed("websocket");
  patient.failed("websocket");
  assert.equal(patient.kind, "websocket", "fallbackAfter is an option; a log without info is fine");
  patient.failed("websocket");
  assert.equal(patient.kind, "sse");
});

test("createFallback (auto): a WebSocket hello resets the count; SSE after a working WebSocket asks for an upgrade", () => {
  const fallback = createFallback({ mode: "auto", log: {} });
  fallback.failed("websocket");
  assert.equal(fallback.succeeded("websocket"), false);
  fallback.failed("websocket");
  assert.equal(fallback.kind, "websocket", "failures are counted in a row");
  fallback.failed("websocket");
  assert.equal(fallback.kind, "sse");
  assert.equal(fallback.succeeded("sse"), true, "a WebSocket worked on this page: try it again later");
  fallback.upgrade();
  assert.equal(fallback.kind, "websocket");
  fallback.failed("websocket");
  assert.equal(fallback.kind, "websocket", "upgrade starts the count over");

  const blocked = createFallback({ mode: "auto", log: {} });
  blocked.failed("websocket");
  blocked.failed("websocket");
  assert.equal(blocked.succeeded("sse"), false, "WebSockets never worked: stay on SSE");
});

test("createFallback: fixed modes never switch", () => {
  assert.deepEqual(TRANSPORT_MODES, ["auto", "websocket", "sse"]);
  const webSocket = createFallback({ mode: "websocket" });
  const sse = createFallback({ mode: "sse" });
  for (let i = 0; i < 5; i++) {
    webSocket.failed("websocket");
    sse.failed("sse");
  }
  assert.equal(webSocket.kind, "websocket");
  assert.equal(sse.kind, "sse");
  assert.equal(sse.succeeded("sse"), false, "no upgrade outside auto");
});
