/**
 * changes.js — one listener per change to a collection: what the framework
 * adapters (react.js, tanstack.js, rxjs.js) are built on.
 *
 * `live.subscribe` calls a reload function, single-flight, and hands it only
 * the collection's name. A framework wants each change as it comes instead:
 * a React hook bumps a version, TanStack Query invalidates the keys a
 * notification names, an Observable emits it. `onChange` gives exactly that
 * through the documented API of `live.subscribe`: its `filter` sees every
 * notification of the collection (and passes none to the reload), and its
 * reload runs only for a `resync` that concerns the collection, which
 * filters do not see.
 *
 * @example
 *   import { connect } from "/tidings.js";
 *   import { onChange } from "/tidings/changes.js";
 *
 *   const live = connect();
 *   const stop = onChange(live, "posts", (change) => {
 *     if (change.type === "resync") reloadAllPosts();      // notifications were lost
 *     else reloadForum(change.data.forum_id);               // a notification
 *   });
 */

/**
 * @typedef {import("./tidings.js").Live} Live
 * @typedef {import("./tidings.js").SubscribeOptions} SubscribeOptions
 * @typedef {import("./changes.js").Change} Change
 */

/**
 * Calls `listener(change)` for every notification of `collection` (that
 * passes `options.filter`, if given) with the notification frame, and for
 * every `resync` that concerns it with `{ type: "resync", collection }`.
 * Other options go to `live.subscribe` as they are. A listener that throws
 * is reported (`reportError`, else `console.error`) and keeps listening.
 * @param {Live} live
 * @param {string} collection
 * @param {(change: Change) => void} listener
 * @param {SubscribeOptions} [options]
 * @returns {() => void} stops listening
 */
export function onChange(live, collection, listener, options = {}) {
  if (typeof listener !== "function") throw new TypeError("tidings: onChange needs a listener function");
  const { filter, ...rest } = options;
  function deliver(change) {
    try {
      listener(change);
    } catch (error) {
      report(error);
    }
  }
  return live.subscribe(collection, () => deliver({ type: "resync", collection }), {
    ...rest,
    filter(notification) {
      if (!filter || filter(notification)) deliver(notification);
      return false; // delivered here, one by one: the single-flight reload is only for resyncs
    },
  });
}

/** Reports an error without stopping the frame that caused it from reaching others. */
function report(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else console.error("tidings: a change listener failed:", error);
}
