// Exercises the declarations of the client (src/client/tidings.d.ts) the way
// an application uses them. Type-checked only (`npx tsc`, CI), never run:
// every `@ts-expect-error` line is a misuse the declarations must reject
// (tsc fails if one of them is accepted).

import {
  connect,
  parseFrame,
  SESSION_HEADER,
  STATES,
  type Live,
  type NotificationFrame,
  type ServerFrame,
  type State,
  type SubscribeOptions,
} from "tidings";

const live: Live = connect({ cursor: document.body.dataset.cursor, transport: "auto", minReloadInterval: 250 });

// @ts-expect-error: not a transport
connect({ transport: "long-polling" });
// @ts-expect-error: the cursor is a string
connect({ cursor: 42 });

const unsubscribe: () => void = live.subscribe("forums", async (collection) => {
  const name: string = collection;
  return fetch(`/api/${name}`);
});
unsubscribe();

// A filter gets the notification, typed.
live.subscribe("posts", () => {}, {
  filter: (notification) => notification.op !== "update" && notification.collection === "posts",
});
// @ts-expect-error: there is no such op
live.subscribe("posts", () => {}, { filter: (notification) => notification.op === "upsert" });
// @ts-expect-error: subscribe needs a reload function
live.subscribe("posts");

// A server-side filter, and the cursor of the read behind the subscription.
const read: Response = await live.fetch("/api/forums/3/posts");
live.subscribe("posts", () => {}, { where: { forum_id: [3, 4], hidden: false }, cursor: read.headers.get("tidings-cursor") });
// @ts-expect-error: a filter compares with scalars only
live.subscribe("posts", () => {}, { where: { forum_id: { gt: 3 } } });
// @ts-expect-error: a cursor is a string
live.subscribe("posts", () => {}, { cursor: 7 });

// SubscribeOptions is an interface an application (or a later version) can extend.
interface WithPriority extends SubscribeOptions {
  priority?: number;
}
const options: WithPriority = { filter: () => true, priority: 1 };
live.subscribe("posts", () => {}, options);

live.onState((state) => {
  const known: readonly State[] = STATES;
  if (!known.includes(state)) throw new Error(state);
  // @ts-expect-error: not a state
  if (state === "online") throw new Error("never");
});

const response: Promise<Response> = live.fetch("/api/forums", { method: "POST", body: "{}" });
void response;
const header: "tidings-session" = SESSION_HEADER;
void header;

const id: string | null = live.sessionId;
// @ts-expect-error: read-only
live.cursor = "e-1";
void id;

/** Frames are a union told apart by `type`; a notification has none. */
function describe(frame: ServerFrame): string {
  switch (frame.type) {
    case undefined:
      return `${frame.collection} ${frame.op} at ${frame.cursor}`;
    case "hello":
      return `hello ${frame.session}`;
    case "resync":
      return frame.collections ? `reload ${frame.collections.join(", ")}` : "reload everything";
    case "subscribed":
    case "unsubscribed":
      return `${frame.count} collections${frame.all ? " and *" : ""}`;
    case "error":
      // @ts-expect-error: an error frame has no cursor
      return `${frame.code}: ${frame.message} ${frame.cursor}`;
    case "reauthenticate":
      return "sign in again";
    default: {
      const none: never = frame; // every type is handled
      return none;
    }
  }
}

const parsed = parseFrame('{"collection":"forums","op":"insert","cursor":"e-1"}');
if (parsed) describe(parsed);
live.handleFrame({ type: "resync", cursor: "e-2", collections: ["forums"] });
// @ts-expect-error: a notification needs an op
live.handleFrame({ collection: "forums", cursor: "e-3" });

// Data attached by the application, typed by the page.
const note: NotificationFrame<{ forum_id: number }> = {
  collection: "posts",
  op: "insert",
  data: { forum_id: 1 },
  cursor: "e-4",
};
const forumId: number | undefined = note.data?.forum_id;
void forumId;

live.close();
