/**
 * The sandpit web console: a single page the daemon serves at `/console` (assets embedded in its binary).
 * It talks to the daemon's public API through the TypeScript SDK (bundled in), with the key the user signed
 * in with. Hash routes: `#/sandboxes`, `#/sandboxes/ID[/TAB[/PROCESS]]`, `#/events`, `#/webhooks`.
 *
 * Each route renders into `<main>` with an `AbortSignal` that fires when the user leaves it: pages stop
 * their polls, streams and sockets on it, so nothing keeps running behind another page.
 */
import { Sandbox } from "sandpit";
import { button, field, h, replace } from "./dom.js";
import { renderEvents } from "./pages/events.js";
import { renderSandbox } from "./pages/sandbox.js";
import { renderSandboxes } from "./pages/sandboxes.js";
import { renderWebhooks } from "./pages/webhooks.js";
import * as session from "./session.js";

const banner = h("div", { id: "banner", role: "status", "aria-live": "polite" });
const main = h("main", { id: "main", tabindex: "-1" });
const nav = h("nav", { "aria-label": "Console" });
const who = h("span", { class: "who" });
let page: AbortController | undefined;

function showBanner(message: string, kind: "error" | "info" = "info"): void {
  replace(
    banner,
    message
      ? h(
          "div",
          { class: `banner ${kind}`, role: kind === "error" ? "alert" : null },
          h("span", { class: "text" }, message),
          button("Dismiss", () => showBanner(""), { class: "link", "aria-label": "Dismiss message" }),
        )
      : null,
  );
}

function signOut(message = ""): void {
  session.clear();
  location.hash = "";
  render();
  if (message) showBanner(message, "error");
}

session.install(showBanner, (m) => signOut(m));

function signInForm(): HTMLElement {
  const key = h("input", {
    type: "password",
    id: "key",
    name: "key",
    autocomplete: "current-password",
    required: true,
    placeholder: "sk_…",
    "aria-describedby": "key-help",
  });
  const status = h("p", { class: "status", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to sandpit"),
    field("API key", key),
    h(
      "p",
      { id: "key-help", class: "hint" },
      "The daemon's key file (/var/lib/sandpit/api-key, or the state directory's api-key) or a key from ",
      h("code", {}, "sandpit key create"),
      ". It is kept in this tab's session storage only.",
    ),
    submit,
    status,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const k = key.value.trim();
    if (!k) return;
    submit.disabled = true;
    status.textContent = "Checking the key…";
    // Any call that needs a valid key: a 401 is a refused key, a 403 a valid key without the read scope.
    Sandbox.list({ url: location.origin, apiKey: k })
      .then(
        () => true,
        (e: unknown) => {
          if (session.isRefused(e)) {
            status.textContent = "";
            showBanner(session.describe(e), "error");
            return false;
          }
          if (e instanceof Error && "status" in e && e.status === 403) return true;
          status.textContent = "";
          showBanner(session.describe(e), "error");
          return false;
        },
      )
      .then((ok) => {
        submit.disabled = false;
        if (!ok) return;
        session.save({ kind: "key", key: k });
        showBanner("");
        if (!location.hash || location.hash === "#/") location.hash = "#/sandboxes";
        render();
      });
  });
  queueMicrotask(() => key.focus());
  return form;
}

function navLinks(s: session.Session): void {
  const here = (location.hash.split("?")[0] ?? "").split("/")[1] || "sandboxes";
  const link = (href: string, label: string, name: string): HTMLElement =>
    h("a", { href, "aria-current": here === name ? "page" : null }, label);
  if (s.kind === "sandbox") {
    replace(nav, link(`#/sandboxes/${encodeURIComponent(s.sandbox ?? "")}`, "Sandbox", "sandboxes"));
    who.textContent = `sandbox ${s.sandbox ?? ""} (access token)`;
  } else {
    replace(nav, link("#/sandboxes", "Sandboxes", "sandboxes"), link("#/events", "Events", "events"), link("#/webhooks", "Webhooks", "webhooks"));
    who.textContent = `key ${s.key.slice(0, 6)}…`;
  }
}

/** Renders the route in the address bar. */
function render(): void {
  page?.abort();
  page = new AbortController();
  const signal = page.signal;
  const s = session.load();
  document.body.classList.toggle("signed-in", !!s);
  if (!s) {
    replace(nav);
    who.textContent = "";
    replace(main, signInForm());
    document.title = "Sign in · sandpit";
    return;
  }
  navLinks(s);
  const parts = (location.hash.replace(/^#\/?/, "").split("?")[0] ?? "").split("/").map(decodeURIComponent);
  if (s.kind === "sandbox" && (parts[0] !== "sandboxes" || parts[1] !== s.sandbox)) {
    location.replace(`#/sandboxes/${encodeURIComponent(s.sandbox ?? "")}`);
    return;
  }
  const [section = "sandboxes", id, tab, sub] = parts;
  replace(main);
  if (section === "sandboxes" && id) {
    document.title = `${id} · sandpit`;
    void renderSandbox(main, id, tab ?? "processes", sub, signal);
  } else if (section === "events") {
    document.title = "Events · sandpit";
    renderEvents(main, signal);
  } else if (section === "webhooks") {
    document.title = "Webhooks · sandpit";
    renderWebhooks(main, signal);
  } else {
    document.title = "Sandboxes · sandpit";
    renderSandboxes(main, signal);
  }
}

function start(): void {
  const header = h(
    "header",
    { class: "top" },
    h("a", { class: "brand", href: "#/sandboxes" }, "sandpit"),
    nav,
    h("span", { class: "spacer" }),
    who,
    button("Sign out", () => signOut(), { class: "signout" }),
  );
  document.body.append(h("a", { class: "skip", href: "#main", onclick: (e) => (e.preventDefault(), main.focus()) }, "Skip to content"), header, banner, main);
  session.takeLink();
  window.addEventListener("hashchange", () => {
    if (session.takeLink()) showBanner("");
    render();
  });
  render();
}

start();
