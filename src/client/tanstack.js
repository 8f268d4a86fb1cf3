/**
 * tanstack.js — TanStack Query binding: when a collection changes, invalidate
 * the query keys that show it. Active queries refetch at once (TanStack
 * cancels a refetch already under way and starts a new one, so the data
 * shown is read after the last change); inactive ones refetch when next used.
 *
 * It only calls `queryClient.invalidateQueries({ queryKey })`, so it imports
 * nothing and works with any TanStack Query flavour (React, Vue, Solid,
 * Svelte, Angular: they share @tanstack/query-core's QueryClient).
 *
 * @example
 *   import { QueryClient } from "@tanstack/react-query";
 *   import { connect } from "/tidings.js";
 *   import { invalidateOnChange } from "/tidings/tanstack.js";
 *
 *   const queryClient = new QueryClient();
 *   const live = connect();
 *   const stop = invalidateOnChange(live, queryClient, {
 *     forums: [["forums"]],
 *     // a function gets the change and returns the keys to invalidate: the
 *     // forum the post is in; after a resync (notifications were lost) or for
 *     // a notification without data (a condensed batch), every forum's posts
 *     posts: (change) => change.data ? [["posts", change.data.forum_id]] : [["posts"]],
 *   });
 */

import { onChange } from "./changes.js";

/**
 * For every collection in `keys`, invalidates its query keys on each of its
 * changes (a notification, or a `resync` that concerns it).
 * @param {import("./tidings.js").Live} live
 * @param {import("./tanstack.js").QueryInvalidator} queryClient
 * @param {Record<string, import("./tanstack.js").QueryKeysOf>} keys
 *   per collection, a list of query keys, or a function of the change that returns one
 * @returns {() => void} stops invalidating
 */
export function invalidateOnChange(live, queryClient, keys) {
  if (typeof queryClient?.invalidateQueries !== "function") {
    throw new TypeError("tidings: invalidateOnChange needs a QueryClient");
  }
  const entries = Object.entries(keys ?? {});
  for (const [collection, value] of entries) {
    if (typeof value !== "function" && !isKeyList(value)) {
      throw new TypeError(`tidings: the query keys of ${JSON.stringify(collection)} must be a list of keys or a function`);
    }
  }
  const stops = entries.map(([collection, value]) => onChange(live, collection, (change) => {
    const queryKeys = typeof value === "function" ? value(change) : value;
    if (!isKeyList(queryKeys)) throw new TypeError(`tidings: the query keys of ${JSON.stringify(collection)} must be a list of keys`);
    for (const queryKey of queryKeys) queryClient.invalidateQueries({ queryKey });
  }));
  return function stop() {
    for (const stopOne of stops) stopOne();
  };
}

/** A list of query keys: `[["forums"], ["posts", 7]]`. */
function isKeyList(value) {
  return Array.isArray(value) && value.every(Array.isArray);
}
