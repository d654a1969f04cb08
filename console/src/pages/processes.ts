/**
 * A sandbox's processes: the newest 50 with status (polled every 2 s), a box to start a command in the
 * background, and the selected process's output, live. The output view always replays from `seq` 1 — the
 * agent keeps each process's output — so a reload or a cut connection loses nothing it still holds, and
 * output it no longer holds is shown as a `lost` line, never skipped silently.
 */
import type { ProcessInfo, Sandbox } from "sandpit";
import { button, duration, field, h, replace, when } from "../dom.js";
import { report } from "../session.js";

const MAX_CHARS = 2_000_000;

/** Renders the processes tab; `selected` is the process shown (from the address). */
export function renderProcesses(panel: HTMLElement, sandbox: Sandbox, selected: string | undefined, signal: AbortSignal): void {
  const enc = encodeURIComponent(sandbox.id);
  const list = h("tbody");
  const output = h("pre", { class: "output", id: "process-output", tabindex: "0", "aria-label": "Process output", "aria-live": "off" });
  const outputTitle = h("h2", { id: "output-title" }, selected ? `Output of ${selected}` : "Output");
  const status = h("p", { class: "status", id: "process-status", "aria-live": "polite" });
  const cmd = h("input", { type: "text", id: "run-cmd", name: "cmd", placeholder: "python3 train.py", autocomplete: "off", required: true });
  const run = h("form", { class: "inline", id: "run-form" }, field("Command", cmd), h("button", { type: "submit", class: "primary" }, "Run in background"));
  run.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const c = cmd.value.trim();
    if (!c) return;
    sandbox.processes.start(c).then(
      (p) => {
        cmd.value = "";
        location.hash = `#/sandboxes/${enc}/processes/${encodeURIComponent(p.id)}`;
      },
      (e: unknown) => report(e, "start"),
    );
  });

  const row = (p: ProcessInfo): HTMLElement =>
    h(
      "tr",
      { "data-id": p.id, "data-status": p.status, class: p.id === selected ? "selected" : null },
      h("th", { scope: "row" }, h("a", { href: `#/sandboxes/${enc}/processes/${encodeURIComponent(p.id)}`, "aria-current": p.id === selected ? "true" : null }, p.id)),
      h("td", { class: "cmd", title: p.cmd }, p.cmd),
      h("td", {}, h("span", { class: `status ${p.status}` }, p.status)),
      h("td", { class: "num" }, p.exitCode ?? ""),
      h("td", { title: when(p.startedAt) }, p.startedAt ? `${duration(Date.now() - p.startedAt.getTime())} ago` : "–"),
      h("td", {}, p.status === "running" ? button("Kill", () => void sandbox.commands.kill(p.id).catch((e: unknown) => report(e, `kill ${p.id}`)), { class: "danger", title: `Kill ${p.id} and all its descendants` }) : null),
    );

  async function refresh(): Promise<void> {
    try {
      const { data } = await sandbox.processes.list({ limit: 50 });
      replace(list, ...data.map(row));
      if (!data.length) list.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No processes yet.")));
    } catch (e) {
      if (!signal.aborted) report(e, "processes");
    }
  }

  async function follow(id: string): Promise<void> {
    status.textContent = "Connecting…";
    let chars = 0;
    const add = (text: string, cls: string): void => {
      output.append(h("span", { class: cls }, text));
      chars += text.length;
      while (chars > MAX_CHARS && output.firstChild) {
        chars -= output.firstChild.textContent?.length ?? 0;
        output.firstChild.remove();
      }
      if (output.scrollHeight - output.scrollTop - output.clientHeight < 80) output.scrollTop = output.scrollHeight;
    };
    try {
      const handle = await sandbox.getProcess(id);
      status.textContent = handle.info.status === "running" ? "Live" : `Ended: ${handle.info.status}`;
      for await (const ev of handle.stream({ fromSeq: 1, signal })) {
        if (ev.type === "stdout" || ev.type === "stderr") add(ev.data, ev.type);
        else if (ev.type === "lost") add(`\n[${ev.lostBytes} bytes of output (chunks ${ev.fromSeq}–${ev.toSeq}) are no longer kept]\n`, "lost");
        else if (ev.type === "exit") {
          const r = ev.result;
          status.textContent = `Ended: ${r.status}${r.exitCode !== null ? `, exit code ${r.exitCode}` : ""}${r.error ? ` — ${r.error}` : ""}`;
          output.dataset.done = "true";
          void refresh();
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      status.textContent = "";
      report(e, `output of ${id}`);
    }
  }

  replace(
    panel,
    run,
    h("div", { class: "split" }, h("div", { class: "scroll" }, h("table", { class: "grid", id: "processes" }, h("thead", {}, h("tr", {}, ...["Process", "Command", "Status", "Exit", "Started", ""].map((c) => h("th", { scope: "col" }, c)))), list)), h("div", { class: "output-box" }, outputTitle, status, output)),
  );
  void refresh();
  const timer = setInterval(() => void refresh(), 2000);
  signal.addEventListener("abort", () => clearInterval(timer));
  if (selected) void follow(selected);
  else status.textContent = "Pick a process to see its output.";
}
