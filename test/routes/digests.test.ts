// RFC 9530 digests on the data routes: a Content-Digest on PUT or POST is verified as the body streams and
// a body that fails it changes nothing (the content, both replica files, the ETag, no write acknowledged);
// Want-Content-Digest / Want-Repr-Digest on GET and HEAD get digests equal to sha256sum of the same bytes,
// as fields before the body, or as trailers with TE: trailers, or not at all past DIGEST_MAX_BYTES.
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import http from 'node:http'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { assertProblem, createVolume, formData, getData, json, listen, makeApp, parseByteranges, putData, waitInSync } from '../helpers/app.js'
import { eventually } from '../helpers/eventually.js'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { pattern } from '../helpers/pattern.js'

const b64 = (algorithm: 'sha256' | 'sha512', bytes: Buffer) => createHash(algorithm).update(bytes).digest('base64')
const sha256 = (bytes: Buffer) => `sha-256=:${b64('sha256', bytes)}:`
const sha512 = (bytes: Buffer) => `sha-512=:${b64('sha512', bytes)}:`

/** A volume with a sync replica and an async one, holding `content` on both. */
async function mirrored(t: Test, content: Buffer, env: Record<string, string> = {}) {
  const made = await makeApp(t, env)
  await createVolume(t, made.app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'slow', path: 'slow.bin', mode: 'async' }])
  t.equal((await putData(made.app, 'v', content, { prefer: 'wait=10' })).statusCode, 200, `seeded ${content.length} bytes`)
  const files = async () => Promise.all(['fast.bin', 'slow.bin'].map((f) => readFile(join(made.dataDir, f))))
  return { ...made, files }
}

/** Asserts the volume (through GET, and both replica files once in sync) holds exactly `content` under `etag`. */
async function unchanged(t: Test, app: FastifyInstance, files: () => Promise<Buffer[]>, content: Buffer, etag: string, what: string) {
  const res = await getData(app, 'v')
  t.ok(res.rawPayload.equals(content), `${what}: the content is as it was`)
  t.equal(res.headers.etag, etag, `${what}: the ETag is as it was`)
  await waitInSync(app, 'v')
  const [fast, slow] = await files()
  t.ok(fast.equals(content) && slow.equals(content), `${what}: both replica files are as they were`)
}

/** Write groups of the volume that finished ('done'): acknowledged writes. */
async function doneWrites(app: FastifyInstance): Promise<number> {
  const list = json((await app.inject({ url: '/volumes/v/operations?limit=1000' }))).operations
  return list.filter((g: any) => g.kind === 'write' && g.status === 'done').length
}

t.test('a wrong Content-Digest on a ranged PUT or a whole replace changes nothing', async (t) => {
  const old = pattern(300_000, 1)
  const { app, files } = await mirrored(t, old)
  const etag = String((await getData(app, 'v')).headers.etag)
  const acknowledged = await doneWrites(app)
  const body = pattern(100_000, 2)

  const cases = [
    ['a ranged PUT (sha-256)', { 'content-range': 'bytes 50000-149999/*', 'content-digest': sha256(pattern(100_000, 3)) }, 'sha-256'],
    ['a ranged PUT past the end (sha-512)', { 'content-range': 'bytes 250000-349999/*', 'content-digest': sha512(pattern(100_000, 3)) }, 'sha-512'],
    ['a whole replace (sha-256)', { 'content-digest': sha256(pattern(100_000, 3)) }, 'sha-256'],
    ['a whole replace, one of two digests wrong', { 'content-digest': `${sha256(body)}, ${sha512(pattern(100_000, 3))}` }, 'sha-512'],
  ] as const
  for (const [what, headers, algorithm] of cases) {
    const res = await putData(app, 'v', body, headers)
    const problem = assertProblem(t, res, 400, what)
    t.equal(problem.type, 'https://filemirror.dev/problems/digest-mismatch', `${what}: digest-mismatch`)
    t.match(problem.detail, new RegExp(`^Content-Digest does not match: ${algorithm} \\(sent :`), `${what}: the detail names ${algorithm}`)
    if (algorithm === 'sha-512') t.notMatch(problem.detail, /sha-256/, `${what}: only the digest that failed is named`)
    await unchanged(t, app, files, old, etag, what)
  }
  t.equal(await doneWrites(app), acknowledged, 'no refused write was acknowledged')

  // A refused body of several MiB, arriving in many chunks, past the first spool gathering.
  const big = pattern(3 << 20, 4)
  const res = await putData(app, 'v', big, { 'content-range': `bytes 0-${big.length - 1}/*`, 'content-digest': sha256(pattern(3 << 20, 5)) })
  assertProblem(t, res, 400, 'a 3 MiB ranged PUT')
  await unchanged(t, app, files, old, etag, 'a 3 MiB ranged PUT')
})

