// tus 1.0.0 resumable uploads (routes/uploads.ts) through app.inject: every status the protocol answers,
// the records on disk, the replace and 410 rules, locking, checksums and expiry.
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { type IncomingMessage, request } from 'node:http'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { assertProblem, closeOnce, createVolume, getData, json, listen, makeApp, putData } from '../helpers/app.js'
import { eventually } from '../helpers/eventually.js'
import { pattern } from '../helpers/pattern.js'

const TUS = { 'tus-resumable': '1.0.0' }
const OCTETS = 'application/offset+octet-stream'
const b64 = (s: string) => Buffer.from(s).toString('base64')

async function volumeApp(t: Test, env: Record<string, string> = {}, initial?: Buffer) {
  const made = await makeApp(t, env)
  await createVolume(t, made.app, 'v', [{ id: 'a', path: 'a.img' }, { id: 'b', path: 'b.img' }])
  if (initial) t.equal((await putData(made.app, 'v', initial)).statusCode, 200, 'initial content')
  return made
}

function create(app: FastifyInstance, length: number, headers: Record<string, string> = {}, payload?: Buffer) {
  return app.inject({ method: 'POST', url: '/volumes/v/uploads', headers: { ...TUS, 'upload-length': String(length), ...headers }, ...(payload ? { payload } : {}) })
}

function patch(app: FastifyInstance, location: string, offset: number, body: Buffer, headers: Record<string, string> = {}) {
  return app.inject({ method: 'PATCH', url: location, headers: { ...TUS, 'content-type': OCTETS, 'upload-offset': String(offset), ...headers }, payload: body })
}

const head = (app: FastifyInstance, location: string, headers: Record<string, string> = TUS) => app.inject({ method: 'HEAD', url: location, headers })
const volumeData = async (app: FastifyInstance) => (await getData(app, 'v')).rawPayload
const etag = async (app: FastifyInstance) => json(await app.inject({ method: 'GET', url: '/volumes/v' })).etag as string

async function created(t: Test, app: FastifyInstance, length: number, headers: Record<string, string> = {}): Promise<string> {
  const res = await create(app, length, headers)
  t.equal(res.statusCode, 201, `upload of ${length} bytes created (${res.statusCode === 201 ? 'ok' : res.body})`)
  return String(res.headers.location)
}

t.test('OPTIONS tells the protocol, its extensions and limits, with or without Tus-Resumable', async (t) => {
  const { app } = await volumeApp(t)
  const res = await app.inject({ method: 'OPTIONS', url: '/volumes/v/uploads' })
  t.equal(res.statusCode, 204)
  t.equal(res.headers['tus-resumable'], '1.0.0')
  t.equal(res.headers['tus-version'], '1.0.0')
  t.equal(res.headers['tus-extension'], 'creation,creation-with-upload,termination,checksum,expiration')
  t.equal(res.headers['tus-max-size'], String(2 ** 44), 'Tus-Max-Size is MAX_VOLUME_BYTES')
  t.equal(res.headers['tus-checksum-algorithm'], 'sha1,sha256')
  assertProblem(t, await app.inject({ method: 'OPTIONS', url: '/volumes/nope/uploads' }), 404, 'an unknown volume')
})

t.test('every request but OPTIONS needs Tus-Resumable: 1.0.0 (412 with Tus-Version)', async (t) => {
  const { app } = await volumeApp(t)
  const location = await created(t, app, 10)
  const requests: InjectOptions[] = [
    { method: 'POST', url: '/volumes/v/uploads', headers: { 'upload-length': '1' } },
    { method: 'HEAD', url: location },
    { method: 'PATCH', url: location, headers: { 'content-type': OCTETS, 'upload-offset': '0' }, payload: 'x' },
    { method: 'DELETE', url: location },
    { method: 'POST', url: '/volumes/v/uploads', headers: { 'upload-length': '1', 'tus-resumable': '0.2.2' } },
  ]
  for (const request of requests) {
    const res = await app.inject(request)
    t.equal(res.statusCode, 412, `${request.method} ${request.headers?.['tus-resumable'] ?? 'without it'}: 412`)
    t.equal(res.headers['tus-version'], '1.0.0', 'Tus-Version')
    t.equal(res.headers['tus-resumable'], '1.0.0', 'Tus-Resumable')
  }
  t.equal((await head(app, location)).headers['upload-offset'], '0', 'nothing was written')
})

