/**
 * backoff.js — when to try again after a connection dropped.
 *
 * `backoffDelay` is the schedule itself (exponential backoff with full
 * jitter, kept short after a restart close); `createBackoff` is one client's
 * position in it: how many attempts since the last `hello`, and whether the
 * server announced a restart. Kept apart from the connection so the schedule
 * can be tested, and tuned, as plain arithmetic.
 */

/** Close codes that announce a restart: 1001 going away, 1012 service restart. */
const RESTART_CLOSE_CODES = new Set([1001, 1012]);

/**
 * Whether a WebSocket close code announces a restart (the server expects to
 * be back within seconds).
 * @param {number} [code]
 * @returns {boolean}
 */
export function isRestartClose(code) {
  return RESTART_CLOSE_CODES.has(code);
}

/**
 * How many reconnect attempts after a restart close use `restartCap`: about
 * 10 s of attempts (0.5 s apart on average), longer than a typical restart or
 * deploy. A server that is still down after that gets the usual schedule.
 */
export const RESTART_ATTEMPTS = 20;

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry):
 * exponential backoff with full jitter, `random() * min(cap, base * 2^attempt)`.
 * Hidden tabs do not retry at all, so every retry is for a page someone is
 * looking at: `cap` (5 s) bounds how long they see "offline" after the server
 * is back. After a restart close (`afterRestart`), the first
 * `RESTART_ATTEMPTS` attempts use `restartCap` (1 s) instead: the server is
 * expected back within seconds, and the page should follow within a second,
 * still spread out so that all pages do not arrive at once.
 * @param {number} attempt
 * @param {() => number} [random] returns a number in [0, 1)
 * @param {{base?: number, cap?: number, restartCap?: number, afterRestart?: boolean}} [options]
 *   milliseconds (250, 5000, 1000), and whether the last connection was closed for a restart
 * @returns {number} milliseconds, an integer in [0, ceiling)
 */
export function backoffDelay(attempt, random = Math.random, options = {}) {
  const base = options.base ?? 250;
  let cap = options.cap ?? 5000;
  if (options.afterRestart && attempt < RESTART_ATTEMPTS) cap = Math.min(cap, options.restartCap ?? 1000);
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

/**
 * @typedef {object} Backoff
 * @property {(code?: number) => void} closed  a connection ended, with this WebSocket
 *   close code if it had one: 1001 and 1012 switch to the restart schedule
 * @property {() => number} next  the delay before the next attempt, in ms; counts the attempt
 * @property {() => void} reset  `hello` arrived: the next drop starts the usual schedule from 0
 * @property {number} attempt  attempts since the last reset (read-only)
 * @property {boolean} afterRestart  whether the restart schedule applies (read-only)
 */

/**
 * One client's reconnect schedule. A restart close keeps its short schedule
 * through refusals that follow (the server is still coming back); only a
 * `hello` ends it.
 * @param {{base?: number, cap?: number, restartCap?: number, random?: () => number}} [options]
 *   milliseconds as in `backoffDelay`, and the random source
 * @returns {Backoff}
 */
export function createBackoff(options = {}) {
  const { random = Math.random, ...limits } = options;
  let attempt = 0;
  let afterRestart = false;
  return {
    closed(code) {
      if (isRestartClose(code)) afterRestart = true;
    },
    next() {
      const delay = backoffDelay(attempt, random, { ...limits, afterRestart });
      attempt += 1;
      return delay;
    },
    reset() {
      attempt = 0;
      afterRestart = false;
    },
    get attempt() { return attempt; },
    get afterRestart() { return afterRestart; },
  };
}
