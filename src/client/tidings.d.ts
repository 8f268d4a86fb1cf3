/**
 * tidings.d.ts — the types of the tidings browser client (`tidings.js`;
 * guide: docs/client.md, wire protocol: docs/protocol.md).
 *
 * TypeScript finds this file next to `tidings.js`: import the client by a
 * name your `tsconfig.json` maps to this directory, and map the same name to
 * the served module in the page's import map (docs/client.md, "TypeScript").
 *
 * @example
 *   import { connect, type NotificationFrame } from "tidings";
 *
 *   const live = connect({ cursor: document.body.dataset.cursor });
 *   live.subscribe("posts", reloadPosts, {
 *     filter: (notification: NotificationFrame) => notification.op !== "update",
 *   });
 */

// ---- frames (docs/protocol.md) ---------------------------------------------------

/** What a write did to its collection. */
export type Op = "insert" | "update" | "delete";

/** The first frame of every connection. */
export interface HelloFrame {
  type: "hello";
  /** This connection's public id; others see it as a notification's `origin`. */
  session: string;
  /**
   * This connection's secret, sent in the `tidings-session` header of the
   * page's own writes. The client keeps it to itself: `live` does not
   * expose it.
   */
  token: string;
  /** Where this session's stream starts. */
  cursor: string;
}

/**
 * A change to a collection: the only frame without a `type`.
 * `Data` is whatever the application attached (typically the row's id).
 */
export interface NotificationFrame<Data = unknown> {
  type?: undefined;
  collection: string;
  op: Op;
  /** Absent when the application attached nothing, and in a condensed large batch. */
  data?: Data;
  /** The public session id of the session whose request caused the change. */
  origin?: string;
  cursor: string;
}

/** Notifications this session should have received are gone: reload what changed. */
export interface ResyncFrame {
  type: "resync";
  /** The stream continues from here. */
  cursor: string;
  /**
   * The collections that changed, each once, sorted; reload those only.
   * Absent: the server cannot tell, reload everything. Empty: nothing to reload.
   */
  collections?: string[];
}

/** The answer to a `subscribe` frame: it was applied. */
export interface SubscribedFrame {
  type: "subscribed";
  /** The names the `subscribe` frame carried. */
  collections: string[];
  /** Whether the session is subscribed to `*`. */
  all: boolean;
  /** How many collections the session is subscribed to by name. */
  count: number;
  /**
   * Present when the `subscribe` carried a cursor: the session's position
   * after the notifications replayed for it (which carry older cursors).
   */
  cursor?: string;
}

/** The answer to an `unsubscribe` frame: it was applied. */
export interface UnsubscribedFrame {
  type: "unsubscribed";
  collections: string[];
  all: boolean;
  count: number;
}

/** The codes of `error` frames that docs/protocol.md lists. */
export type ErrorCode = "bad_frame" | "forbidden";

/** A frame from the client was refused; the session goes on. */
export interface ErrorFrame {
  type: "error";
  /** One of {@link ErrorCode}, or one added by a later server. */
  code: ErrorCode | (string & {});
  message: string;
}

/**
 * The last frame of a Server-Sent Events session that must re-authenticate
 * (a WebSocket closes with 4401 instead): the stream ends after it.
 */
export interface ReauthenticateFrame {
  type: "reauthenticate";
}

/**
 * Every frame the server sends, told apart by `type` (a notification has
 * none). Later servers may add types and fields, which clients ignore: a
 * frame from the wire is only known to be a JSON object.
 * (`cargo test` checks this union against the frames the server sends and
 * docs/protocol.md lists: `hub::protocol`'s tests.)
 */
export type ServerFrame =
  | HelloFrame
  | NotificationFrame
  | ResyncFrame
  | SubscribedFrame
  | UnsubscribedFrame
  | ErrorFrame
  | ReauthenticateFrame;

/** A `where` filter: field names to a value (equality) or a non-empty array of values (`in`). */
export type Where = Record<string, Scalar | Scalar[]>;

/** A value a filter compares with. */
export type Scalar = string | number | boolean | null;

/** Adds collections to a live WebSocket session (or replaces their filter). */
export interface SubscribeFrame {
  type: "subscribe";
  collections: string[];
  /** A filter, or a list of filters any of which may match. */
  where?: Where | Where[];
  /** Replays what the history holds after this cursor for the new subscription. */
  cursor?: string;
}

/** Removes collections from a live WebSocket session. */
export interface UnsubscribeFrame {
  type: "unsubscribe";
  collections: string[];
}

/** Every frame the client sends (on a WebSocket only; SSE has no upstream). */
export type ClientFrame = SubscribeFrame | UnsubscribeFrame;

// ---- the client ----------------------------------------------------------------

/** The connection state reported to `onState`. */
export type State = "connecting" | "live" | "offline";

/** The kind of an open connection. */
export type TransportKind = "websocket" | "sse";

/** The `transport` option: a kind, or `"auto"` (WebSocket, falling back to SSE). */
export type TransportMode = "auto" | TransportKind;

/**
 * The options of `live.subscribe`. An interface, so that a later version
 * (or an application's module augmentation) can add options.
 */
export interface SubscribeOptions {
  /**
   * Notifications it returns false for are skipped. A `resync` that concerns
   * the collection reloads it whatever the filter says.
   */
  filter?: (notification: NotificationFrame) => boolean;
  /**
   * The server sends only the notifications whose `data` passes: each field
   * equals the value, or one of an array's values (docs/protocol.md, "Filters").
   */
  where?: Where | null;
  /**
   * Where a subscription made on a live connection starts: the server
   * replays what came after this cursor. Pass the `tidings-cursor` of the
   * read behind the subscription when it was made before `subscribe`; by
   * default, the session's cursor when `subscribe` is called.
   */
  cursor?: string | null;
}

