/**
 * A replica on another machine: a remote that takes RFC 9110 partial PUT, addressed by one URL. Two remotes
 * are known to work: another filemirror's data URL (`http://host:port/volumes/x/data`) and Apache httpd with
 * mod_dav (a file under a `Dav On` directory). Node's own http/https, one keep-alive agent per file.
 *
 *  - read(buffer, offset): `GET` with `Range: bytes=a-b`, the 206 copied straight into `buffer`. A 416, or a
 *    206 reaching the end its Content-Range names, is the end of the file (fewer bytes, as a file at EOF); a
 *    206 stopping short of both is asked again for the rest. A remote that ignores Range (200) is read up to
 *    the bytes wanted and the rest of its body dropped unread (the connection is closed).
 *  - write(buffer, offset): `PUT` with `Content-Range: bytes a-b/*`, and `If-Match` with the ETag of the
 *    remote's last reply where it gives strong ones on its PUT replies (capabilities.ifMatch); writes then
 *    run one at a time, so that each one's ETag is known to the next. A 412 means another writer changed
 *    the remote: ECHANGED, not retryable, and every later write of this file fails so until it is opened again.
 *  - size(): `HEAD` Content-Length (a `GET` of byte 0 when a HEAD has none: Apache sends no Content-Length
 *    on a HEAD of an empty file).
 *  - truncate(size), alone (after the writes under way, before later ones): growing writes one zero byte at
 *    size-1 (any remote); to 0, a whole `PUT` of an empty body (any remote); shrinking to 0 < size < current
 *    needs capabilities.truncate (a filemirror remote): byte size-1 is read and written back with
 *    `Content-Range: bytes size-1-size-1/size`, then the size is checked with a HEAD. Elsewhere it throws
 *    ENOTSUP, and so does a remote that answered the resizing PUT without shrinking (capabilities.truncate
 *    turns false): the engine replaces the file whole instead.
 *  - sync(): nothing to do (each PUT is acknowledged by the remote, as durable as the remote makes it);
 *    close(): aborts the requests in flight (ECANCELED) and frees the agent; every call after it is EBADF.
 *
 * Capabilities are detected once, by open(), from the HEAD of the URL: a filemirror remote answers every data
 * request with an `Operation-Id` header; it takes a `Content-Range` complete length as the new size, and
 * answers each PUT with the new strong ETag. Other remotes get neither: Apache 2.4 mod_dav (`Server:
 * Apache/…`) answers a ranged PUT 204 without an ETag, ignores the complete length (no shrink, no growth),
 * and its ETags are weak for a second after each change. The options `truncate` and `ifMatch` force either way.
 *
 * ETags across trouble. A request that failed without an answer (refused, reset, timed out) or with a 5xx
 * means contact was lost: the remote may have restarted (a filemirror's ETags all change when it does) or
 * taken part of a write, so the next write first reads the ETag again with a HEAD. A write of this file that
 * failed so may also still land later and move the ETag: for two timeouts after it, a 412 reads the ETag
 * again and tries again (3 tries in all). A change by another writer within these windows goes unnoticed.
 *
 * Errors are HttpFileError: `code` (HttpFileErrorCodes), `retryable`, `status`, `method`, `url`, `cause`.
 * Memory stays bounded by the buffers given: bodies are copied into the caller's buffer as they arrive, PUT
 * bodies are the caller's buffer, error bodies are kept to 4 KiB. The token never appears in messages.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http'
import https from 'node:https'
import type { ReplicaFile, ReplicaFileOpener } from '../replica-file.js'

/** Codes an HttpFile error carries (`err.code`), with `err.retryable` telling whether trying again later may work. */
export const HttpFileErrorCodes = {
  /** Retryable: the remote did not answer (connection refused or reset, no answer in time, a reply cut short) or answered 5xx, 408, 423, 429. */
  unavailable: 'EREMOTE_UNAVAILABLE',
  /** 401, 403: the bearer token is missing or wrong. */
  forbidden: 'EACCES',
  /** 404, 410: no such volume (filemirror) or file (mod_dav); on create, a missing parent collection (409). */
  notFound: 'ENOENT',
  /** 412 on a write: another writer changed the remote since the ETag this file holds. */
  changed: 'ECHANGED',
  /** The remote cannot do this: shrinking without capabilities.truncate, or a 405/501 for the method. */
  notSupported: 'ENOTSUP',
  /** 507: the remote's storage is full. */
  noSpace: 'ENOSPC',
  /** 413: the write reaches past what the remote takes. */
  tooLarge: 'EFBIG',
  /** Any other refusal (3xx, 400, 409…): `status` and the remote's problem detail say which. */
  rejected: 'EREMOTE_REJECTED',
  /** An https remote whose certificate is not trusted (self-signed without `tls.ca`, expired, another name): not retryable. */
  untrusted: 'EREMOTE_UNTRUSTED',
  /** The reply does not make sense for the request (a 206 for other bytes, more bytes than asked). */
  protocol: 'EPROTO',
  /** A negative or unsafe offset or size. */
  invalid: 'EINVAL',
  /** The file is closed. */
  closed: 'EBADF',
  /** The request was in flight when the file was closed. */
  canceled: 'ECANCELED',
} as const

