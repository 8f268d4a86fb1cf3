// End-to-end tests of the forums example in real Chromium: the example page
// (templates/index.html) with the tidings client (src/client/).
//
//   cargo build --example forums && node --test tests/browser/
//
// The test builds the example (a no-op when it is up to date), starts it in a
// fresh temporary directory (its own SQLite forums.db) on a free port, and
// drives two or three pages. Every wait is bounded. On failure, screenshots
// of the open pages go to test-results/.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer as startExample, stopServer } from "./example-server.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const resultsDir = path.join(root, "test-results");
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

let browser;
let server;      // { child, addr, output }
let workDir;     // the example's cwd (its forums.db)
const openPages = new Set();

// ---- the example server ------------------------------------------------------

/** Starts the example on `addr` in `workDir`; resolves once it listens. */
const startServer = (addr = "127.0.0.1:0") => startExample({ workDir, addr });

/** Restarts on the same address; retries briefly if the port is not free yet. */
async function restartServer() {
  const addr = server.addr;
  await stopServer(server);
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      server = await startServer(addr);
      return;
    } catch (error) {
      if (Date.now() > deadline || !/cannot listen/.test(String(error.message))) throw error;
      await new Promise((r) => setTimeout(r, 100)); // bounded retry, not synchronization
    }
  }
}

const url = (p = "/") => `http://${server.addr}${p}`;

async function createForum(title) {
  const response = await fetch(url("/api/forums"), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title }),
    signal: AbortSignal.timeout(10000),
  });
  assert.equal(response.status, 201, `POST /api/forums: ${response.status}`);
  return response.json();
}

async function createPost(forumId, body) {
  const response = await fetch(url(`/api/forums/${forumId}/posts`), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ body }),
    signal: AbortSignal.timeout(10000),
  });
  assert.equal(response.status, 201, `POST /api/forums/${forumId}/posts: ${response.status}`);
  return response.json();
}

/** The server's posts of `forumId` (the test's own view, not the page's). */
async function listPosts(forumId) {
  const response = await fetch(url(`/api/forums/${forumId}/posts`), { signal: AbortSignal.timeout(10000) });
  assert.equal(response.status, 200, `GET /api/forums/${forumId}/posts: ${response.status}`);
  return response.json();
}

/** Rejects with `message` if `promise` has not settled within `ms`. */
async function within(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---- pages -----------------------------------------------------------------------

/** Opens the example in a new browser context (like another browser) and waits for `live`. */
async function openPage(t, name, { pathAndQuery = "/", setup, context: contextOptions } = {}) {
  const context = await browser.newContext(contextOptions);
  const page = await context.newPage();
  page.tidingsName = name;
  openPages.add(page);
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") t.diagnostic(`[${name}] console.${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => t.diagnostic(`[${name}] page error: ${e.message}`));
  if (setup) await setup(page);
  await page.goto(url(pathAndQuery), { timeout: 10000 });
  await waitForState(page, "live", 10000);
  // Records every state change, for the restart scenario (`offline` may last
  // only a few milliseconds), and when the page last went live (wall clock).
  await page.evaluate(() => {
    window.testStates = [];
    window.tidings.onState((s) => {
      window.testStates.push(s);
      if (s === "live") window.testLiveAt = performance.timeOrigin + performance.now();
    });
  });
  return page;
}

async function waitForState(page, state, timeout = 5000) {
  await page.waitForFunction(
    (s) => document.getElementById("status").textContent === s, state, { timeout },
  );
}

const reloads = (page) => page.evaluate(() => ({ ...window.tidingsReloads }));

async function waitForForum(page, title, timeout) {
  await page.locator("#forums li", { hasText: title }).first().waitFor({ state: "attached", timeout });
}

async function closePages() {
  for (const page of openPages) {
    await page.context().close().catch(() => {});
  }
  openPages.clear();
}

/** A test that saves screenshots of its pages if it fails. */
function scenario(name, fn) {
  test(name, { timeout: 90000 }, async (t) => {
    try {
      await fn(t);
    } catch (error) {
      mkdirSync(resultsDir, { recursive: true });
      const slug = name.replace(/[^a-z0-9]+/gi, "-").slice(0, 60).replace(/^-|-$/g, "");
      for (const page of openPages) {
        const file = path.join(resultsDir, `${slug}-${page.tidingsName}.png`);
        await page.screenshot({ path: file, fullPage: true, timeout: 5000 }).catch(() => {});
        t.diagnostic(`screenshot: ${file}`);
      }
      if (server) t.diagnostic(`server output:\n${server.output.join("").slice(-4000)}`);
      throw error;
    } finally {
      await closePages();
    }
  });
}

// ---- setup -------------------------------------------------------------------------

before(async () => {
  const build = spawnSync("cargo", ["build", "--example", "forums"], {
    cwd: root, stdio: "inherit", timeout: 15 * 60 * 1000,
  });
  if (build.status !== 0) throw new Error(`cargo build --example forums failed (${build.status ?? build.signal})`);
  workDir = mkdtempSync(path.join(tmpdir(), "tidings-browser-"));
  server = await startServer();
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: 30000,
  });
});

