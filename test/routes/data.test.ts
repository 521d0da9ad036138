import t, { type Test } from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { open, readFile } from 'node:fs/promises'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
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
  sha256File,
} from '../helpers/app.js'
import { pattern } from '../helpers/pattern.js'

/** A volume over two sync replicas a.bin and b.bin holding `initial`. */
async function syncPair(t: Test, initial?: Buffer) {
  const made = await makeApp(t)
  await createVolume(t, made.app, 'v', [{ id: 'a', path: 'a.bin' }, { id: 'b', path: 'b.bin' }])
  if (initial) t.equal((await putData(made.app, 'v', initial)).statusCode, 200, 'initial content written')
  const files = () => Promise.all([readFile(join(made.dataDir, 'a.bin')), readFile(join(made.dataDir, 'b.bin'))])
  return { ...made, files }
}

/** Asserts both replica files hold exactly `bytes`. */
async function assertReplicas(t: Test, files: () => Promise<Buffer[]>, bytes: Buffer, message: string) {
  const [a, b] = await files()
  t.ok(a.equals(bytes), `${message}: replica a holds exactly the expected bytes (${a.length} vs ${bytes.length})`)
  t.ok(b.equals(bytes), `${message}: replica b holds exactly the expected bytes (${b.length} vs ${bytes.length})`)
}

async function etagOf(app: FastifyInstance, name = 'v'): Promise<string> {
  return json(await app.inject({ method: 'GET', url: `/volumes/${name}` })).etag
}

// ---------------------------------------------------------------------------------------------- PUT

t.test('PUT a whole body, then GET returns the same bytes', async (t) => {
  const { app, files } = await syncPair(t)
  const bytes = pattern(200_000, 5)
  const put = await putData(app, 'v', bytes)
  t.equal(put.statusCode, 200, 'every replica is sync: 200')
  // Read the replica files straight after the reply: sync replicas hold the bytes before it is sent.
  await assertReplicas(t, files, bytes, 'right after the reply')
  t.match(put.headers['operation-id'], /^[0-9a-f-]{36}$/, 'Operation-Id')
  t.match(put.headers.etag, /^"[^"]+"$/, 'ETag')
  t.notOk(put.headers.location, 'no Location when everything is done')
  const group = json(put)
  t.equal(group.id, put.headers['operation-id'], 'the body is the operation group')
  t.equal(group.kind, 'write')
  t.equal(group.status, 'done')
  t.equal(group.offset, 0)
  t.equal(group.length, bytes.length)
  t.same(group.operations.map((o: any) => [o.replica, o.mode, o.status, o.bytes]), [['a', 'sync', 'done', bytes.length], ['b', 'sync', 'done', bytes.length]])

  const get = await getData(app, 'v')
  t.equal(get.statusCode, 200)
  t.ok(get.rawPayload.equals(bytes), 'GET returns the bytes')
  t.equal(get.headers['content-type'], 'application/octet-stream')
  t.equal(get.headers['accept-ranges'], 'bytes')
  t.equal(Number(get.headers['content-length']), bytes.length)
  t.equal(get.headers.etag, put.headers.etag, 'the ETag a write returns is the one a read then sees')
  t.match(get.headers['operation-id'], /^[0-9a-f-]{36}$/, 'a GET has its own Operation-Id')
  t.not(get.headers['operation-id'], put.headers['operation-id'])

  const shorter = pattern(1000, 6)
  t.equal((await putData(app, 'v', shorter)).statusCode, 200)
  t.ok((await getData(app, 'v')).rawPayload.equals(shorter), 'a whole PUT replaces the content: a shorter body shrinks the volume')
  await assertReplicas(t, files, shorter, 'after a shorter PUT')
  t.equal(json(await app.inject({ method: 'GET', url: '/volumes/v' })).size, 1000)

  t.equal((await putData(app, 'v', Buffer.alloc(0))).statusCode, 200, 'an empty body')
  const empty = await getData(app, 'v')
  t.equal(empty.statusCode, 200)
  t.equal(empty.rawPayload.length, 0, 'empties the volume')
  await assertReplicas(t, files, Buffer.alloc(0), 'after an empty PUT')

  assertProblem(t, await putData(app, 'nope', bytes), 404, 'PUT to an unknown volume')
  assertProblem(t, await app.inject({ method: 'PUT', url: '/volumes/v/data?replica=a', payload: bytes }), 400, 'PUT takes no query')
})