t.test('POST creates an upload: 201 with Location and Upload-Expires; HEAD tells its offset, length and metadata', async (t) => {
  const { app, dataDir } = await volumeApp(t, {}, pattern(100, 1))
  const metadata = `filename ${b64('disk.img')},offset ${b64('40')},flag`
  const res = await create(app, 50, { 'upload-metadata': metadata })
  t.equal(res.statusCode, 201)
  const location = String(res.headers.location)
  t.match(location, /^\/volumes\/v\/uploads\/[0-9a-f]{32}$/, 'Location')
  t.equal(res.headers['tus-resumable'], '1.0.0')
  t.notOk(res.headers['upload-offset'], 'no Upload-Offset without a body')
  const expires = Date.parse(String(res.headers['upload-expires']))
  t.ok(Math.abs(expires - (Date.now() + 86_400_000)) < 5_000, 'Upload-Expires is 24 h away')
  const id = location.split('/').pop()!
  const record = JSON.parse(await readFile(join(dataDir, '.filemirror', 'uploads', 'v', `${id}.json`), 'utf8'))
  t.match(record, { id, volume: 'v', start: 40, length: 50, offset: 0, replace: false, metadata }, 'the record on disk')

  const h = await head(app, location)
  t.equal(h.statusCode, 200)
  t.equal(h.headers['upload-offset'], '0')
  t.equal(h.headers['upload-length'], '50')
  t.equal(h.headers['upload-metadata'], metadata, 'Upload-Metadata as sent')
  t.equal(h.headers['cache-control'], 'no-store')
  t.equal(h.headers['tus-resumable'], '1.0.0')
  t.ok(h.headers['upload-expires'], 'Upload-Expires')

  t.equal((await head(app, '/volumes/v/uploads/0123456789abcdef0123456789abcdef')).statusCode, 404, 'an unknown upload: 404')
  t.equal((await head(app, '/volumes/v/uploads/..%2F..%2Fetc')).statusCode, 404, 'not an upload id: 404')
  t.equal((await head(app, '/volumes/nope/uploads/0123456789abcdef0123456789abcdef')).statusCode, 404, 'an unknown volume: 404')
})

t.test('POST refuses what it cannot create', async (t) => {
  const { app } = await volumeApp(t, { MAX_VOLUME_BYTES: '1000' }, pattern(100, 1))
  assertProblem(t, await app.inject({ method: 'POST', url: '/volumes/v/uploads', headers: TUS }), 400, 'no Upload-Length')
  assertProblem(t, await create(app, 0, { 'upload-length': '-1' }), 400, 'a negative Upload-Length')
  assertProblem(t, await app.inject({ method: 'POST', url: '/volumes/v/uploads', headers: { ...TUS, 'upload-defer-length': '1' } }), 400, 'a deferred length')
  assertProblem(t, await create(app, 10, { 'upload-metadata': 'offset 4' }), 400, 'a metadata value that is not base64')
  assertProblem(t, await create(app, 10, { 'upload-metadata': `a ${b64('1')},a ${b64('2')}` }), 400, 'a key twice')
  assertProblem(t, await create(app, 10, { 'upload-metadata': `offset ${b64('ten')}` }), 400, 'an offset that is no number')
  assertProblem(t, await create(app, 10, { 'upload-metadata': `offset ${b64('101')}` }), 400, 'an offset past the end of the volume')
  assertProblem(t, await create(app, 10, { 'upload-metadata': `replace ${b64('yes')}` }), 400, 'replace neither true nor false')
  assertProblem(t, await create(app, 10, { 'upload-metadata': `replace ${b64('true')},offset ${b64('5')}` }), 400, 'replace with an offset')
  assertProblem(t, await create(app, 1001), 413, 'past MAX_VOLUME_BYTES')
  assertProblem(t, await create(app, 950, { 'upload-metadata': `offset ${b64('100')}` }), 413, 'from its offset past MAX_VOLUME_BYTES')
  assertProblem(t, await create(app, 3, { 'content-type': 'text/plain' }, Buffer.from('abc')), 415, 'a body that is not offset+octet-stream')
  assertProblem(t, await create(app, 3, { 'content-type': OCTETS, 'upload-checksum': 'md5 kAFQmDzST7DWlj99KOF/cg==' }, Buffer.from('abc')), 400, 'an unsupported checksum algorithm')
  const res = await app.inject({ method: 'POST', url: '/volumes/nope/uploads', headers: { ...TUS, 'upload-length': '1' } })
  assertProblem(t, res, 404, 'an unknown volume')
  t.equal(res.headers['tus-resumable'], '1.0.0', 'a problem has Tus-Resumable too')
})

