/**
 * Who the console is signed in as, and how failures are told to the user.
 *
 * The credential lives in `sessionStorage` only (gone when the tab closes; never in a URL the console
 * navigates to, never in `localStorage`): either an API key (`kind: "key"`, the whole console) or one
 * sandbox's access token from a link `/console#sandbox=ID&token=TOKEN` (`kind: "sandbox"`, that sandbox's
 * page only). The link's fragment is never sent to the daemon, and the console removes it from the address
 * bar and history as soon as it has read it. Browser WebSockets cannot carry headers, so the terminal's
 * socket passes the credential as `access_token` (the daemon's request log and audit never record it).
 */
import { type ConnectionOptions, SandboxError } from "sandpit";

/** The signed-in credential. */
export interface Session {
  kind: "key" | "sandbox";
  key: string;
  /** For `kind: "sandbox"`: the one sandbox the token opens. */
  sandbox?: string;
}

const STORE = "sandpit.console.session";

/** The stored session, if any. */
export function load(): Session | null {
  try {
    const raw = sessionStorage.getItem(STORE);
    if (!raw) return null;
    const s = JSON.parse(raw) as Session;
    return typeof s.key === "string" && s.key ? s : null;
  } catch {
    return null;
  }
}

/** Stores the session for this tab. */
export function save(s: Session): void {
  sessionStorage.setItem(STORE, JSON.stringify(s));
}

/** Signs out. */
export function clear(): void {
  sessionStorage.removeItem(STORE);
}

/**
 * Reads a sandbox link's fragment (`#sandbox=ID&token=TOKEN`): stores it as the session and takes it out of
 * the address bar and the history. Returns the sandbox id, or null when the fragment is no such link.
 */
export function takeLink(): string | null {
  const frag = location.hash.replace(/^#/, "");
  if (!frag.includes("token=")) return null;
  const p = new URLSearchParams(frag);
  const token = p.get("token");
  const sandbox = p.get("sandbox");
  history.replaceState(null, "", `${location.pathname}${sandbox ? `#/sandboxes/${encodeURIComponent(sandbox)}` : ""}`);
  if (!token || !sandbox) return null;
  save({ kind: "sandbox", key: token, sandbox });
  return sandbox;
}

/** Connection options of the SDK for the signed-in session (the daemon is the page's origin). */
export function conn(): ConnectionOptions {
  const s = load();
  return { url: location.origin, apiKey: s?.key ?? "" };
}

/** A sentence for an error, naming what the user can do about it. */
export function describe(e: unknown): string {
  if (e instanceof SandboxError) {
    if (e.code === "network") return `The daemon at ${location.origin} cannot be reached: ${e.message}`;
    if (e.status === 401) return `The key was refused (401): ${e.message}`;
    if (e.status === 403) return `Not allowed (403): ${e.message}`;
    return e.status ? `${e.message} (${e.status} ${e.code})` : e.message;
  }
  if (e instanceof DOMException && e.name === "AbortError") return "stopped";
  return e instanceof Error ? e.message : String(e);
}

/** Whether an error means the credential is no longer accepted (the console then signs out). */
export function isRefused(e: unknown): boolean {
  return e instanceof SandboxError && e.status === 401;
}

type Notifier = (message: string, kind?: "error" | "info") => void;
let notifier: Notifier = () => undefined;
let onRefused: (message: string) => void = () => undefined;

/** Installs the banner writer and the sign-out hook (main.ts). */
export function install(n: Notifier, refused: (message: string) => void): void {
  notifier = n;
  onRefused = refused;
}

/** Shows a message in the banner (an `aria-live` region). */
export function notify(message: string, kind: "error" | "info" = "info"): void {
  notifier(message, kind);
}

/** Reports a failed call: a refused key signs out; anything else goes to the banner. */
export function report(e: unknown, what?: string): void {
  if (e instanceof DOMException && e.name === "AbortError") return;
  const text = `${what ? `${what}: ` : ""}${describe(e)}`;
  if (isRefused(e)) onRefused(text);
  else notifier(text, "error");
}