t.test('a matching Content-Digest: written, and the group reports the digest it verified', async (t) => {
  const old = pattern(300_000, 1)
  const { app, files } = await mirrored(t, old)
  const body = pattern(100_000, 2)
  const ranged = await putData(app, 'v', body, { 'content-range': 'bytes 1000-100999/*', 'content-digest': sha256(body), prefer: 'wait=10' })
  t.equal(ranged.statusCode, 200, 'a ranged PUT that checks out is written')
  t.same(json(ranged).digest, { 'sha-256': b64('sha256', body) }, 'its group reports the sha-256 it verified')
  const polled = json(await app.inject({ url: `/operations/${ranged.headers['operation-id']}` }))
  t.same(polled.digest, { 'sha-256': b64('sha256', body) }, 'and so does GET /operations/{id}')
  const expected = Buffer.from(old)
  body.copy(expected, 1000)
  t.ok((await getData(app, 'v')).rawPayload.equals(expected), 'the range reads back')

  const whole = pattern(200_000, 6)
  const replaced = await putData(app, 'v', whole, { 'content-digest': `${sha512(whole)}, ${sha256(whole)}`, prefer: 'wait=10' })
  t.equal(replaced.statusCode, 200, 'a whole replace with both digests')
  t.same(json(replaced).digest, { 'sha-256': b64('sha256', whole), 'sha-512': b64('sha512', whole) }, 'both are reported')
  await waitInSync(app, 'v')
  const [fast, slow] = await files()
  t.ok(fast.equals(whole) && slow.equals(whole), 'both replica files hold it')

  const plain = await putData(app, 'v', whole)
  t.equal(json(plain).digest, undefined, 'a write without Content-Digest has no digest member')
  const empty = await putData(app, 'v', Buffer.alloc(0), { 'content-digest': sha256(Buffer.alloc(0)) })
  t.equal(empty.statusCode, 200, 'an empty whole replace with the digest of nothing')
  t.equal((await getData(app, 'v')).rawPayload.length, 0, 'the volume is empty')
})

t.test('Content-Digest naming only unsupported algorithms is ignored; a malformed one is a 400', async (t) => {
  const old = pattern(50_000, 1)
  const { app, files } = await mirrored(t, old)
  const body = pattern(10_000, 2)
  const ignored = await putData(app, 'v', body, { 'content-range': 'bytes 0-9999/*', 'content-digest': 'md5=:AAAAAAAAAAAAAAAAAAAAAA==:, crc32c=:AAAAAA==:, sha-384=:AAAA:', prefer: 'wait=10' })
  t.equal(ignored.statusCode, 200, 'md5, crc32c and sha-384 are not checked: the write goes through')
  t.equal(json(ignored).digest, undefined, 'and nothing is reported as verified')
  const now = Buffer.from(old)
  body.copy(now)
  const etag = String((await getData(app, 'v')).headers.etag)
  for (const [field, why] of [
    ['sha-256=abc', 'a token, not a Byte Sequence'],
    ['SHA-256=:AAAA:', 'an upper-case key'],
    ['sha-256=:AAAA:', 'a sha-256 digest of 3 bytes'],
    ['sha-256=:' + b64('sha256', body) + ':,', 'a trailing comma'],
    ['md5=1', 'an unsupported member that is not a Byte Sequence'],
  ]) {
    const res = await putData(app, 'v', pattern(10_000, 3), { 'content-range': 'bytes 0-9999/*', 'content-digest': field })
    const problem = assertProblem(t, res, 400, why)
    t.equal(problem.type, 'https://filemirror.dev/problems/bad-request', `${why}: bad-request`)
    t.match(problem.detail, /^Content-Digest is malformed: /, `${why}: the detail says so`)
  }
  await unchanged(t, app, files, now, etag, 'after the malformed ones')
})