t.test('PATCH writes at the volume offset the upload starts at, 204 with the new Upload-Offset and the Operation-Id', async (t) => {
  const initial = pattern(64, 1)
  const { app, dataDir } = await volumeApp(t, {}, initial)
  const location = await created(t, app, 30, { 'upload-metadata': `offset ${b64('20')}` })
  const source = pattern(30, 9)
  const first = await patch(app, location, 0, source.subarray(0, 12))
  t.equal(first.statusCode, 204)
  t.equal(first.headers['upload-offset'], '12')
  t.equal(first.headers['tus-resumable'], '1.0.0')
  t.ok(first.headers['upload-expires'], 'Upload-Expires while incomplete')
  const group = json(await app.inject({ method: 'GET', url: `/operations/${first.headers['operation-id']}` }))
  t.match(group, { kind: 'write', offset: 20, length: 12, status: 'done' }, 'Operation-Id names the write into the volume')

  const id = location.split('/').pop()!
  const record = JSON.parse(await readFile(join(dataDir, '.filemirror', 'uploads', 'v', `${id}.json`), 'utf8'))
  t.match(record, { offset: 12, etag: await etag(app) }, 'the record: its offset, and the ETag of its own write (nothing else wrote)')

  assertProblem(t, await patch(app, location, 0, source.subarray(0, 12)), 409, 'an Upload-Offset behind the upload')
  assertProblem(t, await patch(app, location, 20, source.subarray(20)), 409, 'an Upload-Offset ahead of it')
  assertProblem(t, await patch(app, location, 12, source.subarray(12), { 'content-type': 'application/octet-stream' }), 415, 'another Content-Type')
  assertProblem(t, await app.inject({ method: 'PATCH', url: location, headers: { ...TUS, 'content-type': OCTETS }, payload: 'x' }), 400, 'no Upload-Offset')
  assertProblem(t, await patch(app, location, 12, Buffer.alloc(19)), 413, 'a body longer than what the upload lacks')
  assertProblem(t, await patch(app, '/volumes/v/uploads/0123456789abcdef0123456789abcdef', 0, Buffer.from('x')), 404, 'an unknown upload')
  t.equal((await head(app, location)).headers['upload-offset'], '12', 'the refused requests changed nothing')

  const last = await patch(app, location, 12, source.subarray(12))
  t.equal(last.statusCode, 204)
  t.equal(last.headers['upload-offset'], '30')
  t.notOk(last.headers['upload-expires'], 'no Upload-Expires once complete')
  const expected = Buffer.concat([initial.subarray(0, 20), source, initial.subarray(50)])
  t.ok((await volumeData(app)).equals(expected), 'the volume holds the upload at offset 20, its other bytes as they were')
  const h = await head(app, location)
  t.same([h.headers['upload-offset'], h.headers['upload-length']], ['30', '30'], 'HEAD: complete')
  const empty = await patch(app, location, 30, Buffer.alloc(0))
  t.equal(empty.statusCode, 204, 'an empty PATCH on a complete upload changes nothing')
  t.notOk(empty.headers['operation-id'], 'and writes nothing')
})

t.test('creation-with-upload: POST with a body writes it at once (201 with Upload-Offset and Operation-Id)', async (t) => {
  const { app } = await volumeApp(t)
  const source = pattern(1000, 3)
  const res = await create(app, 1000, { 'content-type': OCTETS }, source.subarray(0, 600))
  t.equal(res.statusCode, 201)
  t.equal(res.headers['upload-offset'], '600')
  t.ok(res.headers['operation-id'], 'Operation-Id')
  t.ok(res.headers['upload-expires'], 'Upload-Expires')
  const location = String(res.headers.location)
  t.equal((await patch(app, location, 600, source.subarray(600))).statusCode, 204)
  t.ok((await volumeData(app)).equals(source), 'the volume holds the upload')
  const whole = await create(app, 10, { 'content-type': OCTETS }, pattern(10, 4))
  t.same([whole.statusCode, whole.headers['upload-offset'], whole.headers['upload-expires']], [201, '10', undefined], 'a whole upload in its POST')
})