after(async () => {
  await closePages();
  await browser?.close().catch(() => {});
  await stopServer(server);
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

// ---- scenarios -----------------------------------------------------------------------

scenario("a. a forum created in one page appears in the other within 1 second", async (t) => {
  const [one, two] = [await openPage(t, "page1"), await openPage(t, "page2")];
  const title = `Forum A ${Date.now()}`;
  // Precise times, taken in the pages (same machine clock): when page 1
  // submits, and when the item is inserted into page 2's list.
  await one.evaluate(() => document.getElementById("new-forum").addEventListener("submit", () => {
    window.submittedAt = performance.timeOrigin + performance.now();
  }));
  await two.evaluate((title) => {
    const list = document.getElementById("forums");
    new MutationObserver(() => {
      if (!window.appearedAt && [...list.children].some((li) => li.dataset.title === title)) {
        window.appearedAt = performance.timeOrigin + performance.now();
      }
    }).observe(list, { childList: true });
  }, title);
  await one.fill("#new-forum input[name=title]", title);
  const started = performance.now();
  await one.click("#new-forum button");
  await waitForForum(two, title, 1000);
  const observed = performance.now() - started;
  const ms = (await two.evaluate(() => window.appearedAt)) - (await one.evaluate(() => window.submittedAt));
  t.diagnostic(`a: appeared in page 2 ${ms.toFixed(1)} ms after page 1 submitted `
    + `(${observed.toFixed(0)} ms from the test's click to its check)`);
  assert.ok(observed < 1000, `took ${observed} ms`);
  assert.ok(ms >= 0 && ms < 1000, `took ${ms} ms`);
  await waitForForum(one, title, 1000); // page 1 shows it from the POST response
});

scenario("b. the writing page does not reload because of its own write", async (t) => {
  const [one, two] = [await openPage(t, "page1"), await openPage(t, "page2")];
  const title = `Forum B ${Date.now()}`;
  await one.fill("#new-forum input[name=title]", title);
  await one.click("#new-forum button");
  await waitForForum(two, title, 2000);
  await waitForForum(one, title, 2000);
  await two.waitForFunction(() => window.tidingsReloads.forums >= 1, null, { timeout: 2000 });
  assert.equal((await reloads(one)).forums, 0, "page 1 reloaded after its own write");

  // A barrier: a write by someone else, notified after page 1's own one (in
  // cursor order). Once page 1 has reloaded for it, a notification of its own
  // write would have arrived too; it must have caused no reload.
  const other = `Forum B other ${Date.now()}`;
  await createForum(other);
  await waitForForum(one, other, 2000);
  await one.waitForFunction(() => window.tidingsReloads.forums >= 1, null, { timeout: 2000 });
  const r1 = await reloads(one);
  const r2 = await reloads(two);
  t.diagnostic(`b: reloads after own write + one foreign write: page 1 ${r1.forums}, page 2 ${r2.forums}`);
  assert.equal(r1.forums, 1, "page 1 reloaded only for the foreign write");
  assert.ok(r2.forums >= 1);
});

scenario("c. after a server restart both pages come back live by themselves and reload nothing that did not change", async (t) => {
  // The example keeps its notifications in the outbox (its database): the
  // restarted server knows the pages' cursors, so nothing is reloaded for
  // the restart itself; the first write afterwards reloads only what it changed.
  const forum = await createForum(`Forum C ${Date.now()}`);
  const query = `/?forum=${forum.id}`;
  const [one, two] = [await openPage(t, "page1", { pathAndQuery: query }), await openPage(t, "page2", { pathAndQuery: query })];
  for (const page of [one, two]) {
    await page.evaluate(() => { window.notReloaded = true; });
  }
  const before = [await reloads(one), await reloads(two)];

  const started = performance.now();
  await restartServer();
  const serverBackAt = Date.now(); // just after the new server printed "listening on"
  const restarted = performance.now() - started;
  for (const page of [one, two]) {
    await page.waitForFunction(() => window.testStates.includes("offline"), null, { timeout: 5000 });
    await page.waitForFunction(
      () => window.testStates.lastIndexOf("live") > window.testStates.indexOf("offline"),
      null, { timeout: 15000 },
    );
    await waitForState(page, "live", 1000);
    assert.equal(await page.evaluate(() => window.notReloaded), true, "the page was not reloaded");
  }
  const back = performance.now() - started;
  // After a 1001 close the client retries at most 1 s apart: each page is
  // live again soon after the server (the bound leaves room for a busy machine).
  const behindServer = [];
  for (const page of [one, two]) behindServer.push((await page.evaluate(() => window.testLiveAt)) - serverBackAt);

  // A barrier: a post written after both pages are live again. Anything the
  // restart caused (a resync) reaches a page before this post's notification,
  // so once the post shows, every reload the restart caused has started.
  const post = await createPost(forum.id, `after the restart ${Date.now()}`);
  for (const page of [one, two]) {
    await page.locator(`#posts li[data-id="${post.id}"]`).waitFor({ state: "attached", timeout: 5000 });
  }
  const after = [await reloads(one), await reloads(two)];
  const states = await one.evaluate(() => window.testStates);
  const transports = [await one.evaluate(() => window.tidings.transport), await two.evaluate(() => window.tidings.transport)];
  const msg = `c: server down and up in ${restarted.toFixed(0)} ms; both pages live again after ${back.toFixed(0)} ms `
    + `(transports ${transports.join(", ")}); page 1 states ${states.join(" → ")}; `
    + `reloads forums ${before[0].forums}→${after[0].forums} and ${before[1].forums}→${after[1].forums}, `
    + `posts ${before[0].posts}→${after[0].posts} and ${before[1].posts}→${after[1].posts}; `
    + `live again ${behindServer.map((ms) => ms.toFixed(0)).join(" and ")} ms after the server`;
  t.diagnostic(msg);
  for (const ms of behindServer) assert.ok(ms < 2000, `a page was live again only ${ms} ms after the server`);
  for (const [i, page] of [one, two].entries()) {
    assert.equal(after[i].forums, before[i].forums, `page ${i + 1} reloaded forums, which did not change`);
    assert.equal(after[i].posts, before[i].posts + 1, `page ${i + 1} reloaded posts once, for the new post`);
    assert.equal(await page.evaluate(() => window.notReloaded), true, "the page was not reloaded");
  }

  const title = `Forum C2 ${Date.now()}`;
  await one.fill("#new-forum input[name=title]", title);
  await one.click("#new-forum button");
  await waitForForum(two, title, 2000);
});

scenario("d. with WebSockets refused the page goes live over SSE", async (t) => {
  const blocked = await openPage(t, "blocked", {
    setup: async (page) => {
      if (typeof page.routeWebSocket === "function") {
        await page.routeWebSocket(/\/ws/, (ws) => ws.close());
      } else {
        await page.addInitScript(() => {
          window.WebSocket = class extends EventTarget {
            constructor() {
              super();
              this.readyState = 3;
              setTimeout(() => { this.onerror?.({}); this.onclose?.({ code: 1006 }); }, 0);
            }
            send() {}
            close() {}
          };
        });
      }
    },
  });
  assert.equal(await blocked.evaluate(() => window.tidings.transport), "sse");
  const writer = await openPage(t, "writer");
  assert.equal(await writer.evaluate(() => window.tidings.transport), "websocket");
  const title = `Forum D ${Date.now()}`;
  await writer.fill("#new-forum input[name=title]", title);
  const started = performance.now();
  await writer.click("#new-forum button");
  await waitForForum(blocked, title, 2000);
  const ms = performance.now() - started;
  t.diagnostic(`d: over SSE the write appeared after ${ms.toFixed(0)} ms`);

  // ?transport=sse forces SSE too.
  const forced = await openPage(t, "forced-sse", { pathAndQuery: "/?transport=sse" });
  assert.equal(await forced.evaluate(() => window.tidings.transport), "sse");
});

scenario("e. a burst of 50 writes is coalesced into a few reloads", async (t) => {
  const page = await openPage(t, "page2");
  const baseline = (await reloads(page)).forums;
  const prefix = `Burst ${Date.now()}`;
  const started = performance.now();
  await Promise.all(Array.from({ length: 50 }, (_, i) => createForum(`${prefix} #${i}`)));
  const wrote = performance.now() - started;
  await page.waitForFunction(
    (p) => [...document.querySelectorAll("#forums li")].filter((li) => li.dataset.title.startsWith(p)).length === 50,
    prefix, { timeout: 5000 },
  );
  const shown = performance.now() - started;
  const count = (await reloads(page)).forums - baseline;
  const msg = `e: 50 creations took ${wrote.toFixed(0)} ms; all 50 shown after ${shown.toFixed(0)} ms; forums reloads: ${count}`;
  t.diagnostic(msg);
  assert.ok(count >= 1 && count <= 5, `${count} reloads`);
});

scenario("f. a short disconnect resumes from the cursor, without a resync", async (t) => {
  const forum = await createForum(`Forum F ${Date.now()}`);
  // The page's WebSocket goes through a proxy the test can cut, and whose
  // second connection waits until the test lets it through.
  const connections = [];
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  let reconnected;
  const secondArrived = new Promise((resolve) => { reconnected = resolve; });
  const page = await openPage(t, "flaky", {
    pathAndQuery: `/?forum=${forum.id}`,
    setup: (p) => p.routeWebSocket(/\/ws/, async (ws) => {
      const connection = { ws, url: ws.url(), frames: [] };
      connections.push(connection);
      if (connections.length > 1) {
        reconnected();
        await held;
      }
      const upstream = ws.connectToServer();
      upstream.onMessage((message) => { connection.frames.push(String(message)); ws.send(message); });
      ws.onMessage((message) => upstream.send(message));
      connection.upstream = upstream;
    }),
  });
  assert.equal(connections.length, 1);
  const before = await reloads(page);

  // Cut the connection; while the page is away, another client writes.
  connections[0].ws.close({ code: 4000, reason: "cut by the test" });
  connections[0].upstream.close();
  await waitForState(page, "offline", 5000).catch(() => {}); // may be brief
  const title = `Missed ${Date.now()}`;
  await createForum(title);
  // Let the page's reconnection through (it has been waiting in the proxy).
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("the page did not reconnect within 10 s")), 10000);
  });
  await Promise.race([secondArrived, timeout]).finally(() => clearTimeout(timer));
  release();
  await waitForForum(page, title, 5000);
  await waitForState(page, "live", 5000);

  // On a loaded machine the held connection can outlast the page's hello
  // timeout, and the page opens another one: every connection after the
  // cut must resume with a cursor and get no resync, and the missed write
  // must be replayed on one of them.
  const later = connections.slice(1);
  t.diagnostic(`f: ${later.length} connection(s) after the cut`);
  for (const [i, c] of later.entries()) {
    assert.match(c.url, /[?&]cursor=/, `connection ${i + 2} resumed with its cursor: ${c.url}`);
    const types = c.frames.map((f) => JSON.parse(f).type ?? "notification");
    t.diagnostic(`f: frames on connection ${i + 2}: ${types.join(", ")}`);
    assert.ok(!types.includes("resync"), `no resync after a short disconnect: ${types}`);
  }
  const replayed = later.some((c) => c.frames.some((f) => f.includes(`"collection":"forums"`)));
  assert.ok(replayed, "the missed write was replayed");
  const after = await reloads(page);
  assert.equal(after.posts, before.posts, "posts were not reloaded (no resync)");
  assert.ok(after.forums > before.forums, "forums were reloaded for the replayed notification");
});

