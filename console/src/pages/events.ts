/**
 * Lifecycle events: the daemon-wide page (filter by type and sandbox) and one sandbox's tab. Both read the
 * stored events first (newest 500 shown), then follow the live stream from the last id read, so nothing
 * between the two is missed; newest on top.
 */
import { Events, type LifecycleEvent, type Sandbox } from "sandpit";
import { button, field, h, replace, when } from "../dom.js";
import { conn, report } from "../session.js";

/** The event types, for the filter. */
export const EVENT_TYPES = [
  "sandbox.created",
  "sandbox.paused",
  "sandbox.resumed",
  "sandbox.timeout_extended",
  "sandbox.timed_out",
  "sandbox.killed",
  "sandbox.failed",
  "sandbox.unhealthy",
  "sandbox.snapshot_created",
  "sandbox.forked",
];
const SHOWN = 500;

function eventTable(withSandbox: boolean): { el: HTMLElement; set(evs: LifecycleEvent[]): void; add(ev: LifecycleEvent): void } {
  const body = h("tbody");
  const row = (e: LifecycleEvent): HTMLElement =>
    h(
      "tr",
      { "data-type": e.type, "data-id": e.id },
      h("td", { class: "num" }, e.id),
      h("td", {}, when(e.at)),
      h("th", { scope: "row" }, h("span", { class: `event ${e.type.replace("sandbox.", "")}` }, e.type)),
      withSandbox ? h("td", {}, h("a", { href: `#/sandboxes/${encodeURIComponent(e.sandboxId)}` }, e.sandboxId)) : null,
      h("td", { class: "mono data" }, Object.keys(e.data ?? {}).length ? JSON.stringify(e.data) : ""),
    );
  const empty = (): void => {
    if (!body.children.length) body.append(h("tr", { class: "none" }, h("td", { colspan: withSandbox ? 5 : 4, class: "empty" }, "No events.")));
  };
  const el = h("table", { class: "grid events" }, h("thead", {}, h("tr", {}, ...["#", "At", "Event", ...(withSandbox ? ["Sandbox"] : []), "Details"].map((c) => h("th", { scope: "col" }, c)))), body);
  return {
    el,
    set(evs) {
      replace(body, ...evs.slice(-SHOWN).reverse().map(row));
      empty();
    },
    add(ev) {
      body.querySelector("tr.none")?.remove();
      body.prepend(row(ev));
      while (body.children.length > SHOWN) body.lastElementChild?.remove();
    },
  };
}

/** Reads every stored page (newest `SHOWN` kept), then follows; stops on `signal`. */
async function readThenFollow(
  list: (after: number | undefined) => Promise<{ events: LifecycleEvent[]; nextAfter: number | null }>,
  follow: (after: number) => AsyncGenerator<LifecycleEvent>,
  table: ReturnType<typeof eventTable>,
  status: HTMLElement,
  signal: AbortSignal,
): Promise<void> {
  try {
    let all: LifecycleEvent[] = [];
    let after: number | undefined;
    for (;;) {
      const page = await list(after);
      all = all.concat(page.events).slice(-SHOWN);
      if (page.nextAfter === null || !page.events.length) break;
      after = page.nextAfter;
    }
    table.set(all);
    const last = all[all.length - 1]?.id ?? after ?? 0;
    status.textContent = "Live: new events appear on top.";
    for await (const ev of follow(last)) table.add(ev);
  } catch (e) {
    if (signal.aborted) return;
    status.textContent = "The live stream stopped.";
    report(e, "events");
  }
}

/** The daemon-wide events page. */
export function renderEvents(root: HTMLElement, signal: AbortSignal): void {
  const params = new URLSearchParams(location.hash.split("?")[1] ?? "");
  const type = h("select", { id: "events-type", name: "type" }, h("option", { value: "" }, "all types"), ...EVENT_TYPES.map((t) => h("option", { value: t, selected: params.get("type") === t }, t)));
  const sandbox = h("input", { type: "text", id: "events-sandbox", name: "sandbox", placeholder: "any sandbox", value: params.get("sandbox") ?? "", autocomplete: "off" });
  const form = h("form", { class: "inline", id: "events-filter" }, field("Type", type), field("Sandbox", sandbox), h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (type.value) q.set("type", type.value);
    if (sandbox.value.trim()) q.set("sandbox", sandbox.value.trim());
    location.hash = `#/events${q.toString() ? `?${q}` : ""}`;
  });
  const status = h("p", { class: "status", id: "events-status", "aria-live": "polite" }, "Loading…");
  const table = eventTable(true);
  replace(
    root,
    h("section", { "aria-labelledby": "events-title" }, h("div", { class: "titlebar" }, h("h1", { id: "events-title" }, "Events"), h("a", { href: "#/webhooks" }, "Webhooks →")), form, status, h("div", { class: "scroll" }, table.el)),
  );
  const t = params.get("type") ?? undefined;
  const sb = params.get("sandbox") ?? undefined;
  void readThenFollow(
    (after) => Events.list({ type: t, sandbox: sb, after, limit: 1000 }, conn()),
    (after) => Events.stream({ type: t, sandbox: sb, after, signal }, conn()),
    table,
    status,
    signal,
  );
}

/** One sandbox's events tab. */
export function renderSandboxEvents(panel: HTMLElement, sb: Sandbox, signal: AbortSignal): void {
  const status = h("p", { class: "status", id: "events-status", "aria-live": "polite" }, "Loading…");
  const table = eventTable(false);
  replace(panel, h("div", { class: "toolbar" }, status, h("span", { class: "spacer" }), button("All events of this sandbox", () => (location.hash = `#/events?sandbox=${encodeURIComponent(sb.id)}`))), h("div", { class: "scroll" }, table.el));
  void readThenFollow(
    (after) => sb.events({ after, limit: 1000 }),
    (after) => sb.eventsStream({ after, signal }),
    table,
    status,
    signal,
  );
}
