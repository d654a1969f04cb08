/**
 * Per-sandbox resource samples (`GET /v1/sandboxes/{id}/metrics` and its `/stream` SSE feed): cpu, memory,
 * disk and process count, taken every `metrics_interval_ms` while the sandbox runs and kept for
 * `metrics_window_s` (daemon settings). Reached through `sandbox.metrics()` and `sandbox.metricsStream()`.
 *
 * Browser-safe.
 */
import type { SandboxScope } from "./client.js";
import { followFeed } from "./sse.js";

/** One sample of a sandbox's resource use. */
export interface MetricSample {
  timestamp: Date;
  /** Percent of ONE cpu over the last interval: 100 is one cpu fully busy; up to 100 × `cpuCount`. */
  cpuUsedPct: number;
  /** The sandbox's cpu limit (may be fractional), or the host's cpus when it has none. */
  cpuCount: number;
  /** Bytes of memory in use. */
  memUsed: number;
  /** The memory limit in bytes; 0 when unknown or unlimited. */
  memLimit: number;
  /** Bytes of disk in use. */
  diskUsed: number;
  /** The disk limit in bytes; 0 when unknown or unlimited. */
  diskLimit: number;
  /** Processes (and threads) in the sandbox. */
  pids: number;
}

/** Which samples `sandbox.metrics()` reads; both bounds inclusive, both optional. */
export interface MetricsQuery {
  /** Samples at or after this time (a `Date`, RFC 3339 text, or epoch milliseconds). */
  start?: Date | string | number;
  /** Samples at or before this time. */
  end?: Date | string | number;
}

/** Options of `sandbox.metricsStream()`. */
export interface MetricsStreamOpts {
  /** Stops the stream (the iteration then throws the abort reason). */
  signal?: AbortSignal;
}

/** @internal A sample as the daemon sends it. */
export interface WireMetricSample {
  timestamp: string;
  cpu_used_pct: number;
  cpu_count: number;
  mem_used: number;
  mem_limit: number;
  disk_used: number;
  disk_limit: number;
  pids: number;
}

/** @internal */
export function metricSampleFromWire(w: WireMetricSample): MetricSample {
  return {
    timestamp: new Date(w.timestamp),
    cpuUsedPct: w.cpu_used_pct,
    cpuCount: w.cpu_count,
    memUsed: w.mem_used,
    memLimit: w.mem_limit,
    diskUsed: w.disk_used,
    diskLimit: w.disk_limit,
    pids: w.pids,
  };
}

function time(t: Date | string | number | undefined): string | number | undefined {
  return t instanceof Date ? t.getTime() : t;
}

/** @internal `GET {base}/metrics`: the kept samples, oldest first. */
export async function listMetrics(scope: SandboxScope, query: MetricsQuery): Promise<MetricSample[]> {
  const r = await scope.client.json<WireMetricSample[]>("GET", `${scope.base}/metrics`, {
    query: { start: time(query.start), end: time(query.end) },
  });
  return r.map(metricSampleFromWire);
}

/**
 * @internal Follows `GET {base}/metrics/stream`: the latest sample already taken, then each new one, until the
 * sandbox is gone. A cut connection is reopened; a sample already delivered (by its timestamp) is not
 * delivered again.
 */
export async function* followMetrics(scope: SandboxScope, opts: MetricsStreamOpts): AsyncGenerator<MetricSample> {
  let last = -Infinity;
  const feed = followFeed(scope.client, `${scope.base}/metrics/stream`, {}, {
    signal: opts.signal,
    what: "the metrics stream",
    endsWithSandbox: true,
  });
  for await (const msg of feed) {
    if (msg.event !== "metrics" || !msg.data) continue;
    const sample = metricSampleFromWire(JSON.parse(msg.data) as WireMetricSample);
    const t = sample.timestamp.getTime();
    if (t <= last) continue;
    last = t;
    yield sample;
  }
}
