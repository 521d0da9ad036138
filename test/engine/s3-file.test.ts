import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import t from 'tap'
import { DEFAULT_CHUNK_BYTES, mapS3Error, S3File, S3FileError, type S3FileOptions } from '../../src/engine/backends/s3-file.js'
import { S3RVER_CREDENTIALS, startS3rver, type S3rverHandle } from '../helpers/s3rver.js'

// The SDK's default credential chain must find these before it would ever ask an instance metadata service.
process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId
process.env.AWS_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey
process.env.AWS_EC2_METADATA_DISABLED = 'true'
// The SDK warns once per process that its 2027 releases will need Node 22.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

const BUCKET = 'filemirror'
const KiB = 1 << 10
const MiB = 1 << 20

function identity() {
  return { volume: randomUUID(), replica: randomUUID() }
}

/** Options for a replica on `server` under a fresh prefix (credentials from the environment, the SDK's chain). */
function optionsFor(server: S3rverHandle, extra: Partial<S3FileOptions> = {}): S3FileOptions {
  return {
    bucket: BUCKET,
    prefix: `volumes/${randomUUID()}/`,
    region: 'us-east-1',
    endpoint: server.endpoint,
    forcePathStyle: true,
    chunkBytes: 64 * KiB,
    identity: identity(),
    ...extra,
  }
}

async function open(t: { teardown(fn: () => unknown): void }, options: S3FileOptions): Promise<S3File> {
  const file = await S3File.open(options)
  t.teardown(() => file.close().catch(() => undefined))
  return file
}

/** A plain client for looking at what is stored, behind the backend's back. */
function rawClient(t: { teardown(fn: () => unknown): void }, server: S3rverHandle): S3Client {
  const client = new S3Client({
    region: 'us-east-1',
    endpoint: server.endpoint,
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })
  t.teardown(() => client.destroy())
  return client
}

/** The objects under `prefix`, by key relative to it, with their lengths. */
async function stored(client: S3Client, prefix: string): Promise<Record<string, number>> {
  const objects: Record<string, number> = {}
  let token: string | undefined
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ContinuationToken: token }))
    for (const o of page.Contents ?? []) objects[o.Key!.slice(prefix.length)] = o.Size!
    token = page.IsTruncated ? page.NextContinuationToken : undefined
  } while (token)
  return objects
}

async function storedManifest(client: S3Client, prefix: string): Promise<Record<string, unknown>> {
  const reply = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${prefix}manifest.json` }))
  return JSON.parse(await reply.Body!.transformToString()) as Record<string, unknown>
}

/** A chunk's worth of bytes that differ from chunk to chunk. */
function pattern(index: number, length: number, into = Buffer.allocUnsafe(length)): Buffer {
  for (let i = 0; i < length; i += 4) into.writeUInt32LE(((index * 2654435761) ^ i) >>> 0, i)
  return into
}

const chunkName = (index: number) => `chunks/${index.toString(16).padStart(12, '0')}`

t.test('S3File: chunk-aligned writes read back; missing chunks read as zeros; reads cross chunk boundaries and stop at the end', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const options = optionsFor(server)
  const file = await open(t, options)
  const cb = 64 * KiB
  t.equal(file.chunkBytes, cb)
  t.equal(file.preferredWriteUnit, cb, 'the engine is told to write whole chunks')
  t.equal(file.writeUnit, cb)
  t.equal(file.remote, true)
  t.equal(file.path, `s3://${BUCKET}/${options.prefix}`)
  t.equal(await file.size(), 0, 'a new replica is empty')
  t.equal(await file.read(Buffer.alloc(10), 0), 0, 'and reads nothing')

  const c0 = randomBytes(cb)
  const c2 = randomBytes(cb)
  const tail = randomBytes(1000)
  t.equal(await file.write(c0, 0), cb, 'a whole chunk')
  t.equal(await file.write(c2, 2 * cb), cb, 'another, past a chunk never written')
  t.equal(await file.write(tail, 3 * cb), 1000, 'a short last chunk, ending past the size')
  t.equal(await file.size(), 3 * cb + 1000, 'the size follows the writes')

  const all = Buffer.alloc(3 * cb + 1000, 0xee)
  t.equal(await file.read(all, 0), all.length, 'one read across all four chunks')
  t.ok(all.subarray(0, cb).equals(c0), 'chunk 0')
  t.ok(all.subarray(cb, 2 * cb).equals(Buffer.alloc(cb)), 'chunk 1, never written, reads as zeros')
  t.ok(all.subarray(2 * cb, 3 * cb).equals(c2), 'chunk 2')
  t.ok(all.subarray(3 * cb).equals(tail), 'the short last chunk')

  const across = Buffer.alloc(200, 0xee)
  t.equal(await file.read(across, 3 * cb - 100), 200, 'a read across a chunk boundary')
  t.ok(across.equals(Buffer.concat([c2.subarray(cb - 100), tail.subarray(0, 100)])))
  const inside = Buffer.alloc(10)
  await file.read(inside, 12_345)
  t.ok(inside.equals(c0.subarray(12_345, 12_355)), 'a small read inside a chunk')

  const pastEnd = Buffer.alloc(500, 0xee)
  t.equal(await file.read(pastEnd, 3 * cb + 800), 200, 'a read across the end returns the bytes that exist')
  t.ok(pastEnd.subarray(0, 200).equals(tail.subarray(800)))
  t.equal(await file.read(Buffer.alloc(8), 10 * cb), 0, 'a read past the end returns 0')

  const again = randomBytes(cb)
  await file.write(again, 0)
  const back = Buffer.alloc(cb)
  await file.read(back, 0)
  t.ok(back.equals(again), 'a chunk written again is replaced whole')

  const raw = await stored(rawClient(t, server), options.prefix)
  t.same(raw, { [chunkName(0)]: cb, [chunkName(2)]: cb, [chunkName(3)]: 1000, 'manifest.json': raw['manifest.json'] }, 'one object per chunk written, and the manifest')
  t.ok(raw['manifest.json'] > 0)
})