t.test('without replace an upload writes in place; replace=true sets the size to the upload length on completion', async (t) => {
  const initial = pattern(1000, 1)
  const { app } = await volumeApp(t, {}, initial)
  const source = pattern(300, 2)
  const inPlace = await created(t, app, 300)
  await patch(app, inPlace, 0, source)
  t.ok((await volumeData(app)).equals(Buffer.concat([source, initial.subarray(300)])), 'in place: the size stays 1000')

  const replacing = await created(t, app, 300, { 'upload-metadata': `replace ${b64('true')}` })
  t.equal((await patch(app, replacing, 0, source.subarray(0, 100))).statusCode, 204)
  t.equal((await getData(app, 'v')).rawPayload.length, 1000, 'the size is set only on completion')
  t.equal((await patch(app, replacing, 100, source.subarray(100))).statusCode, 204)
  t.ok((await volumeData(app)).equals(source), 'replaced: the volume is the upload, 300 bytes')

  // A chunked last body (no Content-Length): the size is set by a write of its own.
  const again = await created(t, app, 200, { 'upload-metadata': `replace ${b64('true')}` })
  const body = new PassThrough()
  const pending = app.inject({ method: 'PATCH', url: again, headers: { ...TUS, 'content-type': OCTETS, 'upload-offset': '0', 'transfer-encoding': 'chunked' }, payload: body })
  body.end(pattern(200, 5))
  t.equal((await pending).statusCode, 204)
  t.ok((await volumeData(app)).equals(pattern(200, 5)), 'a chunked replace: 200 bytes')

  const nothing = await create(app, 0, { 'upload-metadata': `replace ${b64('true')}` })
  t.same([nothing.statusCode, nothing.headers['upload-offset']], [201, '0'])
  t.equal((await volumeData(app)).length, 0, 'an empty replace empties the volume')
  t.equal((await create(app, 0)).statusCode, 201, 'an empty upload in place changes nothing')
})

t.test('Upload-Checksum: a mismatch is 460 and writes nothing; a match is written', async (t) => {
  const initial = pattern(100, 1)
  const { app } = await volumeApp(t, {}, initial)
  const location = await created(t, app, 50)
  const body = pattern(50, 7)
  const before = await etag(app)
  const wrong = createHash('sha1').update('something else').digest('base64')
  const res = await patch(app, location, 0, body, { 'upload-checksum': `sha1 ${wrong}` })
  assertProblem(t, res, 460, 'a wrong sha1')
  t.equal(res.headers['tus-resumable'], '1.0.0')
  t.ok((await volumeData(app)).equals(initial), 'the volume is unchanged')
  t.equal(await etag(app), before, 'its ETag too')
  t.equal((await head(app, location)).headers['upload-offset'], '0', 'the upload is where it was')
  assertProblem(t, await patch(app, location, 0, body, { 'upload-checksum': `md5 ${createHash('md5').update(body).digest('base64')}` }), 400, 'md5 is not supported')
  assertProblem(t, await patch(app, location, 0, body, { 'upload-checksum': 'sha256 not-base64!' }), 400, 'a malformed digest')
  const first = await patch(app, location, 0, body.subarray(0, 20), { 'upload-checksum': `sha1 ${createHash('sha1').update(body.subarray(0, 20)).digest('base64')}` })
  t.same([first.statusCode, first.headers['upload-offset']], [204, '20'], 'a matching sha1')
  const rest = await patch(app, location, 20, body.subarray(20), { 'upload-checksum': `sha256 ${createHash('sha256').update(body.subarray(20)).digest('base64')}` })
  t.same([rest.statusCode, rest.headers['upload-offset']], [204, '50'], 'a matching sha256')
  t.ok((await volumeData(app)).equals(Buffer.concat([body, initial.subarray(50)])), 'written')
  const post = await create(app, 4, { 'content-type': OCTETS, 'upload-checksum': `sha1 ${wrong}` }, Buffer.from('abcd'))
  assertProblem(t, post, 460, 'creation-with-upload: a wrong checksum')
  t.notOk(post.headers.location, 'and no upload')
})

