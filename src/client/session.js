/**
 * session.js — the client's side of the protocol (docs/protocol.md), with
 * no I/O: what the server said (the session id and secret token from
 * `hello`, the last cursor) and what the page asked for (subscriptions).
 * It reads frames and calls the subscriptions they concern; opening and
 * keeping connections is connection.js's job. The token never leaves this
 * module except in the header of the page's own requests.
 */

/** The header that marks a request as made by this page's session. */
export const SESSION_HEADER = "tidings-session";

/** The response header with the cursor a JSON read's data is consistent with. */
export const CURSOR_HEADER = "tidings-cursor";

/**
 * Parses a frame (the text of a WebSocket message or an SSE event's data).
 * @param {unknown} data
 * @returns {object|null} the frame, or null if it is not a JSON object
 */
export function parseFrame(data) {
  if (data !== null && typeof data === "object") return data;
  try {
    const frame = JSON.parse(/** @type {string} */ (data));
    return frame !== null && typeof frame === "object" && !Array.isArray(frame) ? frame : null;
  } catch {
    return null;
  }
}

/**
 * Throws a TypeError unless `collection` is a non-empty string and `reload`
 * a function: the arguments of `live.subscribe`.
 * @param {unknown} collection
 * @param {unknown} reload
 */
export function checkSubscription(collection, reload) {
  if (typeof collection !== "string" || collection === "") {
    throw new TypeError("tidings: subscribe needs a collection name");
  }
  if (typeof reload !== "function") throw new TypeError("tidings: subscribe needs a reload function");
}

/**
 * Throws a TypeError unless `where` is absent or a plain object of field
 * names to a scalar (equality) or a non-empty array of scalars (`in`): the
 * `where` option of `live.subscribe`.
 * @param {unknown} where
 */
export function checkWhere(where) {
  if (where === undefined || where === null) return;
  const scalar = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);
  if (typeof where !== "object" || Array.isArray(where)) {
    throw new TypeError("tidings: `where` must be an object of field names to values");
  }
  for (const [field, value] of Object.entries(where)) {
    const ok = Array.isArray(value) ? value.length > 0 && value.every(scalar) : scalar(value);
    if (!ok) throw new TypeError(`tidings: \`where.${field}\` must be a scalar or a non-empty array of scalars`);
  }
}

/**
 * Whether a notification passes `where`, by the rule the server applies
 * (docs/protocol.md, "Filters"): every field equals the value, or one of the
 * values of an array, in the new row, or in the old one (the row with
 * `data.before` laid over it). A notification without data passes (such as
 * a condensed batch's: nothing can be checked, and the page must not miss
 * it); data that is not an object passes no filter (the server holds it
 * back too).
 * @param {Record<string, unknown>} where
 * @param {object} frame
 * @returns {boolean}
 */
export function matchesWhere(where, frame) {
  if (!("data" in frame) || frame.data === undefined) return true;
  const data = frame.data;
  if (data === null || typeof data !== "object" || Array.isArray(data)) return false;
  const passes = (row) => Object.entries(where).every(([field, value]) =>
    field in row && (Array.isArray(value) ? value : [value]).some((v) => v === row[field]));
  const before = data.before;
  if (passes(data)) return true;
  return before !== null && typeof before === "object" && !Array.isArray(before)
    && passes({ ...data, ...before });
}

/**
 * @typedef {object} Subscriber
 * @property {Record<string, unknown>} [where]  the server sends only the notifications
 *   that pass it (or another subscriber's); notifications it does not pass are skipped
 * @property {(frame: object) => boolean} [filter]  notifications it does not pass are
 *   skipped (a `resync` that concerns its collection reaches it whatever the filter)
 * @property {() => unknown} trigger  called for every notification and `resync` it gets
 * @property {string|null} [cursor]  the cursor of the read behind it, until a `subscribe` frame
 *   carried it to a live session (the server replays what came after it)
 */

/**
 * @typedef {"hello"|"notification"|"resync"|"error"|"reauthenticate"|"other"} FrameKind
 */

/**
 * @typedef {object} Session
 * @property {string|null} sessionId  the public id from the last `hello` (read-only)
 * @property {string|null} cursor  the last cursor seen (read-only)
 * @property {string[]} collections  the collections with at least one subscriber (read-only)
 * @property {Record<string, object[]>} filters  for each collection whose subscribers all
 *   have a `where`, those filters (any may match): what the server is asked to send (read-only)
 * @property {Record<string, string[]>} pendingCursors  for each collection, the distinct
 *   cursors of its subscribers that no `subscribe` frame has carried yet (read-only)
 * @property {(cursor?: string|null) => void} announced  the pending cursors (those equal to
 *   `cursor`, if given: a connection resumes from it) were carried to the server
 * @property {(collection: string, subscriber: Subscriber) => () => boolean} subscribe
 *   adds a subscriber; returns its removal, which returns true when that left
 *   the collection without subscribers (the server can stop sending it)
 * @property {(data: unknown) => FrameKind|null} receive  handles one frame (text or
 *   object); returns its kind, or null if it is not a frame
 * @property {(cursor: string) => void} adopt  a read's snapshot cursor (`tidings-cursor`): kept
 *   when no cursor is held yet, so the first connection resumes from it (a cursor already held
 *   is from before it, and resuming from there loses nothing either)
 * @property {() => void} forget  the connection ended: its session id and token mean nothing now
 * @property {(input: RequestInfo|URL, init?: RequestInit) => RequestInit} withSessionHeader
 *   `init` with the `tidings-session` header added (the token from `hello`), if there is a session
 */

