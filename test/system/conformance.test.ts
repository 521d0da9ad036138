// HTTP-level conformance, case by case, each citing its section:
//   RFC 9110 (HTTP Semantics): ranges §14, conditional requests §13, status codes §15, HEAD §9.3.2,
//   ETag §8.8.3, Content-Length §8.6, Date §6.6.1, URI length §4.1;
//   RFC 7240 (Prefer): §2, §3, §4.3 wait;
//   RFC 9457 (Problem Details): §3 members, §4.2.1 about:blank.
// The pure parsers behind these already have case and property tests of their own (test/byte-range,
// content-range, entity-tag, prefer, multipart-byteranges); this file checks what goes over the wire.
// Cases that once failed (HEAD beside GET, 414 for valid names, framework errors as plain JSON) stay as regressions.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import {
  assertProblem,
  createVolume,
  formData,
  getData,
  json,
  listen,
  makeApp,
  parseByteranges,
  putData,
} from '../helpers/app.js'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { pattern } from '../helpers/pattern.js'

// ------------------------------------------------------------------------------------------ helpers

/** Status phrases of RFC 9110 §15 (and RFC 6585 §5 for 431): an about:blank problem's title (RFC 9457 §4.2.1). */
const PHRASES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  409: 'Conflict',
  411: 'Length Required',
  412: 'Precondition Failed',
  413: 'Content Too Large',
  414: 'URI Too Long',
  415: 'Unsupported Media Type',
  416: 'Range Not Satisfiable',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
}

const STRONG_ETAG = /^"[\x21\x23-\x7e]*"$/

interface Mirror {
  app: FastifyInstance
  dataDir: string
  /** Both replica files, sync first. */
  files: () => Promise<Buffer[]>
  etag: () => Promise<string>
}

/** Volume `v` over a sync replica and an async one, holding `bytes` on both when given. */
async function mirror(t: Test, bytes?: Buffer, env: Record<string, string> = {}, faults?: FaultInjector): Promise<Mirror> {
  const made = await makeApp(t, env, faults ? { openFile: faults.opener } : {})
  await createVolume(t, made.app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'behind', path: 'behind.bin', mode: 'async' }])
  if (bytes) t.equal((await putData(made.app, 'v', bytes, { prefer: 'wait=30' })).statusCode, 200, `${bytes.length} bytes on both replicas`)
  return {
    ...made,
    files: () => Promise.all([readFile(join(made.dataDir, 'fast.bin')), readFile(join(made.dataDir, 'behind.bin'))]),
    etag: async () => json(await made.app.inject({ method: 'GET', url: '/volumes/v' })).etag,
  }
}

function head(app: FastifyInstance, headers: Record<string, string> = {}, name = 'v') {
  return app.inject({ method: 'HEAD', url: `/volumes/${name}/data`, headers })
}

/** RFC 9457 §3: a problem reply, checked beyond assertProblem: a URI-reference type, the status phrase for about:blank. */
function conformingProblem(t: Test, res: LightMyRequestResponse, status: number, what: string, isHead = false): any {
  if (isHead) {
    t.equal(res.statusCode, status, `${what}: status`)
    t.match(String(res.headers['content-type']), /^application\/problem\+json/, `${what}: HEAD still says application/problem+json (RFC 9110 §9.3.2)`)
    t.equal(res.rawPayload.length, 0, `${what}: HEAD has no body`)
    return {}
  }
  const body = assertProblem(t, res, status, what)
  t.ok(typeof body.type === 'string' && isUriReference(body.type), `${what}: type is a URI reference (RFC 9457 §3.1.1): ${body.type}`)
  if (body.type === 'about:blank') t.equal(body.title, PHRASES[status], `${what}: an about:blank title is the status phrase (RFC 9457 §4.2.1)`)
  if (body.instance !== undefined) t.equal(typeof body.instance, 'string', `${what}: instance is a string (RFC 9457 §3.1.5)`)
  return body
}

function isUriReference(value: string): boolean {
  try {
    new URL(value, 'https://base.invalid/')
    return !/[\s"<>\\^`{|}]/.test(value)
  } catch {
    return false
  }
}

/** The bytes a 206 selected, whether it came as one part or as multipart/byteranges. */
function partsOf(res: LightMyRequestResponse): Array<{ start: number; end: number; data: Buffer }> {
  const type = String(res.headers['content-type'])
  if (type.startsWith('multipart/byteranges')) return parseByteranges(res.rawPayload, type)
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(res.headers['content-range']))
  if (!m) throw new Error(`a single-part 206 without a valid Content-Range: ${res.headers['content-range']}`)
  return [{ start: Number(m[1]), end: Number(m[2]), data: res.rawPayload }]
}

/** Headers that differ between two replies to the same request by nature (per-request ids, the time, the boundary). */
function stableHeaders(headers: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(headers)) {
    if (['operation-id', 'x-request-id', 'date', 'connection', 'keep-alive'].includes(k)) continue
    out[k] = k === 'content-type' ? String(v).replace(/boundary=[^;]+/, 'boundary=*') : v
  }
  return out
}

interface RawReply {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
}

function httpGet(url: string, method = 'GET', headers: Record<string, string> = {}): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** Writes raw bytes to a socket and collects everything the server sends until it closes (or `idleMs` of silence). */
function rawExchange(base: string, data: string | Buffer, idleMs = 500): Promise<Buffer> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    const socket = connect(Number(port), hostname)
    let timer: NodeJS.Timeout | undefined
    const finish = () => {
      clearTimeout(timer)
      socket.destroy()
      resolve(Buffer.concat(chunks))
    }
    const arm = () => {
      clearTimeout(timer)
      timer = setTimeout(finish, idleMs)
    }
    socket.on('connect', () => {
      socket.write(data)
      arm()
    })
    socket.on('data', (d) => {
      chunks.push(d)
      arm()
    })
    socket.on('error', finish)
    socket.on('close', finish)
  })
}

