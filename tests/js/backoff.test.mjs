// Unit tests of the reconnect schedule (src/client/backoff.js): `node --test tests/js/`.

import { test } from "node:test";
import assert from "node:assert/strict";

import { backoffDelay, createBackoff, isRestartClose } from "../../src/client/backoff.js";

test("backoffDelay grows exponentially, is capped, and uses the given random", () => {
  const top = () => 0.999999;
  assert.equal(backoffDelay(0, top), 249);
  assert.equal(backoffDelay(1, top), 499);
  assert.equal(backoffDelay(2, top), 999);
  assert.equal(backoffDelay(4, top), 3999);
  assert.equal(backoffDelay(5, top), 4999, "capped at 5 s");
  assert.equal(backoffDelay(60, top), 4999, "no overflow for large attempts");
  assert.equal(backoffDelay(3, () => 0), 0, "full jitter starts at 0");
  assert.equal(backoffDelay(3, () => 0.5), 1000);
  assert.equal(backoffDelay(1, () => 0.5, { base: 100, cap: 150 }), 75);
  for (let attempt = 0; attempt < 20; attempt++) {
    const d = backoffDelay(attempt);
    assert.ok(d >= 0 && d < Math.min(5000, 250 * 2 ** attempt), `attempt ${attempt}: ${d}`);
  }
});

test("backoffDelay after a restart: capped at 1 s for the first 20 attempts, then the usual schedule", () => {
  const top = () => 0.999999;
  const restart = { afterRestart: true };
  // The table in docs/client.md: attempt → [0, ceiling) ms.
  const expected = [
    [0, 250, 250], [1, 500, 500], [2, 1000, 1000], [3, 1000, 2000], [4, 1000, 4000],
    [5, 1000, 5000], [19, 1000, 5000], [20, 5000, 5000], [21, 5000, 5000], [60, 5000, 5000],
  ];
  for (const [attempt, afterRestart, otherwise] of expected) {
    assert.equal(backoffDelay(attempt, top, restart), afterRestart - 1, `after a restart, attempt ${attempt}`);
    assert.equal(backoffDelay(attempt, top), otherwise - 1, `otherwise, attempt ${attempt}`);
    assert.equal(backoffDelay(attempt, () => 0, restart), 0, "full jitter starts at 0");
  }
  assert.equal(backoffDelay(3, () => 0.5, restart), 500);
  assert.equal(backoffDelay(3, top, { afterRestart: true, restartCap: 400 }), 399, "restartCap is an option");
  assert.equal(backoffDelay(3, top, { afterRestart: true, cap: 300 }), 299, "never above cap");
});

test("isRestartClose: 1001 and 1012 only", () => {
  assert.equal(isRestartClose(1001), true);
  assert.equal(isRestartClose(1012), true);
  for (const code of [1000, 1006, 1011, 4000, undefined]) assert.equal(isRestartClose(code), false, `${code}`);
});

test("createBackoff counts attempts and follows backoffDelay", () => {
  const top = () => 0.999999;
  const backoff = createBackoff({ random: top });
  const delays = [];
  for (let i = 0; i < 7; i++) delays.push(backoff.next());
  assert.deepEqual(delays, [249, 499, 999, 1999, 3999, 4999, 4999]);
  assert.equal(backoff.attempt, 7);
  backoff.reset();
  assert.equal(backoff.attempt, 0);
  assert.equal(backoff.next(), 249, "starts over after a reset");

  const tuned = createBackoff({ base: 100, cap: 150, random: () => 0.5 });
  assert.deepEqual([tuned.next(), tuned.next(), tuned.next()], [50, 75, 75], "base and cap are options");
});

test("createBackoff: a restart close keeps the short schedule through refusals until a reset", () => {
  const top = () => 0.999999;
  const backoff = createBackoff({ random: top });
  backoff.closed(1006);
  assert.equal(backoff.afterRestart, false, "an abnormal closure is not a restart");
  backoff.closed(1001);
  assert.equal(backoff.afterRestart, true);
  const delays = [];
  for (let i = 0; i < 22; i++) {
    delays.push(backoff.next());
    backoff.closed(undefined); // refused: an error, no close code
  }
  assert.equal(backoff.afterRestart, true, "refusals do not end the restart schedule");
  assert.deepEqual(delays.slice(0, 5), [249, 499, 999, 999, 999]);
  assert.deepEqual(delays.slice(17), [999, 999, 999, 4999, 4999], "20 attempts, then the usual schedule");
  backoff.reset();
  assert.equal(backoff.afterRestart, false, "hello ends it");
  assert.deepEqual([backoff.next(), backoff.next(), backoff.next(), backoff.next()], [249, 499, 999, 1999]);

  const short = createBackoff({ random: top, restartCap: 400 });
  short.closed(1012);
  assert.deepEqual([short.next(), short.next(), short.next()], [249, 399, 399], "restartCap is an option");
});