scenario("g. a reload that throws synchronously once does not stop later reloads", async (t) => {
  const page = await openPage(t, "thrower");
  await page.evaluate(() => {
    window.throwingReloads = 0;
    // Not an async function: the first call throws before returning a promise.
    window.tidings.subscribe("forums", () => {
      window.throwingReloads += 1;
      if (window.throwingReloads === 1) throw new Error("synchronous failure in a reload");
    });
  });
  await createForum(`Forum G1 ${Date.now()}`);
  await page.waitForFunction(() => window.throwingReloads === 1, null, { timeout: 5000 });
  // onError got it: the example page shows it in its error line.
  await page.waitForFunction(
    () => document.getElementById("error").textContent.includes("synchronous failure in a reload"),
    null, { timeout: 2000 },
  );
  const title = `Forum G2 ${Date.now()}`;
  await createForum(title);
  await waitForForum(page, title, 5000);
  await page.waitForFunction(() => window.throwingReloads >= 2, null, { timeout: 5000 });
});

scenario("h. the post form is hidden and unusable until a forum is picked", async (t) => {
  const forum = await createForum(`Forum H ${Date.now()}`);
  const page = await openPage(t, "no-forum");
  const form = page.locator("#new-post");
  assert.equal(await form.isVisible(), false, "the post form shows with no forum picked");

  // Even submitted by a script, it sends nothing (it used to POST to
  // /api/forums/null/posts and show "Invalid URL: Cannot parse null to a i32").
  const attempt = await page.evaluate(() => {
    const requests = [];
    const realFetch = window.fetch;
    window.fetch = (...args) => { requests.push(String(args[0])); return realFetch(...args); };
    try {
      const post = document.getElementById("new-post");
      post.elements.body.value = "a post in no forum";
      post.requestSubmit(); // the submit handler runs, and would call fetch, before this returns
    } finally {
      window.fetch = realFetch;
    }
    return { requests, error: document.getElementById("error").textContent };
  });
  assert.deepEqual(attempt.requests, [], "no request without a forum");
  assert.doesNotMatch(attempt.error, /Invalid URL|null/);

  // Picking a forum shows it and it works; going back to no forum hides it again.
  await page.click(`#forums li[data-id="${forum.id}"] a.title`);
  await form.waitFor({ state: "visible", timeout: 2000 });
  await page.fill("#new-post textarea[name=body]", "a post in forum H");
  await page.click("#new-post button");
  await page.locator("#posts li", { hasText: "a post in forum H" }).waitFor({ state: "attached", timeout: 2000 });
  assert.equal((await listPosts(forum.id)).length, 1);
  await page.goBack({ timeout: 5000 });
  await form.waitFor({ state: "hidden", timeout: 2000 });
  assert.equal(await page.locator("#new-post textarea").isDisabled(), true, "its fields are disabled too");
});