t.test('POST multipart: the digest covers the whole request content', async (t) => {
  const old = pattern(50_000, 1)
  const { app, files } = await mirrored(t, old)
  const file = pattern(20_000, 2)
  const form = formData([{ name: 'offset', value: '1000' }, { name: 'f', filename: 'f.bin', data: file }])
  const post = (digest: string) => app.inject({ method: 'POST', url: '/volumes/v/data', headers: { 'content-type': form.contentType, 'content-digest': digest, prefer: 'wait=10' }, payload: form.body })
  const etag = String((await getData(app, 'v')).headers.etag)

  const ofFile = await post(sha256(file))
  t.equal(json(ofFile).type, 'https://filemirror.dev/problems/digest-mismatch', 'the digest of the file part alone is not the digest of the content')
  const wrong = await post(sha512(pattern(form.body.length, 9)))
  assertProblem(t, wrong, 400, 'a wrong sha-512')
  await unchanged(t, app, files, old, etag, 'after the refused forms')

  const ok = await post(sha256(form.body))
  t.equal(ok.statusCode, 200, 'the digest of the whole form is verified')
  t.same(json(ok).digest, { 'sha-256': b64('sha256', form.body) }, 'and reported')
  const expected = Buffer.from(old)
  file.copy(expected, 1000)
  t.ok((await getData(app, 'v')).rawPayload.equals(expected), 'the file part is written')
  assertProblem(t, await post('sha-256=:nope'), 400, 'a malformed Content-Digest on POST')
})

t.test('Want-Content-Digest and Want-Repr-Digest on GET and HEAD equal sha256sum of the same bytes', async (t) => {
  const content = pattern(700_000, 7)
  const { app } = await mirrored(t, content)
  const want = (headers: Record<string, string>) => getData(app, 'v', headers)

  const whole = await want({ 'want-content-digest': 'sha-256=10', 'want-repr-digest': 'sha-256=1' })
  t.equal(whole.statusCode, 200)
  t.equal(whole.headers['content-digest'], sha256(content), '200: Content-Digest is sha-256 of the body')
  t.equal(whole.headers['repr-digest'], sha256(content), '200: Repr-Digest is the same (the body is the representation)')
  t.equal(whole.headers['content-length'], String(content.length), 'Content-Length stays (a field before the body)')

  const one = await want({ range: 'bytes=1000-1999', 'want-content-digest': 'sha-256=3', 'want-repr-digest': 'sha-512=4, sha-256=3' })
  t.equal(one.statusCode, 206)
  t.equal(one.headers['content-digest'], sha256(content.subarray(1000, 2000)), '206: Content-Digest is of the range sent')
  t.equal(one.headers['repr-digest'], sha512(content), '206: Repr-Digest is of the whole content, in the preferred sha-512')

  const multi = await want({ range: 'bytes=0-9,500000-500099', 'want-content-digest': 'sha-256=1', 'want-repr-digest': 'sha-256=1' })
  t.equal(multi.statusCode, 206)
  t.equal(parseByteranges(multi.rawPayload, String(multi.headers['content-type'])).length, 2, 'multipart/byteranges')
  t.equal(multi.headers['content-digest'], sha256(multi.rawPayload), '206 multipart: Content-Digest is of the multipart body')
  t.equal(multi.headers['repr-digest'], sha256(content), '206 multipart: Repr-Digest of the whole content')

  const head = await app.inject({ method: 'HEAD', url: '/volumes/v/data', headers: { 'want-content-digest': 'sha-256=1', 'want-repr-digest': 'sha-256=1', range: 'bytes=0-99' } })
  t.equal(head.statusCode, 206)
  t.equal(head.headers['repr-digest'], sha256(content), 'HEAD: Repr-Digest of the content a GET would select')
  t.equal(head.headers['content-digest'], undefined, 'HEAD: no Content-Digest (there is no content)')

  t.equal((await want({ 'want-content-digest': 'sha-512=1' })).headers['content-digest'], sha512(content), 'sha-512 when that is preferred')
  t.equal((await want({ 'want-content-digest': 'sha-512=5, sha-256=5' })).headers['content-digest'], sha256(content), 'a tie: sha-256')
  for (const [value, why] of [
    ['md5=10, unixsum=3', 'only unsupported algorithms'],
    ['sha-256=0', 'sha-256 not acceptable (0)'],
    ['sha-256=11', 'malformed (out of range): ignored'],
    ['SHA-256=1', 'malformed (upper case): ignored'],
  ]) {
    const res = await want({ 'want-content-digest': value, 'want-repr-digest': value })
    t.equal(res.statusCode, 200, `${why}: the read is served`)
    t.notOk(res.headers['content-digest'] || res.headers['repr-digest'], `${why}: no digest`)
  }
  t.notOk((await want({})).headers['content-digest'], 'nothing unasked')

  const empty = await mirrored(t, Buffer.alloc(0))
  const none = await getData(empty.app, 'v', { 'want-content-digest': 'sha-256=1', 'want-repr-digest': 'sha-256=1' })
  t.equal(none.headers['content-digest'], sha256(Buffer.alloc(0)), 'an empty volume: the digest of nothing')
  t.equal(none.headers['repr-digest'], sha256(Buffer.alloc(0)), 'and its Repr-Digest')
})