t.test('ranged PUT with Content-Range', async (t) => {
  const initial = pattern(100, 1)
  const { app, files } = await syncPair(t, initial)
  let expected = Buffer.from(initial)

  const patch = Buffer.from('0123456789')
  const at10 = await putData(app, 'v', patch, { 'content-range': 'bytes 10-19/*' })
  t.equal(at10.statusCode, 200, 'bytes 10-19/*')
  patch.copy(expected, 10)
  await assertReplicas(t, files, expected, 'written at 10, the rest untouched')
  t.equal(json(at10).offset, 10, 'the group starts at 10')
  t.equal(json(at10).length, 10)

  const tail = Buffer.from('ABCDEFGHIJ')
  t.equal((await putData(app, 'v', tail, { 'content-range': 'bytes 95-104/*' })).statusCode, 200, 'a range past the end')
  expected = Buffer.concat([expected.subarray(0, 95), tail])
  await assertReplicas(t, files, expected, 'the volume grows to 105')

  t.equal((await putData(app, 'v', Buffer.from('xyz'), { 'content-range': 'bytes 0-2/50' })).statusCode, 200, 'a complete length shrinks')
  expected = Buffer.concat([Buffer.from('xyz'), expected.subarray(3, 50)])
  await assertReplicas(t, files, expected, 'resized to the complete length 50')
  t.equal(json(await app.inject({ method: 'GET', url: '/volumes/v' })).size, 50)

  t.equal((await putData(app, 'v', Buffer.from('Z'), { 'content-range': 'bytes 5-5/80' })).statusCode, 200, 'a complete length grows')
  expected = Buffer.concat([expected, Buffer.alloc(30)])
  expected[5] = 'Z'.charCodeAt(0)
  await assertReplicas(t, files, expected, 'grown to 80 with zeros')
  t.ok((await getData(app, 'v')).rawPayload.equals(expected), 'GET agrees')
})

t.test('a bad Content-Range or a Content-Length that disagrees is a 400 and changes nothing', async (t) => {
  const initial = pattern(100, 2)
  const { app, files } = await syncPair(t, initial)
  const etag = await etagOf(app)
  const cases: Array<[string, Record<string, string>, Buffer]> = [
    ['Content-Length shorter than the range', { 'content-range': 'bytes 10-19/*', 'content-length': '5' }, Buffer.alloc(5, 0x41)],
    ['Content-Length longer than the range', { 'content-range': 'bytes 10-19/*', 'content-length': '20' }, Buffer.alloc(20, 0x41)],
    ['last before first', { 'content-range': 'bytes 19-10/*' }, Buffer.alloc(10, 0x41)],
    ['a Range header syntax', { 'content-range': 'bytes=10-19' }, Buffer.alloc(10, 0x41)],
    ['no complete length', { 'content-range': 'bytes 10-19' }, Buffer.alloc(10, 0x41)],
    ['last outside the complete length', { 'content-range': 'bytes 10-19/15' }, Buffer.alloc(10, 0x41)],
    ['an unsatisfied-range form', { 'content-range': 'bytes */100' }, Buffer.alloc(10, 0x41)],
    ['another unit', { 'content-range': 'items 10-19/*' }, Buffer.alloc(10, 0x41)],
    ['not numbers', { 'content-range': 'bytes a-b/*' }, Buffer.alloc(10, 0x41)],
    ['empty', { 'content-range': '' }, Buffer.alloc(10, 0x41)],
    ['beyond 2^53', { 'content-range': 'bytes 9007199254740992-9007199254741001/*' }, Buffer.alloc(10, 0x41)],
  ]
  for (const [what, headers, body] of cases) {
    const res = await putData(app, 'v', body, headers)
    const problem = assertProblem(t, res, 400, what)
    t.match(problem.detail, /Content-(Range|Length)/, `${what}: the detail names the header`)
    await assertReplicas(t, files, initial, `${what}: unchanged`)
  }
  t.equal(await etagOf(app), etag, 'the ETag did not move')
  t.equal(json(await app.inject({ method: 'GET', url: '/volumes/v' })).size, 100, 'nor the size')
})

t.test('PUT takes the body as raw bytes whatever its Content-Type', async (t) => {
  const { app, files } = await syncPair(t)
  const jsonBody = Buffer.from('{"replicas":[{"id":"x","path":"y"}]}')
  const form = formData([{ name: 'offset', value: '0' }, { name: 'f', filename: 'f.bin', data: Buffer.from('payload') }])
  const cases: Array<[string, Buffer]> = [
    ['application/json', jsonBody],
    [form.contentType, form.body],
    ['text/plain; charset=utf-8', Buffer.from('plain text\n')],
    ['image/png', Buffer.from([0x89, 0x50, 0x4e, 0x47])],
    ['application/x-www-form-urlencoded', Buffer.from('a=1&b=2')],
  ]
  for (const [type, body] of cases) {
    const res = await app.inject({ method: 'PUT', url: '/volumes/v/data', headers: { 'content-type': type }, payload: body })
    t.equal(res.statusCode, 200, `${type}: 200`)
    await assertReplicas(t, files, body, `${type}: stored byte for byte`)
  }
  const untyped = Buffer.from([0, 1, 2, 255])
  const res = await app.inject({ method: 'PUT', url: '/volumes/v/data', payload: untyped })
  t.notOk((res as unknown as { raw: { req: { headers: Record<string, unknown> } } }).raw.req.headers['content-type'], 'sent without a Content-Type')
  t.equal(res.statusCode, 200, 'no Content-Type: 200')
  await assertReplicas(t, files, untyped, 'no Content-Type: stored')
  const big = randomBytes(3 << 20)
  t.equal((await putData(app, 'v', big)).statusCode, 200, 'a body over the 1 MiB JSON body limit is fine')
  await assertReplicas(t, files, big, '3 MiB body')
})