export type HttpFileErrorCode = (typeof HttpFileErrorCodes)[keyof typeof HttpFileErrorCodes]

/** What went wrong with a request to the remote: a code the engine can act on, and whether to retry. */
export class HttpFileError extends Error {
  override readonly name = 'HttpFileError'
  readonly code: HttpFileErrorCode
  readonly retryable: boolean
  /** The remote's HTTP status, when it answered. */
  readonly status?: number
  readonly method?: string
  /** The remote's URL (without credentials). */
  readonly url: string
  /** From a Retry-After header (429, 503), in milliseconds. */
  readonly retryAfterMs?: number

  constructor(
    code: HttpFileErrorCode,
    message: string,
    details: { url: string; retryable?: boolean; status?: number; method?: string; cause?: unknown; retryAfterMs?: number },
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.code = code
    this.retryable = details.retryable ?? false
    this.url = details.url
    if (details.status !== undefined) this.status = details.status
    if (details.method !== undefined) this.method = details.method
    if (details.retryAfterMs !== undefined) this.retryAfterMs = details.retryAfterMs
  }
}

export const isRetryable = (err: unknown): boolean => err instanceof HttpFileError && err.retryable

export interface HttpFileOptions {
  /** Sent as `Authorization: Bearer <token>` on every request. */
  token?: string
  /** Longest a request may take, from sending it to the last byte of its reply. Default 30 000 ms. */
  timeoutMs?: number
  /** Longest reachable() waits for its HEAD. Default 2 000 ms. */
  reachableTimeoutMs?: number
  /** The write size the engine should aim for (bytes per PUT). Default 1 MiB. */
  preferredWriteUnit?: number
  /** Connections kept to the remote at most. Default 8. */
  maxSockets?: number
  /** An idle kept-alive connection is closed after this long: below the remote's own keep-alive timeout (Apache's default is 5 s). Default 4 000 ms. */
  keepAliveIdleMs?: number
  /** When the URL answers 404 at open, create it with an empty `PUT` (`If-None-Match: *`): a file under mod_dav; a filemirror volume cannot be made this way (still ENOENT). Default false. */
  create?: boolean
  /** Forces capabilities.truncate (shrinking by Content-Range complete length) instead of detecting it. */
  truncate?: boolean
  /** false: never send If-Match. true: send it where a filemirror remote was not detected too (when the HEAD at open gives a strong ETag). Default: detected. */
  ifMatch?: boolean
  /** For https URLs: a CA to trust, a client certificate… */
  tls?: Pick<https.AgentOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized' | 'servername'>
}

export interface HttpFileCapabilities {
  /** Shrinks to any size (a filemirror remote); without it, truncate throws ENOTSUP when shrinking to 0 < size < current. */
  truncate: boolean
  /** Writes carry If-Match with the ETag of the remote's last reply, so another writer is noticed (412 → ECHANGED). Writes then run one at a time. */
  ifMatch: boolean
}

const DEFAULTS = { timeoutMs: 30_000, reachableTimeoutMs: 2_000, preferredWriteUnit: 1 << 20, maxSockets: 8, keepAliveIdleMs: 4_000 }
const ERROR_BODY_BYTES = 4096
/** After a write that failed without an answer, a 412 is taken for that write landing late for this many timeouts… */
const ORPHAN_WINDOW_TIMEOUTS = 2
/** …and the write is tried this many times in all before it is ECHANGED. */
const ORPHAN_RETRIES = 3
const STRONG_ETAG = /^"[\x21\x23-\x7e\x80-\xff]*"$/
/** Codes of a TLS handshake that refused the remote's certificate (OpenSSL's X509 ones, and node's). */
const TLS_FAILURE = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY|DECRYPT)|^ERR_TLS_|^ERR_SSL_/
const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/i
const UNSATISFIED_RANGE = /^bytes \*\/(\d+)$/i

