/**
 * react.d.ts — the types of react.js, the React hook.
 *
 * @example
 *   import * as React from "react";
 *   import { createUseLive } from "tidings/react.js";
 *
 *   const useLive = createUseLive(React);
 *   function Forums() {
 *     const version = useLive(live, "forums"); // goes up on every change
 *     React.useEffect(() => { void loadForums(); }, [version]);
 *   }
 */

import type { Live, SubscribeOptions } from "./tidings.js";

/** What the hook needs of React (React itself has it). */
export interface ReactHooks {
  useState<S>(initialState: S | (() => S)): [S, (update: (previous: S) => S) => void];
  useEffect(effect: () => void | (() => void), deps?: readonly unknown[]): void;
}

/**
 * Returns a version number, 0 at first, that goes up by one on every change
 * to `collection`. `options` are read when the hook subscribes (on mount,
 * and when `live` or `collection` change).
 */
export type UseLive = (live: Live, collection: string, options?: SubscribeOptions) => number;

/** Makes the `useLive` hook with your copy of React. */
export function createUseLive(React: ReactHooks): UseLive;