/** Splits a raw HTTP/1.1 reply into its status, headers (lower-cased) and what follows the head. */
function parseRaw(raw: Buffer): { status: number; headers: Record<string, string>; rest: Buffer } {
  const end = raw.indexOf('\r\n\r\n')
  if (end < 0) return { status: 0, headers: {}, rest: raw }
  const lines = raw.subarray(0, end).toString('latin1').split('\r\n')
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1] ?? 0)
  const headers: Record<string, string> = {}
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':')
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim()
  }
  return { status, headers, rest: raw.subarray(end + 4) }
}

// RFC 9110 §14.1.2's examples use a 10000-byte representation.
const TEN_K = randomBytes(10_000)

// ------------------------------------------------------------------------------------------ §14 ranges

t.test('RFC 9110 §14.1.2: the byte-range examples, over the wire, on a 10000-byte volume', async (t) => {
  const { app } = await mirror(t, TEN_K)
  const single: Array<[string, number, number, string]> = [
    ['bytes=0-499', 0, 499, '§14.1.2 the first 500 bytes'],
    ['bytes=500-999', 500, 999, '§14.1.2 the second 500 bytes'],
    ['bytes=-500', 9500, 9999, '§14.1.2 the final 500 bytes (suffix range)'],
    ['bytes=9500-', 9500, 9999, '§14.1.2 the final 500 bytes (open-ended range)'],
    ['bytes=-20000', 0, 9999, '§14.1.2 a suffix longer than the representation selects all of it'],
    ['bytes=9990-20000', 9990, 9999, '§14.1.2 a last-pos past the end is taken as length-1'],
    ['bytes=0-99999999999999999999999', 0, 9999, '§14.1.2 a huge last-pos is clamped, exactly'],
    ['Bytes=0-0', 0, 0, '§14.1 the range unit is case-insensitive'],
    ['bytes=0-0', 0, 0, '§14.1.2 the first byte'],
  ]
  for (const [range, start, end, why] of single) {
    const res = await getData(app, 'v', { range })
    t.equal(res.statusCode, 206, `${why} (${range}): 206`)
    t.equal(res.headers['content-range'], `bytes ${start}-${end}/10000`, `${why}: Content-Range`)
    t.equal(Number(res.headers['content-length']), end - start + 1, `${why}: Content-Length is the range's length`)
    t.ok(res.rawPayload.equals(TEN_K.subarray(start, end + 1)), `${why}: the selected bytes`)
  }

  // §14.1.2: "bytes=0-0,-1" is the first and last bytes only: two parts.
  const ends = await getData(app, 'v', { range: 'bytes=0-0,-1' })
  t.equal(ends.statusCode, 206, 'bytes=0-0,-1: 206')
  t.same(partsOf(ends).map((p) => [p.start, p.end, p.data[0]]), [[0, 0, TEN_K[0]], [9999, 9999, TEN_K[9999]]], 'bytes=0-0,-1: the first and the last byte')

  // §14.1.2 adjacent and overlapping examples: a server MAY coalesce (§15.3.7.2); either way bytes 500-999 arrive, right.
  for (const range of ['bytes=500-600,601-999', 'bytes=500-700,601-999']) {
    const res = await getData(app, 'v', { range })
    t.equal(res.statusCode, 206, `${range}: 206`)
    const parts = partsOf(res)
    t.ok(parts.every((p) => p.data.equals(TEN_K.subarray(p.start, p.end + 1))), `${range}: every part holds its bytes`)
    t.equal(Math.min(...parts.map((p) => p.start)), 500, `${range}: from 500`)
    t.equal(Math.max(...parts.map((p) => p.end)), 999, `${range}: to 999`)
  }
})

t.test('RFC 9110 §14.2: an invalid Range, or one in an unknown unit, is ignored: 200 with the whole content', async (t) => {
  const { app } = await mirror(t, TEN_K)
  const invalid = [
    'bytes=5-1', // §14.1.1: last-pos < first-pos makes the int-range invalid
    'bytes=0-1,5-1', // one invalid range-spec invalidates the ranges-specifier
    'bytes=abc',
    'bytes=',
    'bytes',
    '=0-1',
    'bytes=--1',
    'bytes=-',
    'bytes=1-2-3',
    'bytes=+1-2',
    'bytes=1.5-2',
    'bytes=0x10-0x20',
    'bytes 0-1', // a Content-Range, not a Range
    'bytes = 0-1', // no whitespace around "=" in ranges-specifier
    'pages=1-2', // §14.2: a range unit the server does not support
    'none',
  ]
  for (const range of invalid) {
    const res = await getData(app, 'v', { range })
    t.equal(res.statusCode, 200, `Range: ${range} is ignored: 200`)
    t.notOk(res.headers['content-range'], `Range: ${range}: no Content-Range`)
    t.ok(res.rawPayload.equals(TEN_K), `Range: ${range}: the whole content`)
  }
})

t.test('RFC 9110 §14.2: a Range on a method other than GET is ignored', async (t) => {
  const { app, files } = await mirror(t, TEN_K)
  // PUT with a Range (not a Content-Range): an ordinary whole write.
  const body = pattern(50, 9)
  const put = await putData(app, 'v', body, { range: 'bytes=0-3', prefer: 'wait=10' })
  t.equal(put.statusCode, 200, 'PUT with Range: 200')
  t.equal(json(put).offset, 0, 'PUT with Range: written from 0')
  t.equal(json(put).length, 50, 'PUT with Range: the whole body, not 4 bytes')
  const [fast] = await files()
  t.ok(fast.equals(body), 'PUT with Range: the content is the body (the volume is 50 bytes)')

  // POST (multipart) with a Range: written at its offset as if there were none.
  const form = formData([{ name: 'offset', value: '10' }, { name: 'f', filename: 'f', data: Buffer.from('posted') }])
  const post = await app.inject({ method: 'POST', url: '/volumes/v/data', headers: { 'content-type': form.contentType, range: 'bytes=0-0', prefer: 'wait=10' }, payload: form.body })
  t.equal(post.statusCode, 200, 'POST with Range: 200')
  t.equal(json(post).offset, 10, 'POST with Range: written at its offset')
  t.equal(json(post).length, 6, 'POST with Range: all of the part')

  // GET of a resource without range support (the status JSON): Range ignored.
  const status = await app.inject({ method: 'GET', url: '/volumes/v', headers: { range: 'bytes=0-3' } })
  t.equal(status.statusCode, 200, 'GET /volumes/v with Range: 200 (range handling is not defined for it)')
  t.equal(json(status).name, 'v', 'the whole status document')
})

