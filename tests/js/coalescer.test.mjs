// Unit tests of single-flight reloads (src/client/coalescer.js): `node --test tests/js/`.

import { test } from "node:test";
import assert from "node:assert/strict";

import { createCoalescer } from "../../src/client/coalescer.js";
import { deferred, settle } from "./fake-browser.mjs";

test("coalescer: 5 triggers during a slow reload cause exactly 2 reloads", async () => {
  const gates = [];
  let runs = 0;
  const coalescer = createCoalescer(() => {
    runs += 1;
    const gate = deferred();
    gates.push(gate);
    return gate.promise;
  });
  const first = coalescer.trigger();
  assert.equal(runs, 1, "the first trigger reloads at once");
  for (let i = 0; i < 5; i++) coalescer.trigger();
  assert.equal(runs, 1, "no second reload while the first runs");
  gates[0].resolve();
  await settle();
  assert.equal(runs, 2, "exactly one follow-up reload");
  gates[1].resolve();
  await first;
  assert.equal(runs, 2);
  assert.equal(coalescer.running, false);
  coalescer.trigger();
  assert.equal(runs, 3, "a later trigger reloads again");
  gates[2].resolve();
});

test("coalescer: a throwing reload is reported and does not block later reloads", async () => {
  const errors = [];
  let runs = 0;
  const coalescer = createCoalescer(async () => {
    runs += 1;
    if (runs === 1) throw new Error("boom");
  }, { onError: (e) => errors.push(e.message) });
  await coalescer.trigger();
  assert.deepEqual(errors, ["boom"]);
  await coalescer.trigger();
  assert.equal(runs, 2);
  assert.equal(coalescer.running, false);
});

test("coalescer: a reload that throws synchronously is reported and later triggers still reload", async () => {
  for (const minInterval of [0, 200]) {
    const errors = [];
    let runs = 0;
    const coalescer = createCoalescer(() => {
      runs += 1;
      if (runs === 1) throw new Error("sync boom"); // not an async function: throws before any await
    }, { onError: (e) => errors.push(e.message), minInterval, now: () => 1000 * runs, setTimeout: () => {} });
    await coalescer.trigger();
    assert.deepEqual(errors, ["sync boom"], `minInterval ${minInterval}`);
    assert.equal(coalescer.running, false, `minInterval ${minInterval}: not stuck running`);
    await coalescer.trigger();
    assert.equal(runs, 2, `minInterval ${minInterval}: the next trigger reloads again`);
    await coalescer.trigger();
    assert.equal(runs, 3);
  }
});

test("coalescer: a trigger from inside a reload runs one more reload, awaited by both", async () => {
  let runs = 0;
  let inner = null;
  let inside = false;
  let overlapped = false;
  const coalescer = createCoalescer(() => {
    overlapped ||= inside;
    inside = true;
    runs += 1;
    if (runs === 1) inner = coalescer.trigger(); // synchronously, while the first reload runs
    inside = false;
  });
  const outer = coalescer.trigger();
  assert.equal(overlapped, false, "single-flight: the nested trigger did not start a reload inside the running one");
  assert.ok(inner instanceof Promise, "the nested trigger gets the running cycle's promise");
  await inner;
  assert.equal(runs, 2, "the nested trigger's reload is done when its promise resolves");
  await outer;
  assert.equal(runs, 2);
  assert.equal(coalescer.running, false);
});

test("coalescer: minInterval spaces reloads of trickling notifications", async () => {
  let clock = 1000;
  const timers = [];
  let runs = 0;
  const coalescer = createCoalescer(async () => { runs += 1; }, {
    minInterval: 200,
    now: () => clock,
    setTimeout: (fn, ms) => timers.push({ fn, ms }),
  });
  await coalescer.trigger();
  assert.equal(runs, 1, "the first reload starts at once");
  clock += 30;
  coalescer.trigger(); // one notification every 30 ms, each after the reload finished
  await settle();
  assert.equal(runs, 1, "waits for the interval");
  assert.deepEqual(timers.map((t) => t.ms), [170]);
  for (let i = 0; i < 4; i++) { clock += 30; coalescer.trigger(); }
  await settle();
  assert.equal(timers.length, 1, "further notifications only mark it dirty");
  clock += 50;
  timers.shift().fn();
  await settle();
  assert.equal(runs, 2, "6 notifications in 200 ms: 2 reloads");
  clock += 1000;
  coalescer.trigger();
  assert.equal(runs, 3, "after a quiet interval a reload starts at once");
});