t.test('preconditions on PUT; every write moves the ETag', async (t) => {
  const { app, files } = await syncPair(t, pattern(50, 3))
  const seen = new Set<string>([await etagOf(app)])
  const stale = await etagOf(app)
  const bytes = pattern(50, 4)
  const first = await putData(app, 'v', bytes, { 'if-match': stale })
  t.equal(first.statusCode, 200, 'If-Match with the current ETag')
  t.notOk(seen.has(first.headers.etag as string), 'a write moves the ETag')
  seen.add(first.headers.etag as string)

  const refused = await putData(app, 'v', pattern(50, 9), { 'if-match': stale })
  assertProblem(t, refused, 412, 'If-Match with a stale ETag')
  await assertReplicas(t, files, bytes, 'a refused write changes nothing')
  t.equal(await etagOf(app), first.headers.etag, 'nor the ETag')
  assertProblem(t, await putData(app, 'v', bytes, { 'if-match': 'W/' + first.headers.etag }), 412, 'a weak ETag never matches for a write')
  assertProblem(t, await putData(app, 'v', bytes, { 'if-none-match': '*' }), 412, 'If-None-Match: * on a volume that exists')
  t.equal((await putData(app, 'v', bytes, { 'if-match': `"nope", ${first.headers.etag}` })).statusCode, 200, 'If-Match with a list holding the current ETag')
  t.equal((await putData(app, 'v', bytes, { 'if-match': '*' })).statusCode, 200, 'If-Match: *')

  // The same bytes again, a range, a resize, a POST: each one is a new ETag.
  const writes = [
    () => putData(app, 'v', bytes),
    () => putData(app, 'v', Buffer.from('q'), { 'content-range': 'bytes 3-3/*' }),
    () => putData(app, 'v', Buffer.from('q'), { 'content-range': 'bytes 3-3/40' }),
    () => {
      const form = formData([{ name: 'offset', value: '1' }, { name: 'f', filename: 'f', data: Buffer.from('zz') }])
      return app.inject({ method: 'POST', url: '/volumes/v/data', headers: { 'content-type': form.contentType }, payload: form.body })
    },
  ]
  for (const [i, write] of writes.entries()) {
    const res = await write()
    t.equal(res.statusCode, 200, `write ${i}`)
    const etag = res.headers.etag as string
    t.notOk(seen.has(etag), `write ${i} has a new ETag`)
    t.equal(etag, await etagOf(app), `write ${i}: the reply's ETag is the volume's`)
    seen.add(etag)
  }
})

t.test('200 once every replica is done; 202 + Location while a throttled async replica is behind', async (t) => {
  const { app, dataDir } = await makeApp(t)
  // 50 kB/s with a 50 kB bucket: 150 kB take at least 2 s to reach the async replica.
  await createVolume(t, app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'slow', path: 'slow.bin', mode: 'async', maxBytesPerSecond: 50_000 }])
  const bytes = pattern(150_000, 8)
  const res = await putData(app, 'v', bytes)
  const fastNow = await readFile(join(dataDir, 'fast.bin'))
  t.equal(res.statusCode, 202, '202 Accepted')
  t.ok(fastNow.equals(bytes), 'the sync replica holds the bytes when the reply comes')
  const id = res.headers['operation-id']
  t.match(id, /^[0-9a-f-]{36}$/, 'Operation-Id')
  t.equal(res.headers.location, `/operations/${id}`, 'Location is where to poll')
  t.equal(res.headers.etag, await etagOf(app), 'ETag')
  const group = json(res)
  t.equal(group.status, 'pending')
  t.equal(group.finishedAt, null)
  const [fast, slow] = group.operations
  t.same([fast.replica, fast.mode, fast.status, fast.bytes], ['fast', 'sync', 'done', bytes.length], 'the sync replica is done')
  t.same([slow.replica, slow.mode], ['slow', 'async'])
  t.ok(slow.status === 'queued' || slow.status === 'started', 'the async replica is not')
  const status = json(await app.inject({ method: 'GET', url: '/volumes/v' }))
  t.equal(status.replicas[1].state, 'behind', 'the async replica is behind')
  t.equal(status.replicas[1].dirtyBytes, bytes.length, 'by every byte written')
  t.ok((await getData(app, 'v')).rawPayload.equals(bytes), 'reads see the write at once')

  const polled = await app.inject({ method: 'GET', url: `/operations/${id}?wait=30000` })
  t.equal(json(polled).status, 'done', 'the group completes')
  t.ok((await readFile(join(dataDir, 'slow.bin'))).equals(bytes), 'then the async replica holds the bytes')
})

t.test('Prefer: wait lets the reply wait for async replicas', async (t) => {
  const { app, dataDir } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'slow', path: 'slow.bin', mode: 'async' }])
  const bytes = pattern(300_000, 2)
  const res = await putData(app, 'v', bytes, { prefer: 'wait=5' })
  t.equal(res.statusCode, 200, 'an unthrottled async replica finishes within the wait: 200')
  t.equal(res.headers['preference-applied'], 'wait=5')
  t.ok(res.headers['operation-id'] && res.headers.etag, 'Operation-Id and ETag')
  t.equal(json(res).status, 'done')
  t.ok((await readFile(join(dataDir, 'slow.bin'))).equals(bytes), 'the async replica holds the bytes when the reply comes')

  await createVolume(t, app, 'w', [{ id: 'fast', path: 'w-fast.bin' }, { id: 'slow', path: 'w-slow.bin', mode: 'async', maxBytesPerSecond: 10_000 }])
  const slow = await putData(app, 'w', pattern(100_000), { prefer: 'respond-async, wait=1' })
  t.equal(slow.statusCode, 202, 'a wait shorter than the async replica needs still ends in 202')
  t.equal(slow.headers['preference-applied'], 'wait=1')
  t.equal(slow.headers.location, `/operations/${slow.headers['operation-id']}`)
})