t.test('RFC 9110 §14.3: Accept-Ranges: bytes', async (t) => {
  const { app } = await mirror(t, TEN_K)
  t.equal((await getData(app, 'v')).headers['accept-ranges'], 'bytes', 'on a 200')
  t.equal((await getData(app, 'v', { range: 'bytes=0-9' })).headers['accept-ranges'], 'bytes', 'on a 206')
  t.equal((await getData(app, 'v', { range: 'bytes=0-9,20-29' })).headers['accept-ranges'], 'bytes', 'on a multipart 206')
  t.equal((await head(app)).headers['accept-ranges'], 'bytes', 'on a HEAD')
  t.equal((await putData(app, 'v', Buffer.alloc(0), { prefer: 'wait=10' })).statusCode, 200, 'emptied')
  t.equal((await getData(app, 'v')).headers['accept-ranges'], 'bytes', 'on an empty volume')
})

t.test('RFC 9110 §14.4, §15.3.7.1, §15.5.17: Content-Range on 206 and 416', async (t) => {
  const { app } = await mirror(t, TEN_K)
  const one = await getData(app, 'v', { range: 'bytes=100-199' })
  t.equal(one.headers['content-range'], 'bytes 100-199/10000', '206: bytes first-last/complete-length')
  t.equal(one.headers['content-type'], 'application/octet-stream', '§15.3.7.1: a single part carries the representation\'s own Content-Type')
  t.notMatch(String(one.headers['content-type']), /multipart/, '§15.3.7.1: a single range is never sent as multipart')

  // §15.3.7.2: unsatisfiable ranges are left out; one satisfiable range left is a single-part 206.
  const mixed = await getData(app, 'v', { range: 'bytes=20000-,0-4,30000-30010' })
  t.equal(mixed.statusCode, 206, 'one satisfiable range among unsatisfiable ones: 206')
  t.equal(mixed.headers['content-range'], 'bytes 0-4/10000', 'for that range alone')
  t.ok(mixed.rawPayload.equals(TEN_K.subarray(0, 5)))

  for (const range of ['bytes=10000-', 'bytes=10000-10000', 'bytes=20000-,30000-30001', 'bytes=-0', 'bytes=99999999999999999999-']) {
    const res = await getData(app, 'v', { range })
    conformingProblem(t, res, 416, `416 for ${range}`)
    t.equal(res.headers['content-range'], 'bytes */10000', `${range}: Content-Range: bytes */complete-length (§14.4, §15.5.17)`)
  }
  const headed = await head(app, { range: 'bytes=10000-' })
  conformingProblem(t, headed, 416, 'HEAD 416', true)
  t.equal(headed.headers['content-range'], 'bytes */10000', 'HEAD 416: Content-Range: bytes */10000')
})

