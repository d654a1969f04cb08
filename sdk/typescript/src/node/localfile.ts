/**
 * Node only: a file on this machine as a stream of bytes, for the uploads that take a path
 * (`Templates.importArchive(name, "/srv/app.tar.zst")`). The file is read as the request sends it, never
 * held whole.
 */
import { open } from "node:fs/promises";

/** Opens `path` (failing at once when it cannot be read) and returns its bytes as they are read. */
export async function readFileStream(path: string): Promise<AsyncIterable<Uint8Array>> {
  const fh = await open(path, "r");
  try {
    if ((await fh.stat()).isDirectory()) throw new Error(`${path} is a directory`);
  } catch (e) {
    await fh.close();
    throw e;
  }
  // Closed when the stream ends, fails or is cancelled (autoClose).
  return fh.createReadStream();
}