scenario("i. delete asks for confirmation; cancel keeps the row", async (t) => {
  const forum = await createForum(`Forum I ${Date.now()}`);
  const post = await createPost(forum.id, "post I");
  const page = await openPage(t, "deleter", { pathAndQuery: `/?forum=${forum.id}` });
  await page.evaluate(() => {
    window.testWrites = [];
    const realFetch = window.fetch;
    window.fetch = (input, init) => {
      if (init && init.method && init.method !== "GET") window.testWrites.push(`${init.method} ${input}`);
      return realFetch(input, init);
    };
  });
  /** Clicks `selector`, answers the dialog it opens (accept or not), returns the dialog. */
  async function clickAndAnswer(selector, accept) {
    const asked = new Promise((resolve) => {
      page.once("dialog", async (dialog) => {
        const seen = { type: dialog.type(), message: dialog.message() };
        await (accept ? dialog.accept() : dialog.dismiss());
        resolve(seen);
      });
    });
    await page.click(selector, { timeout: 5000 });
    return within(asked, 5000, `clicking ${selector} asked nothing`);
  }

  const forumRow = `#forums li[data-id="${forum.id}"]`;
  const postRow = `#posts li[data-id="${post.id}"]`;
  for (const [row, name] of [[forumRow, forum.title], [postRow, post.body]]) {
    const dialog = await clickAndAnswer(`${row} button[data-action=delete]`, false);
    assert.equal(dialog.type, "confirm");
    assert.ok(dialog.message.includes(name), `the question names what is deleted: ${dialog.message}`);
    // The click handler has returned (the dialog was modal); nothing was sent.
    assert.deepEqual(await page.evaluate(() => window.testWrites), []);
    assert.equal(await page.locator(row).count(), 1, "cancel keeps the row");
  }
  assert.equal((await listPosts(forum.id)).length, 1, "the post is still there");

  // Confirmed, the post goes.
  await clickAndAnswer(`${postRow} button[data-action=delete]`, true);
  await page.locator(postRow).waitFor({ state: "detached", timeout: 2000 });
  assert.deepEqual(await page.evaluate(() => window.testWrites), [`DELETE /api/posts/${post.id}`]);
  assert.deepEqual(await listPosts(forum.id), []);
});