type Method = 'GET' | 'HEAD' | 'PUT'

interface Exchange<T> {
  method: Method
  headers?: OutgoingHttpHeaders
  body?: Buffer
  timeoutMs?: number
  /** Reads the reply to its end (or destroys it); its result is the exchange's. Runs within the timeout. */
  handle: (res: IncomingMessage) => Promise<T>
}

/** Reads and drops a reply body, keeping its first bytes (for the message of an error). */
async function drain(res: IncomingMessage, keep = 0): Promise<Buffer> {
  const kept: Buffer[] = []
  let n = 0
  for await (const chunk of res as AsyncIterable<Buffer>) {
    if (n < keep) {
      const part = chunk.subarray(0, keep - n)
      kept.push(part)
      n += part.length
    }
  }
  return Buffer.concat(kept)
}

function headerOf(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value.join(', ') : value
}

function safeInteger(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d+$/.test(text.trim())) return undefined
  const n = Number(text)
  return Number.isSafeInteger(n) ? n : undefined
}

/** Retry-After in milliseconds: delay-seconds or an HTTP-date. */
function retryAfterOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const seconds = safeInteger(value)
  if (seconds !== undefined) return seconds * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now())
}

/** The URL as it may be shown: without a password. */
function displayUrl(url: URL): string {
  if (!url.password) return url.href
  const shown = new URL(url.href)
  shown.password = '***'
  return shown.href
}

/** Shared and exclusive turns, first come first served: writes share (or not, under If-Match), a truncate is alone. */
class Gate {
  private active = 0 // > 0: shared holders; -1: one exclusive holder
  private readonly queue: Array<{ exclusive: boolean; go: () => void }> = []

  async run<T>(exclusive: boolean, work: () => Promise<T>): Promise<T> {
    await this.enter(exclusive)
    try {
      return await work()
    } finally {
      this.leave()
    }
  }

  private fits(exclusive: boolean): boolean {
    return exclusive ? this.active === 0 : this.active >= 0
  }

  private enter(exclusive: boolean): Promise<void> {
    if (this.queue.length === 0 && this.fits(exclusive)) {
      this.active = exclusive ? -1 : this.active + 1
      return Promise.resolve()
    }
    return new Promise((go) => this.queue.push({ exclusive, go }))
  }

  private leave(): void {
    this.active = this.active === -1 ? 0 : this.active - 1
    while (this.queue.length > 0 && this.fits(this.queue[0].exclusive)) {
      const next = this.queue.shift()!
      this.active = next.exclusive ? -1 : this.active + 1
      next.go()
      if (next.exclusive) break
    }
  }
}

export class HttpFile implements ReplicaFile {
  /** The remote's URL, as errors and logs may show it. */
  readonly path: string
  /** Bytes per PUT the engine should aim for. */
  readonly preferredWriteUnit: number

  private readonly url: URL
  private readonly transport: typeof http | typeof https
  private readonly agent: http.Agent
  private readonly headers: OutgoingHttpHeaders
  private readonly timeoutMs: number
  private readonly reachableTimeoutMs: number
  private readonly caps: HttpFileCapabilities = { truncate: false, ifMatch: false }
  private readonly gate = new Gate()
  /** Aborts for the requests in flight (close() calls each). */
  private readonly inflight = new Set<(err: Error) => void>()
  private closed = false
  /** The strong ETag of the remote's content as this file last left it (under If-Match). */
  private knownEtag: string | undefined
  /** A request failed without an answer (or with a 5xx): the remote may have restarted or taken part of a write, so the next write first reads its ETag again. */
  private lostContact = false
  /**
   * Until then, writes of this file that failed without an answer (or with a 5xx) may still land on the remote and
   * move its ETag: a 412 meanwhile reads the ETag again and tries again (ORPHAN_RETRIES times at most).
   */
  private orphansUntil = 0
  /** The 412 that showed another writer: every later write is refused with it, until the remote is opened again. */
  private conflict: HttpFileError | undefined
  private remoteServer: string | undefined
  private remoteIsFilemirror = false