t.test('S3File: writes that are not whole chunks are refused with EALIGN, and nothing is written', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const file = await open(t, optionsFor(server, { chunkBytes: 4 * KiB }))
  const cb = 4 * KiB
  await file.write(randomBytes(cb), 0)
  await file.write(randomBytes(100), cb)
  t.equal(await file.size(), cb + 100)
  const refused = { code: 'EALIGN', retryable: false, message: /writes must be whole chunks/ }
  await t.rejects(file.write(Buffer.alloc(cb), 1), refused, 'an offset not on a chunk boundary')
  await t.rejects(file.write(Buffer.alloc(10), 5), refused, 'a small write in the middle of a chunk')
  await t.rejects(file.write(Buffer.alloc(cb + 1), 0), refused, 'more than a chunk')
  await t.rejects(file.write(Buffer.alloc(2 * cb), 0), refused, 'two chunks at once')
  await t.rejects(file.write(Buffer.alloc(100), 0), refused, 'a short chunk that is not the last (it would drop the rest of the chunk)')
  await t.rejects(file.write(Buffer.alloc(50), cb), refused, 'a short last chunk that ends before the size')
  await t.rejects(file.writeChunk(0, Buffer.alloc(cb - 1)), refused, 'writeChunk checks the same')
  t.equal(await file.write(Buffer.alloc(0), 7), 0, 'an empty write does nothing')
  t.equal(await file.write(randomBytes(200), cb), 200, 'a short last chunk reaching past the size is taken')
  t.equal(await file.writeChunk(5, randomBytes(cb)), cb, 'writeChunk(index, bytes) is the same write')
  t.equal(await file.size(), 6 * cb)
})

