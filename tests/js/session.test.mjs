// Unit tests of the protocol state (src/client/session.js): `node --test tests/js/`.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  checkSubscription, createSession, parseFrame, SESSION_HEADER,
} from "../../src/client/session.js";
import { hello, note } from "./fake-browser.mjs";

test("parseFrame accepts JSON objects only", () => {
  assert.deepEqual(parseFrame('{"type":"hello"}'), { type: "hello" });
  assert.equal(parseFrame("not json"), null);
  assert.equal(parseFrame("[1]"), null);
  assert.equal(parseFrame("null"), null);
});

/** A session whose warnings are recorded, with one subscriber per call of `sub`. */
function recordedSession(cursor) {
  const warnings = [];
  const session = createSession({ cursor, log: { warn: (...args) => warnings.push(args.join(" ")) } });
  const calls = [];
  const sub = (collection, name = collection, filter) => session.subscribe(collection, {
    filter,
    trigger: () => calls.push(name),
  });
  return { session, warnings, calls, sub };
}

test("session: hello gives the session id, the token (in the header only) and the cursor", () => {
  const { session } = recordedSession("e-1");
  assert.equal(session.cursor, "e-1", "the initial cursor");
  assert.equal(session.sessionId, null);
  assert.equal(session.withSessionHeader("/api").headers.get(SESSION_HEADER), null, "no header without a session");
  assert.equal(session.receive(hello("e-2", "00000000000000a1", "secret-token")), "hello");
  assert.equal(session.sessionId, "00000000000000a1");
  assert.equal(session.cursor, "e-2");
  assert.equal(session.withSessionHeader("/api").headers.get(SESSION_HEADER), "secret-token");
  const visible = JSON.stringify(Object.fromEntries(Object.keys(session).map((k) => [k, session[k]])));
  assert.ok(!visible.includes("secret-token"), `the token is not readable from the session: ${visible}`);
  session.forget();
  assert.equal(session.sessionId, null);
  assert.equal(session.withSessionHeader("/api").headers.get(SESSION_HEADER), null);
  assert.equal(session.cursor, "e-2", "the cursor outlives the session");

  session.receive(hello("e-3", "00000000000000b2", null)); // a hello without a token
  assert.equal(session.withSessionHeader("/api").headers.get(SESSION_HEADER), null, "the public id is never sent");
  assert.equal(createSession({ cursor: "" }).cursor, null, "an empty cursor is none");
});

test("session: withSessionHeader keeps the request's own fields and headers", () => {
  const { session } = recordedSession();
  session.receive(hello("e-1", "00000000000000a1", "t"));
  const init = session.withSessionHeader("/api", { method: "POST", body: "{}", headers: { "content-type": "application/json" } });
  assert.equal(init.method, "POST");
  assert.equal(init.body, "{}");
  assert.equal(init.headers.get("content-type"), "application/json");
  assert.equal(init.headers.get(SESSION_HEADER), "t");
  const request = new Request("http://example.test/api", { headers: { "x-from-request": "1" } });
  assert.equal(session.withSessionHeader(request).headers.get("x-from-request"), "1", "a Request's headers are kept");
});

test("session: a notification moves the cursor and triggers its collection's subscribers that pass their filter", () => {
  const { session, calls, sub } = recordedSession();
  sub("posts", "all posts");
  sub("posts", "forum 1", (frame) => frame.data?.forum_id === 1);
  sub("forums");
  assert.equal(session.receive(note("posts", "e-5", { forum_id: 2 })), "notification");
  assert.deepEqual(calls, ["all posts"]);
  assert.equal(session.cursor, "e-5");
  session.receive(JSON.stringify(note("posts", "e-6", { forum_id: 1 }))); // text, as from a transport
  assert.deepEqual(calls, ["all posts", "all posts", "forum 1"]);
  session.receive(note("comments", "e-7"));
  assert.equal(session.cursor, "e-7", "every notification moves the cursor");
  assert.equal(calls.length, 3, "nobody subscribes to comments");
  session.receive({ collection: "forums", op: "insert", cursor: 7 });
  assert.equal(session.cursor, "e-7", "a cursor that is not a string is ignored");
});

