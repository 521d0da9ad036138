// Helpers for the tests that drive the service with real programs (curl, aria2c, wget, qemu-img) and
// for the fuzz test: finding and running a program with a time limit, recording what the server was
// sent, and waiting until a volume's replica files have converged.
import { spawn } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { delimiter, join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { json, sha256File } from './app.js'

/** The two assertions assertConverged makes: a tap Test, a todoView of one, or a silent probe. */
export interface Checker {
  ok(...args: any[]): unknown
  equal(...args: any[]): unknown
}

/** The absolute path of `command` on PATH, or null when it is not installed. */
export function which(command: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter)) {
    if (!dir) continue
    const candidate = join(dir, command)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return null
}

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  ms: number
  timedOut: boolean
}

/**
 * Runs a program to completion (no shell) and collects its output; a program still running after
 * `timeoutMs` is killed (that one process, by its pid) and reported with `timedOut`.
 */
export function run(command: string, args: string[], options: { cwd?: string; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<RunResult> {
  const started = Date.now()
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, options.timeoutMs ?? 60_000)
    child.on('error', (err) => {
      clearTimeout(timer)
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(err), ms: Date.now() - started, timedOut })
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, timedOut })
    })
  })
}

/** One request as the server saw it: recorded when it arrives, completed when its reply is sent or it is aborted. */
export interface SeenRequest {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  /** 0 until the reply is sent. */
  status: number
  replyHeaders: Record<string, unknown>
  /** The client went away before the reply was complete. */
  aborted: boolean
  /** The reply's socket closed before its last byte went out (a stalled or cut reply, seen from the server). */
  unfinished?: boolean
}

/**
 * Records every request the app receives, in arrival order. Must be called before the app's first
 * request or listen (Fastify refuses new hooks once it is ready).
 */
export function recordRequests(app: FastifyInstance): SeenRequest[] {
  const seen: SeenRequest[] = []
  const entries = new WeakMap<object, SeenRequest>()
  app.addHook('onRequest', async (request) => {
    const entry: SeenRequest = { method: request.method, url: request.url, headers: { ...request.headers }, status: 0, replyHeaders: {}, aborted: false }
    entries.set(request, entry)
    seen.push(entry)
  })
  app.addHook('onResponse', async (request, reply) => {
    const entry = entries.get(request)
    if (!entry) return
    entry.status = reply.statusCode
    entry.replyHeaders = { ...reply.getHeaders() }
    entry.unfinished = !reply.raw.writableFinished
  })
  app.addHook('onRequestAbort', async (request) => {
    const entry = entries.get(request)
    if (entry) entry.aborted = true
  })
  return seen
}

/** A one-line description of recorded requests, for test messages and reports. */
export function describeRequests(seen: SeenRequest[]): string {
  return seen
    .map((r) => {
      const extra = ['range', 'if-range', 'content-range', 'expect', 'if-match', 'if-none-match']
        .filter((h) => r.headers[h] !== undefined)
        .map((h) => `${h}: ${r.headers[h]}`)
      return `${r.method} ${r.url}${extra.length ? ` [${extra.join('; ')}]` : ''} -> ${r.aborted ? 'aborted by the client' : r.status}${r.unfinished ? ' (closed before its last byte)' : ''}`
    })
    .join('\n')
}

export function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/**
 * Waits (bounded) until every replica of the volume reports in-sync and every listed replica file is
 * byte-identical to `expected`; reports each part as an assertion. Returns whether it converged.
 */
export async function assertConverged(
  t: Checker,
  app: FastifyInstance,
  name: string,
  files: string[],
  expected: Buffer,
  message: string,
  timeoutMs = 20_000,
): Promise<boolean> {
  const want = sha256(expected)
  const deadline = Date.now() + timeoutMs
  let status: any
  let hashes: string[] = []
  for (;;) {
    status = json(await app.inject({ method: 'GET', url: `/volumes/${name}` }))
    const inSync = status.replicas?.every((r: any) => r.state === 'in-sync' && r.dirtyBytes === 0)
    if (inSync) {
      hashes = await Promise.all(files.map((f) => sha256File(f).catch(() => 'missing')))
      if (hashes.every((h) => h === want)) break
    }
    if (Date.now() > deadline) break
    await new Promise((r) => setTimeout(r, 25))
  }
  const states = (status.replicas ?? []).map((r: any) => `${r.id}:${r.mode}:${r.state}:${r.dirtyBytes}`).join(', ')
  t.ok(status.replicas?.every((r: any) => r.state === 'in-sync'), `${message}: every replica reports in-sync (${states})`)
  t.equal(status.size, expected.length, `${message}: the volume's size is the expected ${expected.length} bytes`)
  if (hashes.length !== files.length) hashes = await Promise.all(files.map((f) => sha256File(f).catch(() => 'missing')))
  for (const [i, f] of files.entries()) {
    const why = hashes[i] === want ? '' : ` (${await describeDifference(f, expected)})`
    t.equal(hashes[i], want, `${message}: replica file ${f.split('/').pop()} is byte-identical to what was written${why}`)
  }
  return hashes.every((h) => h === want)
}

/** Where a file first differs from the expected bytes, and how long each is. */
async function describeDifference(path: string, expected: Buffer): Promise<string> {
  let actual: Buffer
  try {
    actual = await readFile(path)
  } catch (err) {
    return (err as Error).message
  }
  let at = 0
  while (at < actual.length && at < expected.length && actual[at] === expected[at]) at++
  let end = at
  while (end < Math.min(actual.length, expected.length) && actual[end] !== expected[end]) end++
  return `${actual.length} bytes on disk vs ${expected.length} expected; first difference at ${at}${at < Math.min(actual.length, expected.length) ? `, differing for ${end - at} bytes` : ''}`
}
