/**
 * Node only: `attach` — bridges the local terminal (raw mode) to a process in a PTY inside the sandbox over
 * the process WebSocket. Window size changes (SIGWINCH, the `resize` event of stdout) become `resize` control
 * frames; the detach keys (default `ctrl-]`) end the bridge and leave the process running.
 */
import type { AttachOptions } from "../builders.js";
import { parseDetachKeys } from "../builders.js";
import type { SandboxScope } from "../client.js";
import { startProcess } from "../start.js";
import type { WireStartRequest } from "../types.js";
import { ProcessSocket } from "../ws.js";

/** The value `attach*` resolves with when the user detached (the process keeps running). */
export const DETACHED = -1;

interface TermInput {
  isTTY?: boolean;
  isRaw?: boolean;
  setRawMode?(mode: boolean): unknown;
  on(ev: "data", fn: (chunk: Buffer | string) => void): unknown;
  off(ev: "data", fn: (chunk: Buffer | string) => void): unknown;
  on(ev: "end", fn: () => void): unknown;
  off(ev: "end", fn: () => void): unknown;
  resume(): unknown;
  pause(): unknown;
}

interface TermOutput {
  columns?: number;
  rows?: number;
  write(data: Uint8Array): unknown;
  on?(ev: "resize", fn: () => void): unknown;
  off?(ev: "resize", fn: () => void): unknown;
}

/**
 * Scans keystrokes for the detach sequence across chunks; bytes that turn out not to be part of it are
 * passed on.
 */
export class DetachMatcher {
  private held: number[] = [];

  constructor(private readonly keys: readonly number[]) {}

  /** Feeds a chunk: returns the bytes to forward and whether the sequence completed. */
  feed(chunk: Uint8Array): { forward: Uint8Array; detached: boolean } {
    const fwd: number[] = [];
    for (const b of chunk) {
      if (b === this.keys[this.held.length]) {
        this.held.push(b);
        if (this.held.length === this.keys.length) return { forward: Uint8Array.from(fwd), detached: true };
        continue;
      }
      fwd.push(...this.held);
      this.held = [];
      if (b === this.keys[0]) {
        this.held.push(b);
        if (this.keys.length === 1) return { forward: Uint8Array.from(fwd), detached: true };
      } else fwd.push(b);
    }
    return { forward: Uint8Array.from(fwd), detached: false };
  }
}

/** Starts `req` in a PTY and bridges the terminal to it. Resolves with the exit code, or {@link DETACHED}. */
export async function attachProcess(scope: SandboxScope, req: WireStartRequest, o: AttachOptions): Promise<number> {
  const input = (o.io?.input ?? process.stdin) as TermInput;
  const output = (o.io?.output ?? process.stdout) as TermOutput;
  const size = (): { cols: number; rows: number } => ({ cols: output.columns || 80, rows: output.rows || 24 });
  const full: WireStartRequest = { ...req, tty: size(), stdin: "pipe" };
  if (o.cwd !== null) full.cwd = o.cwd;
  if (o.user !== null) full.user = o.user;
  if (o.env.length) full.env = Object.fromEntries(o.env);
  if (o.rlimits.length) full.rlimits = o.rlimits.map((r) => ({ ...r }));
  const matcher = new DetachMatcher(parseDetachKeys(o.detachKeys ?? "ctrl-]"));

  const info = await startProcess(scope, full);
  const socket = await ProcessSocket.open(scope, info.id, {
    queue: false,
    onEvent: (ev) => {
      if (ev.type === "stdout" || ev.type === "stderr") output.write(ev.data);
    },
  });

  let onDetach!: () => void;
  const detached = new Promise<number>((resolve) => (onDetach = () => resolve(DETACHED)));
  const onData = (chunk: Buffer | string): void => {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    const r = matcher.feed(bytes);
    if (r.forward.length) socket.sendStdin(r.forward);
    if (r.detached) onDetach();
  };
  const onEnd = (): void => socket.sendEof();
  const onResize = (): void => {
    const s = size();
    socket.sendResize(s.cols, s.rows);
  };
  const wasRaw = input.isRaw === true;
  const raw = input.isTTY === true && typeof input.setRawMode === "function";
  if (raw) input.setRawMode?.(true);
  input.on("data", onData);
  input.on("end", onEnd);
  input.resume();
  output.on?.("resize", onResize);
  try {
    return await Promise.race([socket.exited.then((i) => i.exit_code ?? -1), detached]);
  } finally {
    input.off("data", onData);
    input.off("end", onEnd);
    output.off?.("resize", onResize);
    if (raw) input.setRawMode?.(wasRaw);
    input.pause();
    socket.close();
  }
}
