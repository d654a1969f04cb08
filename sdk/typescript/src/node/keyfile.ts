/**
 * Node only: finds the daemon's API key on disk, in the places `sandpit serve` writes it:
 * `$SANDPIT_STATE_DIR/api-key`, `/var/lib/sandpit/api-key`, `$XDG_DATA_HOME/sandpit/api-key`,
 * `~/.local/share/sandpit/api-key`.
 */
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";

/** The candidate key files, most specific first. */
export function keyFileCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  if (env.SANDPIT_STATE_DIR) out.push(join(env.SANDPIT_STATE_DIR, "api-key"));
  out.push("/var/lib/sandpit/api-key");
  if (env.XDG_DATA_HOME) out.push(join(env.XDG_DATA_HOME, "sandpit", "api-key"));
  out.push(join(homedir(), ".local", "share", "sandpit", "api-key"));
  return out;
}

/** The first readable, non-empty key file's content (trimmed), or undefined. */
export async function readKeyFile(env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  for (const path of keyFileCandidates(env)) {
    try {
      const key = (await readFile(path, "utf8")).trim();
      if (key) return key;
    } catch {
      // missing or unreadable: try the next place
    }
  }
  return undefined;
}