t.test('RFC 9110 §14.6, §15.3.7.2: multipart/byteranges framing', async (t) => {
  const { app } = await mirror(t, TEN_K)
  const res = await getData(app, 'v', { range: 'bytes=5000-5009,0-9,9990-' })
  t.equal(res.statusCode, 206, '206')
  const type = String(res.headers['content-type'])
  const m = /^multipart\/byteranges; boundary=([0-9A-Za-z'()+_,./:=?-]{1,70})$/.exec(type)
  t.ok(m, `Content-Type: multipart/byteranges with a valid RFC 2046 boundary (${type})`)
  t.notOk(res.headers['content-range'], '§15.3.7.2: no Content-Range in the header section of a multipart reply')
  t.equal(Number(res.headers['content-length']), res.rawPayload.length, 'Content-Length is the exact body length')
  const parts = parseByteranges(res.rawPayload, type) // strict: each part's length comes from its own Content-Range
  t.same(parts.map((p) => [p.start, p.end]), [[5000, 5009], [0, 9], [9990, 9999]], '§15.3.7.2: parts in the order the ranges were asked')
  for (const p of parts) {
    t.equal(p.contentRange, `bytes ${p.start}-${p.end}/10000`, `part ${p.start}-${p.end}: its own Content-Range with the complete length`)
    t.equal(p.contentType, 'application/octet-stream', `part ${p.start}-${p.end}: Content-Type`)
    t.ok(p.data.equals(TEN_K.subarray(p.start, p.end + 1)), `part ${p.start}-${p.end}: its bytes`)
  }
  if (m) t.equal(res.rawPayload.toString('latin1').split(`--${m[1]}`).length - 1, 4, 'the delimiter occurs exactly once per part plus the close delimiter (RFC 2046 §5.1.1)')
  const again = await getData(app, 'v', { range: 'bytes=5000-5009,0-9,9990-' })
  t.ok(parseByteranges(again.rawPayload, String(again.headers['content-type'])).length === 3, 'a second request frames alike')
})

t.test('RFC 9110 §13.1.5 (§14.2): If-Range', async (t) => {
  const { app, etag } = await mirror(t, TEN_K)
  const current = await etag()
  const ranged = await getData(app, 'v', { range: 'bytes=0-9', 'if-range': current })
  t.equal(ranged.statusCode, 206, 'the current strong ETag: 206')
  t.ok(ranged.rawPayload.equals(TEN_K.subarray(0, 10)), 'the range')
  const multi = await getData(app, 'v', { range: 'bytes=0-9,100-109', 'if-range': current })
  t.equal(multi.statusCode, 206, 'the current ETag with several ranges: 206')
  t.match(String(multi.headers['content-type']), /^multipart\/byteranges/, 'multipart')

  const whole: Array<[Record<string, string>, string]> = [
    [{ range: 'bytes=0-9', 'if-range': '"stale"' }, 'a stale ETag: the whole content'],
    [{ range: 'bytes=0-9', 'if-range': `W/${current}` }, '§13.1.5: a weak ETag never matches (strong comparison): the whole content'],
    [{ range: 'bytes=0-9', 'if-range': 'Tue, 15 Nov 1994 08:12:31 GMT' }, 'an HTTP-date, with no Last-Modified to compare: the whole content'],
    [{ range: 'bytes=0-9', 'if-range': new Date(Date.now() + 86_400_000).toUTCString() }, 'a future HTTP-date: the whole content'],
    [{ range: 'bytes=0-9', 'if-range': 'garbage' }, 'a malformed If-Range: the whole content'],
    [{ range: 'bytes=20000-', 'if-range': '"stale"' }, '§13.2.2 step 5: a stale If-Range drops even an unsatisfiable Range: 200, not 416'],
    [{ 'if-range': '"stale"' }, '§13.1.5: If-Range without Range is ignored'],
  ]
  for (const [headers, why] of whole) {
    const res = await getData(app, 'v', headers)
    t.equal(res.statusCode, 200, `${why}: 200`)
    t.ok(res.rawPayload.equals(TEN_K), `${why}: every byte`)
  }
  const unsatisfiable = await getData(app, 'v', { range: 'bytes=20000-', 'if-range': current })
  conformingProblem(t, unsatisfiable, 416, 'the current ETag with an unsatisfiable Range: 416')
})

// ------------------------------------------------------------------------------------------ §13 preconditions

t.test('RFC 9110 §13.1.1: If-Match', async (t) => {
  const { app, files, etag } = await mirror(t, TEN_K)
  const current = await etag()
  for (const value of ['*', current, `"other", ${current}`, ` ${current} `]) {
    t.equal((await getData(app, 'v', { 'if-match': value })).statusCode, 200, `GET If-Match: ${value}: 200`)
  }
  for (const value of ['"stale"', `W/${current}`, '"a", "b"']) {
    const why = value.startsWith('W/') ? 'a weak ETag never matches (§13.1.1 uses strong comparison)' : 'no tag matches'
    conformingProblem(t, await getData(app, 'v', { 'if-match': value }), 412, `GET If-Match: ${value} (${why})`)
  }
  conformingProblem(t, await head(app, { 'if-match': '"stale"' }), 412, 'HEAD If-Match stale', true)

  // A write is not performed when If-Match fails.
  const refused = await putData(app, 'v', pattern(100, 1), { 'if-match': '"stale"' })
  conformingProblem(t, refused, 412, 'PUT If-Match stale')
  const [fast, behind] = await files()
  t.ok(fast.equals(TEN_K) && behind.equals(TEN_K), 'the refused PUT wrote nothing, on either replica')
  t.equal(await etag(), current, 'nor moved the ETag')
  const form = formData([{ name: 'offset', value: '0' }, { name: 'f', filename: 'f', data: Buffer.from('x') }])
  conformingProblem(t, await app.inject({ method: 'POST', url: '/volumes/v/data', headers: { 'content-type': form.contentType, 'if-match': '"stale"' }, payload: form.body }), 412, 'POST If-Match stale')
  conformingProblem(t, await putData(app, 'v', pattern(100, 1), { 'if-match': `W/${current}` }), 412, 'PUT If-Match with the weak form of the current ETag')

  const ok = await putData(app, 'v', pattern(100, 2), { 'if-match': current })
  t.equal(ok.statusCode === 200 || ok.statusCode === 202, true, 'PUT If-Match current: written')
  const next = ok.headers.etag as string
  t.equal((await putData(app, 'v', pattern(100, 3), { 'if-match': '*' })).statusCode < 300, true, 'PUT If-Match: * on an existing volume: written')
  conformingProblem(t, await putData(app, 'v', pattern(100, 4), { 'if-match': next }), 412, 'PUT If-Match with the ETag before the last write')
})

t.test('RFC 9110 §13.1.2, §15.4.5: If-None-Match', async (t) => {
  const { app, files, etag } = await mirror(t, TEN_K)
  const current = await etag()
  for (const value of [current, '*', `W/${current}`, `"other", ${current}`]) {
    const res = await getData(app, 'v', { 'if-none-match': value })
    t.equal(res.statusCode, 304, `GET If-None-Match: ${value}: 304 (weak comparison)`)
    t.equal(res.headers.etag, current, `${value}: §15.4.5 the 304 carries the ETag`)
    t.equal(res.rawPayload.length, 0, `${value}: §15.4.5 no content`)
    t.notOk(res.headers['content-range'], `${value}: no Content-Range`)
    t.notOk(res.headers['content-type'], `${value}: §15.4.5 no representation metadata (Content-Type)`)
    const length = res.headers['content-length']
    t.ok(length === undefined || Number(length) === TEN_K.length, `${value}: §8.6 a Content-Length on a 304, if any, is the 200's (${length})`)
    const headed = await head(app, { 'if-none-match': value })
    t.equal(headed.statusCode, 304, `HEAD If-None-Match: ${value}: 304`)
    t.equal(headed.headers.etag, current, `HEAD ${value}: ETag`)
  }
  const modified = await getData(app, 'v', { 'if-none-match': '"stale"' })
  t.equal(modified.statusCode, 200, 'GET If-None-Match stale: 200')
  t.ok(modified.rawPayload.equals(TEN_K), 'with the content')

  for (const value of ['*', current, `W/${current}`]) {
    conformingProblem(t, await putData(app, 'v', pattern(10, 1), { 'if-none-match': value }), 412, `PUT If-None-Match: ${value} on an existing volume`)
  }
  const [fast, behind] = await files()
  t.ok(fast.equals(TEN_K) && behind.equals(TEN_K), 'the refused PUTs wrote nothing')
  t.equal(await etag(), current, 'nor moved the ETag')
  const written = await putData(app, 'v', pattern(10, 2), { 'if-none-match': '"stale"' })
  t.ok(written.statusCode === 200 || written.statusCode === 202, 'PUT If-None-Match stale: written')
})

t.test('RFC 9110 §13.2.2, §13.2.1: evaluation order of preconditions', async (t) => {
  const { app, etag } = await mirror(t, TEN_K)
  const current = await etag()
  conformingProblem(t, await getData(app, 'v', { 'if-match': '"stale"', 'if-none-match': current }), 412, 'step 1 before step 3: a failing If-Match wins over a matching If-None-Match (not 304)')
  t.equal((await getData(app, 'v', { 'if-match': current, 'if-none-match': current })).statusCode, 304, 'If-Match passes, then If-None-Match matches: 304')
  conformingProblem(t, await putData(app, 'v', Buffer.from('x'), { 'if-match': current, 'if-none-match': current }), 412, 'the same on a PUT: 412')

  // Preconditions come before the Range (steps 1-4 before step 5).
  t.equal((await getData(app, 'v', { 'if-none-match': current, range: 'bytes=0-9' })).statusCode, 304, 'If-None-Match matching with a Range: 304, not 206')
  conformingProblem(t, await getData(app, 'v', { 'if-match': '"stale"', range: 'bytes=0-9' }), 412, 'If-Match failing with a Range: 412, not 206')
  conformingProblem(t, await getData(app, 'v', { 'if-match': '"stale"', range: 'bytes=20000-' }), 412, 'If-Match failing with an unsatisfiable Range: 412, not 416')
  t.equal((await getData(app, 'v', { 'if-none-match': current, range: 'bytes=20000-' })).statusCode, 304, 'If-None-Match matching with an unsatisfiable Range: 304, not 416')
  const step5 = await getData(app, 'v', { 'if-none-match': '"stale"', 'if-range': current, range: 'bytes=0-9' })
  t.equal(step5.statusCode, 206, 'every precondition passes, then If-Range holds: 206')

  // §13.2.1: preconditions are ignored when the request would fail without them.
  conformingProblem(t, await getData(app, 'nope', { 'if-match': '"stale"' }), 404, 'an unknown volume with a failing If-Match: 404, not 412')
  conformingProblem(t, await putData(app, 'v', Buffer.from('x'), { 'if-match': '"stale"', 'content-range': 'bytes 5-1/*' }), 400, 'a malformed Content-Range with a failing If-Match: 400, not 412')
  conformingProblem(t, await getData(app, 'v', { 'if-none-match': current }, '?bogus=1'), 400, 'a bad query with a matching If-None-Match: 400, not 304')
})

t.test('RFC 9110 §8.8.3: a strong, quoted ETag that changes on every write and only then', async (t) => {
  const { app, etag } = await mirror(t, TEN_K)
  const seen = new Set<string>()
  const first = await etag()
  t.match(first, STRONG_ETAG, `strong and quoted, with etagc only (${first})`)
  seen.add(first)
  const get = await getData(app, 'v')
  t.equal(get.headers.etag, first, 'GET carries the volume\'s ETag')
  t.equal((await head(app)).headers.etag, first, 'HEAD too')
  t.equal((await getData(app, 'v', { range: 'bytes=0-1' })).headers.etag, first, '§15.3.7 a 206 carries the ETag')
  t.equal((await getData(app, 'v', { range: 'bytes=0-1,3-4' })).headers.etag, first, 'a multipart 206 too')
  t.equal(await etag(), first, 'reads do not move it')
  await putData(app, 'v', Buffer.alloc(1), { 'if-match': '"stale"' })
  await putData(app, 'v', Buffer.alloc(1), { 'content-range': 'bytes 9-0/*' })
  t.equal(await etag(), first, 'refused writes (412, 400) do not move it')

  const writes: Array<[string, () => Promise<LightMyRequestResponse>]> = [
    ['the same bytes again', () => putData(app, 'v', TEN_K)],
    ['a ranged PUT', () => putData(app, 'v', Buffer.from('abc'), { 'content-range': 'bytes 10-12/*' })],
    ['a resize through the complete length', () => putData(app, 'v', Buffer.from('a'), { 'content-range': 'bytes 0-0/9000' })],
    ['a POST', () => {
      const form = formData([{ name: 'offset', value: '5' }, { name: 'f', filename: 'f', data: Buffer.from('zz') }])
      return app.inject({ method: 'POST', url: '/volumes/v/data', headers: { 'content-type': form.contentType }, payload: form.body })
    }],
    ['an empty PUT', () => putData(app, 'v', Buffer.alloc(0))],
  ]
  for (const [what, write] of writes) {
    const res = await write()
    t.ok(res.statusCode === 200 || res.statusCode === 202, `${what}: written (${res.statusCode})`)
    const tag = res.headers.etag as string
    t.match(tag, STRONG_ETAG, `${what}: the reply's ETag is strong and quoted`)
    t.notOk(seen.has(tag), `${what}: a new ETag`)
    t.equal(await etag(), tag, `${what}: the reply's ETag is the volume's`)
    seen.add(tag)
  }
})

t.test('RFC 9110 §8.8.3: a write refused after some bytes landed still moves the ETag', async (t) => {
  const { app, files, etag } = await mirror(t, TEN_K)
  const base = await listen(t, app)
  const before = await etag()
  // A chunked body shorter than its Content-Range: refused with 400 once it ends, after its bytes reached the replicas.
  const reply = await new Promise<RawReply>((resolve, reject) => {
    const req = httpRequest(`${base}/volumes/v/data`, { method: 'PUT', headers: { 'content-range': 'bytes 10-19/*', 'transfer-encoding': 'chunked' } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    req.write(Buffer.alloc(6, 0x58))
    setTimeout(() => req.end(), 100)
  })
  t.equal(reply.status, 400, 'the short body is refused')
  const [fast] = await files()
  const changed = !fast.equals(TEN_K)
  t.comment(changed ? 'the refused write left its first bytes in the content' : 'the refused write left the content as it was')
  if (changed) t.not(await etag(), before, 'the content changed, so the ETag did (a client revalidating must see the change)')
  else t.equal(await etag(), before, 'nothing changed, so the ETag did not')
  const get = await getData(app, 'v')
  t.ok(get.rawPayload.equals(fast), 'GET serves what the sync replica holds')
})

// ------------------------------------------------------------------------------------------ §9.3.2 HEAD, §15.3.7, §6.6.1

t.test('RFC 9110 §9.3.2, §8.6: HEAD sends the header fields a GET would, without content', async (t) => {
  const { app, etag } = await mirror(t, TEN_K)
  const current = await etag()
  const cases: Array<[string, Record<string, string>, string]> = [
    ['a whole read', {}, 'v'],
    ['one range', { range: 'bytes=10-19' }, 'v'],
    ['several ranges', { range: 'bytes=0-1,100-101' }, 'v'],
    ['a matching If-None-Match', { 'if-none-match': current }, 'v'],
    ['a failing If-Match', { 'if-match': '"stale"' }, 'v'],
    ['an unsatisfiable range', { range: 'bytes=20000-' }, 'v'],
    ['an unknown volume', {}, 'nope'],
  ]
  for (const [what, headers, name] of cases) {
    const get = await getData(app, name, headers)
    const headed = await head(app, headers, name)
    t.equal(headed.statusCode, get.statusCode, `${what}: the same status (${get.statusCode})`)
    t.same(stableHeaders(headed.headers), stableHeaders(get.headers), `${what}: the same header fields`)
    t.equal(headed.rawPayload.length, 0, `${what}: no content`)
    t.equal(headed.headers['content-length'], get.headers['content-length'], `${what}: §8.6 the Content-Length a GET would send`)
  }

  // On a real connection: the HEAD's head is followed directly by the next reply, not by content.
  const base = await listen(t, app)
  const raw = await rawExchange(base, `HEAD /volumes/v/data HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  const first = parseRaw(raw)
  t.equal(first.status, 200, 'raw HEAD: 200')
  t.equal(first.headers['content-length'], '10000', 'raw HEAD: Content-Length 10000')
  t.match(first.rest.toString('latin1'), /^HTTP\/1\.1 200 /, 'raw HEAD: no content bytes before the next reply on the connection')
})

t.test('RFC 9110 §15.3.7, §6.6.1: 206 carries ETag; replies carry a Date', async (t) => {
  const { app, etag } = await mirror(t, TEN_K)
  const base = await listen(t, app)
  const current = await etag()
  const url = `${base}/volumes/v/data`
  const cases: Array<[string, string, Record<string, string>, number]> = [
    ['200', 'GET', {}, 200],
    ['206', 'GET', { range: 'bytes=1-2' }, 206],
    ['multipart 206', 'GET', { range: 'bytes=1-2,5-6' }, 206],
    ['304', 'GET', { 'if-none-match': current }, 304],
    ['412', 'GET', { 'if-match': '"x"' }, 412],
    ['416', 'GET', { range: 'bytes=20000-' }, 416],
    ['HEAD', 'HEAD', {}, 200],
  ]
  for (const [what, method, headers, status] of cases) {
    const res = await httpGet(url, method, headers)
    t.equal(res.status, status, `${what}: ${status}`)
    const date = Date.parse(String(res.headers.date))
    t.ok(Number.isFinite(date) && Math.abs(date - Date.now()) < 60_000, `${what}: §6.6.1 a current Date (${res.headers.date})`)
    if (status === 206 || status === 304) t.equal(res.headers.etag, current, `${what}: §15.3.7/§15.4.5 ETag`)
  }
})

// ------------------------------------------------------------------------------------------ RFC 7240

t.test('RFC 7240 §4.3, §3: Prefer: wait bounds the reply time; Preference-Applied says so', async (t) => {
  const { app } = await makeApp(t)
  // 100 kB/s: 600 kB take several seconds to reach the async replica.
  await createVolume(t, app, 'slow', [{ id: 'fast', path: 'fast.bin' }, { id: 'behind', path: 'behind.bin', mode: 'async', maxBytesPerSecond: 100_000 }])
  await createVolume(t, app, 'quick', [{ id: 'fast', path: 'q-fast.bin' }, { id: 'behind', path: 'q-behind.bin', mode: 'async' }])

  let started = Date.now()
  const bounded = await putData(app, 'slow', pattern(600_000, 1), { prefer: 'wait=1' })
  let elapsed = Date.now() - started
  t.equal(bounded.statusCode, 202, 'wait=1 on a write the async replica needs longer for: 202 (§4.3: respond asynchronously)')
  t.equal(bounded.headers['preference-applied'], 'wait=1', 'Preference-Applied: wait=1')
  t.ok(elapsed >= 900, `the server used the wait (${elapsed} ms)`)
  t.ok(elapsed < 3_000, `the reply came within about the wait (${elapsed} ms)`)

  const settled = await putData(app, 'quick', pattern(300_000, 2), { prefer: 'wait=10' })
  t.equal(settled.statusCode, 200, 'wait=10 on a write that settles sooner: 200')
  t.equal(settled.headers['preference-applied'], 'wait=10', 'Preference-Applied: wait=10')
  t.equal(json(settled).status, 'done', 'every replica done')

  t.equal((await putData(app, 'quick', pattern(10), { prefer: 'WAIT=5' })).headers['preference-applied'], 'wait=5', '§2: preference names compare case-insensitively')

  started = Date.now()
  const firstWins = await putData(app, 'slow', pattern(600_000, 3), { prefer: 'wait=1, wait=30' })
  elapsed = Date.now() - started
  t.equal(firstWins.headers['preference-applied'], 'wait=1', '§2: only the first instance of a preference counts')
  t.ok(elapsed < 3_000, `and it is the one honoured (${elapsed} ms)`)

  const none: Array<[string, Record<string, string>, string]> = [
    ['no Prefer', {}, 'PUT'],
    ['a wait that is not delta-seconds', { prefer: 'wait=soon' }, 'PUT'],
    ['wait as a parameter of another preference (§2)', { prefer: 'respond-async; wait=5' }, 'PUT'],
    ['a preference the server does not apply', { prefer: 'handling=strict' }, 'PUT'],
    ['a GET, which has nothing to wait for', { prefer: 'wait=5' }, 'GET'],
  ]
  for (const [what, headers, method] of none) {
    const res = method === 'GET' ? await getData(app, 'quick', headers) : await putData(app, 'quick', pattern(10), headers)
    t.ok(res.statusCode < 300, `${what}: ${res.statusCode}`)
    t.notOk(res.headers['preference-applied'], `${what}: §3 no Preference-Applied`)
  }
})

// ------------------------------------------------------------------------------------------ RFC 9457, §15.5.6

t.test('RFC 9457 §3: every 4xx the service sends is application/problem+json with type, title, status, detail', async (t) => {
  const { app } = await mirror(t, TEN_K, { MAX_JSON_BYTES: '4096', MAX_VOLUME_BYTES: String(1 << 20) })
  const put = (url: string, payload: unknown, type = 'application/json') =>
    app.inject({ method: 'PUT', url, headers: { 'content-type': type }, payload: typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload) })
  const cases: Array<[number, string, () => Promise<LightMyRequestResponse>]> = [
    [400, 'an unknown query parameter', () => getData(app, 'v', {}, '?bogus=1')],
    [400, 'a malformed Content-Range', () => putData(app, 'v', Buffer.from('x'), { 'content-range': 'bytes 9-0/*' })],
    [400, 'a volume name starting with a dot', () => put('/volumes/.hidden', { replicas: [{ id: 'a', path: 'h.bin' }] })],
    [400, 'a volume spec without replicas', () => put('/volumes/w', { replicas: [] })],
    [400, 'malformed JSON', () => put('/volumes/w', '{"replicas": [')],
    [400, 'an empty JSON body', () => put('/volumes/w', '')],
    [400, 'a replica path outside the storage roots', () => put('/volumes/w', { replicas: [{ id: 'a', path: '/etc/passwd' }] })],
    [400, 'a replica path with ..', () => put('/volumes/w', { replicas: [{ id: 'a', path: '../escape.bin' }] })],
    [404, 'an unknown path', () => app.inject({ method: 'GET', url: '/nope' })],
    [404, 'an unknown volume', () => getData(app, 'nope')],
    [404, 'an unknown operation group', () => app.inject({ method: 'GET', url: '/operations/nope' })],
    [404, 'an unknown replica', () => app.inject({ method: 'DELETE', url: '/volumes/v/replicas/nope' })],
    [405, 'DELETE on the data', () => app.inject({ method: 'DELETE', url: '/volumes/v/data' })],
    [409, 'another configuration under an existing name', () => put('/volumes/v', { replicas: [{ id: 'x', path: 'other.bin' }] })],
    [412, 'a failing If-Match', () => getData(app, 'v', { 'if-match': '"stale"' })],
    [413, 'a JSON body over MAX_JSON_BYTES', () => put('/volumes/w', { replicas: [{ id: 'a', path: 'a.bin', label: 'x'.repeat(8000) }] })],
    [413, 'a write past MAX_VOLUME_BYTES', () => putData(app, 'v', Buffer.from('x'), { 'content-range': `bytes ${2 << 20}-${2 << 20}/*` })],
    [415, 'POST of octet-stream to the data', () => app.inject({ method: 'POST', url: '/volumes/v/data', headers: { 'content-type': 'application/octet-stream' }, payload: 'x' })],
    [415, 'a volume spec as XML', () => put('/volumes/w', '<replicas/>', 'application/xml')],
    [416, 'a range past the end', () => getData(app, 'v', { range: 'bytes=20000-' })],
  ]
  for (const [status, what, send] of cases) conformingProblem(t, await send(), status, what)
  conformingProblem(t, await head(app, {}, 'nope'), 404, 'HEAD of an unknown volume', true)

  const authed = await makeApp(t, { AUTH_TOKEN: 'a-token-of-sixteen-chars-or-more' })
  const unauthorized = await authed.app.inject({ method: 'GET', url: '/volumes' })
  conformingProblem(t, unauthorized, 401, 'no bearer token when one is required')
  t.match(String(unauthorized.headers['www-authenticate']), /^Bearer/, '401 carries WWW-Authenticate: Bearer (RFC 9110 §15.5.2)')
})

t.test('RFC 9457 §3: errors found before any route runs are problems too', async (t) => {
  const { app } = await mirror(t, TEN_K)
  const base = await listen(t, app)
  // Node's parser: a head too large (431), a request that is not HTTP (400).
  const big = parseRaw(await rawExchange(base, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`))
  t.equal(big.status, 431, 'a head over the limit: 431')
  t.match(big.headers['content-type'] ?? '', /^application\/problem\+json/, '431: application/problem+json')
  t.equal(JSON.parse(big.rest.toString() || '{}').status, 431, '431: the status member')
  const garbage = parseRaw(await rawExchange(base, 'THIS IS NOT HTTP\r\n\r\n'))
  t.equal(garbage.status, 400, 'not HTTP: 400')
  t.match(garbage.headers['content-type'] ?? '', /^application\/problem\+json/, '400 from the parser: application/problem+json')

  // Fastify's router: a URL it cannot decode, a path parameter longer than its limit (answered by Fastify itself
  // unless the app passes frameworkErrors).
  for (const [what, url] of [['a malformed percent-encoding', '/volumes/%zz/data'], ['a 2000-character volume name', `/volumes/${'n'.repeat(2000)}/data`]]) {
    const res = await app.inject({ method: 'GET', url })
    t.ok(res.statusCode >= 400 && res.statusCode < 500, `${what}: a 4xx (${res.statusCode})`)
    conformingProblem(t, res, res.statusCode, what)
  }
})

t.test('RFC 9457 §3: 5xx replies are problems too, and say nothing about paths', async (t) => {
  const faults = new FaultInjector()
  const { app, dataDir } = await mirror(t, TEN_K, {}, faults)
  const bothReplicas = (code: 'failReads' | 'failWrites') => ['fast.bin', 'behind.bin'].forEach((file) => faults.set(join(dataDir, file), { [code]: 'EIO' }))
  bothReplicas('failReads')
  const read = await getData(app, 'v')
  const body = conformingProblem(t, read, 500, 'every replica failing its reads')
  t.notMatch(JSON.stringify(body), dataDir, 'the problem does not reveal the data directory')
  bothReplicas('failWrites')
  const write = await putData(app, 'v', Buffer.from('x'))
  const wbody = conformingProblem(t, write, 500, 'every replica failing its writes')
  t.notMatch(JSON.stringify(wbody), dataDir, 'nor does this one')
  faults.clear()
})

t.test('RFC 9457 §3, RFC 9110 §15.6.4: 503 with Retry-After when a volume is at its write limit', async (t) => {
  const { app } = await mirror(t, TEN_K, { MAX_INFLIGHT_WRITES: '1' })
  const base = await listen(t, app)
  // One chunked PUT that holds its slot until released.
  let release!: () => void
  const held = new Promise<RawReply>((resolve, reject) => {
    const req = httpRequest(`${base}/volumes/v/data`, { method: 'PUT', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    req.write(Buffer.alloc(100, 1))
    release = () => req.end(Buffer.alloc(100, 2))
  })
  await new Promise((r) => setTimeout(r, 300))
  const busy = await putData(app, 'v', Buffer.from('x'))
  conformingProblem(t, busy, 503, 'a second write while the only slot is taken')
  t.match(String(busy.headers['retry-after']), /^\d+$/, '503 carries Retry-After in delta-seconds (RFC 9110 §10.2.3)')
  release()
  const done = (await held).status
  t.ok(done === 200 || done === 202, `the held write completes (${done})`)
})

t.test('RFC 9110 §15.5.6: 405 carries Allow, listing what the resource does accept', async (t) => {
  const { app } = await mirror(t, TEN_K)
  const cases: Array<[string, string]> = [
    ['DELETE', '/volumes/v/data'],
    ['PATCH', '/volumes/v/data'],
    ['OPTIONS', '/volumes/v/data'],
    ['POST', '/volumes/v'],
    ['PATCH', '/volumes/v'],
    ['POST', '/volumes'],
    ['DELETE', '/volumes'],
    ['PUT', '/operations/abc'],
    ['POST', '/healthz'],
  ]
  for (const [method, url] of cases) {
    const res = await app.inject({ method: method as 'GET', url })
    conformingProblem(t, res, 405, `${method} ${url}`)
    const allow = String(res.headers.allow ?? '')
    const methods = allow.split(',').map((s) => s.trim()).filter(Boolean)
    t.ok(methods.length > 0, `${method} ${url}: Allow: ${allow}`)
    t.notOk(methods.includes(method), `${method} ${url}: Allow does not list the refused method`)
    for (const listed of methods.filter((m) => m !== 'PUT' && m !== 'POST' && m !== 'DELETE')) {
      const ok = await app.inject({ method: listed as 'GET', url })
      t.not(ok.statusCode, 405, `${method} ${url}: the listed ${listed} is not refused with 405`)
    }
  }
  const data = await app.inject({ method: 'DELETE', url: '/volumes/v/data' })
  t.same(String(data.headers.allow).split(', ').sort(), ['GET', 'HEAD', 'POST', 'PUT'], 'the data accepts GET, HEAD, PUT, POST')
})

t.test('RFC 9110 §9.1: HEAD is supported wherever GET is', async (t) => {
  const { app } = await mirror(t, TEN_K)
  for (const url of ['/volumes', '/volumes/v', '/healthz', '/readyz']) {
    const get = await app.inject({ method: 'GET', url })
    const headed = await app.inject({ method: 'HEAD', url })
    t.equal(get.statusCode, 200, `GET ${url}: 200`)
    t.equal(headed.statusCode, 200, `HEAD ${url}: 200 like its GET (got ${headed.statusCode})`)
    t.equal(headed.headers['content-length'], get.headers['content-length'], `HEAD ${url}: the Content-Length of its GET (§8.6)`)
    t.equal(headed.rawPayload.length, 0, `HEAD ${url}: no content`)
  }
})

t.test('RFC 9110 §14.1.1, §15.5.17: a zero-length volume satisfies no range', async (t) => {
  const { app } = await mirror(t)
  const whole = await getData(app, 'v')
  t.equal(whole.statusCode, 200, 'no Range: 200')
  t.equal(whole.headers['content-length'], '0', 'Content-Length: 0')
  t.equal(whole.rawPayload.length, 0, 'no content')
  for (const range of ['bytes=0-0', 'bytes=0-', 'bytes=-1', 'bytes=0-0,-5']) {
    const res = await getData(app, 'v', { range })
    conformingProblem(t, res, 416, `${range} on an empty volume`)
    t.equal(res.headers['content-range'], 'bytes */0', `${range}: Content-Range: bytes */0`)
    const headed = await head(app, { range })
    t.equal(headed.statusCode, 416, `HEAD ${range}: 416`)
    t.equal(headed.headers['content-range'], 'bytes */0', `HEAD ${range}: Content-Range: bytes */0`)
  }
  t.equal((await getData(app, 'v', { range: 'bytes=abc' })).statusCode, 200, 'an invalid Range on an empty volume is still ignored: 200')
})

t.test('RFC 9110 §4.1: URIs of every valid volume name are served; no 414 below 8000 octets', async (t) => {
  const { app } = await makeApp(t)
  // nameSchema (src/schemas.ts) allows 128 characters; Fastify's own maxParamLength defaults to 100.
  for (const length of [100, 101, 128]) {
    const name = 'n'.repeat(length)
    const created = await app.inject({ method: 'PUT', url: `/volumes/${name}`, payload: { replicas: [{ id: 'a', path: `${length}.bin` }] } })
    t.equal(created.statusCode, 201, `a ${length}-character volume name can be created (got ${created.statusCode})`)
    const status = await app.inject({ method: 'GET', url: `/volumes/${name}/data` })
    t.equal(status.statusCode, 200, `and read (got ${status.statusCode})`)
  }
  for (const length of [129, 2000, 7000]) {
    const res = await app.inject({ method: 'GET', url: `/volumes/${'n'.repeat(length)}/data` })
    t.ok(res.statusCode === 400 || res.statusCode === 404, `a ${length}-character name is refused as a name (400 or 404), not as a URI too long (got ${res.statusCode})`)
    t.match(String(res.headers['content-type']), /^application\/problem\+json/, `${length} characters: a problem`)
  }
})
