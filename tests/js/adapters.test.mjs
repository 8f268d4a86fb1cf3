// Unit tests of the framework adapters (src/client/changes.js, tanstack.js,
// rxjs.js) in node, with the real @tanstack/query-core and rxjs from npm and
// the real client fed frames by hand (`handleFrame`) or through the fake
// WebSocket: `node --test tests/js/`. The React hook needs a DOM renderer:
// it is tested in Chromium (tests/browser/adapters.test.mjs), as are the
// others against the example server.

import { test } from "node:test";
import assert from "node:assert/strict";

import { QueryClient, QueryObserver } from "@tanstack/query-core";
import { Observable } from "rxjs";

import { connect } from "../../src/client/tidings.js";
import { onChange } from "../../src/client/changes.js";
import { createUseLive } from "../../src/client/react.js";
import { createFromLive } from "../../src/client/rxjs.js";
import { invalidateOnChange } from "../../src/client/tanstack.js";
import { fakeEnvironment, hello, note, settle } from "./fake-browser.mjs";

/** A client driven by hand: no connection, frames through `handleFrame`. */
function offlineClient() {
  return connect({ ...fakeEnvironment().options, start: false });
}

/** A client on the fake WebSocket, live (after `hello`). */
async function liveClient(collections) {
  const env = fakeEnvironment();
  const live = connect({ ...env.options });
  const stops = collections.map((name) => live.subscribe(name, () => {}));
  await settle();
  const ws = env.sockets[0];
  ws.open();
  ws.receive(hello("e-0"));
  return { live, ws, stops };
}

// ---- changes.js ------------------------------------------------------------------

test("onChange: every notification, one by one, and a resync that concerns the collection", async () => {
  const live = offlineClient();
  const heard = [];
  const stop = onChange(live, "posts", (change) => heard.push(change));
  live.handleFrame(note("posts", "e-1", { id: 1 }));
  live.handleFrame(note("posts", "e-2", { id: 2 }));
  live.handleFrame(note("forums", "e-3"));
  live.handleFrame(note("posts", "e-4", { id: 3 }));
  await settle();
  assert.deepEqual(heard.map((c) => c.data.id), [1, 2, 3], "each notification, in order, none coalesced");
  assert.deepEqual(heard[0], note("posts", "e-1", { id: 1 }), "the notification frame itself");

  live.handleFrame({ type: "resync", cursor: "e-5", collections: ["forums"] });
  await settle();
  assert.equal(heard.length, 3, "a resync naming another collection is not a change");
  live.handleFrame({ type: "resync", cursor: "e-6", collections: ["posts"] });
  await settle();
  assert.deepEqual(heard.at(-1), { type: "resync", collection: "posts" });
  live.handleFrame({ type: "resync", cursor: "e-7" });
  await settle();
  assert.deepEqual(heard.at(-1), { type: "resync", collection: "posts" }, "a resync without a list concerns all");
  assert.equal(heard.length, 5);

  stop();
  live.handleFrame(note("posts", "e-8"));
  live.handleFrame({ type: "resync", cursor: "e-9" });
  await settle();
  assert.equal(heard.length, 5, "nothing after stop");
});

test("onChange: the filter option, and a listener that throws", async (t) => {
  const live = offlineClient();
  const kept = [];
  onChange(live, "posts", (change) => kept.push(change.cursor), { filter: (n) => n.op === "delete" });
  const errors = [];
  t.mock.method(console, "error", (...args) => errors.push(args));
  let thrown = 0;
  onChange(live, "posts", () => { thrown += 1; throw new Error("listener failure"); });
  live.handleFrame({ ...note("posts", "e-1"), op: "delete" });
  live.handleFrame({ ...note("posts", "e-2"), op: "update" });
  live.handleFrame({ ...note("posts", "e-3"), op: "delete" });
  await settle();
  assert.deepEqual(kept, ["e-1", "e-3"], "only what passes the filter");
  assert.equal(thrown, 3, "the throwing listener kept listening");
  assert.equal(errors.length, 3);
  assert.match(String(errors[0][1]), /listener failure/);
  assert.throws(() => onChange(live, "posts"), TypeError);
});

test("onChange: subscribes on the connection and unsubscribes when stopped", async () => {
  const { live, ws } = await liveClient(["forums"]);
  const stop = onChange(live, "posts", () => {});
  assert.deepEqual(ws.sent.at(-1), { type: "subscribe", collections: ["posts"], cursor: "e-0" });
  stop();
  assert.deepEqual(ws.sent.at(-1), { type: "unsubscribe", collections: ["posts"] });
  live.close();
});

// ---- tanstack.js -----------------------------------------------------------------