t.test('410 Gone when the volume changed under the bytes an upload wrote; writes elsewhere do not matter', async (t) => {
  const { app } = await volumeApp(t, {}, pattern(1000, 1))
  const source = pattern(400, 2)
  const location = await created(t, app, 400, { 'upload-metadata': `offset ${b64('100')}` })
  t.equal((await patch(app, location, 0, source.subarray(0, 100))).statusCode, 204)
  // Outside [100, 200): the ETag moves, the bytes are read back, they match.
  t.equal((await putData(app, 'v', Buffer.from('elsewhere'), { 'content-range': 'bytes 600-608/1000' })).statusCode, 200)
  t.equal((await head(app, location)).headers['upload-offset'], '100', 'HEAD after a write elsewhere')
  t.equal((await patch(app, location, 100, source.subarray(100, 200))).statusCode, 204, 'PATCH after a write elsewhere')
  // The same bytes written again by someone else: still the upload's.
  t.equal((await putData(app, 'v', source.subarray(0, 50), { 'content-range': 'bytes 100-149/1000' })).statusCode, 200)
  t.equal((await patch(app, location, 200, source.subarray(200, 300))).statusCode, 204, 'the same bytes rewritten are still the upload\'s')
  // Other bytes inside what it wrote: gone.
  t.equal((await putData(app, 'v', Buffer.from('intruder'), { 'content-range': 'bytes 250-257/1000' })).statusCode, 200)
  const gone = await patch(app, location, 300, source.subarray(300))
  assertProblem(t, gone, 410, 'PATCH after a write inside the upload')
  t.equal(gone.headers['tus-resumable'], '1.0.0')
  t.equal((await head(app, location)).statusCode, 404, 'the upload is forgotten')

  const second = await created(t, app, 100)
  t.equal((await patch(app, second, 0, source.subarray(0, 50))).statusCode, 204)
  t.equal((await putData(app, 'v', Buffer.from('short'))).statusCode, 200, 'a whole replace cuts the volume to 5 bytes')
  t.equal((await head(app, second)).statusCode, 410, 'HEAD: gone')
})

t.test('an async replica finishing an older write does not make the upload distrust its own ETag', async (t) => {
  const { app, dataDir } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.img' }, { id: 'slow', path: 'slow.img', mode: 'async', maxBytesPerSecond: 64 << 10 }])
  const location = await created(t, app, 3 * 32768)
  const file = join(dataDir, '.filemirror', 'uploads', 'v', `${location.split('/').pop()}.json`)
  for (let i = 0; i < 3; i++) {
    t.equal((await patch(app, location, i * 32768, pattern(32768, i))).statusCode, 204, `PATCH ${i + 1}`)
    t.equal(JSON.parse(await readFile(file, 'utf8')).etag, await etag(app), `after PATCH ${i + 1} the record holds the volume's ETag`)
  }
})

t.test('the upload survives a restart: its record is on disk, the bytes are read back to trust them', async (t) => {
  const { app, dataDir } = await volumeApp(t, {}, pattern(500, 1))
  const source = pattern(300, 6)
  const location = await created(t, app, 300)
  t.equal((await patch(app, location, 0, source.subarray(0, 120))).statusCode, 204)
  await closeOnce(app)
  const again = await makeApp(t, { DATA_DIR: dataDir })
  t.equal((await head(again.app, location)).headers['upload-offset'], '120', 'HEAD after the restart')
  t.equal((await patch(again.app, location, 120, source.subarray(120))).statusCode, 204, 'PATCH after the restart')
  t.ok((await volumeData(again.app)).equals(Buffer.concat([source, pattern(500, 1).subarray(300)])), 'the volume holds the upload')
})

