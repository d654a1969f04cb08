/**
 * A sandbox's cpu, memory and disk over time: the samples the daemon kept (its metrics window), then the
 * live stream; charts keep the newest 720 samples.
 */
import type { MetricSample, Sandbox } from "sandpit";
import { Chart, type Point } from "../chart.js";
import { bytes, h, replace } from "../dom.js";
import { report } from "../session.js";

const KEEP = 720;

/** Renders the metrics tab until `signal` fires. */
export function renderMetrics(panel: HTMLElement, sandbox: Sandbox, signal: AbortSignal): void {
  const cpu = new Chart("CPU", (v) => `${v.toFixed(v < 10 ? 1 : 0)} %`, "chart-cpu");
  const mem = new Chart("Memory", bytes, "chart-mem");
  const disk = new Chart("Disk", bytes, "chart-disk");
  const pids = h("p", { class: "status", id: "metrics-status", "aria-live": "polite" }, "Loading samples…");
  replace(panel, pids, h("div", { class: "charts" }, cpu.el, mem.el, disk.el));
  let samples: MetricSample[] = [];
  const draw = (): void => {
    const pts = (f: (s: MetricSample) => number): Point[] => samples.map((s) => ({ t: s.timestamp.getTime(), v: f(s) }));
    const last = samples[samples.length - 1];
    cpu.set(pts((s) => s.cpuUsedPct), last ? last.cpuCount * 100 : 0);
    mem.set(pts((s) => s.memUsed), last?.memLimit ?? 0);
    disk.set(pts((s) => s.diskUsed), last?.diskLimit ?? 0);
    pids.textContent = last ? `${samples.length} samples; ${last.pids} processes and threads now; cpu is percent of one cpu (limit ${last.cpuCount} cpu)` : "No samples yet (the daemon samples every few seconds).";
  };
  void (async () => {
    try {
      samples = (await sandbox.metrics()).slice(-KEEP);
      draw();
      const after = samples[samples.length - 1]?.timestamp.getTime() ?? 0;
      for await (const s of sandbox.metricsStream({ signal })) {
        if (s.timestamp.getTime() <= after && samples.length) continue;
        samples.push(s);
        if (samples.length > KEEP) samples.shift();
        draw();
      }
    } catch (e) {
      if (!signal.aborted) report(e, "metrics");
    }
  })();
}