test("invalidateOnChange: a notification invalidates its collection's keys, and only those", async () => {
  const live = offlineClient();
  const queryClient = new QueryClient();
  const keys = [["forums"], ["posts", 1], ["posts", 2], ["other"]];
  for (const key of keys) queryClient.setQueryData(key, "cached");
  const invalidated = () => keys.filter((key) => queryClient.getQueryState(key).isInvalidated).map((k) => k.join("/"));

  const stop = invalidateOnChange(live, queryClient, {
    forums: [["forums"]],
    posts: (change) => (change.type === "resync" ? [["posts"]] : [["posts", change.data.forum_id]]),
  });
  assert.deepEqual(invalidated(), []);
  live.handleFrame(note("posts", "e-1", { forum_id: 2 }));
  assert.deepEqual(invalidated(), ["posts/2"], "the key the function made of the notification");
  live.handleFrame(note("forums", "e-2"));
  assert.deepEqual(invalidated(), ["forums", "posts/2"]);
  live.handleFrame(note("other", "e-3"));
  assert.deepEqual(invalidated(), ["forums", "posts/2"], "a collection without keys invalidates nothing");

  for (const key of keys) queryClient.setQueryData(key, "fresh"); // clears isInvalidated
  live.handleFrame({ type: "resync", cursor: "e-4", collections: ["posts"] });
  await settle();
  assert.deepEqual(invalidated(), ["posts/1", "posts/2"], "a resync: every forum's posts (prefix match)");

  for (const key of keys) queryClient.setQueryData(key, "fresh");
  stop();
  live.handleFrame(note("forums", "e-5"));
  live.handleFrame({ type: "resync", cursor: "e-6" });
  await settle();
  assert.deepEqual(invalidated(), [], "nothing after stop");
  queryClient.clear();
});

test("invalidateOnChange: an active query refetches after a notification", async () => {
  const live = offlineClient();
  const queryClient = new QueryClient();
  let fetches = 0;
  const observer = new QueryObserver(queryClient, {
    queryKey: ["forums"],
    queryFn: async () => { fetches += 1; return fetches; },
  });
  // The data of every settled fetch, and a wait for the next one (bounded).
  const settled = [];
  let wake = () => {};
  const unsubscribe = observer.subscribe((result) => {
    if (result.status === "success" && result.fetchStatus === "idle") settled.push(result.data);
    wake();
  });
  async function waitForFetches(count) {
    const deadline = Date.now() + 2000;
    while (settled.length < count) {
      assert.ok(Date.now() < deadline, `${count} fetch(es) within 2 s; got ${JSON.stringify(settled)}`);
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100); // re-checks the deadline
      });
    }
  }
  await waitForFetches(1);
  invalidateOnChange(live, queryClient, { forums: [["forums"]] });
  live.handleFrame(note("forums", "e-1"));
  await waitForFetches(2);
  assert.deepEqual(settled, [1, 2], "refetched once after the notification");
  unsubscribe();
  queryClient.clear();
});

test("invalidateOnChange: bad arguments are refused at once", () => {
  const live = offlineClient();
  const queryClient = new QueryClient();
  assert.throws(() => invalidateOnChange(live, {}, { forums: [["forums"]] }), /needs a QueryClient/);
  assert.throws(() => invalidateOnChange(live, queryClient, { forums: ["forums"] }), /list of keys or a function/);
  assert.throws(() => invalidateOnChange(live, queryClient, { forums: "forums" }), /list of keys or a function/);
});

// ---- rxjs.js ---------------------------------------------------------------------

test("fromLive: an RxJS Observable of the changes; unsubscribing unsubscribes on the connection", async () => {
  const { live, ws } = await liveClient(["forums"]);
  const fromLive = createFromLive(Observable);
  const posts$ = fromLive(live, "posts");
  assert.ok(posts$ instanceof Observable);
  assert.equal(ws.sent.length, 0, "cold: nothing happens before a subscriber");

  const a = [];
  const b = [];
  const subA = posts$.subscribe((change) => a.push(change.cursor ?? change.type));
  assert.deepEqual(ws.sent.at(-1), { type: "subscribe", collections: ["posts"], cursor: "e-0" });
  const subB = posts$.subscribe((change) => b.push(change.cursor ?? change.type));
  ws.receive(note("posts", "e-1"));
  ws.receive(note("forums", "e-2"));
  ws.receive({ type: "resync", cursor: "e-3", collections: ["posts"] });
  await settle();
  assert.deepEqual(a, ["e-1", "resync"]);
  assert.deepEqual(b, ["e-1", "resync"], "every subscriber gets every change");

  subA.unsubscribe();
  ws.receive(note("posts", "e-4"));
  assert.deepEqual(a, ["e-1", "resync"], "nothing after unsubscribe");
  assert.deepEqual(b, ["e-1", "resync", "e-4"]);
  subB.unsubscribe();
  assert.deepEqual(ws.sent.at(-1), { type: "unsubscribe", collections: ["posts"] }, "the last one leaves the collection");
  live.close();
});

// ---- react.js (the factory only; the hook runs in Chromium) -----------------------

test("createUseLive refuses what is not React", () => {
  assert.throws(() => createUseLive({}), /needs React/);
  assert.equal(typeof createUseLive({ useState() {}, useEffect() {} }), "function");
});
