// The browser client as an npm package (src/client/package.json): packed
// with `npm pack`, installed from the tarball into a scratch project, then
// imported by node and type-checked by tsc the way an application does.
// `node --test tests/js/`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { clientDir, root, run, tsc } from "./tools.mjs";

test("the packed client holds the modules, their declarations, and nothing else; installed, it imports and type-checks", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "tidings-package-"));
  try {
    const [packed] = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", dir], clientDir));
    const version = JSON.parse(readFileSync(path.join(clientDir, "package.json"), "utf8")).version;
    assert.equal(packed.version, version);
    const expected = readdirSync(clientDir)
      .filter((name) => name.endsWith(".js") || name.endsWith(".d.ts") || name.startsWith("LICENSE")
        || name === "package.json" || name === "README.md")
      .sort();
    assert.deepEqual(packed.files.map((f) => f.path).sort(), expected);
    for (const license of ["LICENSE-MIT", "LICENSE-APACHE"]) {
      assert.equal(readFileSync(path.join(clientDir, license), "utf8"), readFileSync(path.join(root, license), "utf8"),
        `src/client/${license} is the crate's`);
    }

    // A scratch application that installs the tarball (no registry needed:
    // the package has no dependencies).
    const app = path.join(dir, "app");
    mkdirSync(app);
    writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    run("npm", ["install", "--offline", "--no-audit", "--no-fund", path.join(dir, packed.filename)], app);

    writeFileSync(path.join(app, "imports.mjs"), `
      import { connect, STATES, SESSION_HEADER } from "tidings";
      import { onChange } from "tidings/changes";
      import { createUseLive } from "tidings/react";
      import { createFromLive } from "tidings/rxjs.js";
      import { invalidateOnChange } from "tidings/tanstack";
      const live = connect({ start: false });
      let internal = "importable";
      try { await import("tidings/session.js"); } catch (error) { internal = error.code; }
      console.log(JSON.stringify({
        functions: [connect, onChange, createUseLive, createFromLive, invalidateOnChange].map((f) => typeof f),
        states: STATES, header: SESSION_HEADER, state: live.state, internal,
      }));
    `);
    const imported = JSON.parse(run("node", ["imports.mjs"], app));
    assert.deepEqual(imported, {
      functions: ["function", "function", "function", "function", "function"],
      states: ["connecting", "live", "offline"],
      header: "tidings-session",
      state: "connecting",
      internal: "ERR_PACKAGE_PATH_NOT_EXPORTED",
    });

    writeFileSync(path.join(app, "usage.ts"), `
      import { connect, type Live, type NotificationFrame } from "tidings";
      import type { Change } from "tidings/changes";
      import { createUseLive } from "tidings/react";
      const live: Live = connect({ transport: "auto", cursor: null });
      live.subscribe("posts", () => {}, {
        where: { forum_id: 3 },
        filter: (n: NotificationFrame) => n.op !== "update",
      });
      // @ts-expect-error: not a transport (proves the declarations are the ones checked)
      connect({ transport: "carrier-pigeon" });
      export const kinds: Change["type"][] = [];
      export { createUseLive };
    `);
    writeFileSync(path.join(app, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        strict: true, noEmit: true, target: "es2022", module: "preserve", moduleResolution: "bundler",
        lib: ["es2022", "dom"], types: [], skipLibCheck: false,
      },
      files: ["usage.ts"],
    }));
    run(tsc, ["-p", "tsconfig.json"], app);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
