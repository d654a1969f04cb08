/**
 * One sandbox: its state and actions on top, then tabs — processes (live output replayed from `seq`), a
 * terminal (xterm.js on a PTY), files, metrics charts and its lifecycle events. The tab is part of the
 * address (`#/sandboxes/ID/TAB`), so a reload comes back to it.
 */
import { Sandbox, type SandboxInfo } from "sandpit";
import { actionButtons } from "../actions.js";
import { duration, h, replace, when } from "../dom.js";
import { load, report } from "../session.js";
import { renderFiles } from "./files.js";
import { renderMetrics } from "./metrics.js";
import { renderProcesses } from "./processes.js";
import { renderSandboxEvents } from "./events.js";
import { renderTerminal } from "./terminal.js";

const TABS: [string, string][] = [
  ["processes", "Processes"],
  ["terminal", "Terminal"],
  ["files", "Files"],
  ["metrics", "Metrics"],
  ["events", "Events"],
];

/** Renders sandbox `id`'s page, tab `tab` (and `sub`: a process id or a directory), until `signal` fires. */
export async function renderSandbox(root: HTMLElement, id: string, tab: string, sub: string | undefined, signal: AbortSignal): Promise<void> {
  const enc = encodeURIComponent(id);
  const summary = h("dl", { class: "summary", id: "summary" });
  const actions = h("div", { class: "sandbox-actions" });
  const panel = h("div", { class: "panel", role: "tabpanel", id: `panel-${tab}`, "aria-labelledby": `tab-${tab}` });
  const tabs = h(
    "div",
    { class: "tabs", role: "tablist", "aria-label": "Sandbox views" },
    ...TABS.map(([name, label]) =>
      h("a", { href: `#/sandboxes/${enc}/${name}`, role: "tab", id: `tab-${name}`, "aria-selected": name === tab ? "true" : "false", "aria-controls": `panel-${name}` }, label),
    ),
  );
  const back = load()?.kind === "key" ? h("a", { href: "#/sandboxes", class: "back" }, "← Sandboxes") : null;
  replace(root, h("section", { "aria-labelledby": "sandbox-title" }, back, h("div", { class: "titlebar" }, h("h1", { id: "sandbox-title" }, id), actions), summary, tabs, panel));

  let sandbox: Sandbox;
  try {
    sandbox = await Sandbox.get(id, { url: location.origin, apiKey: load()?.key ?? "" });
  } catch (e) {
    report(e, `sandbox ${id}`);
    replace(panel, h("p", { class: "empty" }, `Sandbox ${id} could not be opened.`));
    return;
  }
  const showInfo = (info: SandboxInfo): void => {
    const now = Date.now();
    const item = (k: string, v: string, cls = ""): HTMLElement[] => [h("dt", {}, k), h("dd", { class: cls }, v)];
    replace(
      summary,
      ...item("State", info.state, `state ${info.state}`),
      ...item("Template", info.template),
      ...item("Created", `${when(info.createdAt)} (${duration(now - info.createdAt.getTime())} ago)`),
      ...item("Ends", info.expiresAt ? `${when(info.expiresAt)} (in ${duration(info.expiresAt.getTime() - now)}, then ${info.onTimeout === "pause" ? "paused" : "deleted"})` : "never"),
      ...item("Limits", [info.cpu ? `${info.cpu} cpu` : null, info.memoryMb ? `${info.memoryMb} MiB` : null, info.diskMb ? `${info.diskMb} MiB disk` : null, info.pids ? `${info.pids} pids` : null].filter(Boolean).join(", ") || "none"),
      ...(info.error ? item("Error", info.error, "error") : []),
    );
    summary.dataset.state = info.state;
    const tokenOnly = load()?.kind === "sandbox";
    replace(
      actions,
      tokenOnly
        ? null
        : actionButtons(info, (deleted) => {
            if (deleted) location.hash = "#/sandboxes";
            else void refresh();
          }),
    );
  };
  async function refresh(): Promise<void> {
    try {
      showInfo(await sandbox.info());
    } catch (e) {
      if (!signal.aborted) report(e, `sandbox ${id}`);
    }
  }
  showInfo(sandbox.lastInfo);
  const timer = setInterval(() => void refresh(), 5000);
  signal.addEventListener("abort", () => clearInterval(timer));

  switch (tab) {
    case "terminal":
      renderTerminal(panel, sandbox, signal);
      break;
    case "files":
      renderFiles(panel, sandbox, sub, signal);
      break;
    case "metrics":
      renderMetrics(panel, sandbox, signal);
      break;
    case "events":
      renderSandboxEvents(panel, sandbox, signal);
      break;
    default:
      renderProcesses(panel, sandbox, sub, signal);
  }
}
