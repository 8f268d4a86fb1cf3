// The framework adapters (src/client/react.js, tanstack.js, rxjs.js) in real
// Chromium against the forums example, with React, TanStack Query and RxJS
// from node_modules (npm ci), served to the page by the test itself:
//
//   cargo build --example forums && node --test tests/browser/adapters.test.mjs
//
// The page is an emptied one of the example's (so its WebSocket passes the
// origin check, and /tidings/*.js come from the example server); the test
// routes /__adapters/* to node_modules. @tanstack/query-core ships ES modules,
// served as they are. React and RxJS ship CommonJS and UMD only (no ES
// module build): `vendorModule` wraps their files, unchanged, in one ES module
// with a tiny `require`, which is what a bundler would do.
//
// Each scenario has a writer (the test, over HTTP) and the page; it waits for
// events, never for time, and every wait is bounded.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { startServer, stopServer } from "./example-server.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const modules = path.join(root, "node_modules");
const resultsDir = path.join(root, "test-results");
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

let browser;
let server;
let workDir;
const url = (p = "/") => `http://${server.addr}${p}`;

// ---- the libraries, from node_modules --------------------------------------------

/**
 * One ES module holding CommonJS files (`{ name: file }`), each run once by a
 * small `require` on first use, exporting `require(name)` as `exportName`
 * for each entry of `exported`.
 */
function vendorModule(files, exported) {
  const factories = Object.entries(files).map(([name, file]) => {
    const source = readFileSync(path.join(modules, file), "utf8");
    return `${JSON.stringify(name)}: function (module, exports, require) {\n${source}\n}`;
  });
  const exports = Object.entries(exported)
    .map(([exportName, name]) => `export const ${exportName} = require(${JSON.stringify(name)});`);
  return `const factories = {\n${factories.join(",\n")}\n};
const cache = {};
function require(name) {
  if (!(name in factories)) throw new Error("vendor: no module " + name);
  if (!(name in cache)) {
    const module = { exports: {} };
    cache[name] = module;
    factories[name].call(globalThis, module, module.exports, require);
  }
  return cache[name].exports;
}
${exports.join("\n")}
`;
}

// React and ReactDOM in one module: they must share one copy of React.
const vendor = {
  "/__adapters/react.js": () => vendorModule({
    react: "react/cjs/react.development.js",
    scheduler: "scheduler/cjs/scheduler.development.js",
    "react-dom": "react-dom/cjs/react-dom.development.js",
    "react-dom/client": "react-dom/cjs/react-dom-client.development.js",
  }, { React: "react", ReactDOMClient: "react-dom/client" }),
  "/__adapters/rxjs.js": () => vendorModule({ rxjs: "rxjs/dist/bundles/rxjs.umd.js" }, { rxjs: "rxjs" }),
};

/** Serves the libraries above, and @tanstack/query-core's ES modules, under /__adapters/. */
async function routeVendor(page) {
  const built = new Map();
  await page.route(`${url("/__adapters/")}**`, async (route) => {
    const { pathname } = new URL(route.request().url());
    const queryCore = "/__adapters/query-core/";
    if (pathname.startsWith(queryCore)) {
      const file = path.join(modules, "@tanstack/query-core/build/modern", pathname.slice(queryCore.length));
      return route.fulfill({ contentType: "text/javascript", body: readFileSync(file, "utf8") });
    }
    if (pathname in vendor) {
      if (!built.has(pathname)) built.set(pathname, vendor[pathname]());
      return route.fulfill({ contentType: "text/javascript", body: built.get(pathname) });
    }
    return route.fulfill({ status: 404, body: `not routed: ${pathname}` });
  });
}

// ---- pages -----------------------------------------------------------------------

/**
 * Opens a page in a new context, its WebSocket through a proxy that records
 * the frames each way (see createFrameLog). Returns { page, sent, received }.
 */
