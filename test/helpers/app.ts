// Shared helpers for the HTTP contract tests: a real app over a temporary DATA_DIR, a real listening
// server when a test needs streaming, and small readers for what the service sends back.
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readdir, readFile, stat } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { join, relative } from 'node:path'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Test } from 'tap'
import { buildApp, type AppOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { eventually } from './eventually.js'
import { scratch } from './scratch.js'

/** The slice of a tap Test these helpers use. */
export type TestLike = Pick<Test, 'teardown' | 'equal' | 'match' | 'ok' | 'notOk'>

export interface MadeApp {
  app: FastifyInstance
  dataDir: string
}

/**
 * Builds the real service over a temporary DATA_DIR and waits until its volumes are open.
 * Pass `env.DATA_DIR` to reopen an existing directory (it is then not removed here).
 * SHUTDOWN_GRACE_MS defaults to 0 so a throttled write-behind never slows a test's teardown.
 */
export async function makeApp(t: TestLike, env: Record<string, string> = {}, options: Omit<AppOptions, 'config'> = {}): Promise<MadeApp> {
  const dataDir = env.DATA_DIR ?? (await scratch(t, 'filemirror-data-'))
  const app = await buildApp({ ...options, config: loadConfig({ LOG_LEVEL: 'silent', SHUTDOWN_GRACE_MS: '0', ...env, DATA_DIR: dataDir }) })
  // tap runs teardowns last-in first-out: the app closes before its directory is removed.
  t.teardown(() => closeOnce(app))
  await app.volumesOpen
  return { app, dataDir }
}

const closing = new WeakMap<FastifyInstance, Promise<void>>()

/** Closes an app once, however many teardowns ask. */
export function closeOnce(app: FastifyInstance): Promise<void> {
  let done = closing.get(app)
  if (!done) {
    done = app.close()
    closing.set(app, done)
  }
  return done
}

/** Starts `app` on a real socket (127.0.0.1, a free port) and returns its base URL. */
export async function listen(t: TestLike, app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => closeOnce(app))
  const address = app.server.address() as AddressInfo
  return `http://127.0.0.1:${address.port}`
}

// ------------------------------------------------------------------ replies

/** Parses a JSON reply body. */
export function json<T = any>(res: LightMyRequestResponse): T {
  return JSON.parse(res.body) as T
}

/** Asserts an RFC 9457 problem reply with `status` and returns its body. */
export function assertProblem(t: TestLike, res: LightMyRequestResponse, status: number, message = `problem ${status}`): any {
  t.equal(res.statusCode, status, `${message}: status`)
  t.match(String(res.headers['content-type']), /^application\/problem\+json/, `${message}: application/problem+json`)
  let body: any = {}
  try {
    body = JSON.parse(res.body)
  } catch {
    t.ok(false, `${message}: body is JSON (${res.body.slice(0, 200)})`)
  }
  t.equal(body.status, status, `${message}: body.status`)
  t.equal(typeof body.type, 'string', `${message}: body.type`)
  t.ok(typeof body.title === 'string' && body.title.length > 0, `${message}: body.title`)
  t.ok(typeof body.detail === 'string' && body.detail.length > 0, `${message}: body.detail`)
  return body
}

// ------------------------------------------------------------------ volumes

export interface ReplicaInput {
  id: string
  path: string
  read?: boolean
  write?: boolean
  mode?: 'sync' | 'async'
  label?: unknown
  maxBytesPerSecond?: number | null
}

/** PUT /volumes/{name}; asserts 201 and returns the status body. */
export async function createVolume(t: TestLike, app: FastifyInstance, name: string, replicas: ReplicaInput[], extra: Record<string, unknown> = {}): Promise<any> {
  const res = await app.inject({ method: 'PUT', url: `/volumes/${name}`, payload: { replicas, ...extra } })
  t.equal(res.statusCode, 201, `volume ${name} created (${res.statusCode === 201 ? 'ok' : res.body})`)
  return json(res)
}

/** PUT the whole content of a volume; returns the reply. */
export function putData(app: FastifyInstance, name: string, body: Buffer, headers: Record<string, string> = {}) {
  return app.inject({ method: 'PUT', url: `/volumes/${name}/data`, headers: { 'content-type': 'application/octet-stream', ...headers }, payload: body })
}

/** GET the whole content of a volume as bytes. */
export async function getData(app: FastifyInstance, name: string, headers: Record<string, string> = {}, query = ''): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url: `/volumes/${name}/data${query}`, headers })
}

/** Waits until every replica of the volume reports in-sync. */
export async function waitInSync(app: FastifyInstance, name: string, timeoutMs = 15_000): Promise<any> {
  return eventually(async () => {
    const status = json((await app.inject({ method: 'GET', url: `/volumes/${name}` })))
    return status.replicas.every((r: any) => r.state === 'in-sync') ? status : undefined
  }, `every replica of ${name} to be in-sync`, timeoutMs)
}

// ------------------------------------------------------------------ disk

