/**
 * The sandboxes page: every sandbox the key sees, with state, template, age, deadline and live cpu and memory
 * (each running sandbox's newest metrics sample); filter, sort, create, and the per-sandbox actions.
 * Refreshes every 3 s while shown.
 */
import { type MetricSample, Sandbox, type SandboxInfo, type SandboxOpts, type TemplateInfo, Templates } from "sandpit";
import { actionButtons } from "../actions.js";
import { button, bytes, duration, field, h, pct, replace } from "../dom.js";
import { conn, notify, report } from "../session.js";

type SortKey = "id" | "state" | "template" | "age" | "expires" | "cpu" | "mem";
const COLUMNS: [SortKey, string][] = [
  ["id", "Sandbox"],
  ["state", "State"],
  ["template", "Template"],
  ["age", "Age"],
  ["expires", "Ends in"],
  ["cpu", "CPU"],
  ["mem", "Memory"],
];

/** Renders the page into `root` until `signal` fires. */
export function renderSandboxes(root: HTMLElement, signal: AbortSignal): void {
  let rows: SandboxInfo[] = [];
  const usage = new Map<string, MetricSample>();
  let sort: { key: SortKey; asc: boolean } = { key: "age", asc: true };
  const filter = h("input", { type: "search", id: "filter", placeholder: "id, template, state, label…", "aria-label": "Filter sandboxes" });
  const stateSel = h(
    "select",
    { id: "state-filter", "aria-label": "Only sandboxes in this state" },
    h("option", { value: "" }, "any state"),
    ...["running", "paused", "starting", "unhealthy", "failed", "stopped"].map((s) => h("option", { value: s }, s)),
  );
  const count = h("span", { class: "count", "aria-live": "polite" });
  const table = h("table", { class: "grid", id: "sandboxes" });
  const body = h("tbody");

  const head = (): HTMLElement =>
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ...COLUMNS.map(([key, label]) =>
          h(
            "th",
            { scope: "col", "aria-sort": sort.key === key ? (sort.asc ? "ascending" : "descending") : null },
            button(`${label}${sort.key === key ? (sort.asc ? " ▲" : " ▼") : ""}`, () => {
              sort = { key, asc: sort.key === key ? !sort.asc : true };
              draw();
            }, { class: "sort", title: `Sort by ${label.toLowerCase()}` }),
          ),
        ),
        h("th", { scope: "col" }, "Actions"),
      ),
    );

  const value = (s: SandboxInfo, key: SortKey): number | string => {
    switch (key) {
      case "id":
        return s.id;
      case "state":
        return s.state;
      case "template":
        return s.template;
      case "age":
        return -s.createdAt.getTime();
      case "expires":
        return s.expiresAt ? s.expiresAt.getTime() : Number.MAX_SAFE_INTEGER;
      case "cpu":
        return usage.get(s.id)?.cpuUsedPct ?? -1;
      case "mem":
        return usage.get(s.id)?.memUsed ?? -1;
    }
  };

  function draw(): void {
    const q = filter.value.trim().toLowerCase();
    const st = stateSel.value;
    const shown = rows
      .filter((s) => !st || s.state === st)
      .filter((s) => !q || [s.id, s.template, s.state, ...Object.entries(s.metadata).map(([k, v]) => `${k}=${v}`)].some((t) => t.toLowerCase().includes(q)))
      .sort((a, b) => {
        const x = value(a, sort.key);
        const y = value(b, sort.key);
        const c = x < y ? -1 : x > y ? 1 : 0;
        return sort.asc ? c : -c;
      });
    count.textContent = `${shown.length} of ${rows.length} sandbox${rows.length === 1 ? "" : "es"}`;
    const now = Date.now();
    replace(
      body,
      ...shown.map((s) => {
        const u = usage.get(s.id);
        return h(
          "tr",
          { "data-id": s.id, "data-state": s.state },
          h("th", { scope: "row" }, h("a", { href: `#/sandboxes/${encodeURIComponent(s.id)}` }, s.id)),
          h("td", {}, h("span", { class: `state ${s.state}` }, s.state)),
          h("td", {}, s.template),
          h("td", { title: s.createdAt.toLocaleString() }, duration(now - s.createdAt.getTime())),
          h("td", { title: s.expiresAt?.toLocaleString() ?? "no deadline" }, s.expiresAt ? duration(s.expiresAt.getTime() - now) : "never"),
          h("td", { class: "num cpu" }, u ? pct(u.cpuUsedPct) : "–"),
          h("td", { class: "num mem" }, u ? `${bytes(u.memUsed)}${u.memLimit ? ` / ${bytes(u.memLimit)}` : ""}` : "–"),
          h("td", {}, actionButtons(s, () => void refresh())),
        );
      }),
    );
    if (!shown.length) body.append(h("tr", {}, h("td", { colspan: COLUMNS.length + 1, class: "empty" }, rows.length ? "No sandbox matches the filter." : "No sandboxes yet: create one above.")));
    table.replaceChildren(head(), body);
  }

  async function refresh(): Promise<void> {
    try {
      rows = await Sandbox.list(conn());
    } catch (e) {
      report(e, "listing sandboxes");
      return;
    }
    draw();
    const live = rows.filter((s) => s.state === "running" || s.state === "unhealthy").slice(0, 50);
    await Promise.all(
      live.map(async (s) => {
        try {
          const sb = await Sandbox.get(s.id, conn());
          const samples = await sb.metrics({ start: Date.now() - 30_000 });
          const last = samples[samples.length - 1];
          if (last) usage.set(s.id, last);
        } catch {
          // Gone meanwhile, or no sample yet: the row shows "–".
        }
      }),
    );
    if (!signal.aborted) draw();
  }

  filter.addEventListener("input", draw);
  stateSel.addEventListener("change", draw);
  replace(
    root,
    h(
      "section",
      { "aria-labelledby": "sandboxes-title" },
      h("div", { class: "titlebar" }, h("h1", { id: "sandboxes-title" }, "Sandboxes"), count),
      createForm((id) => {
        location.hash = `#/sandboxes/${encodeURIComponent(id)}`;
      }),
      h("div", { class: "toolbar" }, filter, stateSel, button("Refresh", () => void refresh())),
      h("div", { class: "scroll" }, table),
    ),
  );
  draw();
  void refresh();
  const timer = setInterval(() => void refresh(), 3000);
  signal.addEventListener("abort", () => clearInterval(timer));
}