t.test('a second PATCH while one is under way is 423 Locked; HEAD answers the acknowledged offset meanwhile', async (t) => {
  const { app } = await volumeApp(t)
  const url = await listen(t, app)
  const location = await created(t, app, 20)
  // A real connection: the first PATCH sends 4 of its 10 bytes and waits.
  const first = request(`${url}${location}`, { method: 'PATCH', headers: { ...TUS, 'content-type': OCTETS, 'upload-offset': '0', 'content-length': '10' } })
  const answered = new Promise<IncomingMessage>((resolve, reject) => first.on('response', resolve).on('error', reject))
  first.write(Buffer.alloc(4, 1))
  // Probed with an Upload-Offset that would be a 409 (changing nothing) until the first PATCH holds the upload.
  const locked = await eventually(async () => {
    const res = await patch(app, location, 7, Buffer.alloc(3, 2))
    return res.statusCode === 423 ? res : undefined
  }, 'the second PATCH to be refused') as LightMyRequestResponse
  assertProblem(t, locked, 423, 'the second PATCH')
  assertProblem(t, await app.inject({ method: 'DELETE', url: location, headers: TUS }), 423, 'DELETE while a PATCH is under way')
  t.equal((await head(app, location)).headers['upload-offset'], '0', 'HEAD: the offset acknowledged so far')
  first.end(Buffer.alloc(6, 1))
  const res = await answered
  res.resume()
  t.same([res.statusCode, res.headers['upload-offset']], [204, '10'], 'the first PATCH ends')
  t.equal((await patch(app, location, 10, Buffer.alloc(10, 3))).statusCode, 204, 'then the next one is taken')
})

t.test('DELETE terminates an upload (204); the bytes it wrote stay', async (t) => {
  const { app, dataDir } = await volumeApp(t)
  const location = await created(t, app, 20)
  await patch(app, location, 0, Buffer.alloc(5, 7))
  const res = await app.inject({ method: 'DELETE', url: location, headers: TUS })
  t.equal(res.statusCode, 204)
  t.equal(res.headers['tus-resumable'], '1.0.0')
  t.equal((await head(app, location)).statusCode, 404, 'then unknown')
  assertProblem(t, await app.inject({ method: 'DELETE', url: location, headers: TUS }), 404, 'a second DELETE')
  t.same(await readdir(join(dataDir, '.filemirror', 'uploads', 'v')), [], 'its record is removed')
  t.ok((await volumeData(app)).equals(Buffer.alloc(5, 7)), 'the volume keeps the bytes')
})

t.test('expiration: an upload idle past UPLOAD_EXPIRY_MS is forgotten (404) and swept from disk', async (t) => {
  const { app, dataDir } = await volumeApp(t, { UPLOAD_EXPIRY_MS: '300' })
  const location = await created(t, app, 20)
  const swept = await created(t, app, 20)
  const res = await patch(app, location, 0, Buffer.alloc(5))
  const expires = Date.parse(String(res.headers['upload-expires']))
  t.ok(expires > Date.now() - 1_000 && expires < Date.now() + 1_300, 'Upload-Expires is the last write plus 300 ms (to the second)')
  await new Promise((resolve) => setTimeout(resolve, 400))
  assertProblem(t, await patch(app, location, 5, Buffer.alloc(5)), 404, 'PATCH after expiry')
  const dir = join(dataDir, '.filemirror', 'uploads', 'v')
  await eventually(async () => (await readdir(dir)).length === 0, 'the sweep to remove the other record', 5_000, 50)
  t.equal((await head(app, swept)).statusCode, 404, 'the swept one is unknown')
})

t.test('with AUTH_TOKEN every tus request needs the token (401, still with Tus-Resumable)', async (t) => {
  const token = 'uploads-test-token-0123456789'
  const { app } = await makeApp(t, { AUTH_TOKEN: token })
  const auth = { authorization: `Bearer ${token}` }
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/v', headers: auth, payload: { replicas: [{ id: 'a', path: 'a.img' }] } })).statusCode, 201)
  for (const method of ['OPTIONS', 'POST'] as const) {
    const res = await app.inject({ method, url: '/volumes/v/uploads', headers: TUS })
    assertProblem(t, res, 401, `${method} without the token`)
    t.equal(res.headers['tus-resumable'], '1.0.0', `${method}: Tus-Resumable`)
  }
  const res = await app.inject({ method: 'POST', url: '/volumes/v/uploads', headers: { ...TUS, ...auth, 'upload-length': '3' } })
  t.equal(res.statusCode, 201, 'with the token')
  const unauthorized = await head(app, String(res.headers.location))
  t.same([unauthorized.statusCode, unauthorized.headers['tus-resumable']], [401, '1.0.0'], 'HEAD without the token')
})