// ---------------------------------------------------------------------------------------------- GET

t.test('GET ranges', async (t) => {
  const bytes = pattern(100, 7)
  const { app } = await syncPair(t, bytes)

  const single = await getData(app, 'v', { range: 'bytes=10-19' })
  t.equal(single.statusCode, 206, 'one range: 206')
  t.equal(single.headers['content-range'], 'bytes 10-19/100')
  t.equal(single.headers['content-length'], '10')
  t.equal(single.headers['content-type'], 'application/octet-stream')
  t.ok(single.rawPayload.equals(bytes.subarray(10, 20)), 'the bytes of the range')
  t.ok(single.headers['operation-id'] && single.headers.etag, 'Operation-Id and ETag on a 206')

  const suffix = await getData(app, 'v', { range: 'bytes=-5' })
  t.equal(suffix.statusCode, 206, 'suffix range')
  t.equal(suffix.headers['content-range'], 'bytes 95-99/100')
  t.ok(suffix.rawPayload.equals(bytes.subarray(95)), 'the last 5 bytes')

  const open = await getData(app, 'v', { range: 'bytes=10-' })
  t.equal(open.statusCode, 206, 'open-ended range')
  t.equal(open.headers['content-range'], 'bytes 10-99/100')
  t.ok(open.rawPayload.equals(bytes.subarray(10)), 'from 10 to the end')

  const clamped = await getData(app, 'v', { range: 'bytes=90-1000' })
  t.equal(clamped.headers['content-range'], 'bytes 90-99/100', 'a last position past the end is clamped')
  t.ok(clamped.rawPayload.equals(bytes.subarray(90)))

  const bigSuffix = await getData(app, 'v', { range: 'bytes=-1000' })
  t.equal(bigSuffix.headers['content-range'], 'bytes 0-99/100', 'a suffix longer than the volume is all of it')

  const multi = await getData(app, 'v', { range: 'bytes=0-4, 20-29,-3' })
  t.equal(multi.statusCode, 206, 'several ranges: 206')
  const type = String(multi.headers['content-type'])
  t.match(type, /^multipart\/byteranges; boundary=/, 'multipart/byteranges')
  t.notOk(multi.headers['content-range'], 'no Content-Range on the whole multipart reply')
  t.equal(Number(multi.headers['content-length']), multi.rawPayload.length, 'Content-Length is exact')
  const parts = parseByteranges(multi.rawPayload, type)
  t.equal(parts.length, 3, 'three parts')
  t.same(parts.map((p) => [p.start, p.end, p.size, p.contentType]), [[0, 4, 100, 'application/octet-stream'], [20, 29, 100, 'application/octet-stream'], [97, 99, 100, 'application/octet-stream']])
  for (const p of parts) t.ok(p.data.equals(bytes.subarray(p.start, p.end + 1)), `part ${p.start}-${p.end} holds its bytes`)

  const merged = await getData(app, 'v', { range: 'bytes=0-5,3-9' })
  t.equal(merged.statusCode, 206)
  t.equal(merged.headers['content-range'], 'bytes 0-9/100', 'overlapping ranges are coalesced into one')

  const unsatisfiable = await getData(app, 'v', { range: 'bytes=100-200' })
  assertProblem(t, unsatisfiable, 416, 'a range past the end')
  t.equal(unsatisfiable.headers['content-range'], 'bytes */100', 'Content-Range: bytes */size')
  t.equal((await getData(app, 'v', { range: 'bytes=-0' })).statusCode, 416, 'a zero suffix')

  for (const ignored of ['bytes=5-1', 'lines=0-5', 'bytes=abc', 'bytes=']) {
    const res = await getData(app, 'v', { range: ignored })
    t.equal(res.statusCode, 200, `an invalid Range (${ignored}) is ignored: 200`)
    t.ok(res.rawPayload.equals(bytes), `${ignored}: the whole content`)
  }
})

