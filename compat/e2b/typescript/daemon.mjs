// A real sandpit daemon for the stock E2B JavaScript SDK, and the environment variables that point the SDK at it
// (docs/e2b.md): E2B_API_URL (the control API at /e2b), E2B_SANDBOX_URL (envd at /e2b/sandbox), E2B_API_KEY (a
// sandpit key). The mirror of compat/e2b/python/conftest.py.
//
// As root (CI) the daemon is `--backend isolate` with its `base` template (the host's /usr: E2B runs commands with
// `/bin/bash -l`), what users run. Otherwise it is `--backend process`. Either way HOME is an empty directory, so
// that the login shells E2B starts do not read the developer's own profile.

import { execFileSync, spawn } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
export const REPO = path.resolve(here, '..', '..', '..')

/** A port nobody listens on now (the kernel's pick for port 0). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

function answers(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port })
    const done = (ok) => {
      sock.destroy()
      resolve(ok)
    }
    sock.setTimeout(200, () => done(false))
    sock.once('connect', () => done(true))
    sock.once('error', () => done(false))
  })
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * Calls `check` (sync or async) until it returns something truthy, which is returned, or `timeoutMs` passes
 * (an Error naming `what`).
 */
export async function poll(check, { timeoutMs = 15_000, everyMs = 50, what = String(check) } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms: ${what}`)
    await sleep(everyMs)
  }
}

/**
 * Starts the daemon and waits until it answers (and, with the isolate backend, until its `base` template is
 * built), then sets the SDK's environment variables. Returns { url, port, e2bUrl, e2bPort, key, backend, state, log, readLog, stop }.
 */
export async function startDaemon() {
  const binary = process.env.SANDPIT_BIN || path.join(REPO, 'target', 'debug', 'sandpit')
  if (!existsSync(binary)) throw new Error(`sandpit binary not found at ${binary} (set SANDPIT_BIN)`)
  const tmp = mkdtempSync(path.join(tmpdir(), 'sandpit-e2b-js-'))
  const state = path.join(tmp, 'state')
  const log = path.join(tmp, 'daemon.log')
  const home = path.join(tmp, 'home')
  mkdirSync(home)
  const port = await freePort()
  let e2bPort = await freePort()
  while (e2bPort === port) e2bPort = await freePort()
  const backend = process.getuid?.() === 0 ? 'isolate' : 'process'
  const out = openSync(log, 'a')
  const proc = spawn(
    binary,
    ['serve', '--backend', backend, '--listen', `127.0.0.1:${port}`, '--e2b-listen', `127.0.0.1:${e2bPort}`,
      '--state-dir', state],
    { stdio: ['ignore', out, out], env: { ...process.env, HOME: home } },
  )
  closeSync(out)
  let exited = null
  proc.on('exit', (code, signal) => { exited = { code, signal } })
  // Should this process end without stop() (a crash), the daemon does not outlive it.
  process.on('exit', () => { if (exited === null) proc.kill('SIGTERM') })
  const readLog = () => { try { return readFileSync(log, 'utf8') } catch { return '' } }

  const stop = async () => {
    if (exited === null) {
      proc.kill('SIGTERM')
      let timer
      const gone = await new Promise((r) => {
        timer = setTimeout(() => r(false), 10_000)
        if (exited !== null) r(true)
        else proc.once('exit', () => r(true))
      })
      clearTimeout(timer)
      if (!gone && exited === null) {
        proc.kill('SIGKILL')
        await new Promise((r) => (exited !== null ? r() : proc.once('exit', r)))
      }
    }
    if (process.env.SANDPIT_SHOW_LOG) console.error(readLog())
    // Never recurse into something still mounted there (a sandbox's root would lead into host directories).
    // The state holds the `base` template (a copy of the host's /usr: gigabytes), which rm(1) removes several
    // times faster than fs.rmSync.
    const mounted = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => {
      const at = l.split(' ')[4]
      return at === tmp || at?.startsWith(`${tmp}/`)
    })
    if (mounted) console.error(`left ${tmp} in place: something is still mounted under it`)
    else execFileSync('rm', ['-rf', '--one-file-system', '--', tmp], { stdio: 'inherit' })
  }

  try {
    const url = `http://127.0.0.1:${port}`
    const keyFile = path.join(state, 'api-key')
    await poll(async () => {
      if (exited !== null) throw new Error(`the daemon exited (${JSON.stringify(exited)}); its log:\n${readLog()}`)
      return existsSync(keyFile) && (await answers(port))
    }, { timeoutMs: 60_000, what: 'the daemon answers' })
    const key = readFileSync(keyFile, 'utf8').trim()
    if (backend === 'isolate') {
      // The base template is built from the host at first start (5-15 s).
      await poll(async () => {
        if (exited !== null) throw new Error(`the daemon exited (${JSON.stringify(exited)}); its log:\n${readLog()}`)
        const r = await fetch(`${url}/v1/templates/base`, { headers: { Authorization: `Bearer ${key}` } })
        await r.arrayBuffer()
        return r.status === 200
      }, { timeoutMs: 120_000, everyMs: 200, what: 'the base template is built' })
    }
    Object.assign(process.env, {
      E2B_API_URL: `${url}/e2b`,
      E2B_SANDBOX_URL: `${url}/e2b/sandbox`,
      E2B_API_KEY: key,
      // Without effect in this SDK (it does not check a key's format: ConnectionOpts.validateApiKey is
      // deprecated and read nowhere), set for parity with the Python suite.
      E2B_VALIDATE_API_KEY: 'false',
    })
    return { url, port, e2bUrl: `http://127.0.0.1:${e2bPort}`, e2bPort, key, backend, state, log, readLog, stop }
  } catch (e) {
    await stop()
    throw e
  }
}
