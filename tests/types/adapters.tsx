// Exercises the declarations of the framework adapters (src/client/react.d.ts,
// tanstack.d.ts, rxjs.d.ts, changes.d.ts) with the real libraries' own types
// (@types/react, @tanstack/query-core, rxjs). Type-checked only, never run.

import { QueryClient } from "@tanstack/query-core";
import * as React from "react";
import { Observable, share, switchMap } from "rxjs";
import { connect } from "tidings";
import { onChange, type Change } from "tidings/changes.js";
import { createUseLive } from "tidings/react.js";
import { createFromLive } from "tidings/rxjs.js";
import { invalidateOnChange } from "tidings/tanstack.js";

const live = connect();

// changes: a notification or a resync, told apart by `type`.
const stop = onChange(live, "posts", (change) => {
  if (change.type === "resync") {
    const collection: string = change.collection;
    void collection;
  } else {
    const op: "insert" | "update" | "delete" = change.op;
    void op;
  }
});
stop();
// @ts-expect-error: the listener gets a Change, not a string
onChange(live, "posts", (change: string) => void change);

// React: the real React's hooks fit.
const useLive = createUseLive(React);
// @ts-expect-error: not React
createUseLive({ useState: 1 });

export function Forums(): React.ReactElement {
  const version: number = useLive(live, "forums", { filter: (n) => n.op !== "update" });
  const [titles, setTitles] = React.useState<string[]>([]);
  React.useEffect(() => {
    void fetch("/api/forums").then(async (r) => setTitles(await r.json()));
  }, [version]);
  // @ts-expect-error: the version is a number
  const wrong: string = useLive(live, "forums");
  void wrong;
  return <ul>{titles.map((title) => <li key={title}>{title}</li>)}</ul>;
}

// TanStack Query: the real QueryClient fits; keys or a function of the change.
const queryClient = new QueryClient();
const stopInvalidating: () => void = invalidateOnChange(live, queryClient, {
  forums: [["forums"]],
  posts: (change: Change) =>
    change.type === "resync" ? [["posts"]] : [["posts", (change.data as { forum_id: number }).forum_id]],
});
stopInvalidating();
// @ts-expect-error: a query key is a list, not a string
invalidateOnChange(live, queryClient, { forums: ["forums"] });
// @ts-expect-error: not a QueryClient
invalidateOnChange(live, {}, { forums: [["forums"]] });

// RxJS: fromLive returns RxJS's own Observable, of changes.
const fromLive = createFromLive(Observable);
const forums$: Observable<Change> = fromLive(live, "forums").pipe(share());
const titles$: Observable<string[]> = forums$.pipe(
  switchMap(async () => (await fetch("/api/forums")).json() as Promise<string[]>),
);
titles$.subscribe((titles) => titles.length);
// @ts-expect-error: changes are not strings
const strings$: Observable<string> = fromLive(live, "forums");
void strings$;