  private constructor(
    url: string | URL,
    private readonly options: HttpFileOptions = {},
  ) {
    const parsed = URL.canParse(String(url)) ? new URL(url) : undefined
    if (parsed?.protocol !== 'http:' && parsed?.protocol !== 'https:') {
      const got = parsed ? `a ${parsed.protocol} one` : 'one that does not parse'
      throw new HttpFileError('EINVAL', `HttpFile takes an http: or https: URL, not ${got}`, { url: parsed ? displayUrl(parsed) : '' })
    }
    this.url = parsed
    this.path = displayUrl(this.url)
    this.timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs
    this.reachableTimeoutMs = options.reachableTimeoutMs ?? DEFAULTS.reachableTimeoutMs
    this.preferredWriteUnit = options.preferredWriteUnit ?? DEFAULTS.preferredWriteUnit
    const agentOptions: https.AgentOptions = {
      keepAlive: true,
      maxSockets: options.maxSockets ?? DEFAULTS.maxSockets,
      // Node destroys a *free* socket at this idle timeout (one in use only gets a 'timeout' event, ignored here).
      timeout: options.keepAliveIdleMs ?? DEFAULTS.keepAliveIdleMs,
      scheduling: 'lifo',
    }
    if (this.url.protocol === 'https:') {
      this.transport = https
      this.agent = new https.Agent({ ...agentOptions, ...options.tls })
    } else {
      this.transport = http
      this.agent = new http.Agent(agentOptions)
    }
    // Ranges must be of the bytes themselves: no content coding.
    this.headers = { 'user-agent': 'filemirror-httpfile', 'accept-encoding': 'identity' }
    if (options.token !== undefined) this.headers.authorization = `Bearer ${options.token}`
  }

  /** Opens the remote at `url`: a HEAD (creating it first with `create`), then the capabilities. Fails with an HttpFileError. */
  static async open(url: string | URL, options: HttpFileOptions = {}): Promise<HttpFile> {
    const file = new HttpFile(url, options)
    try {
      await file.probe()
    } catch (err) {
      await file.close()
      throw err
    }
    return file
  }

  /** What the remote can do, as detected by open() (or forced by the options). A copy. */
  get capabilities(): HttpFileCapabilities {
    return { ...this.caps }
  }

  /** The remote's `Server` header at open, and whether it was recognised as a filemirror volume. */
  get remote(): { server: string | undefined; filemirror: boolean } {
    return { server: this.remoteServer, filemirror: this.remoteIsFilemirror }
  }

  /** The ETag the next write's If-Match will carry (undefined without capabilities.ifMatch). */
  get etag(): string | undefined {
    return this.knownEtag
  }

  private async probe(): Promise<void> {
    let head: IncomingHttpHeaders
    try {
      head = await this.head()
    } catch (err) {
      if (!(this.options.create && err instanceof HttpFileError && err.code === 'ENOENT')) throw err
      await this.createEmpty()
      head = await this.head()
    }
    this.remoteServer = headerOf(head, 'server')
    this.remoteIsFilemirror = headerOf(head, 'operation-id') !== undefined
    this.caps.truncate = this.options.truncate ?? this.remoteIsFilemirror
    const etag = headerOf(head, 'etag')
    const strong = etag !== undefined && STRONG_ETAG.test(etag)
    this.caps.ifMatch = strong && (this.options.ifMatch ?? this.remoteIsFilemirror)
    this.knownEtag = this.caps.ifMatch ? etag : undefined
  }

  /** An empty PUT that only creates: a remote where the URL appeared meanwhile answers 412, which is fine. */
  private async createEmpty(): Promise<void> {
    await this.send({
      method: 'PUT',
      headers: { 'content-length': 0, 'if-none-match': '*', 'content-type': 'application/octet-stream' },
      body: Buffer.alloc(0),
      handle: async (res) => {
        const status = res.statusCode ?? 0
        if ((status >= 200 && status < 300) || status === 412) return void (await drain(res))
        // WebDAV answers 409 to a PUT whose parent collection is missing (RFC 4918 §9.7.1).
        if (status === 409) {
          await drain(res)
          throw new HttpFileError('ENOENT', `${this.path}: cannot create it: its parent collection does not exist (409 Conflict)`, { url: this.path, status, method: 'PUT' })
        }
        throw await this.statusError('PUT', res)
      },
    })
  }

