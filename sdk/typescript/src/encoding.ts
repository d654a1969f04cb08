/**
 * Byte helpers: base64 and UTF-8 with the web platform's own APIs (works in Node 20+ and browsers).
 */

const encoder = new TextEncoder();

/** UTF-8 encodes a string; passes bytes through. */
export function toBytes(data: string | Uint8Array | ArrayBuffer): Uint8Array {
  if (typeof data === "string") return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  return new Uint8Array(data);
}

/** Decodes UTF-8, replacing invalid sequences. */
export function utf8(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/** Base64 of some bytes. */
export function toBase64(bytes: Uint8Array): string {
  let bin = "";
  const step = 0x8000;
  for (let i = 0; i < bytes.length; i += step) {
    bin += String.fromCharCode(...bytes.subarray(i, i + step));
  }
  return btoa(bin);
}

/** Bytes of a base64 string. */
export function fromBase64(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Concatenates byte chunks. */
export function concatBytes(chunks: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const c of chunks) n += c.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** A text field that may come as `x` (UTF-8) or `x_b64` (bytes). */
export function wireBytes(text: string | undefined | null, b64: string | undefined | null): Uint8Array {
  if (text != null) return encoder.encode(text);
  if (b64 != null) return fromBase64(b64);
  return new Uint8Array(0);
}

/**
 * How many bytes at the end of `b` are the start of a UTF-8 character that continues past it (0-3): the
 * last lead byte within three of the end, when its sequence is longer than what follows it.
 */
export function incompleteTail(b: Uint8Array): number {
  for (let i = b.length - 1; i >= 0 && i >= b.length - 3; i--) {
    const c = b[i] ?? 0;
    if (c < 0x80) return 0; // ASCII: complete
    if (c >= 0xc0) {
      const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
      return b.length - i < need ? b.length - i : 0;
    }
    // a continuation byte: look further back for its lead
  }
  return 0;
}

/**
 * The most output a {@link StreamText} keeps for a command's result: the agent's per-process cap (64 MiB).
 * A longer stream drops its oldest output from the result, as the daemon's own results do (`lostBytes`);
 * every chunk was still delivered to the caller as it came.
 */
export const STREAM_KEEP_BYTES = 64 * 1024 * 1024;

/**
 * Accumulates one output stream chunk by chunk: keeps the raw bytes (the last {@link STREAM_KEEP_BYTES} of
 * them) and decodes each chunk's text incrementally, so that a multi-byte character split across chunks is
 * still decoded once, whole. The whole text is decoded only when asked for: accumulating it as one string
 * failed past V8's string limit (~512 MiB) with a `RangeError` in the middle of a stream.
 */
export class StreamText {
  private readonly decoder = new TextDecoder();
  private readonly chunks: Uint8Array[] = [];
  private kept = 0;
  /** The start of a character cut off at the end of the last chunk, decoded with the next one. */
  private carry: Uint8Array | undefined;

  /** Adds a chunk and returns its decoded text (possibly empty while a character is incomplete). */
  push(bytes: Uint8Array): string {
    this.chunks.push(bytes);
    this.kept += bytes.length;
    for (let first = this.chunks[0]; first && this.chunks.length > 1; first = this.chunks[0]) {
      if (this.kept - first.length < STREAM_KEEP_BYTES) break;
      this.kept -= first.length;
      this.chunks.shift();
    }
    // Decoded whole, not with `{stream: true}`: a streaming TextDecoder runs at a third of the speed
    // (~360 against ~1,000 MiB/s on Node 20), and it only matters for a character cut between chunks, which
    // is carried here instead.
    let data = bytes;
    if (this.carry) {
      data = concatBytes([this.carry, bytes]);
      this.carry = undefined;
    }
    const whole = data.length - incompleteTail(data);
    if (whole < data.length) this.carry = data.slice(whole);
    return whole === 0 ? "" : this.decoder.decode(whole === data.length ? data : data.subarray(0, whole));
  }

  /** Everything kept, as text. */
  get value(): string {
    return new TextDecoder().decode(this.bytes);
  }

  /** Everything so far, as bytes. */
  get bytes(): Uint8Array {
    return concatBytes(this.chunks);
  }
}
