/**
 * rxjs.js — an RxJS `Observable` of the changes to a collection: each
 * notification, and `{ type: "resync", collection }` for a `resync` that
 * concerns it. What an Angular service wraps (docs/client.md).
 *
 * Cold, like RxJS's own creation functions: every subscriber subscribes to
 * the collection on the connection, and unsubscribing undoes it. Share one
 * with `share()` if several parts of the page watch the same collection.
 *
 * The `Observable` class is passed in, not imported: this module is served
 * as it is at `/tidings/rxjs.js`, where a bare `import "rxjs"` would not
 * resolve without a bundler or an import map.
 *
 * @example
 *   import { Observable, switchMap } from "rxjs";
 *   import { connect } from "/tidings.js";
 *   import { createFromLive } from "/tidings/rxjs.js";
 *
 *   const live = connect();
 *   const fromLive = createFromLive(Observable);
 *   fromLive(live, "forums")
 *     .pipe(switchMap(() => fetch("/api/forums").then((r) => r.json())))
 *     .subscribe(render);
 */

import { onChange } from "./changes.js";

/**
 * Makes `fromLive` with your copy of RxJS's `Observable`.
 * @template O
 * @param {new (subscribe: (subscriber: {next: (change: object) => void}) => () => void) => O} Observable
 * @returns {(live: import("./tidings.js").Live, collection: string,
 *   options?: import("./tidings.js").SubscribeOptions) => O}
 */
export function createFromLive(Observable) {
  if (typeof Observable !== "function") throw new TypeError("tidings: createFromLive needs RxJS's Observable");
  return function fromLive(live, collection, options) {
    // The teardown RxJS calls on unsubscribe is onChange's own stop.
    return new Observable((subscriber) => onChange(live, collection, (change) => subscriber.next(change), options));
  };
}