t.test('GET and HEAD preconditions', async (t) => {
  const bytes = pattern(100, 4)
  const { app } = await syncPair(t, bytes)
  const etag = await etagOf(app)
  const stale = '"not-the-etag"'

  const ifRangeStale = await getData(app, 'v', { range: 'bytes=0-9', 'if-range': stale })
  t.equal(ifRangeStale.statusCode, 200, 'If-Range stale: the whole content')
  t.ok(ifRangeStale.rawPayload.equals(bytes))
  const ifRangeCurrent = await getData(app, 'v', { range: 'bytes=0-9', 'if-range': etag })
  t.equal(ifRangeCurrent.statusCode, 206, 'If-Range current: the range')

  const notModified = await getData(app, 'v', { 'if-none-match': etag })
  t.equal(notModified.statusCode, 304, 'If-None-Match current: 304')
  t.equal(notModified.rawPayload.length, 0, 'no body')
  t.equal(notModified.headers.etag, etag, 'the ETag is repeated')
  t.equal((await getData(app, 'v', { 'if-none-match': `W/${etag}` })).statusCode, 304, 'If-None-Match compares weakly')
  t.equal((await getData(app, 'v', { 'if-none-match': '*' })).statusCode, 304, 'If-None-Match: *')
  t.equal((await getData(app, 'v', { 'if-none-match': stale })).statusCode, 200, 'If-None-Match stale: 200')

  assertProblem(t, await getData(app, 'v', { 'if-match': stale }), 412, 'If-Match stale')
  t.equal((await getData(app, 'v', { 'if-match': etag })).statusCode, 200, 'If-Match current: 200')

  // After a write, the old ETag is stale everywhere.
  t.equal((await putData(app, 'v', bytes)).statusCode, 200)
  t.equal((await getData(app, 'v', { 'if-none-match': etag })).statusCode, 200, 'a write makes the old ETag stale for If-None-Match')
  t.equal((await getData(app, 'v', { range: 'bytes=0-9', 'if-range': etag })).statusCode, 200, 'and for If-Range')
})

t.test('HEAD has the headers of a GET and no body', async (t) => {
  const bytes = pattern(1000, 4)
  const { app } = await syncPair(t, bytes)
  const head = await app.inject({ method: 'HEAD', url: '/volumes/v/data' })
  t.equal(head.statusCode, 200)
  t.equal(head.rawPayload.length, 0, 'no body')
  t.equal(head.headers['content-length'], '1000', 'the length of the content')
  t.equal(head.headers['content-type'], 'application/octet-stream')
  t.equal(head.headers['accept-ranges'], 'bytes')
  t.equal(head.headers.etag, await etagOf(app))
  t.ok(head.headers['operation-id'], 'Operation-Id')
  const ranged = await app.inject({ method: 'HEAD', url: '/volumes/v/data', headers: { range: 'bytes=10-19' } })
  t.equal(ranged.statusCode, 206)
  t.equal(ranged.headers['content-range'], 'bytes 10-19/1000')
  t.equal(ranged.headers['content-length'], '10')
  t.equal(ranged.rawPayload.length, 0)
  const multi = await app.inject({ method: 'HEAD', url: '/volumes/v/data', headers: { range: 'bytes=0-1,5-6' } })
  t.equal(multi.statusCode, 206)
  t.match(multi.headers['content-type'], /^multipart\/byteranges/)
  t.equal(multi.rawPayload.length, 0)
  t.equal((await app.inject({ method: 'HEAD', url: '/volumes/nope/data' })).statusCode, 404, 'HEAD of an unknown volume')
})


t.test('GET ?replica= reads that replica', async (t) => {
  const bug = t
  const { app, dataDir } = await makeApp(t)
  // Without checksums: a replica made to differ is read as it is (with them, the read heals it: test/system/checksums.test.ts).
  await createVolume(t, app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'slow', path: 'slow.bin', mode: 'async' }], { checksums: false })
  const bytes = pattern(100, 1)
  t.equal((await putData(app, 'v', bytes, { prefer: 'wait=10' })).statusCode, 200, 'converged')
  // Make the async replica differ behind the service's back.
  const handle = await open(join(dataDir, 'slow.bin'), 'r+')
  await handle.write(Buffer.from('DIFFERENT'), 0, 9, 0)
  await handle.close()
  const diverged = Buffer.concat([Buffer.from('DIFFERENT'), bytes.subarray(9)])

  const slow = await getData(app, 'v', {}, '?replica=slow')
  t.equal(slow.statusCode, 200)
  bug.ok(slow.rawPayload.equals(diverged), '?replica=slow reads the slow (async) replica')
  t.ok((await getData(app, 'v', {}, '?replica=fast')).rawPayload.equals(bytes), '?replica=fast reads the fast one')
  t.ok((await getData(app, 'v')).rawPayload.equals(bytes), 'without it, the first reading replica')
  const ranged = await getData(app, 'v', { range: 'bytes=0-8' }, '?replica=slow')
  bug.equal(ranged.rawPayload.toString(), 'DIFFERENT', 'ranges apply to the named replica')
  const group = json(await app.inject({ method: 'GET', url: `/operations/${slow.headers['operation-id']}` }))
  t.same(group.operations.map((o: any) => o.replica), ['slow'], 'the read group names the replica read')

  // The same through a sync replica, which works: make the sync one differ instead.
  await createVolume(t, app, 'w', [{ id: 'one', path: 'one.bin' }, { id: 'two', path: 'two.bin' }], { checksums: false })
  t.equal((await putData(app, 'w', bytes)).statusCode, 200)
  const two = await open(join(dataDir, 'two.bin'), 'r+')
  await two.write(Buffer.from('OTHER'), 0, 5, 0)
  await two.close()
  t.equal((await getData(app, 'w', { range: 'bytes=0-4' }, '?replica=two')).rawPayload.toString(), 'OTHER', '?replica=two reads that sync replica')
  t.ok((await getData(app, 'w', {}, '?replica=one')).rawPayload.equals(bytes), '?replica=one reads the other')

  assertProblem(t, await getData(app, 'v', {}, '?replica=nope'), 404, 'an unknown replica')
  assertProblem(t, await getData(app, 'v', {}, '?replica=.bad'), 400, 'an invalid replica id')
  assertProblem(t, await getData(app, 'v', {}, '?other=1'), 400, 'an unknown query parameter')
})