  // ------------------------------------------------------------------ ReplicaFile

  async read(buffer: Buffer, offset: number): Promise<number> {
    this.checkPosition('read', offset)
    if (this.closed) throw this.closedError('read')
    let done = 0
    try {
      // A remote may send fewer bytes than asked short of its end: ask again for the rest, until the end or a 416.
      while (done < buffer.length) {
        const { bytes, end } = await this.readOnce(buffer.subarray(done), offset + done)
        done += bytes
        if (end || bytes === 0) break
      }
    } catch (err) {
      throw this.noted(err)
    }
    return done
  }

  /** One ranged GET into `buffer`: the bytes copied, and whether they reach the end of the file. */
  private readOnce(buffer: Buffer, offset: number): Promise<{ bytes: number; end: boolean }> {
    const last = offset + buffer.length - 1
    return this.send({
      method: 'GET',
      headers: { range: `bytes=${offset}-${last}` },
      handle: async (res) => {
        const status = res.statusCode ?? 0
        if (status === 416) {
          await drain(res)
          return { bytes: 0, end: true }
        }
        if (status === 206) return await this.copyPartial(res, buffer, offset, last)
        if (status === 200) return { bytes: await this.copyFromWhole(res, buffer, offset), end: true }
        throw await this.statusError('GET', res)
      },
    })
  }

  async write(buffer: Buffer, offset: number): Promise<number> {
    this.checkPosition('write', offset)
    if (this.closed) throw this.closedError('write')
    if (buffer.length === 0) return 0
    return this.gate.run(this.caps.ifMatch, async () => {
      await this.putRange(buffer, offset, '*')
      return buffer.length
    })
  }

  async size(): Promise<number> {
    try {
      const head = await this.head()
      const length = safeInteger(headerOf(head, 'content-length'))
      return length ?? (await this.sizeByRange())
    } catch (err) {
      throw this.noted(err)
    }
  }

  async truncate(size: number): Promise<void> {
    this.checkPosition('truncate', size)
    if (this.closed) throw this.closedError('truncate')
    return this.gate.run(true, async () => {
      const current = await this.size()
      if (size === current) return
      if (size === 0) return this.putWhole(Buffer.alloc(0))
      // Growing: the byte at size-1 lies past the old end, so it is a zero either way.
      if (size > current) return this.putRange(Buffer.alloc(1), size - 1, this.caps.truncate ? size : '*')
      if (!this.caps.truncate) throw this.cannotShrink(current, size)
      const last = Buffer.alloc(1)
      if ((await this.read(last, size - 1)) !== 1) throw new HttpFileError('EPROTO', `${this.path}: byte ${size - 1} of a ${current}-byte file did not read back`, { url: this.path })
      await this.putRange(last, size - 1, size)
      // A remote that takes the complete length as the size has shrunk; one that ignored it is found out here.
      const now = await this.size()
      if (now !== size) {
        this.caps.truncate = false
        throw this.cannotShrink(now, size, ` (it answered the resizing PUT but is still ${now} bytes)`)
      }
    })
  }