/** The "new sandbox" form; `created` gets the new sandbox's id. */
function createForm(created: (id: string) => void): HTMLElement {
  const template = h("select", { id: "new-template", name: "template" }, h("option", { value: "" }, "default (base)"));
  Templates.list(conn()).then(
    (ts: TemplateInfo[]) => {
      for (const t of ts) if (t.name !== "base") template.append(h("option", { value: t.name }, t.name));
    },
    () => undefined,
  );
  const num = (id: string, placeholder: string, step = "1"): HTMLInputElement =>
    h("input", { type: "number", id, name: id, min: "0", step, placeholder, inputmode: "decimal" });
  const cpu = num("new-cpu", "no limit", "0.1");
  const mem = num("new-mem", "no limit");
  const disk = num("new-disk", "no limit");
  const timeout = num("new-timeout", "300");
  const onTimeout = h("select", { id: "new-on-timeout" }, h("option", { value: "kill" }, "delete it"), h("option", { value: "pause" }, "pause it"));
  const network = h(
    "select",
    { id: "new-network" },
    h("option", { value: "" }, "the daemon's default"),
    h("option", { value: "deny" }, "no outbound traffic"),
    h("option", { value: "allow" }, "allow outbound traffic"),
  );
  const submit = h("button", { type: "submit", class: "primary" }, "Create");
  const form = h(
    "form",
    { class: "create", id: "create-form" },
    h("div", { class: "fields" }, field("Template", template), field("CPUs", cpu), field("Memory (MiB)", mem), field("Disk (MiB)", disk), field("Timeout (s)", timeout), field("At the deadline", onTimeout), field("Network", network)),
    submit,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const opts: SandboxOpts = { ...conn() };
    if (template.value) opts.template = template.value;
    if (cpu.value) opts.cpu = Number(cpu.value);
    if (mem.value) opts.memoryMb = Number(mem.value);
    if (disk.value) opts.diskMb = Number(disk.value);
    if (timeout.value) opts.timeout = Number(timeout.value);
    opts.onTimeout = onTimeout.value as "kill" | "pause";
    if (network.value) opts.network = { egress: network.value as "allow" | "deny" };
    submit.disabled = true;
    submit.textContent = "Creating…";
    Sandbox.create(opts).then(
      (sb) => {
        notify(`Created ${sb.id}`);
        created(sb.id);
      },
      (e: unknown) => {
        report(e, "create");
        submit.disabled = false;
        submit.textContent = "Create";
      },
    );
  });
  return h("details", { class: "card", id: "create" }, h("summary", {}, "New sandbox"), form);
}
