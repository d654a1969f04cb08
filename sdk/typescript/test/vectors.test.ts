/**
 * The SDKs' shared test vectors (`sdk/testdata/vectors.json`): error answers → error kinds, detach key specs →
 * bytes. The Rust and Python SDKs check the same file. No daemon is needed.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  AlreadyExistsError,
  AuthenticationError,
  ConflictError,
  InsufficientStorageError,
  InternalError,
  InvalidArgumentError,
  IsADirError,
  NotADirError,
  NotEmptyError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  ResourceExhaustedError,
  SandboxError,
  TimeoutError,
  UnavailableError,
  HttpClient,
  errorFromBody,
  parseDetachKeys,
} from "sandpit";

interface ErrorCase {
  name: string;
  status: number;
  body?: string;
  json?: unknown;
  expected: string;
  code: string;
  message?: string;
  message_contains?: string[];
}

interface DetachCase {
  spec: string;
  bytes?: number[];
  error?: boolean;
}

interface Vectors {
  kinds: Record<string, string>;
  errors: ErrorCase[];
  detach_keys: DetachCase[];
}

// Compiled to build-test/test/vectors.test.js: three levels up is sdk/.
const VECTORS_PATH = fileURLToPath(new URL("../../../testdata/vectors.json", import.meta.url));
const vectors = JSON.parse(readFileSync(VECTORS_PATH, "utf8")) as Vectors;

/** This SDK's class of each kind (checked exactly: a subclass does not count). */
const KIND_CLASSES: Record<string, new (message: string) => SandboxError> = {
  invalid_argument: InvalidArgumentError,
  unauthenticated: AuthenticationError,
  permission_denied: PermissionDeniedError,
  not_found: NotFoundError,
  timeout: TimeoutError,
  conflict: ConflictError,
  already_exists: AlreadyExistsError,
  not_empty: NotEmptyError,
  is_a_directory: IsADirError,
  not_a_directory: NotADirError,
  payload_too_large: PayloadTooLargeError,
  resource_exhausted: ResourceExhaustedError,
  unavailable: UnavailableError,
  insufficient_storage: InsufficientStorageError,
  internal: InternalError,
  other: SandboxError,
};

test("every kind in vectors.json has a class", () => {
  const kinds = Object.keys(vectors.kinds).filter((k) => k !== "about");
  assert.deepEqual(kinds.slice().sort(), Object.keys(KIND_CLASSES).sort());
  for (const c of vectors.errors) assert.ok(kinds.includes(c.expected), `${c.name}: unknown kind ${c.expected}`);
});

for (const c of vectors.errors) {
  test(`error vector: ${c.name}`, () => {
    assert.ok((c.body === undefined) !== !("json" in c), "give exactly one of body and json");
    const body = c.body ?? JSON.stringify(c.json);
    const err = errorFromBody(c.status, body);
    const want = KIND_CLASSES[c.expected];
    assert.ok(want, `unknown kind ${c.expected}`);
    assert.equal(err.constructor.name, want.name);
    assert.equal(err.constructor, want);
    assert.equal(err.code, c.code);
    assert.equal(err.status, c.status);
    if (c.message !== undefined) assert.equal(err.message, c.message);
    for (const part of c.message_contains ?? []) assert.ok(err.message.includes(part), `${err.message} lacks ${part}`);
  });
}

test("an HTTP call's error answer goes through the same mapping", async () => {
  const client = await HttpClient.create({
    url: "http://127.0.0.1:1",
    apiKey: "k",
    fetch: () => Promise.resolve(new Response("upstream down", { status: 502, statusText: "Bad Gateway" })),
  });
  await assert.rejects(
    client.json("GET", "/v1/sandboxes"),
    (e: unknown) =>
      e instanceof UnavailableError && e.code === "unavailable" && e.message === "HTTP 502 Bad Gateway: upstream down",
  );
});

for (const c of vectors.detach_keys) {
  test(`detach key vector: ${JSON.stringify(c.spec)}`, () => {
    if (c.error) {
      assert.throws(() => parseDetachKeys(c.spec), Error);
    } else {
      assert.deepEqual(parseDetachKeys(c.spec), c.bytes);
    }
  });
}
