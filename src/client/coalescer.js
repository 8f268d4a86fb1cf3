/**
 * coalescer.js — single-flight reloads, one coalescer per subscription.
 *
 * A burst of notifications for one collection must not cause a burst of
 * reloads of it: the page only needs the state after the last one. This
 * module knows nothing of connections or frames, so its timing rules can be
 * tested with a fake clock.
 */

/**
 * @typedef {object} Coalescer
 * @property {() => Promise<void>} trigger  asks for a reload; resolves when the reloads it caused are done
 * @property {boolean} running  whether a reload cycle is under way (read-only)
 * @property {number} runs  how many times `reload` was called (read-only)
 */

/**
 * Single-flight: `trigger()` starts `reload()` at once if it is not running;
 * while it runs, further triggers only mark it dirty, and exactly one more
 * reload runs after it finishes (however many triggers came meanwhile).
 * Errors thrown by `reload` go to `onError` and do not stop later reloads.
 * With `minInterval` (ms, default 0), a reload also starts no sooner than
 * that after the previous one started: notifications that keep trickling in
 * (one every few ms, each after the previous reload finished) then cause at
 * most one reload per interval, not one each.
 * @param {() => unknown} reload  may return a promise, which is awaited
 * @param {{onError?: (error: unknown) => void, minInterval?: number,
 *   setTimeout?: (fn: () => void, ms: number) => unknown, now?: () => number}} [options]
 * @returns {Coalescer}
 */
export function createCoalescer(reload, options = {}) {
  const onError = options.onError ?? ((error) => console.error("tidings: reload failed:", error));
  const minInterval = options.minInterval ?? 0;
  const sleep = (ms) => new Promise((resolve) => (options.setTimeout ?? setTimeout)(() => resolve(), ms));
  const now = options.now ?? (() => Date.now());
  // `running` is set before a cycle starts and cleared when it ends. A
  // reload that throws synchronously ends its cycle before `cycle()` even
  // returns, so "running" cannot be "a cycle's promise is stored": that
  // promise would be stored after the cycle had already finished, and every
  // later trigger would only mark it dirty.
  let running = false;
  let done = null; // resolves when the running cycle ends
  let dirty = false;
  let runs = 0;
  let lastStart = -Infinity;

  async function cycle() {
    try {
      do {
        if (minInterval > 0) {
          const wait = lastStart + minInterval - now();
          if (wait > 0) await sleep(wait);
          lastStart = now();
        }
        dirty = false;
        runs += 1;
        try {
          await reload();
        } catch (error) {
          try { onError(error); } catch { /* a broken logger must not stop reloads */ }
        }
      } while (dirty);
    } finally {
      running = false;
    }
  }

  return {
    trigger() {
      if (running) {
        dirty = true;
        return done;
      }
      running = true;
      // Created before the cycle starts, so that a trigger from inside a
      // reload that has not reached an `await` yet gets it too.
      let finished;
      done = new Promise((resolve) => { finished = resolve; });
      cycle().then(finished, finished);
      return done;
    },
    get running() { return running; },
    get runs() { return runs; },
  };
}