/**
 * `iso` as de-DE writes a medium date and a short time in Asia/Kolkata
 * (UTC+5:30 all year, no daylight saving), computed without Intl.
 */
function germanKolkataTime(iso) {
  const local = new Date(Date.parse(iso) + (5 * 60 + 30) * 60000);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(local.getUTCDate())}.${two(local.getUTCMonth() + 1)}.${local.getUTCFullYear()}, `
    + `${two(local.getUTCHours())}:${two(local.getUTCMinutes())}`;
}

scenario("j. timestamps are shown in the viewer's locale and time zone, the ISO value kept", async (t) => {
  const forum = await createForum(`Forum J ${Date.now()}`);
  const rendered = await createPost(forum.id, "rendered by the server");
  const page = await openPage(t, "de-DE", {
    pathAndQuery: `/?forum=${forum.id}`,
    context: { locale: "de-DE", timezoneId: "Asia/Kolkata" },
  });
  const reloaded = await createPost(forum.id, "rendered after a notification");
  await page.locator(`#posts li[data-id="${reloaded.id}"]`).waitFor({ state: "attached", timeout: 5000 });
  for (const post of [rendered, reloaded]) {
    assert.match(post.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, "the API's timestamp");
    const time = page.locator(`#posts li[data-id="${post.id}"] time`);
    assert.equal(await time.getAttribute("datetime", { timeout: 2000 }), post.created_at);
    assert.equal(await time.getAttribute("title", { timeout: 2000 }), post.created_at);
    assert.equal(await time.textContent({ timeout: 2000 }), germanKolkataTime(post.created_at), `post ${post.id}`);
  }
});

