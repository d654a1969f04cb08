/**
 * Small requests on Node's own HTTP client: the path `HttpClient.json` and `HttpClient.send` take on Node for
 * calls whose body is JSON (or empty) and whose answer is read whole (`commands.run`, `exec`, create, list,
 * kill ...). Streams, uploads, downloads and WebSockets stay on `fetch`, and so does everything in a browser
 * or when the caller passed a `fetch` of its own.
 *
 * Owns one pair of keep-alive agents per process (connections shared by every client of the process; idle
 * ones do not keep the process alive). Why: Node's `fetch` spent about 0.5 ms more per call than `node:http`
 * against the same daemon, a quarter of a warm command's round trip.
 */
import http from "node:http";
import https from "node:https";

import type { QuickRequest } from "../config.js";

type QuickAnswer = Awaited<ReturnType<QuickRequest>>;

let agents: { http: http.Agent; https: https.Agent } | undefined;

/** The process's quick transport. */
export function quickTransport(): QuickRequest {
  agents ??= { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
  const shared = agents;
  return (method, url, headers, body, signal) =>
    new Promise<QuickAnswer>((resolve, reject) => {
      const u = new URL(url);
      const secure = u.protocol === "https:";
      const hdrs: Record<string, string> = { ...headers };
      if (body !== undefined) hdrs["Content-Length"] = String(Buffer.byteLength(body));
      const opts: http.RequestOptions = { method, headers: hdrs, agent: secure ? shared.https : shared.http };
      if (signal !== undefined) opts.signal = signal;
      const onAnswer = (res: http.IncomingMessage): void => {
        res.setEncoding("utf8");
        let text = "";
        res.on("data", (chunk: string) => {
          text += chunk;
        });
        res.on("error", reject);
        res.on("end", () => {
          const flat: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) {
            if (v !== undefined) flat[k] = Array.isArray(v) ? v.join(", ") : v;
          }
          resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? "", headers: flat, text });
        });
      };
      const req = secure ? https.request(u, opts, onAnswer) : http.request(u, opts, onAnswer);
      req.on("error", reject);
      req.end(body);
    });
}
