/**
 * Every ```ts block of README.md type-checks and runs to completion against a real daemon. A ```typescript block
 * needs what this daemon lacks (templates need the isolate backend, root): it is type-checked only.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import ts from "typescript";
import { type Daemon, startDaemon } from "./helpers.js";

const PKG = process.cwd();
const OUT = join(PKG, "build-test", "readme");
const README = readFileSync(join(PKG, "README.md"), "utf8");
const blocks = [...README.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
const checkedOnly = [...README.matchAll(/```typescript\n([\s\S]*?)```/g)].map((m) => m[1]!);

let daemon: Daemon;
before(async () => {
  daemon = await startDaemon();
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
});
after(async () => {
  await daemon?.stop();
});

test("README has examples", () => {
  assert.ok(blocks.length >= 4, `${blocks.length} ts blocks`);
  assert.ok(checkedOnly.length >= 1, `${checkedOnly.length} typescript blocks`);
});

test("README examples type-check", () => {
  const sources: [string, string][] = [
    ...blocks.map((code, i): [string, string] => [`example-${i}.ts`, code]),
    ...checkedOnly.map((code, i): [string, string] => [`checked-${i}.ts`, code]),
  ];
  const files = sources.map(([name, code]) => {
    const f = join(OUT, name);
    writeFileSync(f, code);
    return f;
  });
  const program = ts.createProgram(files, {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ["lib.es2022.d.ts", "lib.dom.d.ts", "lib.esnext.disposable.d.ts"],
    types: ["node"],
    strict: true,
    noEmit: true,
    skipLibCheck: true,
  });
  const diags = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n") + ` (${d.file?.fileName})`);
  assert.deepEqual(diags, []);
});

for (const [i, code] of blocks.entries()) {
  test(`README example ${i + 1} runs: ${code.split("\n").find((l) => l.startsWith("const") || l.startsWith("await"))?.slice(0, 60)}`, () => {
    const js = ts.transpileModule(code, {
      compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
    }).outputText;
    const file = join(OUT, `example-${i}.mjs`);
    writeFileSync(file, js);
    const r = spawnSync(process.execPath, [file], {
      env: { ...process.env, SANDPIT_URL: daemon.url, SANDPIT_API_KEY: daemon.apiKey },
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(r.status, 0, `exit ${r.status}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  });
}
