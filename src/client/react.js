/**
 * react.js — a React hook that re-renders a component when a collection
 * changes: `useLive(live, collection)` returns a version number that goes up
 * by one on every change (a notification, or a `resync` that concerns the
 * collection). Put it in the dependencies of the effect that loads the data.
 *
 * React is passed in, not imported: this module is served as it is at
 * `/tidings/react.js`, where a bare `import "react"` would not resolve
 * without a bundler or an import map.
 *
 * @example
 *   import * as React from "react";
 *   import { connect } from "/tidings.js";
 *   import { createUseLive } from "/tidings/react.js";
 *
 *   const live = connect();
 *   const useLive = createUseLive(React);
 *
 *   function Forums() {
 *     const version = useLive(live, "forums");
 *     const [forums, setForums] = React.useState([]);
 *     React.useEffect(() => {
 *       fetch("/api/forums").then((r) => r.json()).then(setForums);
 *     }, [version]);
 *     return <ul>{forums.map((f) => <li key={f.id}>{f.title}</li>)}</ul>;
 *   }
 */

import { onChange } from "./changes.js";

/**
 * Makes the `useLive` hook with your copy of React.
 * @param {{useState: Function, useEffect: Function}} React
 * @returns {import("./react.js").UseLive}
 */
export function createUseLive(React) {
  const { useEffect, useState } = React;
  if (typeof useEffect !== "function" || typeof useState !== "function") {
    throw new TypeError("tidings: createUseLive needs React (its useState and useEffect)");
  }
  /**
   * Subscribes while the component is mounted, and again when `live` or
   * `collection` change. `options` (a `filter`, ...) are read when it
   * subscribes: a new options object on each render does not resubscribe.
   */
  return function useLive(live, collection, options) {
    const [version, setVersion] = useState(0);
    useEffect(
      () => onChange(live, collection, () => setVersion((previous) => previous + 1), options),
      [live, collection], // not options: see above
    );
    return version;
  };
}
