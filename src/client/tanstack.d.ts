/**
 * tanstack.d.ts — the types of tanstack.js, the TanStack Query binding.
 *
 * @example
 *   import { invalidateOnChange } from "tidings/tanstack.js";
 *
 *   const stop = invalidateOnChange(live, queryClient, {
 *     forums: [["forums"]],
 *     posts: (change) => change.type === "resync" ? [["posts"]] : [["posts", change.data]],
 *   });
 */

import type { Change } from "./changes.js";
import type { Live } from "./tidings.js";

/** A TanStack Query key. */
export type QueryKey = readonly unknown[];

/** What the binding needs of a `QueryClient` (TanStack's has it). */
export interface QueryInvalidator {
  invalidateQueries(filters: { queryKey: QueryKey }): unknown;
}

/** A collection's query keys, or a function of its change that returns them. */
export type QueryKeysOf = readonly QueryKey[] | ((change: Change) => readonly QueryKey[]);

/**
 * Invalidates, on every change to each collection named in `keys`, the
 * query keys given for it.
 * @returns a function that stops invalidating
 */
export function invalidateOnChange(
  live: Live,
  queryClient: QueryInvalidator,
  keys: Record<string, QueryKeysOf>,
): () => void;