t.test('S3File: truncate grows with zeros and shrinks by deleting the chunks past the end and cutting the last one', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const options = optionsFor(server, { chunkBytes: 4 * KiB })
  const cb = 4 * KiB
  const raw = rawClient(t, server)
  const file = await open(t, options)
  const chunks = [0, 1, 2, 3, 4, 5].map((i) => pattern(i, cb))
  for (const [i, c] of chunks.entries()) await file.write(c, i * cb)
  t.equal(await file.size(), 6 * cb)

  await file.truncate(2 * cb + 100)
  t.equal(await file.size(), 2 * cb + 100, 'shrunk into the middle of chunk 2')
  let objects = await stored(raw, options.prefix)
  t.same(Object.keys(objects).filter((k) => k.startsWith('chunks/')), [chunkName(0), chunkName(1), chunkName(2)], 'chunks wholly past the end are deleted')
  t.equal(objects[chunkName(2)], 100, 'the partial last chunk is cut to the new end')
  t.equal((await storedManifest(raw, options.prefix)).size, 2 * cb + 100, 'truncate writes the manifest')

  await file.truncate(5 * cb)
  t.equal(await file.size(), 5 * cb, 'grown again')
  const grown = Buffer.alloc(5 * cb, 0xee)
  t.equal(await file.read(grown, 0), 5 * cb)
  t.ok(grown.subarray(0, 2 * cb + 100).equals(Buffer.concat([chunks[0], chunks[1], chunks[2].subarray(0, 100)])), 'the bytes kept')
  t.ok(grown.subarray(2 * cb + 100).equals(Buffer.alloc(3 * cb - 100)), 'what was cut reads as zeros, not as the old bytes')
  t.equal((await storedManifest(raw, options.prefix)).size, 5 * cb, 'growing writes the manifest')
  objects = await stored(raw, options.prefix)
  t.same(Object.keys(objects).filter((k) => k.startsWith('chunks/')), [chunkName(0), chunkName(1), chunkName(2)], 'growing stores nothing')

  await file.truncate(cb)
  objects = await stored(raw, options.prefix)
  t.same(Object.keys(objects).filter((k) => k.startsWith('chunks/')), [chunkName(0)], 'a chunk-aligned end keeps whole chunks only')
  t.equal(objects[chunkName(0)], cb)
  await file.truncate(0)
  t.same(Object.keys(await stored(raw, options.prefix)), ['manifest.json'], 'truncate(0) leaves the manifest only')
  t.equal(await file.size(), 0)
  const generation = file.generation
  await file.truncate(0)
  t.equal(file.generation, generation, 'a truncate to the same size writes nothing')
})

t.test('S3File: a truncate waits for the writes in flight, and writes started meanwhile wait for it', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const options = optionsFor(server, { chunkBytes: 4 * KiB })
  const cb = 4 * KiB
  const raw = rawClient(t, server)
  const file = await open(t, options)
  await file.write(pattern(0, cb), 0)
  const inFlight = [1, 2, 3, 4, 5].map((i) => file.write(pattern(i, cb), i * cb))
  const cut = file.truncate(cb + 10)
  const after = file.write(pattern(7, cb), 7 * cb)
  await Promise.all([...inFlight, cut, after])
  t.equal(await file.size(), 8 * cb, 'the write started after the truncate came after it')
  const objects = await stored(raw, options.prefix)
  t.same(
    Object.keys(objects).filter((k) => k.startsWith('chunks/')),
    [chunkName(0), chunkName(1), chunkName(7)],
    'no chunk written before the truncate survived it',
  )
  t.equal(objects[chunkName(1)], 10)
  const hole = Buffer.alloc(6 * cb - 10, 0xee)
  await file.read(hole, cb + 10)
  t.ok(hole.equals(Buffer.alloc(hole.length)), 'between them, zeros')
})

t.test('S3File: a trim spanning several listing pages deletes every chunk past the end', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const options = optionsFor(server, { chunkBytes: 1 * KiB, listPageKeys: 3 })
  const raw = rawClient(t, server)
  const file = await open(t, options)
  for (let i = 0; i < 11; i++) await file.write(pattern(i, KiB), i * KiB)
  await file.truncate(KiB + 10)
  const objects = await stored(raw, options.prefix)
  t.same(objects, { [chunkName(0)]: KiB, [chunkName(1)]: 10, 'manifest.json': objects['manifest.json'] }, 'ten chunks listed three at a time, nine deleted, one cut')
})