  /** Nothing to do: each PUT was acknowledged by the remote. */
  async sync(): Promise<void> {
    if (this.closed) throw this.closedError('sync')
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const abort of [...this.inflight]) abort(new HttpFileError('ECANCELED', `${this.path}: closed while the request was in flight`, { url: this.path }))
    this.agent.destroy()
  }

  // ------------------------------------------------------------------ remote specifics

  /**
   * Whether the remote answers a HEAD within `timeoutMs` with any status below 500 but 429: it is up, and what it
   * makes of this file (401, 404…) is for the next operation to say, with its non-retryable error. Never throws.
   */
  async reachable(timeoutMs = this.reachableTimeoutMs): Promise<boolean> {
    if (this.closed) return false
    try {
      const up = await this.send({
        method: 'HEAD',
        timeoutMs,
        handle: async (res) => {
          await drain(res)
          const status = res.statusCode ?? 0
          return status < 500 && status !== 429
        },
      })
      if (!up) this.lostContact = true
      return up
    } catch {
      this.lostContact = true
      return false
    }
  }

  // ------------------------------------------------------------------ requests

  private async head(): Promise<IncomingHttpHeaders> {
    return this.send({
      method: 'HEAD',
      handle: async (res) => {
        const status = res.statusCode ?? 0
        if (status < 200 || status >= 300) throw await this.statusError('HEAD', res)
        await drain(res)
        return res.headers
      },
    })
  }

  /** The size from a GET of byte 0, for a remote whose HEAD gives no Content-Length. */
  private sizeByRange(): Promise<number> {
    return this.send({
      method: 'GET',
      headers: { range: 'bytes=0-0' },
      handle: async (res) => {
        const status = res.statusCode ?? 0
        const contentRange = headerOf(res.headers, 'content-range') ?? ''
        let size: number | undefined
        if (status === 206) size = safeInteger(CONTENT_RANGE.exec(contentRange)?.[3])
        else if (status === 416) size = safeInteger(UNSATISFIED_RANGE.exec(contentRange)?.[1])
        else if (status === 200) size = safeInteger(headerOf(res.headers, 'content-length'))
        else throw await this.statusError('GET', res)
        // A 200 would send the whole file: its length is in the head, the body is not needed.
        if (status === 200) res.destroy()
        else await drain(res)
        if (size === undefined) throw new HttpFileError('EPROTO', `${this.path}: the remote does not say how large the file is (${status}, Content-Range ${JSON.stringify(contentRange)})`, { url: this.path, status })
        return size
      },
    })
  }

  private async copyPartial(res: IncomingMessage, buffer: Buffer, offset: number, last: number): Promise<{ bytes: number; end: boolean }> {
    const contentRange = headerOf(res.headers, 'content-range') ?? ''
    const m = CONTENT_RANGE.exec(contentRange)
    const first = safeInteger(m?.[1])
    const end = safeInteger(m?.[2])
    if (first !== offset || end === undefined || end < first || end > last) {
      res.destroy()
      throw new HttpFileError('EPROTO', `${this.path}: asked for bytes ${offset}-${last}, the remote sent Content-Range ${JSON.stringify(contentRange)}`, { url: this.path, status: 206, method: 'GET' })
    }
    const expected = end - first + 1
    let n = 0
    for await (const chunk of res as AsyncIterable<Buffer>) {
      if (n + chunk.length > expected) throw new HttpFileError('EPROTO', `${this.path}: the remote sent more than the ${expected} bytes of its Content-Range`, { url: this.path, status: 206, method: 'GET' })
      chunk.copy(buffer, n)
      n += chunk.length
    }
    if (n !== expected) throw this.unavailable('GET', `the reply ended after ${n} of the ${expected} bytes of its Content-Range`)
    // "bytes a-b/*" does not say where the file ends: the next request will.
    const total = safeInteger(m?.[3])
    return { bytes: n, end: total !== undefined && end >= total - 1 }
  }

  /** A 200 to a ranged GET: the whole file comes; keep bytes [offset, offset + buffer.length), drop the rest unread. */
  private async copyFromWhole(res: IncomingMessage, buffer: Buffer, offset: number): Promise<number> {
    const declared = safeInteger(headerOf(res.headers, 'content-length'))
    let at = 0
    let n = 0
    for await (const chunk of res as AsyncIterable<Buffer>) {
      const from = Math.max(offset - at, 0)
      if (from < chunk.length) {
        const take = Math.min(chunk.length - from, buffer.length - n)
        chunk.copy(buffer, n, from, from + take)
        n += take
      }
      at += chunk.length
      if (n === buffer.length) break // leaving the loop destroys the reply (and its connection)
    }
    if (n < buffer.length && declared !== undefined && at < declared) throw this.unavailable('GET', `the reply ended after ${at} of its ${declared} bytes`)
    return n
  }

  private putRange(body: Buffer, first: number, complete: number | '*'): Promise<void> {
    return this.put({ 'content-range': `bytes ${first}-${first + body.length - 1}/${complete}` }, body)
  }

  /** A whole replace (no Content-Range): the content becomes `body`. */
  private putWhole(body: Buffer): Promise<void> {
    return this.put({}, body)
  }

  private async put(headers: OutgoingHttpHeaders, body: Buffer): Promise<void> {
    if (this.conflict) throw new HttpFileError('ECHANGED', this.conflict.message, { url: this.path, status: 412, method: 'PUT', cause: this.conflict })
    for (let attempt = 1; ; attempt++) {
      try {
        const ifMatch = await this.precondition()
        await this.send({
          method: 'PUT',
          headers: { 'content-type': 'application/octet-stream', 'content-length': body.length, ...headers, ...(ifMatch === undefined ? {} : { 'if-match': ifMatch }) },
          body,
          handle: async (res) => {
            const status = res.statusCode ?? 0
            if (status < 200 || status >= 300) throw await this.statusError('PUT', res, ifMatch)
            await drain(res)
            this.learnEtag(headerOf(res.headers, 'etag'))
          },
        })
        return
      } catch (err) {
        const code = err instanceof HttpFileError ? err.code : undefined
        // A write of ours whose outcome is unknown may still be landing and move the ETag: read it again, try again.
        if (code === 'ECHANGED' && attempt < ORPHAN_RETRIES && performance.now() < this.orphansUntil) {
          this.lostContact = true
          continue
        }
        // No answer, or a 5xx: the write may have landed (now or later), or not at all.
        if (code === 'EREMOTE_UNAVAILABLE') this.orphansUntil = performance.now() + ORPHAN_WINDOW_TIMEOUTS * this.timeoutMs
        throw this.noted(err)
      }
    }
  }

  /** The If-Match for the next write: the ETag this file left, read again first when contact was lost meanwhile. */
  private async precondition(): Promise<string | undefined> {
    if (!this.caps.ifMatch) return undefined
    if (this.lostContact || this.knownEtag === undefined) {
      const etag = headerOf(await this.head(), 'etag')
      this.lostContact = false
      this.learnEtag(etag)
    }
    return this.knownEtag
  }

  /** Takes the ETag of a reply to this file's own write; a remote that gives no strong one ends If-Match for this file. */
  private learnEtag(etag: string | undefined): void {
    if (!this.caps.ifMatch) return
    if (etag !== undefined && STRONG_ETAG.test(etag)) this.knownEtag = etag
    else {
      this.knownEtag = undefined
      this.caps.ifMatch = false
    }
  }

  /** Notes what a failure says about the remote (contact lost, another writer) and passes it on. */
  private noted(err: unknown): unknown {
    if (err instanceof HttpFileError && err.code === 'EREMOTE_UNAVAILABLE') this.lostContact = true
    if (err instanceof HttpFileError && err.code === 'ECHANGED') this.conflict ??= err
    return err
  }

  /**
   * One request and its reply, within the timeout; aborted by close(). A GET or HEAD that finds its kept-alive
   * connection closed by the remote before any reply (the remote's idle timeout raced the reuse) is sent once more.
   */
  private send<T>(x: Exchange<T>, resent = false): Promise<T> {
    if (this.closed) return Promise.reject(this.closedError(x.method))
    const timeoutMs = x.timeoutMs ?? this.timeoutMs
    return new Promise<T>((resolve, reject) => {
      let done = false
      let answered = false
      const req = this.transport.request(this.url, { method: x.method, agent: this.agent, headers: { ...this.headers, ...x.headers } })
      const end = (): boolean => {
        if (done) return false
        done = true
        clearTimeout(timer)
        this.inflight.delete(abort)
        return true
      }
      const abort = (err: Error) => {
        if (!end()) return
        req.destroy()
        reject(err)
      }
      const timer = setTimeout(
        () => abort(this.unavailable(x.method, `no complete answer within ${timeoutMs} ms`, Object.assign(new Error(`timed out after ${timeoutMs} ms`), { code: 'ETIMEDOUT' }))),
        timeoutMs,
      )
      this.inflight.add(abort)
      req.on('error', (err: NodeJS.ErrnoException) => {
        // Once answered, the reply's own stream reports a broken connection to the handler.
        if (answered || done) return
        if (!resent && x.method !== 'PUT' && req.reusedSocket && err.code === 'ECONNRESET') {
          end()
          this.send(x, true).then(resolve, reject)
          return
        }
        abort(
          TLS_FAILURE.test(err.code ?? '')
            ? new HttpFileError('EREMOTE_UNTRUSTED', `${x.method} ${this.path}: the remote's TLS certificate is not trusted: ${describeNetworkError(err)}`, { url: this.path, method: x.method, cause: err })
            : this.unavailable(x.method, describeNetworkError(err), err),
        )
      })
      req.on('response', (res) => {
        answered = true
        // Errors of the body reach the handler's reads; this keeps an unread one from going unhandled.
        res.on('error', () => {})
        x.handle(res).then(
          (value) => end() && resolve(value),
          (err: unknown) => abort(err instanceof HttpFileError ? err : this.unavailable(x.method, `the reply was cut short: ${describeNetworkError(err as NodeJS.ErrnoException)}`, err)),
        )
      })
      req.end(x.body)
    })
  }

  // ------------------------------------------------------------------ errors

  private unavailable(method: string, what: string, cause?: unknown): HttpFileError {
    return new HttpFileError('EREMOTE_UNAVAILABLE', `${method} ${this.path}: remote unavailable: ${what}`, { url: this.path, method, retryable: true, cause })
  }

  private closedError(method: string): HttpFileError {
    return new HttpFileError('EBADF', `${this.path}: file is closed (${method})`, { url: this.path, method })
  }

  private cannotShrink(current: number, size: number, why = ''): HttpFileError {
    return new HttpFileError(
      'ENOTSUP',
      `${this.path}: the remote cannot shrink a file by a ranged PUT (${current} to ${size} bytes)${why}; replace it whole instead`,
      { url: this.path, method: 'PUT' },
    )
  }

  private checkPosition(op: string, value: number): void {
    if (!Number.isSafeInteger(value) || value < 0) throw new HttpFileError('EINVAL', `${this.path}: ${op} at ${value}: not a non-negative integer`, { url: this.path })
  }

  /** The error for a reply with status `res.statusCode`, naming what the remote said (its problem detail, when JSON). */
  private async statusError(method: Method, res: IncomingMessage, ifMatch?: string): Promise<HttpFileError> {
    const status = res.statusCode ?? 0
    const body = method === 'HEAD' ? Buffer.alloc(0) : await drain(res, ERROR_BODY_BYTES).catch(() => Buffer.alloc(0))
    let said = `${status} ${res.statusMessage ?? ''}`.trim()
    if (/json/i.test(headerOf(res.headers, 'content-type') ?? '')) {
      try {
        const problem = JSON.parse(body.toString('utf8')) as { detail?: unknown; title?: unknown }
        const detail = typeof problem.detail === 'string' ? problem.detail : typeof problem.title === 'string' ? problem.title : undefined
        if (detail) said += `: ${detail.slice(0, 300)}`
      } catch {
        // cut at 4 KiB, or not JSON after all: the status says enough
      }
    }
    const where = `${method} ${this.path}`
    const details = { url: this.path, status, method }
    if (status === 401 || status === 403) {
      // Without a token a 403 is the remote's own permissions (an Apache directory its workers cannot reach): pointing at a token would mislead.
      if (this.headers.authorization === undefined) return new HttpFileError('EACCES', `${where}: the remote refused access (${said}) and no bearer token was sent: give the replica a tokenEnv if the remote needs one, else check the remote's permissions`, details)
      return new HttpFileError('EACCES', `${where}: the remote refused the credentials (${said}): check the bearer token`, details)
    }
    if (status === 404 || status === 410) return new HttpFileError('ENOENT', `${where}: no such volume or file on the remote (${said})`, details)
    if (status === 412 && ifMatch !== undefined) {
      return new HttpFileError('ECHANGED', `${where}: another writer changed the remote since ETag ${ifMatch} (${said}); it must be copied whole again`, details)
    }
    if (status === 405 || status === 501) return new HttpFileError('ENOTSUP', `${where}: the remote does not take this request (${said})`, details)
    if (status === 413) return new HttpFileError('EFBIG', `${where}: the remote refuses a write this large or this far (${said})`, details)
    if (status === 507) return new HttpFileError('ENOSPC', `${where}: the remote's storage is full (${said})`, details)
    if (status >= 500 || status === 408 || status === 423 || status === 429) {
      return new HttpFileError('EREMOTE_UNAVAILABLE', `${where}: remote unavailable (${said})`, { ...details, retryable: true, retryAfterMs: retryAfterOf(headerOf(res.headers, 'retry-after')) })
    }
    const location = headerOf(res.headers, 'location')
    return new HttpFileError('EREMOTE_REJECTED', `${where}: the remote refused the request (${said}${location ? `, Location ${location}` : ''})`, details)
  }
}

function describeNetworkError(err: NodeJS.ErrnoException): string {
  return err.code ? `${err.message} (${err.code})` : err.message
}

/** An opener for the engine: the "path" is the remote's URL. */
export function httpFileOpener(options: HttpFileOptions = {}): ReplicaFileOpener {
  return (url) => HttpFile.open(url, options)
}
