/**
 * Webhooks (admin keys): the list, a form to add one (URL, event types or all, secret), delete, and each
 * one's delivery log (attempts, outcome, status, error, time taken).
 */
import { type WebhookDelivery, type WebhookInfo, Webhooks } from "sandpit";
import { button, field, h, replace, when } from "../dom.js";
import { conn, notify, report } from "../session.js";
import { EVENT_TYPES } from "./events.js";

/** Renders the webhooks page until `signal` fires. */
export function renderWebhooks(root: HTMLElement, signal: AbortSignal): void {
  const list = h("tbody");
  const deliveries = h("div", { class: "deliveries", id: "deliveries" });
  const url = h("input", { type: "url", id: "webhook-url", name: "url", required: true, placeholder: "https://example.com/hooks/sandpit" });
  const secret = h("input", { type: "password", id: "webhook-secret", name: "secret", required: true, minlength: "8", maxlength: "256", autocomplete: "new-password" });
  const all = h("input", { type: "checkbox", id: "webhook-all", checked: true });
  const types = EVENT_TYPES.map((t) => h("input", { type: "checkbox", value: t, name: "events" }));
  const typeBox = h("fieldset", { class: "types", disabled: true }, h("legend", {}, "Events"), ...types.map((c) => h("label", { class: "check" }, c, c.value)));
  all.addEventListener("change", () => (typeBox.disabled = all.checked));
  const form = h(
    "form",
    { class: "card", id: "webhook-form" },
    h("h2", {}, "Add a webhook"),
    h("div", { class: "fields" }, field("URL", url), field("Secret (8–256 characters)", secret, "Signs every delivery: Sandpit-Signature: v1=HMAC-SHA256(secret, timestamp.body)")),
    h("label", { class: "check" }, all, "All events"),
    typeBox,
    h("button", { type: "submit", class: "primary" }, "Add webhook"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const events = all.checked ? ["*"] : types.filter((c) => c.checked).map((c) => c.value);
    if (!events.length) {
      notify("Pick at least one event type, or All events", "error");
      return;
    }
    Webhooks.create({ url: url.value.trim(), events, secret: secret.value }, conn()).then(
      (w) => {
        notify(`Added webhook ${w.id}`);
        secret.value = "";
        void refresh();
      },
      (e: unknown) => report(e, "add webhook"),
    );
  });

  async function showDeliveries(w: WebhookInfo): Promise<void> {
    replace(deliveries, h("h2", {}, `Deliveries to ${w.url}`), h("p", { class: "status" }, "Loading…"));
    try {
      const ds: WebhookDelivery[] = await Webhooks.deliveries(w.id, { limit: 100 }, conn());
      replace(
        deliveries,
        h("h2", {}, `Deliveries to ${w.url}`),
        ds.length
          ? h(
              "div",
              { class: "scroll" },
              h(
                "table",
                { class: "grid" },
                h("thead", {}, h("tr", {}, ...["At", "Event", "Attempt", "Outcome", "Status", "Error", "Took"].map((c) => h("th", { scope: "col" }, c)))),
                h(
                  "tbody",
                  {},
                  ...ds.map((d) =>
                    h(
                      "tr",
                      { "data-outcome": d.outcome },
                      h("td", {}, when(d.at)),
                      h("td", {}, `${d.eventType} #${d.eventId}`),
                      h("td", { class: "num" }, d.attempt),
                      h("td", {}, h("span", { class: `outcome ${d.outcome}` }, d.outcome)),
                      h("td", { class: "num" }, d.statusCode ?? "–"),
                      h("td", {}, d.error ?? ""),
                      h("td", { class: "num" }, `${d.durationMs} ms`),
                    ),
                  ),
                ),
              ),
            )
          : h("p", { class: "empty" }, "No deliveries yet."),
      );
    } catch (e) {
      report(e, "deliveries");
    }
  }

  async function refresh(): Promise<void> {
    try {
      const ws = await Webhooks.list(conn());
      replace(
        list,
        ...ws.map((w) =>
          h(
            "tr",
            { "data-id": w.id },
            h("th", { scope: "row" }, w.id),
            h("td", { class: "mono" }, w.url),
            h("td", {}, w.events.join(", ")),
            h("td", {}, when(w.createdAt)),
            h(
              "td",
              { class: "row-actions" },
              button("Deliveries", () => void showDeliveries(w), { "aria-label": `Deliveries of ${w.id}` }),
              button(
                "Delete",
                () => {
                  if (!confirm(`Delete webhook ${w.id} (${w.url})?`)) return;
                  Webhooks.delete(w.id, conn()).then(
                    () => void refresh(),
                    (e: unknown) => report(e, `delete ${w.id}`),
                  );
                },
                { class: "danger", "aria-label": `Delete ${w.id}` },
              ),
            ),
          ),
        ),
      );
      if (!ws.length) list.append(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No webhooks.")));
    } catch (e) {
      if (!signal.aborted) report(e, "webhooks");
    }
  }

  replace(
    root,
    h(
      "section",
      { "aria-labelledby": "webhooks-title" },
      h("div", { class: "titlebar" }, h("h1", { id: "webhooks-title" }, "Webhooks"), h("a", { href: "#/events" }, "← Events")),
      h("div", { class: "scroll" }, h("table", { class: "grid", id: "webhooks" }, h("thead", {}, h("tr", {}, ...["Webhook", "URL", "Events", "Created", ""].map((c) => h("th", { scope: "col" }, c)))), list)),
      deliveries,
      form,
    ),
  );
  void refresh();
}