t.test('S3File: the manifest is persisted at sync, truncate and close, and a new S3File on the prefix takes it up', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const options = optionsFor(server, { chunkBytes: 8 * KiB })
  const cb = 8 * KiB
  const raw = rawClient(t, server)
  const file = await S3File.open(options)
  let manifest = await storedManifest(raw, options.prefix)
  t.same(
    manifest,
    { format: 'filemirror-s3-replica', version: 1, volume: options.identity.volume, replica: options.identity.replica, size: 0, chunkBytes: cb, generation: 1 },
    'a new replica writes its manifest at open, with its identity',
  )
  const data = [pattern(0, cb), pattern(1, cb), pattern(2, 300)]
  for (const [i, c] of data.entries()) await file.write(c, i * cb)
  t.equal((await storedManifest(raw, options.prefix)).size, 0, 'writes alone do not write the manifest')
  await file.sync()
  manifest = await storedManifest(raw, options.prefix)
  t.equal(manifest.size, 2 * cb + 300, 'sync() writes the size')
  t.equal(manifest.generation, 2, 'and the next generation')
  t.equal(file.generation, 2)
  await file.sync()
  t.equal((await storedManifest(raw, options.prefix)).generation, 2, 'sync() with nothing changed writes nothing')
  await file.write(pattern(3, cb), 3 * cb)
  await file.close()
  t.equal((await storedManifest(raw, options.prefix)).size, 4 * cb, 'close() writes a changed size')
  await t.rejects(file.read(Buffer.alloc(1), 0), { code: 'EBADF' }, 'a closed file refuses reads')
  await t.rejects(file.write(Buffer.alloc(cb), 0), { code: 'EBADF' }, 'and writes')

  const reopened = await open(t, { ...options, chunkBytes: 64 * KiB })
  t.equal(await reopened.size(), 4 * cb, 'the size is taken from the manifest')
  t.equal(reopened.chunkBytes, cb, 'and so is the chunk size (the stored layout wins over the option)')
  const back = Buffer.alloc(4 * cb)
  await reopened.read(back, 0)
  t.ok(back.equals(Buffer.concat([data[0], data[1], data[2], Buffer.alloc(cb - 300), pattern(3, cb)])), 'every byte is there')

  await t.rejects(S3File.open({ ...options, identity: { ...options.identity, replica: randomUUID() } }), { code: 'EIDENTITY', retryable: false, message: /belongs to volume/ }, 'another replica is refused the prefix')
  await t.rejects(S3File.open({ ...options, identity: { volume: randomUUID(), replica: options.identity.replica } }), { code: 'EIDENTITY' }, 'and so is another volume')
  await t.rejects(S3File.open({ ...options, identity: { volume: 'nope', replica: 'nope' } }), { code: 'EINVAL' }, 'an identity must be UUIDs')
  const other = identity()
  const claimed = await open(t, { ...options, identity: other, claim: true })
  manifest = await storedManifest(raw, options.prefix)
  t.same([manifest.volume, manifest.replica, manifest.size], [other.volume, other.replica, 4 * cb], 'a claim rewrites the identity and keeps the bytes')
  t.equal(await claimed.size(), 4 * cb)

  await raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${options.prefix}manifest.json`, Body: '{"format":"something else"}' }))
  await t.rejects(S3File.open({ ...options, identity: other }), { code: 'EBADMANIFEST', retryable: false }, 'a manifest that is not ours is refused')
})

t.test('S3File: chunks written past a size never synced (a crash) are deleted when the replica is opened again', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const options = optionsFor(server, { chunkBytes: 4 * KiB })
  const cb = 4 * KiB
  const raw = rawClient(t, server)
  const first = await S3File.open(options)
  await first.write(pattern(0, cb), 0)
  await first.write(pattern(1, 1000), cb)
  await first.sync()
  // The size grows to 5 chunks but is never synced: the process "dies" here (the file is never closed).
  await first.write(pattern(1, cb), cb)
  await first.write(pattern(4, cb), 4 * cb)
  t.equal((await stored(raw, options.prefix))[chunkName(4)], cb, 'the chunk is stored')

  const second = await open(t, options)
  t.equal(await second.size(), cb + 1000, 'the size is the synced one')
  const objects = await stored(raw, options.prefix)
  t.notOk(chunkName(4) in objects, 'the chunk past it is deleted')
  t.equal(objects[chunkName(1)], 1000, 'the last chunk is cut back to the size')
  await second.truncate(5 * cb)
  const grown = Buffer.alloc(4 * cb, 0xee)
  await second.read(grown, cb)
  t.ok(grown.subarray(0, 1000).equals(pattern(1, cb).subarray(0, 1000)), 'the bytes within the size are the last written')
  t.ok(grown.subarray(1000).equals(Buffer.alloc(4 * cb - 1000)), 'and nothing of the lost writes comes back when the size grows')
  // Let `first` go without writing its manifest over the second's.
  ;(first as unknown as { client: S3Client }).client.destroy()
})

t.test('S3File: credentials come from the SDK chain; wrong ones are refused as non-retryable EACCES', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const fromEnvOptions = optionsFor(server)
  const fromEnv = await open(t, fromEnvOptions)
  t.equal(await fromEnv.reachable(), true, 'AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment are used')

  const wrongKey = optionsFor(server, { credentials: { accessKeyId: 'NOT-S3RVER', secretAccessKey: 'S3RVER' } })
  await t.rejects(S3File.open(wrongKey), { code: 'EACCES', retryable: false, details: { s3Code: 'InvalidAccessKeyId', status: 403 } }, 'an unknown access key')
  const started = performance.now()
  await t.rejects(S3File.open(wrongKey), { code: 'EACCES' })
  t.ok(performance.now() - started < 2_000, 'refusals are not retried with back-off')
  // s3rver checks the access key only: it never verifies a SigV4 signature, so a wrong secret is accepted
  // there (SignatureDoesNotMatch, like AccessDenied, is covered by the error mapping test).
  const wrongSecret = await open(t, optionsFor(server, { credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'wrong' } }))
  t.equal(await wrongSecret.reachable(), true, 's3rver takes a wrong secret (a real store answers SignatureDoesNotMatch)')
  const refusing = await open(t, fromEnvOptions)
  process.env.AWS_ACCESS_KEY_ID = 'NOT-S3RVER'
  try {
    await t.rejects(refusing.reachable(), { code: 'EACCES', retryable: false }, 'reachable() throws a refusal rather than answering false')
  } finally {
    process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId
  }
})

t.test('S3File: a missing bucket is a non-retryable ENOENT', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  await t.rejects(S3File.open(optionsFor(server, { bucket: 'no-such-bucket' })), { code: 'ENOENT', retryable: false, details: { s3Code: 'NoSuchBucket' } })
})

t.test('S3File: a stopped server fails calls as retryable EREMOTE_UNAVAILABLE, and the same file works once it is back', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const options = optionsFor(server, { chunkBytes: 4 * KiB })
  const cb = 4 * KiB
  const file = await open(t, options)
  await file.write(pattern(0, cb), 0)
  await file.sync()
  t.equal(await file.reachable(), true)

  await server.stop()
  const unavailable = { code: 'EREMOTE_UNAVAILABLE', retryable: true, details: { s3Code: 'ECONNREFUSED' } }
  t.equal(await file.reachable(), false, 'reachable() says no')
  await t.rejects(file.read(Buffer.alloc(10), 0), unavailable, 'a read')
  await t.rejects(file.write(pattern(1, cb), cb), unavailable, 'a write')
  await t.rejects(file.truncate(10), unavailable, 'a truncate')
  t.equal(await file.size(), cb, 'a failed truncate leaves the size as it was')
  await t.rejects(S3File.open(options), unavailable, 'an open')
  const e = await file.read(Buffer.alloc(10), 0).catch((err: unknown) => err)
  t.type(e, S3FileError)
  t.match((e as Error).message, /store unavailable/)

  await server.start()
  t.equal(await file.reachable(), true, 'back')
  const back = Buffer.alloc(cb)
  t.equal(await file.read(back, 0), cb)
  t.ok(back.equals(pattern(0, cb)), 'the bytes are there')
  await file.write(pattern(1, cb), cb)
  await file.truncate(cb + 10)
  await file.sync()
  const reopened = await open(t, options)
  t.equal(await reopened.size(), cb + 10, 'writes, truncates and syncs work again')
})

t.test('S3File: errors map to codes (throttling, 5xx and timeouts retryable; refusals not)', async (t) => {
  const s3 = (name: string, status: number, extra: object = {}) => Object.assign(new Error(name), { name, $fault: status >= 500 ? 'server' : 'client', $metadata: { httpStatusCode: status }, ...extra })
  const net = (code: string) => Object.assign(new Error(`connect ${code}`), { code })
  const cases: Array<[unknown, string, boolean]> = [
    [s3('SlowDown', 503), 'EREMOTE_UNAVAILABLE', true],
    [s3('ThrottlingException', 400), 'EREMOTE_UNAVAILABLE', true],
    [s3('InternalError', 500), 'EREMOTE_UNAVAILABLE', true],
    [s3('Unknown', 502), 'EREMOTE_UNAVAILABLE', true],
    [s3('TooManyRequests', 429), 'EREMOTE_UNAVAILABLE', true],
    [s3('RequestTimeout', 400), 'EREMOTE_UNAVAILABLE', true],
    [Object.assign(new Error('request timed out'), { name: 'TimeoutError', code: 'ETIMEDOUT' }), 'EREMOTE_UNAVAILABLE', true],
    [net('ECONNRESET'), 'EREMOTE_UNAVAILABLE', true],
    [net('ENOTFOUND'), 'EREMOTE_UNAVAILABLE', true],
    [Object.assign(new AggregateError([net('ECONNREFUSED'), net('ECONNREFUSED')]), {}), 'EREMOTE_UNAVAILABLE', true],
    [s3('AccessDenied', 403), 'EACCES', false],
    [s3('InvalidAccessKeyId', 403), 'EACCES', false],
    [s3('SignatureDoesNotMatch', 403), 'EACCES', false],
    [s3('ExpiredToken', 400), 'EACCES', false],
    [Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }), 'EACCES', false],
    [s3('403', 403), 'EACCES', false],
    [s3('NoSuchBucket', 404), 'ENOENT', false],
    [s3('InvalidArgument', 400), 'EIO', false],
  ]
  for (const [err, code, retryable] of cases) {
    const mapped = mapS3Error(err, 's3://b/p/', 'GetObject', 'p/chunks/000000000000')
    t.match(mapped, { code, retryable }, `${(err as Error).name} ${(err as { code?: string }).code ?? ''} → ${code}`)
    t.equal(mapped.cause, err, 'keeps what was thrown')
  }
})

t.test('S3File: options are checked; the default chunk is 4 MiB', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const file = await open(t, optionsFor(server, { chunkBytes: undefined, prefix: `no-slash-${randomUUID()}` }))
  t.equal(file.chunkBytes, DEFAULT_CHUNK_BYTES)
  t.equal(DEFAULT_CHUNK_BYTES, 4 * MiB)
  t.match(file.path, /\/no-slash-[0-9a-f-]+\/$/, 'a prefix without a trailing slash gets one')
  await t.rejects(S3File.open(optionsFor(server, { chunkBytes: 100 })), { code: 'EINVAL' }, 'a chunk too small')
  await t.rejects(S3File.open(optionsFor(server, { bucket: '' })), { code: 'EINVAL' }, 'no bucket')
  await t.rejects(file.read(Buffer.alloc(1), -1), { code: 'EINVAL' }, 'a negative offset')
  await t.rejects(file.truncate(-1), { code: 'EINVAL' }, 'a negative size')
})

t.test('S3File: memory stays within a few chunks whatever the volume size (no whole-volume buffering)', async (t) => {
  const server = await startS3rver(t, [BUCKET])
  const cb = 1 * MiB
  const chunks = 48
  const options = optionsFor(server, { chunkBytes: cb })
  const file = await open(t, options)
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const chunk = Buffer.allocUnsafe(cb)
  const wide = Buffer.allocUnsafe(8 * cb)
  // Live buffer memory, sampled after a full collection so that garbage (the socket's 64 KiB pieces already
  // copied into the caller's buffer) does not count: a backend holding the volume, or many chunks, would.
  const live = () => {
    gc()
    return process.memoryUsage().arrayBuffers
  }
  const baseline = live()
  let peak = 0
  let samples = 0
  const sampler = setInterval(() => {
    samples++
    peak = Math.max(peak, live() - baseline)
  }, 25)
  t.teardown(() => clearInterval(sampler))

  const written = createHash('sha256')
  for (let i = 0; i < chunks; i++) {
    pattern(i, cb, chunk)
    written.update(chunk)
    await file.write(chunk, i * cb)
  }
  await file.sync()
  const readBack = createHash('sha256')
  for (let i = 0; i < chunks; i += 8) {
    t.equal(await file.read(wide, i * cb), 8 * cb)
    readBack.update(wide)
  }
  await file.truncate(cb / 2)
  clearInterval(sampler)
  t.equal(readBack.digest('hex'), written.digest('hex'), `${chunks} MiB written and read back, 8 MiB a read`)
  t.same(Object.keys(await stored(rawClient(t, server), options.prefix)).sort(), [chunkName(0), 'manifest.json'])
  t.ok(samples > 10, `sampled ${samples} times`)
  t.ok(peak < 6 * MiB, `peak live buffer memory above the caller's buffers ${(peak / MiB).toFixed(2)} MiB, for a ${chunks} MiB volume in ${cb / MiB} MiB chunks`)
})
