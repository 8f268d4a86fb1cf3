// The TypeScript declarations (src/client/*.d.ts) declare exactly what their
// modules export: `tsc` (CI) checks the declarations against a usage file,
// and this checks them against the code. `node --test tests/js/`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const clientDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../src/client");

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