test("session: a subscriber of * is triggered by every collection's notifications", () => {
  const { session, calls, sub } = recordedSession();
  sub("*", "everything");
  sub("*", "forum 1 only", (frame) => frame.data?.forum_id === 1);
  sub("posts");
  session.receive(note("posts", "e-1", { forum_id: 2 }));
  assert.deepEqual(calls, ["posts", "everything"]);
  session.receive(note("comments", "e-2", { forum_id: 1 }));
  assert.deepEqual(calls, ["posts", "everything", "everything", "forum 1 only"]);
});

test("session: resync moves the cursor and triggers every subscriber, whatever its filter", () => {
  const { session, calls, sub } = recordedSession();
  sub("posts", "filtered", () => false);
  sub("forums");
  assert.equal(session.receive({ type: "resync", cursor: "f-1" }), "resync");
  assert.deepEqual(calls.sort(), ["filtered", "forums"]);
  assert.equal(session.cursor, "f-1");
});

test("session: a resync with a list triggers only the subscribers of the collections it names", () => {
  const { session, calls, sub } = recordedSession();
  sub("posts", "filtered posts", () => false);
  sub("posts");
  sub("forums");
  sub("*", "star");
  assert.equal(session.receive({ type: "resync", cursor: "f-2", collections: ["posts", "tags"] }), "resync");
  assert.deepEqual(calls.sort(), ["filtered posts", "posts", "star"], "not forums; `*` stands for posts too");
  assert.equal(session.cursor, "f-2");
  calls.length = 0;
  assert.equal(session.receive({ type: "resync", cursor: "f-3", collections: [] }), "resync");
  assert.deepEqual(calls, [], "an empty list: nothing this session sees changed");
  assert.equal(session.cursor, "f-3", "but the cursor moves past the gap");
  assert.equal(session.receive({ type: "resync", cursor: "f-4", collections: "posts" }), "resync");
  assert.deepEqual(calls.sort(), ["filtered posts", "forums", "posts", "star"], "a list that is not an array: all");
});

test("session: error frames are logged, unknown types ignored, non-objects warned about", () => {
  const { session, warnings, calls, sub } = recordedSession();
  sub("forums");
  assert.equal(session.receive({ type: "error", code: "forbidden", message: "no" }), "error");
  assert.match(warnings.at(-1), /forbidden: no/);
  assert.equal(session.receive({ type: "subscribed", collections: ["forums"] }), "other");
  assert.equal(session.receive({ type: "from-the-future", cursor: "z-1" }), "other");
  assert.equal(session.cursor, null, "unknown types do not move the cursor");
  assert.equal(session.receive("not json"), null);
  assert.equal(session.receive("[1]"), null);
  assert.equal(warnings.length, 3);
  assert.deepEqual(calls, []);
});

test("session: subscribe's removal says when a collection has no subscribers left", () => {
  const { session, calls, sub } = recordedSession();
  const first = sub("forums", "first");
  const second = sub("forums", "second");
  const posts = sub("posts");
  assert.deepEqual(session.collections, ["forums", "posts"]);
  assert.equal(first(), false, "forums still has a subscriber");
  assert.equal(first(), false, "removing twice does nothing");
  session.receive(note("forums", "e-1"));
  assert.deepEqual(calls, ["second"]);
  assert.equal(second(), true, "the last one");
  assert.deepEqual(session.collections, ["posts"]);
  assert.equal(second(), false);
  const again = sub("forums", "again");
  assert.equal(first(), false, "an old removal does not touch the new subscribers");
  session.receive(note("forums", "e-2"));
  assert.deepEqual(calls, ["second", "again"]);
  assert.equal(again(), true);
  assert.equal(posts(), true);
  assert.deepEqual(session.collections, []);
});

test("checkSubscription: a collection name and a reload function", () => {
  checkSubscription("forums", () => {});
  assert.throws(() => checkSubscription("", () => {}), /collection name/);
  assert.throws(() => checkSubscription(undefined, () => {}), TypeError);
  assert.throws(() => checkSubscription("forums", "reload"), /reload function/);
});
