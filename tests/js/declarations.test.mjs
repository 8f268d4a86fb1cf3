// The TypeScript declarations (src/client/*.d.ts) declare exactly what their
// modules export: `tsc` (CI) checks the declarations against a usage file,
// and this checks them against the code. `node --test tests/js/`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { clientDir, run, tsc } from "./tools.mjs";


/** The values (functions and constants) a declaration file exports, by name. */
function declaredValues(source) {
  return [...source.matchAll(/^export (?:declare )?(?:function|const) (\w+)/gm)].map((m) => m[1]).sort();
}

const declarations = readdirSync(clientDir).filter((name) => name.endsWith(".d.ts")).sort();

test("every public module has declarations", () => {
  assert.deepEqual(declarations, ["changes.d.ts", "react.d.ts", "rxjs.d.ts", "tanstack.d.ts", "tidings.d.ts"]);
});

for (const file of declarations) {
  test(`${file} declares exactly the exports of its module`, async () => {
    const source = readFileSync(path.join(clientDir, file), "utf8");
    const module = await import(pathToFileURL(path.join(clientDir, file.replace(/\.d\.ts$/, ".js"))).href);
    assert.deepEqual(declaredValues(source), Object.keys(module).sort());
  });
}

// The shapes, not only the names: tsc reads the JSDoc types the code is
// written with (`@typedef`s in tidings.js) and checks that the hand-written
// declarations have exactly the same options and members. An option added
// to the code and forgotten in tidings.d.ts (or the reverse) fails here.

test("tidings.d.ts has exactly the options and members of the code's JSDoc types (tsc)", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "tidings-jsdoc-"));
  try {
    mkdirSync(path.join(dir, "code"));
    for (const name of readdirSync(clientDir).filter((n) => n.endsWith(".js"))) {
      copyFileSync(path.join(clientDir, name), path.join(dir, "code", name));
    }
    const common = ["--ignoreConfig", "--strict", "--target", "es2022", "--module", "preserve", "--moduleResolution", "bundler",
      "--lib", "es2022,dom", "--types", ""];
    run(tsc, [...common, "--allowJs", "--declaration", "--emitDeclarationOnly", "--outDir", path.join(dir, "jsdoc"),
      path.join(dir, "code", "tidings.js")]);
    const declared = path.join(clientDir, "tidings.js").replaceAll("\\", "/");
    writeFileSync(path.join(dir, "check.ts"), `
      import type * as Code from "./jsdoc/tidings.js";
      import type * as Declared from ${JSON.stringify(declared)};
      type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
      type SubscribeOptions = NonNullable<Parameters<Code.Live["subscribe"]>[2]>;
      export const connectOptions: Same<keyof Code.ConnectOptions, keyof Declared.ConnectOptions> = true;
      export const live: Same<keyof Code.Live, keyof Declared.Live> = true;
      export const subscribeOptions: Same<keyof SubscribeOptions, keyof Declared.SubscribeOptions> = true;
      type Query<F extends (...args: never[]) => unknown> = keyof NonNullable<Parameters<F>[1]>;
      export const query: Same<Query<typeof Code.buildUrl>, Query<typeof Declared.buildUrl>> = true;
    `);
    run(tsc, [...common, "--noEmit", path.join(dir, "check.ts")]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