/** Every entry under `dir` (relative paths, directories marked with a trailing slash), sorted. */
export async function tree(dir: string): Promise<string[]> {
  const out: string[] = []
  async function walk(at: string): Promise<void> {
    let entries
    try {
      entries = await readdir(at, { withFileTypes: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    for (const e of entries) {
      const path = join(at, e.name)
      if (e.isDirectory()) {
        out.push(relative(dir, path) + '/')
        await walk(path)
      } else out.push(relative(dir, path))
    }
  }
  await walk(dir)
  return out.sort()
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}

export async function readOrNull(path: string): Promise<Buffer | null> {
  try {
    return await readFile(path)
  } catch {
    return null
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

// ------------------------------------------------------------------ multipart

/** One part of a multipart/form-data body built by hand. */
export type FormPart = { name: string; value: string } | { name: string; filename: string; data: Buffer; contentType?: string }

/** Builds a multipart/form-data body (RFC 7578) byte by byte. */
export function formData(parts: FormPart[], boundary = 'filemirror-test-boundary-7d1e'): { body: Buffer; contentType: string } {
  const chunks: Buffer[] = []
  for (const part of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"`
    if ('filename' in part) head += `; filename="${part.filename}"\r\nContent-Type: ${part.contentType ?? 'application/octet-stream'}`
    head += '\r\n\r\n'
    chunks.push(Buffer.from(head, 'latin1'), 'filename' in part ? part.data : Buffer.from(part.value, 'utf8'), Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`, 'latin1'))
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` }
}

export interface BytePart {
  contentType: string | undefined
  contentRange: string | undefined
  start: number
  end: number
  size: number
  data: Buffer
}

/**
 * Parses a multipart/byteranges body strictly: each part's length comes from its own Content-Range,
 * so a framing error (a missing CRLF, a wrong length) fails the parse instead of being skipped over.
 */
export function parseByteranges(body: Buffer, contentType: string): BytePart[] {
  const m = /^multipart\/byteranges;\s*boundary=("?)([^";]+)\1\s*$/i.exec(contentType)
  if (!m) throw new Error(`not multipart/byteranges: ${contentType}`)
  const delimiter = Buffer.from(`--${m[2]}`, 'latin1')
  const parts: BytePart[] = []
  // The preamble may be empty or a CRLF; the first delimiter follows it.
  let at = body.indexOf(delimiter)
  if (at < 0 || at > 2) throw new Error('no opening delimiter at the start of the body')
  for (;;) {
    at += delimiter.length
    if (body.subarray(at, at + 2).toString('latin1') === '--') {
      const rest = body.subarray(at + 2).toString('latin1')
      if (rest !== '' && rest !== '\r\n') throw new Error(`unexpected epilogue ${JSON.stringify(rest)}`)
      return parts
    }
    if (body.subarray(at, at + 2).toString('latin1') !== '\r\n') throw new Error(`no CRLF after the delimiter at ${at}`)
    at += 2
    const headEnd = body.indexOf('\r\n\r\n', at, 'latin1')
    if (headEnd < 0) throw new Error('part headers never end')
    const headers: Record<string, string> = {}
    for (const line of body.subarray(at, headEnd).toString('latin1').split('\r\n')) {
      const colon = line.indexOf(':')
      if (colon < 0) throw new Error(`bad part header line ${JSON.stringify(line)}`)
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    at = headEnd + 4
    const cr = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(headers['content-range'] ?? '')
    if (!cr) throw new Error(`part without a valid Content-Range: ${headers['content-range']}`)
    const [start, end, size] = [Number(cr[1]), Number(cr[2]), Number(cr[3])]
    const data = body.subarray(at, at + end - start + 1)
    if (data.length !== end - start + 1) throw new Error('part data is shorter than its Content-Range')
    parts.push({ contentType: headers['content-type'], contentRange: headers['content-range'], start, end, size, data: Buffer.from(data) })
    at += data.length
    if (body.subarray(at, at + 2).toString('latin1') !== '\r\n') throw new Error(`no CRLF before the delimiter after part ${parts.length}`)
    at += 2
    if (!body.subarray(at, at + delimiter.length).equals(delimiter)) throw new Error(`no delimiter after part ${parts.length}`)
  }
}

// ------------------------------------------------------------------ known bugs

const VALUE_ARGS: Record<string, number> = { ok: 1, notOk: 1, equal: 2, not: 2, same: 2, notSame: 2, strictSame: 2, match: 2, notMatch: 2, has: 2, fail: 0, pass: 0 }

/**
 * A view of a tap test whose assertions are all marked `{ todo: reason }`: the test body runs and its
 * checks are reported (as "not ok # TODO" while the bug lasts) without failing the suite. tap 21 does
 * not run the body of a subtest declared `{ todo }` at all, so known bugs are marked per assertion.
 */
export function todoView<T extends object>(t: T, reason: string): T {
  return new Proxy(t, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver)
      const n = typeof prop === 'string' ? VALUE_ARGS[prop] : undefined
      if (n === undefined || typeof value !== 'function') return typeof value === 'function' ? value.bind(target) : value
      return (...args: unknown[]) => {
        const values = args.slice(0, n)
        while (values.length < n) values.push(undefined)
        const message = args[n]
        const extra = (args[n + 1] as object | undefined) ?? {}
        return value.call(target, ...values, message, { ...extra, todo: reason })
      }
    },
  })
}