scenario("k. a page away for more than the replay buffer reloads only the collections that changed", async (t) => {
  const forum = await createForum(`Forum H ${Date.now()}`);
  // The test decides when the page counts as hidden: a hidden page does not
  // reconnect (docs/client.md), so the page stays away, without any timing,
  // until the test makes it visible. Its WebSocket goes through a proxy the
  // test can cut and whose frames it reads; `websocket` keeps it off SSE.
  const connections = [];
  const page = await openPage(t, "away", {
    pathAndQuery: `/?forum=${forum.id}&transport=websocket`,
    setup: async (p) => {
      await p.addInitScript(() => {
        window.testHidden = false;
        Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => window.testHidden });
      });
      await p.routeWebSocket(/\/ws/, (ws) => {
        const connection = { ws, url: ws.url(), frames: [] };
        connections.push(connection);
        const upstream = ws.connectToServer();
        upstream.onMessage((message) => { connection.frames.push(String(message)); ws.send(message); });
        ws.onMessage((message) => upstream.send(message));
        connection.upstream = upstream;
      });
    },
  });
  const before = await reloads(page);
  await page.evaluate(() => {
    window.testHidden = true;
    document.dispatchEvent(new Event("visibilitychange"));
  });
  connections[0].ws.close({ code: 4000, reason: "cut by the test" });
  connections[0].upstream.close();
  await waitForState(page, "offline", 5000);

  // More post notifications than the example's replay buffer (1,024) holds:
  // the page's cursor is evicted. No forum changes meanwhile.
  const writes = 1100;
  let written = 0;
  let last;
  const writer = async () => {
    while (written < writes) {
      written += 1;
      last = await createPost(forum.id, `post ${written} while the page was away`);
    }
  };
  await within(Promise.all(Array.from({ length: 8 }, writer)), 60000, `${writes} posts took over 60 s`);
  assert.equal(connections.length, 1, "a hidden page does not reconnect");

  await page.evaluate(() => {
    window.testHidden = false;
    document.dispatchEvent(new Event("visibilitychange"));
  });
  await page.locator(`#posts li[data-id="${last.id}"]`).waitFor({ state: "attached", timeout: 10000 });
  await waitForState(page, "live", 5000);

  const frames = connections.slice(1).flatMap((c) => c.frames.map((f) => JSON.parse(f)));
  t.diagnostic(`k: ${connections.length - 1} connection(s) after the cut; frames: `
    + frames.map((f) => f.type ?? "notification").join(", "));
  assert.match(connections[1].url, /[?&]cursor=/, `resumed with its cursor: ${connections[1].url}`);
  const resync = frames.find((f) => f.type === "resync");
  assert.ok(resync, "an evicted cursor gets a resync");
  assert.deepEqual(resync.collections, ["posts"], `the resync names only posts: ${JSON.stringify(resync)}`);
  const after = await reloads(page);
  assert.ok(after.posts > before.posts, "posts were reloaded");
  assert.equal(after.forums, before.forums, "forums were not reloaded: they did not change");
});

