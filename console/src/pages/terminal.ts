/**
 * A terminal into a sandbox: xterm.js on a PTY process (`bash`, or `sh` where there is no bash), over the
 * process WebSocket (`/v1/sandboxes/{id}/processes/{pid}/ws`, protocol in docs/api.md).
 *
 * The shell outlives the page: its id is kept in session storage per sandbox, and coming back (a reload, a
 * cut connection, another tab of the console) re-attaches with `from_seq`, the agent replaying what the
 * screen missed. Resizing the window resizes the PTY. "New shell" ends the old one and starts another.
 */
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import type { Sandbox } from "sandpit";
import { button, h, replace } from "../dom.js";
import { load, report } from "../session.js";

const SHELL = "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi";
const MAX_PENDING = 1 << 16;

function storeKey(id: string): string {
  return `sandpit.console.term.${id}`;
}

/** Renders the terminal tab until `signal` fires (the shell keeps running). */
export function renderTerminal(panel: HTMLElement, sandbox: Sandbox, signal: AbortSignal): void {
  const box = h("div", { class: "terminal", id: "terminal", "data-state": "starting" });
  const status = h("span", { class: "status", id: "terminal-status", "aria-live": "polite" }, "Starting a shell…");
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, monospace',
    fontSize: 14,
    scrollback: 5000,
    screenReaderMode: false,
    theme: { background: "#11161d" },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);

  let pid: string | undefined;
  let lastSeq = 0;
  let ws: WebSocket | undefined;
  let exited = false;
  let retry = 0;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let pending: string[] = [];
  let pendingBytes = 0;

  const setState = (state: string, text: string): void => {
    box.dataset.state = state;
    status.textContent = text;
  };
  const send = (msg: object): void => {
    const text = JSON.stringify(msg);
    if (ws?.readyState === WebSocket.OPEN) ws.send(text);
    else if (pendingBytes + text.length <= MAX_PENDING) {
      pending.push(text);
      pendingBytes += text.length;
    }
  };
  const sendSize = (): void => {
    box.dataset.cols = String(term.cols);
    box.dataset.rows = String(term.rows);
    if (pid && !exited) send({ type: "resize", cols: term.cols, rows: term.rows });
  };

  function socketUrl(): string {
    const u = new URL(`/v1/sandboxes/${encodeURIComponent(sandbox.id)}/processes/${encodeURIComponent(pid ?? "")}/ws`, location.href);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    u.searchParams.set("from_seq", String(lastSeq + 1));
    u.searchParams.set("access_token", load()?.key ?? "");
    return u.toString();
  }

  function connect(): void {
    if (signal.aborted || exited || !pid) return;
    clearTimeout(retryTimer);
    const sock = new WebSocket(socketUrl());
    sock.binaryType = "arraybuffer";
    ws = sock;
    sock.onopen = () => {
      retry = 0;
      setState("connected", `Connected to ${pid}`);
      for (const m of pending) sock.send(m);
      pending = [];
      pendingBytes = 0;
      sendSize();
    };
    sock.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data !== "string") {
        const buf = new Uint8Array(ev.data as ArrayBuffer);
        if (buf.length < 9) return;
        const seq = Number(new DataView(buf.buffer, buf.byteOffset + 1, 8).getBigUint64(0));
        if (seq <= lastSeq) return;
        lastSeq = seq;
        term.write(buf.subarray(9));
        return;
      }
      let msg: { type?: string; process?: { status?: string; exit_code?: number | null }; bytes?: number; message?: string };
      try {
        msg = JSON.parse(ev.data) as typeof msg;
      } catch {
        return;
      }
      if (msg.type === "lost") term.write(`\r\n\x1b[33m[${msg.bytes ?? "some"} bytes of earlier output are no longer kept]\x1b[0m\r\n`);
      else if (msg.type === "error") status.textContent = `The shell refused a message: ${msg.message ?? ""}`;
      else if (msg.type === "exited") {
        exited = true;
        const code = msg.process?.exit_code;
        term.write(`\r\n\x1b[2m[the shell ended${code !== null && code !== undefined ? ` with code ${code}` : ""}; press Enter for a new one]\x1b[0m\r\n`);
        setState("exited", "The shell ended");
      }
    };
    sock.onclose = () => {
      if (ws === sock) ws = undefined;
      if (signal.aborted || exited) return;
      const wait = Math.min(5000, 250 * 2 ** retry++);
      setState("reconnecting", `Connection lost; reconnecting in ${(wait / 1000).toFixed(1)} s…`);
      retryTimer = setTimeout(connect, wait);
    };
  }

  async function newShell(): Promise<void> {
    if (pid && !exited) await sandbox.commands.kill(pid).catch(() => undefined);
    ws?.close();
    exited = false;
    lastSeq = 0;
    term.reset();
    setState("starting", "Starting a shell…");
    try {
      const p = await sandbox.processes.start(SHELL, {
        tty: { cols: term.cols, rows: term.rows },
        env: { TERM: "xterm-256color", COLORTERM: "truecolor" },
      });
      pid = p.id;
      box.dataset.pid = pid;
      sessionStorage.setItem(storeKey(sandbox.id), pid);
      connect();
    } catch (e) {
      setState("failed", "The shell could not be started");
      report(e, "terminal");
    }
  }

  async function attachOrStart(): Promise<void> {
    const saved = sessionStorage.getItem(storeKey(sandbox.id));
    if (saved) {
      try {
        const p = await sandbox.getProcess(saved);
        if (p.info.status === "running" && p.info.isPty) {
          pid = saved;
          box.dataset.pid = pid;
          setState("connecting", `Re-attaching to ${pid}…`);
          connect();
          return;
        }
      } catch {
        // Gone (the sandbox restarted, or the id is stale): start a new one.
      }
    }
    await newShell();
  }

  term.onData((data) => {
    if (exited) {
      if (data.includes("\r")) void newShell();
      return;
    }
    send({ type: "stdin", data });
  });
  term.onResize(() => sendSize());

  replace(
    panel,
    h(
      "div",
      { class: "toolbar" },
      status,
      h("span", { class: "spacer" }),
      button("Reconnect", () => {
        exited = false;
        ws?.close();
        connect();
      }, { id: "terminal-reconnect", title: "Drop the connection and attach again (the shell keeps running)" }),
      button("New shell", () => void newShell(), { title: "End this shell and start another" }),
    ),
    box,
  );
  term.open(box);
  const doFit = (): void => {
    try {
      fit.fit();
    } catch {
      // Not laid out yet.
    }
  };
  doFit();
  const ro = new ResizeObserver(() => doFit());
  ro.observe(box);
  term.focus();
  void attachOrStart();

  signal.addEventListener("abort", () => {
    clearTimeout(retryTimer);
    ro.disconnect();
    ws?.close();
    term.dispose();
  });
}