/**
 * The protocol state of one client, across its connections.
 * @param {{cursor?: string|null, log?: {warn: (...args: unknown[]) => void}}} [options]
 *   the cursor to resume from (the one rendered into the page)
 * @returns {Session}
 */
export function createSession({ cursor: initialCursor = null, log = console } = {}) {
  let sessionId = null;
  // The secret from `hello` that goes in the `tidings-session` header. Kept
  // in this closure only: not a property, never logged.
  let token = null;
  let cursor = initialCursor || null;
  /** @type {Map<string, Set<Subscriber>>} */
  const subscriptions = new Map();

  function moveCursor(frame) {
    if (typeof frame.cursor === "string") cursor = frame.cursor;
  }

  function receive(data) {
    const frame = parseFrame(data);
    if (!frame) {
      log.warn("tidings: ignoring a frame that is not a JSON object:", data);
      return null;
    }
    switch (frame.type) {
      case undefined: // a notification
        moveCursor(frame);
        // The collection's subscribers, and those of `*` (every collection).
        for (const name of frame.collection === "*" ? ["*"] : [frame.collection, "*"]) {
          for (const subscriber of subscriptions.get(name) ?? []) {
            if (subscriber.where && !matchesWhere(subscriber.where, frame)) continue;
            if (!subscriber.filter || subscriber.filter(frame)) subscriber.trigger();
          }
        }
        return "notification";
      case "hello":
        sessionId = frame.session ?? null;
        token = typeof frame.token === "string" ? frame.token : null;
        moveCursor(frame);
        return "hello";
      case "resync": // notifications were lost: reload what they were about
        moveCursor(frame);
        for (const subscriber of resyncTargets(frame)) subscriber.trigger();
        return "resync";
      case "error":
        log.warn(`tidings: the server refused a frame: ${frame.code}: ${frame.message}`);
        return "error";
      case "reauthenticate": // the last frame of an SSE session (a WebSocket closes with 4401)
        return "reauthenticate";
      case "subscribed":
        // After a subscribe with a cursor: the replayed notifications carried
        // older cursors than the session's position, which this restores.
        moveCursor(frame);
        return "other";
      default: // "unsubscribed", and types added later
        return "other";
    }
  }

  /**
   * The subscribers a `resync` concerns, filters aside (what a filter would
   * have passed is gone). With a `collections` list, those collections'
   * subscribers, and those of `*` if the list is not empty (`*` stands for
   * every collection the session sees, and the list holds only those);
   * without one (the server cannot tell, or predates the list), everyone.
   */
  function resyncTargets(frame) {
    if (!Array.isArray(frame.collections)) return [...subscriptions.values()].flatMap((set) => [...set]);
    const names = new Set(frame.collections);
    if (names.size > 0) names.add("*");
    return [...names].flatMap((name) => [...(subscriptions.get(name) ?? [])]);
  }

  function subscribe(collection, subscriber) {
    let subscribers = subscriptions.get(collection);
    if (!subscribers) {
      subscribers = new Set();
      subscriptions.set(collection, subscribers);
    }
    subscribers.add(subscriber);
    return function remove() {
      if (!subscribers.delete(subscriber) || subscribers.size > 0) return false;
      if (subscriptions.get(collection) !== subscribers) return false;
      subscriptions.delete(collection);
      return true;
    };
  }

  function withSessionHeader(input, init = {}) {
    const fromRequest = typeof Request !== "undefined" && input instanceof Request ? input.headers : undefined;
    const headers = new Headers(init.headers ?? fromRequest);
    if (token) headers.set(SESSION_HEADER, token);
    return { ...init, headers };
  }

  return {
    get sessionId() { return sessionId; },
    get cursor() { return cursor; },
    get collections() { return [...subscriptions.keys()]; },
    get filters() {
      const filters = {};
      for (const [collection, subscribers] of subscriptions) {
        const wheres = [...subscribers].map((s) => s.where);
        // One subscriber without `where` wants everything: no filter.
        if (collection !== "*" && wheres.every((w) => w)) filters[collection] = wheres;
      }
      return filters;
    },
    get pendingCursors() {
      const pending = {};
      for (const [collection, subscribers] of subscriptions) {
        const cursors = new Set([...subscribers].map((s) => s.cursor).filter(Boolean));
        if (cursors.size > 0) pending[collection] = [...cursors];
      }
      return pending;
    },
    announced(covered) {
      for (const subscribers of subscriptions.values()) {
        for (const subscriber of subscribers) {
          if (covered === undefined || subscriber.cursor === covered) subscriber.cursor = null;
        }
      }
    },
    subscribe,
    receive,
    adopt(snapshot) {
      if (cursor === null && typeof snapshot === "string" && snapshot !== "") cursor = snapshot;
    },
    forget() {
      sessionId = null;
      token = null;
    },
    withSessionHeader,
  };
}
