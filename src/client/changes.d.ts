/**
 * changes.d.ts — the types of changes.js: one listener per change to a
 * collection, what the framework adapters are built on.
 *
 * @example
 *   import { onChange } from "tidings/changes.js";
 *
 *   const stop = onChange(live, "posts", (change) => {
 *     if (change.type === "resync") reloadAllPosts();
 *     else reloadForum((change.data as { forum_id: number }).forum_id);
 *   });
 */

import type { Live, NotificationFrame, SubscribeOptions } from "./tidings.js";

/**
 * A `resync` that concerns the collection: notifications were lost, reload
 * all of it. (Not the frame itself, which may name other collections.)
 */
export interface ResyncChange {
  type: "resync";
  collection: string;
}

/** What a change listener gets: a notification of the collection, or a resync. */
export type Change<Data = unknown> = NotificationFrame<Data> | ResyncChange;

/**
 * Calls `listener` for every notification of `collection` that passes
 * `options.filter`, and for every `resync` that concerns it.
 * @returns a function that stops listening
 */
export function onChange(
  live: Live,
  collection: string,
  listener: (change: Change) => void,
  options?: SubscribeOptions,
): () => void;
