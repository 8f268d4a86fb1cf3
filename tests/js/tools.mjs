// What the tests that drive tools (tsc, npm) share: not a test file itself.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository's root. */
export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The client's sources, which are also the npm package. */
export const clientDir = path.join(root, "src/client");

/** The TypeScript compiler the project installs (`npm ci`). */
export const tsc = path.join(root, "node_modules/.bin/tsc");

/** Runs a command (in `cwd`, if given) and returns its output; its output becomes the failure message. */
export function run(command, args, cwd) {
  try {
    return execFileSync(command, args, { cwd, encoding: "utf8", stdio: "pipe", timeout: 120_000 });
  } catch (error) {
    assert.fail(`${path.basename(command)} ${args.join(" ")}:\n${error.stdout ?? ""}${error.stderr ?? error.message}`);
  }
}