scenario("l. a write between a JSON page's first read and its WebSocket opening reaches the page", async (t) => {
  const title = `Forum L ${Date.now()}`;
  const injected = { done: false, readHadIt: null, socketsBeforeWrite: null };
  const sockets = [];
  const page = await openPage(t, "json", {
    pathAndQuery: "/?load=json",
    setup: async (page) => {
      page.on("websocket", (ws) => sockets.push(ws.url()));
      // The page's first read of the forums: the server reads (and takes its
      // snapshot cursor); then, before the page gets the answer, and so
      // before its connection opens, another client creates a forum.
      await page.route("**/api/forums", async (route) => {
        if (injected.done || route.request().method() !== "GET") return route.continue();
        injected.done = true;
        const response = await route.fetch();
        const forums = await response.json();
        injected.readHadIt = forums.some((f) => f.title === title);
        injected.cursor = response.headers()["tidings-cursor"];
        injected.socketsBeforeWrite = sockets.length;
        await createForum(title);
        await route.fulfill({ response });
      });
    },
  });
  assert.ok(injected.done, "the first read was intercepted");
  assert.equal(injected.readHadIt, false, "the read was made before the write");
  assert.ok(injected.cursor, "the read carries a tidings-cursor header");
  assert.equal(injected.socketsBeforeWrite, 0, "the connection was not open yet");
  await waitForForum(page, title, 5000);
  assert.match(sockets[0], new RegExp(`[?&]cursor=${encodeURIComponent(injected.cursor)}`),
    `the connection resumed from the snapshot cursor: ${sockets[0]}`);
});

scenario("m. the posts pane receives only its own forum's posts: filtered on the server", async (t) => {
  const shown = await createForum(`Forum M shown ${Date.now()}`);
  const other = await createForum(`Forum M other ${Date.now()}`);
  const frames = [];
  const sockets = [];
  const page = await openPage(t, "filtered", {
    pathAndQuery: `/?forum=${shown.id}&transport=websocket`,
    setup: async (p) => {
      p.on("websocket", (ws) => {
        sockets.push(ws);
        ws.on("framereceived", (f) => frames.push(JSON.parse(String(f.payload))));
      });
    },
  });
  assert.match(sockets[0].url(), /[?&]where=/, `the filter is in the connect query: ${sockets[0].url()}`);
  for (let i = 0; i < 5; i++) await createPost(other.id, `elsewhere ${i}`);
  const mine = await createPost(shown.id, "here");
  await page.locator(`#posts li[data-id="${mine.id}"]`).waitFor({ state: "attached", timeout: 5000 });
  const posts = frames.filter((f) => f.collection === "posts");
  t.diagnostic(`m: posts frames received: ${JSON.stringify(posts.map((f) => f.data))}`);
  assert.deepEqual(posts.map((f) => f.data.forum_id), [shown.id], "only the shown forum's post reached the page");

  // Picking the other forum moves the subscription: its posts now arrive, the first forum's do not.
  // The server has applied the new filter once it acknowledges it.
  const acknowledged = sockets[0].waitForEvent("framereceived", {
    predicate: (f) => JSON.parse(String(f.payload)).type === "subscribed", timeout: 5000,
  });
  await page.click(`#forums li[data-id="${other.id}"] a.title`);
  await acknowledged;
  const before = frames.length;
  await createPost(shown.id, "not for this pane");
  const theirs = await createPost(other.id, "there");
  await page.locator(`#posts li[data-id="${theirs.id}"]`).waitFor({ state: "attached", timeout: 5000 });
  const later = frames.slice(before).filter((f) => f.collection === "posts");
  assert.deepEqual(later.map((f) => f.data.forum_id), [other.id], `after switching: ${JSON.stringify(later)}`);
});