t.test('a volume whose first reading replica is async reads its bytes', async (t) => {
  const bug = t
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'behind', path: 'behind.bin', mode: 'async' }, { id: 'sync', path: 'sync.bin' }])
  const bytes = pattern(4096, 12)
  t.equal((await putData(app, 'v', bytes, { prefer: 'wait=10' })).statusCode, 200, 'written and converged')
  const res = await getData(app, 'v')
  t.equal(res.statusCode, 200)
  bug.ok(res.rawPayload.equals(bytes), 'GET returns the bytes, not zeros')
  const range = await getData(app, 'v', { range: 'bytes=100-199' })
  bug.ok(range.rawPayload.equals(bytes.subarray(100, 200)), 'a range too')
})

t.test('GET: an empty volume, an unknown volume, a large volume', async (t) => {
  const { app } = await syncPair(t)
  const empty = await getData(app, 'v')
  t.equal(empty.statusCode, 200)
  t.equal(empty.headers['content-length'], '0')
  t.equal(empty.rawPayload.length, 0)
  const range = await getData(app, 'v', { range: 'bytes=0-0' })
  assertProblem(t, range, 416, 'any range of an empty volume')
  t.equal(range.headers['content-range'], 'bytes */0')
  assertProblem(t, await getData(app, 'nope'), 404, 'an unknown volume')

  // Over 1 MiB the reply is streamed in chunks: check the seams.
  const big = randomBytes((3 << 20) + 12345)
  t.equal((await putData(app, 'v', big)).statusCode, 200)
  const all = await getData(app, 'v')
  t.equal(all.statusCode, 200)
  t.equal(Number(all.headers['content-length']), big.length)
  t.ok(all.rawPayload.equals(big), 'a streamed whole read is exact')
  const seam = await getData(app, 'v', { range: `bytes=${(1 << 20) - 7}-${(2 << 20) + 300_000}` })
  t.ok(seam.rawPayload.equals(big.subarray((1 << 20) - 7, (2 << 20) + 300_001)), 'a streamed range across chunk seams is exact')
  const multi = await getData(app, 'v', { range: `bytes=0-9,${(2 << 20) - 5}-${(3 << 20) + 2}` })
  const parts = parseByteranges(multi.rawPayload, String(multi.headers['content-type']))
  t.equal(parts.length, 2)
  for (const p of parts) t.ok(p.data.equals(big.subarray(p.start, p.end + 1)), `large part ${p.start}-${p.end}`)
})

// ---------------------------------------------------------------------------------------------- POST

function postForm(app: FastifyInstance, form: { body: Buffer; contentType: string }, name = 'v') {
  return app.inject({ method: 'POST', url: `/volumes/${name}/data`, headers: { 'content-type': form.contentType }, payload: form.body })
}

t.test('POST multipart/form-data: an offset, then files written back to back as one group', async (t) => {
  const initial = pattern(100, 3)
  const { app, files } = await syncPair(t, initial)
  const before = json(await app.inject({ method: 'GET', url: '/volumes/v/operations' })).operations.length
  const one = Buffer.from('first-part')
  const two = pattern(5000, 11)
  const res = await postForm(app, formData([
    { name: 'note', value: 'ignored field' },
    { name: 'offset', value: '40' },
    { name: 'a', filename: 'a.bin', data: one },
    { name: 'b', filename: 'b.bin', data: two, contentType: 'image/png' },
  ]))
  t.equal(res.statusCode, 200, '200')
  const expected = Buffer.concat([initial.subarray(0, 40), one, two])
  await assertReplicas(t, files, expected, 'the parts follow each other from the offset')
  const group = json(res)
  t.equal(group.kind, 'write')
  t.equal(group.offset, 40, 'one group at the offset')
  t.equal(group.length, one.length + two.length, 'covering both parts')
  t.equal(res.headers['operation-id'], group.id)
  t.ok(res.headers.etag)
  const after = json(await app.inject({ method: 'GET', url: '/volumes/v/operations' })).operations
  t.equal(after.length, before + 1, 'exactly one new operation group')

  // Writing inside the content keeps the rest; offset = size appends.
  const appended = await postForm(app, formData([{ name: 'offset', value: String(expected.length) }, { name: 'f', filename: 'f', data: Buffer.from('END') }]))
  t.equal(appended.statusCode, 200, 'an offset at the end appends')
  await assertReplicas(t, files, Buffer.concat([expected, Buffer.from('END')]), 'appended')
})

