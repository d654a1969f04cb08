/**
 * `sandpit/node`: the Node-only helpers, for code that wants them statically (the main entry loads them on
 * demand): the key-file lookup and the terminal bridge behind `sandbox.attach*`.
 */
export { readKeyFile, keyFileCandidates } from "./keyfile.js";
export { attachProcess, DetachMatcher, DETACHED } from "./attach.js";
