// Times `sandbox.commands.run("true")` through the TypeScript SDK (built dist/) against a running daemon.
// Usage: node sdk_roundtrip.mjs URL KEY N  -> prints a JSON list of milliseconds (after 5 warm-up runs).
import { Sandbox } from "../sdk/typescript/dist/index.js";

const [url, apiKey, n] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const sandbox = await Sandbox.create({ url, apiKey });
const samples = [];
try {
  for (let i = 0; i < n + 5; i++) {
    const t = performance.now();
    const r = await sandbox.commands.run("true");
    const took = performance.now() - t;
    if (r.exitCode !== 0) throw new Error(`true exited ${r.exitCode}`);
    if (i >= 5) samples.push(took);
  }
} finally {
  await sandbox.kill();
}
console.log(JSON.stringify(samples));
