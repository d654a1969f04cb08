// Times 1 GiB (or SIZE bytes) of text output read through the TypeScript SDK's async iterator
// (`sandbox.processes.start` → `for await (const ev of handle.stream())`) against a running daemon.
// Usage: node sdk_stream.mjs URL KEY SIZE RUNS  -> prints a JSON list of MiB/s, one per run.
// The command prints a marker, then waits for a line on stdin before writing (the stream is attached
// before the first byte of the payload).
import { Sandbox } from "../sdk/typescript/dist/index.js";

const LINE = "sandpit stream benchmark: the quick brown fox jumps over the lazy dog 0123456789";
const [url, apiKey, size, runs] = [process.argv[2], process.argv[3], Number(process.argv[4]), Number(process.argv[5])];
const sandbox = await Sandbox.create({ url, apiKey });
const rates = [];
try {
  for (let r = 0; r < runs; r++) {
    const t = performance.now();
    const h = await sandbox.processes.start(`echo ready; read _gate; yes '${LINE}' | head -c ${size}`);
    let got = 0;
    let gateOpen = false;
    for await (const ev of h.stream()) {
      if (ev.type === "stdout") {
        if (!gateOpen) {
          await h.writeStdin({ data: "go\n", eof: true });
          gateOpen = true;
          got -= "ready\n".length;
        }
        got += ev.bytes.length;
      } else if (ev.type === "exit") {
        break;
      }
    }
    const secs = (performance.now() - t) / 1000;
    if (got !== size) throw new Error(`typescript sdk stream delivered ${got} of ${size} bytes`);
    rates.push(size / secs / 1048576);
  }
} finally {
  await sandbox.kill();
}
console.log(JSON.stringify(rates));