t.test('POST refusals: 400 or 415, nothing written', async (t) => {
  const initial = pattern(100, 5)
  const { app, files } = await syncPair(t, initial)
  const etag = await etagOf(app)
  const data = Buffer.from('should never land')
  const cases: Array<[string, { body: Buffer; contentType: string }]> = [
    ['no offset', formData([{ name: 'f', filename: 'f', data }])],
    ['the offset after a file', formData([{ name: 'f', filename: 'f', data }, { name: 'offset', value: '0' }])],
    ['a negative offset', formData([{ name: 'offset', value: '-1' }, { name: 'f', filename: 'f', data }])],
    ['a fractional offset', formData([{ name: 'offset', value: '1.5' }, { name: 'f', filename: 'f', data }])],
    ['a word for an offset', formData([{ name: 'offset', value: 'ten' }, { name: 'f', filename: 'f', data }])],
    ['an offset past the end of the volume', formData([{ name: 'offset', value: '101' }, { name: 'f', filename: 'f', data }])],
    ['an offset far past the end', formData([{ name: 'offset', value: '1000000000' }, { name: 'f', filename: 'f', data }])],
    ['no file part', formData([{ name: 'offset', value: '0' }])],
  ]
  for (const [what, form] of cases) {
    const res = await postForm(app, form)
    assertProblem(t, res, 400, what)
    await assertReplicas(t, files, initial, `${what}: nothing written`)
  }
  t.equal(json(await app.inject({ method: 'GET', url: '/volumes/v' })).size, 100, 'the size is unchanged')

  for (const type of ['application/octet-stream', 'application/json', 'text/plain']) {
    const res = await app.inject({ method: 'POST', url: '/volumes/v/data', headers: { 'content-type': type }, payload: type === 'application/json' ? '{"offset":0}' : 'bytes' })
    assertProblem(t, res, 415, `POST of ${type}`)
  }
  await assertReplicas(t, files, initial, 'after the 415s: nothing written')
  t.equal(await etagOf(app), etag, 'no refused POST moved the ETag')
  assertProblem(t, await postForm(app, formData([{ name: 'offset', value: '0' }, { name: 'f', filename: 'f', data }]), 'nope'), 404, 'POST to an unknown volume')
  const stale = formData([{ name: 'offset', value: '0' }, { name: 'f', filename: 'f', data }])
  const res = await app.inject({ method: 'POST', url: '/volumes/v/data', headers: { 'content-type': stale.contentType, 'if-match': '"stale"' }, payload: stale.body })
  assertProblem(t, res, 412, 'POST with a stale If-Match')
  await assertReplicas(t, files, initial, 'after the 412: nothing written')
})

// ---------------------------------------------------------------------------------------------- streaming

interface RawReply {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
}

/** Sends a request with a chunked body (no Content-Length) written chunk by chunk, honouring backpressure. */
function chunkedRequest(url: string, headers: Record<string, string>, chunks: Iterable<Buffer>): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked', ...headers } })
    let replied = false
    req.on('response', (res) => {
      replied = true
      const body: Buffer[] = []
      res.on('data', (d: Buffer) => body.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(body) }))
      res.on('error', reject)
    })
    // A server that answers before the body is all sent may reset the connection: only fail without a reply.
    req.on('error', (err) => {
      if (!replied) reject(err)
    })
    void (async () => {
      for (const chunk of chunks) {
        if (replied || req.destroyed) return
        if (!req.write(chunk)) await new Promise((r) => req.once('drain', r))
      }
      req.end()
    })()
  })
}

t.test('a 64 MiB chunked PUT lands byte-identical on every replica', async (t) => {
  const { app, dataDir } = await makeApp(t)
  await createVolume(t, app, 'big', [{ id: 'a', path: 'big-a.bin' }, { id: 'b', path: 'big-b.bin', mode: 'async' }])
  const base = await listen(t, app)
  const total = 64 << 20
  const hash = createHash('sha256')
  const seed = randomBytes(1 << 20)
  function* chunks(): Generator<Buffer> {
    // Varying chunk sizes (1 byte to 1 MiB) so the server sees odd boundaries.
    for (let at = 0, i = 0; at < total; i++) {
      const size = Math.min(total - at, i % 7 === 0 ? 1 + (i % 13) : (1 << 20) - (i % 5000))
      const chunk = Buffer.from(seed.subarray(0, size))
      if (size >= 4) chunk.writeUInt32LE(i, 0)
      hash.update(chunk)
      at += size
      yield chunk
    }
  }
  const reply = await chunkedRequest(`${base}/volumes/big/data`, { prefer: 'wait=60' }, chunks())
  const expected = hash.digest('hex')
  t.equal(reply.status, 200, `200 (${reply.body.toString().slice(0, 200)})`)
  t.equal(JSON.parse(reply.body.toString()).length, total, 'the group covers all 64 MiB')
  t.equal(json(await app.inject({ method: 'GET', url: '/volumes/big' })).size, total, 'the volume is 64 MiB')
  t.equal(await sha256File(join(dataDir, 'big-a.bin')), expected, 'the sync replica is byte-identical to what was sent')
  t.equal(await sha256File(join(dataDir, 'big-b.bin')), expected, 'the async replica too')
})