async function openPage(t) {
  const context = await browser.newContext();
  // The example's member of every forum: her connection may subscribe to
  // all posts without naming forums (its authorize hook requires a
  // forum_id filter on posts from users a forum is hidden from).
  await context.addCookies([{ name: "user", value: "ana", url: url("/") }]);
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") t.diagnostic(`console.${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => t.diagnostic(`page error: ${e.message}`));
  const sent = createFrameLog();
  const received = createFrameLog();
  await page.routeWebSocket(/\/ws/, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((message) => { sent.record(JSON.parse(String(message))); upstream.send(message); });
    upstream.onMessage((message) => { received.record(JSON.parse(String(message))); ws.send(message); });
  });
  await routeVendor(page);
  // What a bundler defines for the libraries.
  await page.addInitScript(() => { globalThis.process = { env: { NODE_ENV: "development" } }; });
  // A document the example served (Chromium lets only such a page, not one
  // the test made up, open a WebSocket to 127.0.0.1), emptied.
  await page.goto(url("/health"), { timeout: 10000 });
  await page.evaluate(() => { document.body.innerHTML = '<div id="root"></div>'; });
  return { page, sent, received };
}

/**
 * Connects the page's client (window.live) over a WebSocket, with a
 * subscription to "posts" so that the connection has a list of collections:
 * later ones are subscribed with frames, whose answers the test can wait for.
 */
async function connectLive(page) {
  await page.evaluate(async () => {
    const { connect } = await import("/tidings.js");
    window.live = connect({ transport: "websocket" });
    window.live.subscribe("posts", () => {});
  });
  await page.waitForFunction(() => window.live.state === "live", null, { timeout: 10000 });
}

/**
 * Counts the notifications of "forums" the page gets from now on, with a
 * plain subscription (window.control), once the server has applied it. The
 * page has no other subscription to "forums" at this point, so it sends one.
 */
async function countForums(page, received) {
  const from = received.length;
  await page.evaluate(() => {
    window.control = 0;
    window.live.subscribe("forums", () => { window.control += 1; });
  });
  await received.waitFor({ type: "subscribed", collections: ["forums"] }, from, 5000);
}

async function waitFor(page, fn, arg, ms, message) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms });
  } catch (error) {
    throw new Error(`${message} (within ${ms} ms): ${error.message}`);
  }
}

/**
 * The frames of one direction of the page's WebSocket, parsed, and a wait
 * for one: the proxy calls `record`, which wakes the waits.
 */
function createFrameLog() {
  const frames = [];
  const waits = new Set();
  return {
    frames,
    get length() { return frames.length; },
    record(frame) {
      frames.push(frame);
      for (const wake of [...waits]) wake();
    },
    /**
     * Resolves once a frame with the fields of `fields` (each equal as JSON)
     * was recorded at index `from` or later; rejects after `ms`.
     */
    waitFor(fields, from, ms) {
      const text = JSON.stringify(fields);
      const matches = (frame) => Object.entries(fields).every(([k, v]) => JSON.stringify(frame[k]) === JSON.stringify(v));
      const found = () => frames.slice(from).some(matches);
      return new Promise((resolve, reject) => {
        const wake = () => {
          if (!found()) return;
          clearTimeout(timer);
          waits.delete(wake);
          resolve();
        };
        const timer = setTimeout(() => {
          waits.delete(wake);
          reject(new Error(`no frame ${text} within ${ms} ms; frames: ${JSON.stringify(frames)}`));
        }, ms);
        waits.add(wake);
        wake();
      });
    },
  };
}