/** A GET over a real socket: status, headers, body and trailers. */
function rawGet(url: string, headers: Record<string, string>): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; trailers: NodeJS.Dict<string> }> {
  return new Promise((resolve, reject) => {
    http.get(url, { headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), trailers: res.trailers }))
      res.on('error', reject)
    }).on('error', reject)
  })
}

t.test('a 4 MiB GET: trailers with TE: trailers, a field before the body without, none past DIGEST_MAX_BYTES', async (t) => {
  const content = pattern(4 << 20, 8)
  const { app } = await mirrored(t, content)
  const base = await listen(t, app)
  const url = `${base}/volumes/v/data`

  const trailed = await rawGet(url, { te: 'trailers', 'want-content-digest': 'sha-256=10' })
  t.equal(trailed.status, 200)
  t.ok(trailed.body.equals(content), 'the body')
  t.equal(trailed.headers.trailer, 'content-digest', 'Trailer announces the field')
  t.equal(trailed.headers['transfer-encoding'], 'chunked', 'chunked, as trailers need')
  t.equal(trailed.headers['content-length'], undefined, 'no Content-Length beside chunked')
  t.equal(trailed.headers['content-digest'], undefined, 'no field before the body')
  t.equal(trailed.trailers['content-digest'], sha256(content), 'the trailer is sha-256 of the 4 MiB sent')

  const both = await rawGet(url, { te: 'trailers', 'want-content-digest': 'sha-512=10', 'want-repr-digest': 'sha-512=10' })
  t.equal(both.headers.trailer, 'content-digest, repr-digest', 'both fields announced, comma-separated')
  t.same(both.trailers, { 'content-digest': sha512(content), 'repr-digest': sha512(content) }, 'both trailers')
  const known = await rawGet(url, { te: 'trailers', 'want-repr-digest': 'sha-256=10' })
  t.equal(known.headers['repr-digest'], sha256(content), 'a digest a whole reply computed for this ETag is cached: a field before the body')
  t.equal(known.headers.trailer, undefined, 'no trailer then')

  const range = await rawGet(url, { te: 'trailers', range: 'bytes=100-3000099', 'want-content-digest': 'sha-256=10' })
  t.equal(range.status, 206)
  t.equal(range.trailers['content-digest'], sha256(content.subarray(100, 3000100)), 'a 206 of 3 MB: the trailer of its range')

  const multi = await rawGet(url, { te: 'trailers', range: 'bytes=0-1999999,3000000-3999999', 'want-content-digest': 'sha-256=10' })
  t.equal(multi.status, 206)
  t.equal(multi.trailers['content-digest'], sha256(multi.body), 'a 206 multipart of 3 MB: the trailer of the multipart body')

  const before = await rawGet(url, { 'want-content-digest': 'sha-256=10' })
  t.equal(before.headers['content-digest'], sha256(content), 'without TE: trailers, up to DIGEST_MAX_BYTES: a field before the body')
  t.equal(before.headers['content-length'], String(content.length), 'with Content-Length')
  t.same(before.trailers, {}, 'and no trailer')

  const small = await mirrored(t, content, { DIGEST_MAX_BYTES: String(2 << 20) })
  const smallBase = await listen(t, small.app)
  const beyond = await rawGet(`${smallBase}/volumes/v/data`, { 'want-content-digest': 'sha-256=10', 'want-repr-digest': 'sha-256=10' })
  t.equal(beyond.status, 200, 'past DIGEST_MAX_BYTES without trailers: served')
  t.notOk(beyond.headers['content-digest'] || beyond.headers['repr-digest'] || Object.keys(beyond.trailers).length, 'without a digest')
  const reprBeyond = await rawGet(`${smallBase}/volumes/v/data`, { te: 'trailers', range: 'bytes=0-99', 'want-repr-digest': 'sha-256=10' })
  t.notOk(reprBeyond.headers['repr-digest'], 'a Repr-Digest on a 206 of a volume past DIGEST_MAX_BYTES: none')
  const stillTrailed = await rawGet(`${smallBase}/volumes/v/data`, { te: 'trailers', 'want-content-digest': 'sha-256=10' })
  t.equal(stillTrailed.trailers['content-digest'], sha256(content), 'with TE: trailers, any size gets its trailer')
  const cached = await rawGet(`${smallBase}/volumes/v/data`, { range: 'bytes=0-99', 'want-repr-digest': 'sha-256=10' })
  t.equal(cached.headers['repr-digest'], sha256(content), 'that whole reply cached the Repr-Digest for its ETag: now a 206 gets it')
})