scenario("n. a private forum: only members see it and its posts; logging out revokes every tab", async (t) => {
  const staff = await createForum("Staff"); // the example's private forum: ana only
  const asUser = (name) => (p) => p.context().addCookies([{ name: "user", value: name, url: url("/") }]);
  const ana = await openPage(t, "ana", {
    pathAndQuery: `/?forum=${staff.id}&transport=websocket`, setup: asUser("ana"),
  });
  const benSockets = [];
  const ben = await openPage(t, "ben", {
    pathAndQuery: `/?forum=${staff.id}&transport=websocket`,
    setup: async (p) => {
      await asUser("ben")(p);
      p.on("websocket", (ws) => benSockets.push(ws));
    },
  });
  const staffItem = `#forums li[data-id="${staff.id}"]`;
  await ana.locator(staffItem).waitFor({ state: "attached", timeout: 5000 });
  assert.equal(await ben.locator(staffItem).count(), 0, "ben does not see the private forum");
  assert.equal(await ben.evaluate(() => document.getElementById("forum").dataset.forum), "", "nor select it");

  // A post in it reaches ana's page live.
  const response = await fetch(url(`/api/forums/${staff.id}/posts`), {
    method: "POST", headers: { "content-type": "application/json", cookie: "user=ana" },
    body: JSON.stringify({ body: "staff only" }), signal: AbortSignal.timeout(10000),
  });
  assert.equal(response.status, 201);
  const post = await response.json();
  await ana.locator(`#posts li[data-id="${post.id}"]`).waitFor({ state: "attached", timeout: 5000 });

  // ben asking the server for its posts by hand is refused, per filter.
  const refused = benSockets[0].waitForEvent("framereceived", {
    predicate: (f) => JSON.parse(String(f.payload)).type === "error", timeout: 5000,
  });
  await ben.evaluate((id) => { window.tidings.subscribe("posts", () => {}, { where: { forum_id: id } }); }, staff.id);
  const error = JSON.parse(String((await refused).payload));
  assert.equal(error.code, "forbidden", JSON.stringify(error));

  // A second tab of ana's browser; logging out in the first closes both
  // sessions with 4401, and both re-authorize as nobody.
  const ana2 = await ana.context().newPage();
  const ana2Sockets = [];
  ana2.on("websocket", (ws) => ana2Sockets.push(ws));
  await ana2.goto(url(`/?forum=${staff.id}&transport=websocket`), { timeout: 10000 });
  await waitForState(ana2, "live", 10000);
  await ana.click("#logout");
  for (const page of [ana, ana2]) {
    await page.waitForFunction((sel) => !document.querySelector(sel), staffItem, { timeout: 5000 });
    await page.waitForFunction(() => document.getElementById("forum").dataset.forum === "", null, { timeout: 5000 });
  }
  await waitForState(ana2, "live", 5000);
  assert.equal(ana2Sockets.length, 2, "the second tab reconnected after the 4401");
  assert.doesNotMatch(ana2Sockets[1].url(), /where=/, `no filter for the private forum: ${ana2Sockets[1].url()}`);
});

scenario("o. a forum switch over a held uplink shows a post written before the subscribe reached the server", async (t) => {
  const first = await createForum(`Forum O first ${Date.now()}`);
  const next = await createForum(`Forum O next ${Date.now()}`);
  const existing = await createPost(next.id, "already there");
  const frames = [];
  const page = await openPage(t, "switching", {
    pathAndQuery: `/?forum=${first.id}&transport=websocket`,
    setup: async (p) => {
      p.on("websocket", (ws) => ws.on("framereceived", (f) => frames.push(JSON.parse(String(f.payload)))));
      // A congested uplink: what the page sends on its WebSocket waits until
      // the test lets it go (its HTTP reads do not).
      await p.addInitScript(() => {
        const send = WebSocket.prototype.send;
        let held = null;
        WebSocket.prototype.send = function (data) {
          if (held) held.push([this, data]);
          else send.call(this, data);
        };
        window.holdUplink = () => { held = []; };
        window.releaseUplink = () => {
          const frames = held ?? [];
          held = null;
          for (const [socket, data] of frames) send.call(socket, data);
          return frames.map(([, data]) => JSON.parse(data));
        };
      });
    },
  });
  await page.evaluate(() => window.holdUplink());
  await page.click(`#forums li[data-id="${next.id}"] a.title`);
  // The page has read the new forum's posts; its subscribe is still held.
  await page.locator(`#posts li[data-id="${existing.id}"]`).waitFor({ state: "attached", timeout: 5000 });
  const written = await createPost(next.id, "written while the subscribe was on its way");
  const released = await page.evaluate(() => window.releaseUplink());
  const subscribe = released.find((f) => f.type === "subscribe" && f.collections.includes("posts"));
  assert.ok(subscribe, `the held frames had the posts subscribe: ${JSON.stringify(released)}`);
  assert.deepEqual(subscribe.where, [{ forum_id: next.id }]);
  assert.ok(subscribe.cursor, `the subscribe carries the page's cursor: ${JSON.stringify(subscribe)}`);

  await page.locator(`#posts li[data-id="${written.id}"]`).waitFor({ state: "attached", timeout: 5000 });
  const replayed = frames.filter((f) => f.collection === "posts" && f.data?.id === written.id);
  assert.equal(replayed.length, 1, "the post arrived as a replayed notification");
  assert.ok(!frames.some((f) => f.type === "resync"), "no resync: nothing had to be reloaded wholesale");
});
