/**
 * What a user can do to a sandbox from the list and from its page: pause, resume, extend its deadline,
 * snapshot it into a template, delete it. One place, so that both pages ask and report the same way.
 */
import { Sandbox, type SandboxInfo } from "sandpit";
import { button, h } from "./dom.js";
import { conn, notify, report } from "./session.js";

/** Buttons for `info`'s state; `done` runs after a change (to refresh the view). */
export function actionButtons(info: SandboxInfo, done: (deleted: boolean) => void): HTMLElement {
  const id = info.id;
  const sb = (): Promise<Sandbox> => Sandbox.get(id, conn());
  const run = (what: string, f: () => Promise<unknown>, deleted = false): void => {
    box.querySelectorAll("button").forEach((b) => (b.disabled = true));
    f().then(
      (r) => {
        if (typeof r === "string") notify(r);
        done(deleted);
      },
      (e: unknown) => {
        report(e, `${what} ${id}`);
        done(false);
      },
    );
  };
  const box = h("div", { class: "actions", role: "group", "aria-label": `Actions on ${id}` });
  if (info.state === "running" || info.state === "unhealthy") {
    box.append(button("Pause", () => run("pause", async () => (await sb()).pause()), { title: `Pause ${id}: freeze its processes` }));
  }
  if (info.state === "paused") {
    box.append(button("Resume", () => run("resume", async () => (await sb()).resume()), { title: `Resume ${id}` }));
  }
  if (info.state !== "stopped" && info.state !== "failed") {
    box.append(
      button(
        "Extend",
        () => {
          const answer = prompt(`New deadline of ${id}: minutes from now`, "30");
          if (answer === null) return;
          const minutes = Number(answer);
          if (!Number.isFinite(minutes) || minutes <= 0) {
            notify(`"${answer}" is not a number of minutes`, "error");
            return;
          }
          run("extend", async () => {
            await (await sb()).setTimeout(minutes * 60_000);
            return `${id} now ends in ${minutes} min`;
          });
        },
        { title: `Move ${id}'s deadline` },
      ),
      button(
        "Snapshot",
        () => {
          const name = prompt(`Name of the template to make from ${id}'s files`, `${id}-snap`);
          if (!name) return;
          run("snapshot", async () => {
            const snap = await (await sb()).snapshot(name);
            return `Template ${snap.template.name} made from ${id} (frozen ${snap.frozenMs} ms)`;
          });
        },
        { title: `Make a template from ${id}'s files as they are now` },
      ),
    );
  }
  box.append(
    button(
      "Delete",
      () => {
        if (!confirm(`Delete sandbox ${id} and everything in it?`)) return;
        run("delete", async () => {
          await Sandbox.kill(id, conn());
          return `Deleted ${id}`;
        }, true);
      },
      { class: "danger", title: `Delete ${id}` },
    ),
  );
  return box;
}