t.test('Repr-Digest is cached against the ETag and recomputed once the ETag changes', async (t) => {
  const content = pattern(600_000, 9)
  const { app } = await mirrored(t, content)
  const readBytes = async (res: { headers: Record<string, unknown> }) =>
    json(await app.inject({ url: `/operations/${res.headers['operation-id']}` })).operations.reduce((n: number, op: any) => n + op.bytes, 0)
  const ask = () => getData(app, 'v', { range: 'bytes=0-9', 'want-repr-digest': 'sha-256=1' })

  const first = await ask()
  t.equal(first.headers['repr-digest'], sha256(content), 'the first one is computed')
  t.equal(await readBytes(first), content.length + 10, 'by reading the whole content once')
  const second = await ask()
  t.equal(second.headers['repr-digest'], sha256(content), 'the second one is the same')
  t.equal(await readBytes(second), 10, 'from the cache: only the range is read')

  const patch = Buffer.from('changed!')
  t.equal((await putData(app, 'v', patch, { 'content-range': 'bytes 100-107/*', prefer: 'wait=10' })).statusCode, 200)
  const now = Buffer.from(content)
  patch.copy(now, 100)
  const third = await ask()
  t.not(third.headers.etag, first.headers.etag, 'a new ETag')
  t.equal(third.headers['repr-digest'], sha256(now), 'the digest of the new content')
  t.equal(await readBytes(third), content.length + 10, 'computed again')
  const whole = await getData(app, 'v', { 'want-content-digest': 'sha-256=1' })
  t.equal(whole.headers['content-digest'], sha256(now), 'a 200 Content-Digest is served from the same cache')
  t.equal(await readBytes(whole), now.length, 'reading only the body')
})

t.test('a write during the digest pass: the reply is prepared again, its digest the content of its ETag', async (t) => {
  const faults = new FaultInjector()
  const made = await makeApp(t, {}, { openFile: faults.opener })
  const { app, dataDir } = made
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.bin' }])
  const content = pattern(6 << 20, 10)
  t.equal((await putData(app, 'v', content)).statusCode, 200)
  faults.set(join(dataDir, 'a.bin'), { delayMs: 30 })
  const patch = pattern(1000, 11)
  const reading = getData(app, 'v', { range: 'bytes=0-99', 'want-repr-digest': 'sha-256=1' })
  // Its pass reads 6 MiB a MiB at a time, 30 ms each: the write comes once the read has begun.
  const groups = async () => json(await app.inject({ url: '/volumes/v/operations?limit=1000' })).operations.filter((g: any) => g.kind === 'read')
  await eventually(async () => (await groups()).some((g: any) => g.status === 'pending'), 'the read to begin')
  const written = await putData(app, 'v', patch, { 'content-range': `bytes 5000000-5000999/*` })
  t.equal(written.statusCode, 200, 'a write lands while the whole content is being digested')
  const res = await reading
  const now = Buffer.from(content)
  patch.copy(now, 5_000_000)
  t.equal(res.statusCode, 206, 'the read is served')
  t.equal(res.headers.etag, written.headers.etag, 'for the instant after the write')
  t.equal(res.headers['repr-digest'], sha256(now), 'with the digest of that content')
  t.ok(res.rawPayload.equals(now.subarray(0, 100)), 'and its bytes')
  t.ok((await groups()).some((g: any) => g.status === 'failed'), 'the first attempt was given up (its read group failed)')
})