async function post(p, body) {
  const response = await fetch(url(p), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  assert.equal(response.status, 201, `POST ${p}: ${response.status}`);
  return response.json();
}
const createForum = (title) => post("/api/forums", { title });
const createPost = (forumId, body) => post(`/api/forums/${forumId}/posts`, { body });

/** A test that saves a screenshot of its page if it fails. */
function scenario(name, fn) {
  test(name, { timeout: 60000 }, async (t) => {
    const pages = [];
    try {
      await fn(t, async () => {
        const opened = await openPage(t);
        pages.push(opened.page);
        return opened;
      });
    } catch (error) {
      mkdirSync(resultsDir, { recursive: true });
      const slug = name.replace(/[^a-z0-9]+/gi, "-").slice(0, 60).replace(/^-|-$/g, "");
      for (const [i, page] of pages.entries()) {
        const file = path.join(resultsDir, `adapters-${slug}-${i}.png`);
        await page.screenshot({ path: file, fullPage: true, timeout: 5000 }).catch(() => {});
        t.diagnostic(`screenshot: ${file}`);
      }
      if (server) t.diagnostic(`server output:\n${server.output.join("").slice(-4000)}`);
      throw error;
    } finally {
      for (const page of pages) await page.context().close().catch(() => {});
    }
  });
}

// ---- setup -------------------------------------------------------------------------

before(async () => {
  const build = spawnSync("cargo", ["build", "--example", "forums"], {
    cwd: root, stdio: "inherit", timeout: 15 * 60 * 1000,
  });
  if (build.status !== 0) throw new Error(`cargo build --example forums failed (${build.status ?? build.signal})`);
  workDir = mkdtempSync(path.join(tmpdir(), "tidings-adapters-"));
  server = await startServer({ workDir });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: 30000,
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  await stopServer(server);
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

// ---- scenarios -----------------------------------------------------------------------

scenario("react: useLive re-renders a component when its collection changes, until it unmounts", async (t, open) => {
  const { page, sent, received } = await open();
  await connectLive(page);
  await page.evaluate(async () => {
    const { React, ReactDOMClient } = await import("/__adapters/react.js");
    const { createUseLive } = await import("/tidings/react.js");
    const useLive = createUseLive(React);
    window.versions = [];
    function Forums() {
      const version = useLive(window.live, "forums");
      const [titles, setTitles] = React.useState(null);
      React.useEffect(() => {
        window.versions.push(version);
        let current = true;
        fetch("/api/forums").then((r) => r.json()).then((forums) => {
          if (current) setTitles(forums.map((forum) => forum.title));
        });
        return () => { current = false; };
      }, [version]);
      if (titles === null) return null;
      return React.createElement("ul", { id: "forums" },
        titles.map((title) => React.createElement("li", { key: title }, title)));
    }
    window.root = ReactDOMClient.createRoot(document.getElementById("root"));
    window.root.render(React.createElement(React.StrictMode, null, React.createElement(Forums)));
  });
  await waitFor(page, () => document.getElementById("forums") !== null, null, 5000, "the component rendered");
  // The server has applied it: a write from now on reaches the page.
  await received.waitFor({ type: "subscribed", collections: ["forums"] }, 0, 5000);

  const title = `React ${Date.now()}`;
  await createForum(title);
  await waitFor(page, (t) => [...document.querySelectorAll("#forums li")].some((li) => li.textContent === t),
    title, 5000, "the new forum was rendered after the notification");
  const versions = await page.evaluate(() => window.versions);
  t.diagnostic(`react: versions loaded ${JSON.stringify(versions)}`);
  assert.ok(Math.max(...versions) >= 1, "the version went up");

  // Unmounted, it unsubscribes: the connection drops "forums", and a later
  // change (seen by a plain subscription) no longer reaches the hook.
  const before = sent.length;
  await page.evaluate(() => window.root.unmount());
  await sent.waitFor({ type: "unsubscribe", collections: ["forums"] }, before, 5000);
  const loaded = await page.evaluate(() => window.versions.length);
  await countForums(page, received);
  await createForum(`React after unmount ${Date.now()}`);
  await waitFor(page, () => window.control >= 1, null, 5000, "the plain subscription saw the change");
  assert.equal(await page.evaluate(() => window.versions.length), loaded, "no load after unmount");
});

scenario("tanstack: invalidateOnChange refetches the queries a notification names, and only those", async (t, open) => {
  const { page, received } = await open();
  const [one, two] = [await createForum(`Query 1 ${Date.now()}`), await createForum(`Query 2 ${Date.now()}`)];
  await connectLive(page);
  await page.evaluate(async ([forumOne, forumTwo]) => {
    const { QueryClient, QueryObserver } = await import("/__adapters/query-core/index.js");
    const { invalidateOnChange } = await import("/tidings/tanstack.js");
    const queryClient = new QueryClient({ defaultOptions: { queries: { staleTime: Infinity, retry: false } } });
    window.results = {}; // by key: the last data
    window.fetches = {}; // by key: how many fetches
    function watch(queryKey, path) {
      const name = JSON.stringify(queryKey);
      window.fetches[name] = 0;
      const observer = new QueryObserver(queryClient, {
        queryKey,
        queryFn: async ({ signal }) => {
          window.fetches[name] += 1;
          return (await fetch(path, { signal })).json();
        },
      });
      observer.subscribe((result) => { if (result.status === "success") window.results[name] = result.data; });
    }
    watch(["forums"], "/api/forums");
    watch(["posts", forumOne], `/api/forums/${forumOne}/posts`);
    watch(["posts", forumTwo], `/api/forums/${forumTwo}/posts`);
    window.stopInvalidating = invalidateOnChange(window.live, queryClient, {
      forums: [["forums"]],
      posts: (change) => (change.type === "resync" ? [["posts"]] : [["posts", change.data.forum_id]]),
    });
  }, [one.id, two.id]);
  await received.waitFor({ type: "subscribed", collections: ["forums"] }, 0, 5000);
  const loaded = (keys) => page.waitForFunction((names) => names.every((n) => n in window.results), keys, { timeout: 5000 });
  const forumsKey = JSON.stringify(["forums"]);
  const postsOne = JSON.stringify(["posts", one.id]);
  const postsTwo = JSON.stringify(["posts", two.id]);
  await loaded([forumsKey, postsOne, postsTwo]);
  const fetchesBefore = await page.evaluate(() => ({ ...window.fetches }));

  // A post in forum one: its key is refetched; forum two's is not.
  const body = `post ${Date.now()}`;
  await createPost(one.id, body);
  await waitFor(page, ([key, b]) => (window.results[key] ?? []).some((p) => p.body === b),
    [postsOne, body], 5000, "forum one's posts were refetched with the new post");
  const fetchesAfter = await page.evaluate(() => ({ ...window.fetches }));
  t.diagnostic(`tanstack: fetches before ${JSON.stringify(fetchesBefore)}, after ${JSON.stringify(fetchesAfter)}`);
  assert.equal(fetchesAfter[postsTwo], fetchesBefore[postsTwo], "forum two's posts were not refetched");
  assert.equal(fetchesAfter[forumsKey], fetchesBefore[forumsKey], "forums were not refetched");

  // A new forum: ["forums"] is refetched.
  const title = `Query 3 ${Date.now()}`;
  await createForum(title);
  await waitFor(page, ([key, t]) => (window.results[key] ?? []).some((f) => f.title === t),
    [forumsKey, title], 5000, "forums were refetched with the new forum");

  // Stopped, a change refetches nothing (the plain subscription sees it).
  await page.evaluate(() => window.stopInvalidating());
  const stoppedAt = await page.evaluate(() => window.fetches[JSON.stringify(["forums"])]);
  await countForums(page, received);
  await createForum(`Query 4 ${Date.now()}`);
  await waitFor(page, () => window.control >= 1, null, 5000, "the plain subscription saw the change");
  assert.equal(await page.evaluate(() => window.fetches[JSON.stringify(["forums"])]), stoppedAt, "no refetch after stop");
});

scenario("rxjs: fromLive emits each change of its collection to its subscribers, until they unsubscribe", async (t, open) => {
  const { page, sent, received } = await open();
  await connectLive(page);
  await page.evaluate(async () => {
    const { rxjs } = await import("/__adapters/rxjs.js");
    const { createFromLive } = await import("/tidings/rxjs.js");
    const fromLive = createFromLive(rxjs.Observable);
    window.changes = [];
    window.titles = null;
    window.subscription = fromLive(window.live, "forums")
      .pipe(
        rxjs.tap((change) => window.changes.push(change)),
        rxjs.switchMap(() => fetch("/api/forums").then((r) => r.json())),
      )
      .subscribe((forums) => { window.titles = forums.map((forum) => forum.title); });
  });
  // The server has applied it: a write from now on reaches the page.
  await received.waitFor({ type: "subscribed", collections: ["forums"] }, 0, 5000);

  const title = `Rx ${Date.now()}`;
  const forum = await createForum(title);
  await waitFor(page, (t) => (window.titles ?? []).includes(t), title, 5000, "the new forum came through the Observable");
  const change = await page.evaluate(() => window.changes.at(-1));
  assert.equal(change.collection, "forums");
  assert.equal(change.op, "insert");
  assert.deepEqual(change.data, { id: forum.id }, "the notification itself");

  const before = sent.length;
  const seen = await page.evaluate(() => { window.subscription.unsubscribe(); return window.changes.length; });
  await sent.waitFor({ type: "unsubscribe", collections: ["forums"] }, before, 5000);
  await countForums(page, received);
  await createForum(`Rx after unsubscribe ${Date.now()}`);
  await waitFor(page, () => window.control >= 1, null, 5000, "the plain subscription saw the change");
  assert.equal(await page.evaluate(() => window.changes.length), seen, "nothing after unsubscribe");
});