t.test('a chunked PUT whose body overruns its Content-Range is a 400 and writes nothing past the range', async (t) => {
  const initial = pattern(1000, 6)
  const { app, files } = await syncPair(t, initial)
  const base = await listen(t, app)
  // First a chunk inside the range, then one that would cross its end.
  const overrun = await chunkedRequest(`${base}/volumes/v/data`, { 'content-range': 'bytes 10-19/*' }, [Buffer.alloc(6, 0x58), Buffer.alloc(300, 0x59)])
  t.equal(overrun.status, 400, '400')
  t.match(overrun.headers['content-type'], /^application\/problem\+json/)
  const [a, b] = await files()
  for (const [id, file] of [['a', a], ['b', b]] as const) {
    t.equal(file.length, initial.length, `replica ${id}: the size is unchanged`)
    t.ok(file.subarray(0, 10).equals(initial.subarray(0, 10)), `replica ${id}: nothing before the range changed`)
    t.ok(file.subarray(20).equals(initial.subarray(20)), `replica ${id}: nothing past the range was written`)
    t.equal(file.subarray(10, 20).indexOf(0x59), -1, `replica ${id}: no byte of the overrunning chunk was written`)
  }
  t.equal(json(await app.inject({ method: 'GET', url: '/volumes/v' })).size, 1000, 'the volume size is unchanged')

  // A body shorter than its range is refused too, and its group ends failed.
  const short = await chunkedRequest(`${base}/volumes/v/data`, { 'content-range': 'bytes 10-19/*' }, [Buffer.alloc(4, 0x5a)])
  t.equal(short.status, 400, 'a body shorter than its Content-Range: 400')
  const groups = json(await app.inject({ method: 'GET', url: '/volumes/v/operations?status=failed' })).operations
  t.equal(groups.length, 2, 'both refused writes are failed groups')
  t.ok(groups.every((g: any) => g.operations.every((o: any) => o.status === 'failed' && o.error)), 'each replica operation says why')
})

t.test('several writes at once each land whole', async (t) => {
  const { app, files } = await syncPair(t, Buffer.alloc(40_000))
  const pieces = Array.from({ length: 8 }, (_, i) => Buffer.alloc(5000, 0x41 + i))
  const replies = await Promise.all(pieces.map((p, i) => putData(app, 'v', p, { 'content-range': `bytes ${i * 5000}-${i * 5000 + 4999}/*` })))
  t.same(replies.map((r) => r.statusCode), pieces.map(() => 200))
  await assertReplicas(t, files, Buffer.concat(pieces), 'every range is where it was sent')
})

t.test('concurrent uploads gathered into reused buffers never mix their bytes, with or without a sync replica', async (t) => {
  const { app, dataDir } = await makeApp(t)
  // "s" has a sync replica (gathered into pooled slabs); "q" has none (chunks stay queued in lanes, so fresh buffers).
  await createVolume(t, app, 's', [{ id: 'a', path: 's-a.bin' }, { id: 'b', path: 's-b.bin', mode: 'async' }])
  await createVolume(t, app, 'q', [{ id: 'a', path: 'q-a.bin', mode: 'async' }, { id: 'b', path: 'q-b.bin', mode: 'async' }])
  const base = await listen(t, app)
  const part = (3 << 19) + 777 // 1.5 MiB and an odd tail: crosses several gather boundaries
  const uploads = 6
  const expected = Buffer.alloc(part * uploads)
  const sends: Array<Promise<RawReply>> = []
  for (const name of ['s', 'q']) {
    for (let i = 0; i < uploads; i++) {
      const body = randomBytes(part)
      if (name === 's') body.copy(expected, i * part)
      const chunks: Buffer[] = []
      // Chunk sizes from 1 byte to 300 KiB, different per upload, so gather boundaries fall mid-chunk.
      for (let at = 0, k = 0; at < part; k++) {
        const size = Math.min(part - at, k % 5 === 0 ? 1 + ((i * 31 + k) % 97) : 1 + (((i + 1) * 7919 * (k + 3)) % (300 << 10)))
        chunks.push(body.subarray(at, at + size))
        at += size
      }
      const range = `bytes ${i * part}-${(i + 1) * part - 1}/*`
      sends.push(chunkedRequest(`${base}/volumes/${name}/data`, { 'content-range': range, prefer: 'wait=60' }, chunks).then((r) => ({ ...r, sent: body, name, i }) as RawReply))
    }
  }
  // Large GETs at the same time take and return read slabs from the same pool.
  const readers = Array.from({ length: 8 }, () => fetch(`${base}/volumes/s/data`, { headers: { range: 'bytes=0-1048575' } }).then((r) => r.arrayBuffer()))
  const replies = (await Promise.all(sends)) as Array<RawReply & { sent: Buffer; name: string; i: number }>
  await Promise.all(readers)
  t.same(replies.map((r) => r.status), replies.map(() => 200), 'every upload is acknowledged once every replica holds it')
  const sA = await readFile(join(dataDir, 's-a.bin'))
  t.ok(sA.equals(expected), 'the sync replica holds every upload where it was sent')
  t.ok((await readFile(join(dataDir, 's-b.bin'))).equals(expected), 'and so does its async mirror')
  for (const id of ['a', 'b']) {
    const q = await readFile(join(dataDir, `q-${id}.bin`))
    const wrong = replies.filter((r) => r.name === 'q' && !q.subarray(r.i * part, (r.i + 1) * part).equals(r.sent)).map((r) => r.i)
    t.same(wrong, [], `replica q-${id}: every upload of the volume without a sync replica landed intact`)
  }
})
