/**
 * rxjs.d.ts — the types of rxjs.js, an Observable of a collection's changes.
 *
 * @example
 *   import { Observable } from "rxjs";
 *   import { createFromLive } from "tidings/rxjs.js";
 *
 *   const fromLive = createFromLive(Observable);
 *   const forums$ = fromLive(live, "forums"); // Observable<Change>
 */

import type { Change } from "./changes.js";
import type { Live, SubscribeOptions } from "./tidings.js";

/** What `fromLive` needs of a subscriber (RxJS's has it). */
export interface ChangeSubscriber {
  next(change: Change): void;
}

/** What `createFromLive` needs of the `Observable` class (RxJS's has it). */
export type ObservableClass<O> = new (subscribe: (subscriber: ChangeSubscriber) => () => void) => O;

/**
 * An Observable (of your `Observable` class) of the changes to `collection`:
 * each subscriber subscribes to it on the connection until it unsubscribes.
 */
export type FromLive<O> = (live: Live, collection: string, options?: SubscribeOptions) => O;

/** Makes `fromLive` with your copy of RxJS's `Observable`. */
export function createFromLive<O>(Observable: ObservableClass<O>): FromLive<O>;
