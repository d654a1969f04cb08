/**
 * A file browser over the files API, as the sandbox's default user: list a directory, go in and up, upload
 * by dropping files onto the list (or with the Upload button), download, delete. The directory is part of the
 * address (`#/sandboxes/ID/files/<dir>`), so a reload stays in it.
 */
import type { EntryInfo, Sandbox } from "sandpit";
import { button, bytes, h, replace, when } from "../dom.js";
import { notify, report } from "../session.js";

function join(dir: string, name: string): string {
  return dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
}

function parent(dir: string): string {
  const p = dir.replace(/\/+$/, "").replace(/\/[^/]*$/, "");
  return p || "/";
}

/** Renders the files tab at directory `dir` (default: the user's home). */
export function renderFiles(panel: HTMLElement, sandbox: Sandbox, dir: string | undefined, signal: AbortSignal): void {
  const enc = encodeURIComponent(sandbox.id);
  let here = dir || "";
  const path = h("input", { type: "text", id: "files-path", name: "path", "aria-label": "Directory", value: here, placeholder: "~ (the home directory)", autocomplete: "off" });
  const go = h("form", { class: "inline", id: "files-go" }, path, h("button", { type: "submit" }, "Open"));
  const body = h("tbody");
  const status = h("p", { class: "status", id: "files-status", "aria-live": "polite" });
  const picker = h("input", { type: "file", id: "files-upload", multiple: true, class: "visually-hidden" });
  const drop = h("div", { class: "dropzone", id: "files-drop", "aria-describedby": "files-drop-hint" });
  const open = (d: string): void => {
    location.hash = `#/sandboxes/${enc}/files/${encodeURIComponent(d)}`;
  };
  go.addEventListener("submit", (ev) => {
    ev.preventDefault();
    open(path.value.trim() || "/");
  });

  async function download(e: EntryInfo): Promise<void> {
    try {
      // A signed URL streams straight to disk; without a signing key, read it here.
      let href: string;
      let revoke = false;
      try {
        href = await sandbox.files.downloadUrl(e.path);
      } catch {
        href = URL.createObjectURL(await sandbox.files.read(e.path, { format: "blob" }));
        revoke = true;
      }
      const a = h("a", { href, download: e.name, class: "visually-hidden" });
      document.body.append(a);
      a.click();
      a.remove();
      if (revoke) setTimeout(() => URL.revokeObjectURL(href), 60_000);
    } catch (err) {
      report(err, `download ${e.path}`);
    }
  }

  function remove(e: EntryInfo): void {
    if (!confirm(`Delete ${e.path}${e.type === "dir" ? " and everything in it" : ""}?`)) return;
    sandbox.files.remove(e.path, { recursive: e.type === "dir" }).then(
      () => {
        notify(`Deleted ${e.path}`);
        void refresh();
      },
      (err: unknown) => report(err, `delete ${e.path}`),
    );
  }

  const row = (e: EntryInfo): HTMLElement =>
    h(
      "tr",
      { "data-name": e.name, "data-type": e.type },
      h(
        "th",
        { scope: "row" },
        e.type === "dir"
          ? h("a", { href: `#/sandboxes/${enc}/files/${encodeURIComponent(e.path)}` }, `${e.name}/`)
          : button(e.name, () => void download(e), { class: "link", title: `Download ${e.name}` }),
        e.symlinkTarget ? h("span", { class: "muted" }, ` → ${e.symlinkTarget}`) : null,
      ),
      h("td", { class: "num" }, e.type === "dir" ? "" : bytes(e.size)),
      h("td", { class: "mono" }, e.permissions),
      h("td", {}, `${e.owner}:${e.group}`),
      h("td", {}, when(e.modifiedAt)),
      h(
        "td",
        { class: "row-actions" },
        e.type === "file" ? button("Download", () => void download(e), { "aria-label": `Download ${e.name}` }) : null,
        button("Delete", () => remove(e), { class: "danger", "aria-label": `Delete ${e.name}` }),
      ),
    );

  async function refresh(): Promise<void> {
    status.textContent = "Loading…";
    try {
      const target = here || ".";
      const entries = await sandbox.files.list(target);
      if (!here) {
        // The listing of "." names absolute paths: show where home is.
        const first = entries[0];
        here = first ? parent(first.path) : (await sandbox.files.getInfo(".")).path;
        path.value = here;
      }
      entries.sort((a, b) => Number(b.type === "dir") - Number(a.type === "dir") || a.name.localeCompare(b.name));
      replace(body, ...entries.map(row));
      if (!entries.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "Empty directory.")));
      status.textContent = `${entries.length} entr${entries.length === 1 ? "y" : "ies"} in ${here}`;
    } catch (e) {
      status.textContent = "";
      if (!signal.aborted) report(e, `list ${here || "~"}`);
    }
  }

  async function upload(files: FileList | File[]): Promise<void> {
    const list = Array.from(files);
    if (!list.length) return;
    const dest = here || ".";
    let done = 0;
    for (const f of list) {
      status.textContent = `Uploading ${f.name} (${done + 1} of ${list.length}, ${bytes(f.size)})…`;
      try {
        await sandbox.files.write(join(dest, f.name), f);
        done++;
      } catch (e) {
        report(e, `upload ${f.name}`);
      }
    }
    notify(`Uploaded ${done} of ${list.length} file${list.length === 1 ? "" : "s"} to ${dest}`);
    await refresh();
  }

  picker.addEventListener("change", () => {
    if (picker.files) void upload(picker.files).then(() => (picker.value = ""));
  });
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    if (ev.dataTransfer?.files.length) void upload(ev.dataTransfer.files);
  });

  replace(
    drop,
    h("p", { id: "files-drop-hint", class: "hint" }, "Drop files here to upload them into this directory, or ", h("label", { for: "files-upload", class: "button", tabindex: "0", role: "button", onkeydown: (e) => ((e as KeyboardEvent).key === "Enter" || (e as KeyboardEvent).key === " ") && picker.click() }, "choose files"), "."),
    picker,
    h("div", { class: "scroll" }, h("table", { class: "grid", id: "files" }, h("thead", {}, h("tr", {}, ...["Name", "Size", "Mode", "Owner", "Modified", ""].map((c) => h("th", { scope: "col" }, c)))), body)),
  );
  replace(panel, h("div", { class: "toolbar" }, button("Up", () => open(parent(here || "/")), { title: "Parent directory" }), go, button("Refresh", () => void refresh())), status, drop);
  void refresh();
}
