// Starts and stops the forums example for the browser tests (not a test
// file: node --test skips it by its name).

import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
// Where cargo puts the example (CARGO_TARGET_DIR, if set, moves it).
const targetDir = path.resolve(root, process.env.CARGO_TARGET_DIR || "target");
export const binary = path.join(targetDir, "debug", "examples", "forums");

/**
 * Starts the example on `addr` in `workDir` (its SQLite forums.db); resolves
 * to { child, addr, output } once it listens.
 */
export function startServer({ workDir, addr = "127.0.0.1:0", timeoutMs = 15000 }) {
  const env = { ...process.env, RUST_LOG: "warn" };
  delete env.DATABASE_URL;
  const child = spawn(binary, ["--addr", addr], { cwd: workDir, env, stdio: ["ignore", "pipe", "pipe"] });
  const output = [];
  return new Promise((resolve, reject) => {
    let stdout = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the example did not report "listening on" within ${timeoutMs} ms:\n${output.join("")}`));
    }, timeoutMs);
    child.stderr.on("data", (chunk) => output.push(chunk.toString()));
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      output.push(chunk.toString());
      const match = /listening on http:\/\/(\S+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolve({ child, addr: match[1], output });
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the example exited (${code ?? signal}) before listening:\n${output.join("")}`));
    });
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/** Stops the server (SIGTERM: graceful), SIGKILL after 10 s. */
export async function stopServer(server) {
  if (!server || server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = new Promise((resolve) => server.child.once("exit", resolve));
  server.child.kill("SIGTERM");
  const timer = setTimeout(() => server.child.kill("SIGKILL"), 10000);
  await exited;
  clearTimeout(timer);
}
