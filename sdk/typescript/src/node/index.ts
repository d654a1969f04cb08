/**
 * `sandpit/node`: the Node-only helpers, for code that wants them statically (the main entry loads them on
 * demand): the key-file lookup, the terminal bridge behind `sandbox.attach*`, and `verifyWebhook` (checks a
 * webhook delivery's signature with `node:crypto`).
 */
export { readKeyFile, keyFileCandidates } from "./keyfile.js";
export { attachProcess, DetachMatcher, DETACHED } from "./attach.js";
export { verifyWebhook } from "./webhook.js";
export type { WebhookHeaders, VerifyWebhookOpts } from "./webhook.js";