/** The object `connect` returns. */
export interface Live {
  /**
   * Calls `reload(collection)` after a notification for `collection` (that
   * passes `options.filter`) and after a `resync` that concerns it.
   * Reloads are single-flight; errors go to `onError`.
   * @returns a function that unsubscribes
   */
  subscribe(collection: string, reload: (collection: string) => unknown, options?: SubscribeOptions): () => void;
  /**
   * Calls `listener(state)` now and on every change.
   * @returns a function that removes the listener
   */
  onState(listener: (state: State) => void): () => void;
  /** `window.fetch` with the `tidings-session` header added once live: for the page's own writes. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** Closes for good (state `"offline"`). */
  close(): void;
  /** Handles one frame (its text, or the object) as if it came from the server. */
  handleFrame(frame: string | ServerFrame): void;
  /** Closes the connection and opens a new one now, resuming with the cursor. */
  reconnect(): void;
  /** The public session id from the last `hello`; null while not live. Not the token. */
  readonly sessionId: string | null;
  /** The last cursor seen: the `cursor` option, `hello`, `resync` or a notification. */
  readonly cursor: string | null;
  readonly state: State;
  /** The kind of the connection open or opening; null if none. */
  readonly transport: TransportKind | null;
}

/** What the client needs of a WebSocket (the `WebSocket` option, for tests). */
export interface WebSocketLike {
  readonly readyState: number;
  onmessage: ((event: { data: any }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code?: number }) => void) | null;
  send(data: string): void;
  close(): void;
}

/** What the client needs of an EventSource (the `EventSource` option, for tests). */
export interface EventSourceLike {
  onmessage: ((event: { data: any }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  close(): void;
}

/** The options of `connect`, all optional (defaults in docs/client.md). */
export interface ConnectOptions {
  /** The WebSocket endpoint, relative to the page (`"/ws"`). */
  url?: string;
  /** The Server-Sent Events endpoint (`"/events"`). */
  sseUrl?: string;
  transport?: TransportMode;
  /** The cursor to resume from: the one the server rendered into the page. */
  cursor?: string | null;
  /** ms to wait for `hello` after opening a connection (5000). */
  helloTimeout?: number;
  /** WebSocket attempts in a row without `hello` before `"auto"` uses SSE (2). */
  fallbackAfter?: number;
  /** ms on a fallback SSE connection before trying the WebSocket again (30000). */
  upgradeAfter?: number;
  /** Reconnect delays, ms (250, 5000, 1000). */
  backoffBase?: number;
  backoffCap?: number;
  restartBackoffCap?: number;
  /** ms; a subscription's reloads start at least this far apart (0). */
  minReloadInterval?: number;
  /** A reload failed (default: `console.error`). */
  onError?: (error: unknown, collection: string) => void;
  /**
   * The server closed with 4401 (or sent `reauthenticate` over SSE):
   * re-authorize; the client reconnects when the returned promise settles.
   */
  onReauthenticate?: () => unknown;
  /** false: do not connect; drive the client with `handleFrame`. */
  start?: boolean;
  // The environment, replaceable in tests.
  WebSocket?: new (url: string) => WebSocketLike;
  EventSource?: new (url: string) => EventSourceLike;
  document?: {
    readonly hidden?: boolean;
    addEventListener?(type: "visibilitychange", listener: () => void): void;
    removeEventListener?(type: "visibilitychange", listener: () => void): void;
  };
  fetch?: (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;
  location?: { href?: string };
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: unknown) => void;
  random?: () => number;
  log?: {
    info?(...args: unknown[]): void;
    warn(...args: unknown[]): void;
    error(...args: unknown[]): void;
  };
}

/** Connects to the server and keeps the connection (docs/client.md). */
export function connect(options?: ConnectOptions): Live;

/** The states reported to `onState`. */
export const STATES: readonly ["connecting", "live", "offline"];

/** The header that marks a request as the page's own. */
export const SESSION_HEADER: "tidings-session";

// ---- the pure helpers ------------------------------------------------------------

/**
 * The delay, in ms, before reconnect attempt `attempt` (0 for the first
 * retry): full jitter in `[0, min(cap, base * 2^attempt))`, the cap lowered
 * to `restartCap` for the first 20 attempts `afterRestart`.
 */
export function backoffDelay(
  attempt: number,
  random?: () => number,
  options?: { base?: number; cap?: number; restartCap?: number; afterRestart?: boolean },
): number;

/** A single-flight reload, as `subscribe` makes one per subscription. */
export interface Coalescer {
  /** Asks for a reload; resolves when the reloads it caused are done. */
  trigger(): Promise<void>;
  readonly running: boolean;
  /** How many times `reload` was called. */
  readonly runs: number;
}

/** Single-flight reloads, spaced at least `minInterval` ms apart. */
export function createCoalescer(
  reload: () => unknown,
  options?: {
    onError?: (error: unknown) => void;
    minInterval?: number;
    setTimeout?: (fn: () => void, ms: number) => unknown;
    now?: () => number;
  },
): Coalescer;

/** `base` with the tidings query (`collections`, `cursor`), empty parameters left out. */
export function buildUrl(
  base: string,
  query?: { cursor?: string | null; collections?: Iterable<string>; filters?: Record<string, Where[]> },
): string;

/** `url` resolved against `baseHref`, with a ws: or wss: scheme. */
export function toWebSocketUrl(url: string, baseHref: string): string;

/**
 * A frame (the text of a message, or an object) as an object; null if it is
 * not a JSON object. It checks nothing else: switch on `type`, and ignore
 * types you do not know.
 */
export function parseFrame(data: unknown): ServerFrame | null;
