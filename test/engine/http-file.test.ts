// HttpFile, the replica backend for a remote taking RFC 9110 partial PUT, against real servers started here:
// a second filemirror (in-process, on a real socket) and Apache httpd with mod_dav.
import { randomBytes } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import tls from 'node:tls'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { HttpFile, type HttpFileError, isRetryable } from '../../src/engine/backends/http-file.js'
import { apacheMissing, startApache } from '../helpers/apache.js'
import { closeOnce, json, listen, makeApp } from '../helpers/app.js'
import { eventually } from '../helpers/eventually.js'
import { FaultInjector } from '../helpers/fault-injecting-file.js'

const TOKEN = 'remote-token-0123456789abcdef'

// A self-signed certificate for 127.0.0.1, valid until 2126 (openssl req -x509 -newkey ec -days 36500 …), for the https test.
const TLS_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2GNuU40lMl5kxBPz
IL3CwacRgHR4sF3tKFhXJPFGCeahRANCAAR0yzY7TXFSI1vq4aMaX7VL1Czi6Jc3
apMIE+R1PGeGFqHdiJ1wycnQxHfDJqm0521WRYqOMdGImq6EF1fi2RSV
-----END PRIVATE KEY-----`
const TLS_CERT = `-----BEGIN CERTIFICATE-----
MIIBkTCCATagAwIBAgIUeoz+9CuZZeZ2pvYt9kQpw5pwUgAwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJMTI3LjAuMC4xMCAXDTI2MTIwMTIyNDYwOVoYDzIxMjYxMTA3
MjI0NjA5WjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAR0yzY7TXFSI1vq4aMaX7VL1Czi6Jc3apMIE+R1PGeGFqHdiJ1wycnQ
xHfDJqm0521WRYqOMdGImq6EF1fi2RSVo2QwYjAdBgNVHQ4EFgQUAAMzEQ31znG+
A77IG2orb3fzlj4wHwYDVR0jBBgwFoAUAAMzEQ31znG+A77IG2orb3fzlj4wDwYD
VR0TAQH/BAUwAwEB/zAPBgNVHREECDAGhwR/AAABMAoGCCqGSM49BAMCA0kAMEYC
IQD6OW820d0loV30jKXB5KxipWVZpPRzSjN+GyRo7uWQoQIhANKm8eK3UCynnfqf
fEqppDesMhNLw8INLaUeOUmFTyaz
-----END CERTIFICATE-----`

interface Remote {
  app: FastifyInstance
  dataDir: string
  base: string
  /** The data URL of volume `remote`. */
  url: string
  /** The remote replica file of volume `remote`. */
  file: string
}

/** A second filemirror on a real socket with volume `remote` (one sync replica), optionally behind a token or with faults. */
async function filemirrorRemote(t: Test, env: Record<string, string> = {}, faults?: FaultInjector, volume: Record<string, unknown> = {}): Promise<Remote> {
  const { app, dataDir } = await makeApp(t, env, faults ? { openFile: faults.opener } : {})
  const headers = env.AUTH_TOKEN ? { authorization: `Bearer ${env.AUTH_TOKEN}` } : {}
  const res = await app.inject({ method: 'PUT', url: '/volumes/remote', headers, payload: { replicas: [{ id: 'disk', path: 'remote.img' }], ...volume } })
  t.equal(res.statusCode, 201, `the remote volume is created (${res.body.slice(0, 200)})`)
  const base = await listen(t, app)
  return { app, dataDir, base, url: `${base}/volumes/remote/data`, file: join(dataDir, 'remote.img') }
}

async function opened(t: Test, url: string, options: Parameters<typeof HttpFile.open>[1] = {}): Promise<HttpFile> {
  const file = await HttpFile.open(url, options)
  t.teardown(() => file.close())
  return file
}

/** The error a promise rejects with (fails the test when it resolves). */
async function failure(t: Test, promise: Promise<unknown>, what: string): Promise<HttpFileError> {
  try {
    await promise
  } catch (err) {
    return err as HttpFileError
  }
  t.fail(`${what}: expected a rejection`)
  return {} as HttpFileError
}

/** A raw request, for what a remote itself answers. */
async function raw(url: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const res = await fetch(url, init)
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) }
}

/** The ReplicaFile contract (test/engine/replica-file-contract.test.ts) on an opened remote, shrinking left to the caller. */
async function contractWithoutShrink(t: Test, file: HttpFile, reopen: () => Promise<HttpFile>): Promise<void> {
  t.equal(await file.size(), 0, 'created empty')
  t.equal(await file.read(Buffer.alloc(10), 0), 0, 'reading an empty file gives 0 bytes')
  const data = randomBytes(100_000)
  t.equal(await file.write(data, 5_000), data.length, 'writes all of the buffer')
  t.equal(await file.size(), 105_000, 'a write past the end grows the file')
  const back = Buffer.alloc(data.length)
  t.equal(await file.read(back, 5_000), data.length)
  t.ok(back.equals(data), 'reads back what was written, positionally')
  const hole = Buffer.alloc(5_000, 1)
  await file.read(hole, 0)
  t.ok(hole.equals(Buffer.alloc(5_000)), 'the gap before reads as zeros')
  const tail = Buffer.alloc(50)
  t.equal(await file.read(tail, 104_980), 20, 'a read across the end returns the bytes that exist')
  t.ok(tail.subarray(0, 20).equals(data.subarray(99_980)), 'and they are the right ones')
  t.equal(await file.read(Buffer.alloc(8), 200_000), 0, 'a read past the end returns 0')
  await file.write(Buffer.from('abc'), 1)
  const mixed = Buffer.alloc(5)
  await file.read(mixed, 0)
  t.same([...mixed], [0, 97, 98, 99, 0], 'overwrites only the bytes named')
  await file.truncate(200_000)
  t.equal(await file.size(), 200_000, 'truncate grows')
  const grown = Buffer.alloc(95_000, 1)
  t.equal(await file.read(grown, 105_000), 95_000)
  t.ok(grown.equals(Buffer.alloc(95_000)), 'with zeros')
  await file.sync()
  t.pass('sync resolves')
  await file.close()
  t.match(await failure(t, file.read(Buffer.alloc(1), 0), 'read after close'), { code: 'EBADF' }, 'a closed file refuses reads')
  t.match(await failure(t, file.write(Buffer.alloc(1), 0), 'write after close'), { code: 'EBADF' }, 'and writes')
  const again = await reopen()
  t.equal(await again.size(), 200_000, 'bytes persist across opens')
  const check = Buffer.alloc(3)
  await again.read(check, 1)
  t.equal(check.toString(), 'abc')
}

t.test('against a filemirror remote: the contract, shrinking by Content-Range complete length, truncate to 0, capabilities detected', async (t) => {
  const remote = await filemirrorRemote(t)
  const file = await opened(t, remote.url)
  t.same(file.capabilities, { truncate: true, ifMatch: true }, 'a filemirror remote (Operation-Id on its HEAD) takes resizing ranges and gives strong ETags')
  t.equal(file.remote.filemirror, true)
  t.match(file.etag, /^"[^"]+"$/, 'the ETag of the HEAD at open is held for If-Match')
  t.equal(file.preferredWriteUnit, 1 << 20, 'preferredWriteUnit defaults to 1 MiB')
  t.equal(file.path, remote.url)

  await contractWithoutShrink(t, file, () => opened(t, remote.url))
  const again = await opened(t, remote.url)
  const before = again.etag
  await again.truncate(10)
  t.equal(await again.size(), 10, 'truncate shrinks (byte 9 rewritten with Content-Range bytes 9-9/10)')
  t.equal((await stat(remote.file)).size, 10, 'on the remote replica file too')
  const kept = Buffer.alloc(10)
  t.equal(await again.read(kept, 0), 10)
  t.same([...kept.subarray(0, 5)], [0, 97, 98, 99, 0], 'keeping the bytes before the new end')
  t.not(again.etag, before, 'the ETag follows the remote’s replies')
  await again.truncate(0)
  t.equal(await again.size(), 0, 'truncate to 0 (a whole PUT of an empty body)')
  t.equal(await again.read(Buffer.alloc(4), 0), 0, 'an emptied file reads 0 bytes (the remote answers 416)')
  await again.truncate(1 << 20)
  t.equal(await again.size(), 1 << 20, 'truncate grows from 0')
  await again.write(Buffer.from('end'), (1 << 20) - 3)
  t.equal((await readFile(remote.file)).subarray(-3).toString(), 'end', 'the remote holds what was written')
  t.match(await failure(t, again.read(Buffer.alloc(1), -1), 'negative offset'), { code: 'EINVAL' })
  t.match(await failure(t, HttpFile.open('ftp://127.0.0.1/x'), 'ftp'), { code: 'EINVAL', message: /not a ftp: one/ }, 'only http: and https: URLs')
  t.match(await failure(t, HttpFile.open('not a url'), 'garbage'), { code: 'EINVAL' })
  t.match(await failure(t, again.truncate(0.5), 'fractional size'), { code: 'EINVAL' })
})

t.test('concurrent writes under If-Match run one at a time: none is refused as another writer’s', async (t) => {
  const remote = await filemirrorRemote(t)
  const file = await opened(t, remote.url)
  const chunks = Array.from({ length: 16 }, () => randomBytes(64 * 1024))
  const results = await Promise.all(chunks.map((c, i) => file.write(c, i * c.length)))
  t.same(results, chunks.map((c) => c.length), 'every write landed')
  const reads = await Promise.all(chunks.map(async (c, i) => {
    const back = Buffer.alloc(c.length)
    await file.read(back, i * c.length)
    return back.equals(c)
  }))
  t.same(reads, chunks.map(() => true), 'and reads back, reads running alongside')
  t.ok((await readFile(remote.file)).equals(Buffer.concat(chunks)), 'the remote file is the 16 writes in place')
})

t.test('one kept-alive connection serves request after request', async (t) => {
  const remote = await filemirrorRemote(t)
  let connections = 0
  remote.app.server.on('connection', () => connections++)
  const file = await opened(t, remote.url)
  for (let i = 0; i < 20; i++) {
    await file.write(Buffer.from([i]), i)
    t.equal(await file.read(Buffer.alloc(1), i), 1)
  }
  t.equal(await file.size(), 20)
  t.ok(connections <= 1, `open and 41 requests one after another took ${connections} connection(s)`)
})

t.test('remotes that bend Range: one ignores it (200, whole body), one answers at most 4 KiB per 206', async (t) => {
  const content = randomBytes(16 << 20)
  let served = 0
  const server = http.createServer((req, res) => {
    res.on('error', () => {})
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')
    if (req.url === '/capped.img' && range) {
      const first = Number(range[1])
      if (first >= content.length) return res.writeHead(416, { 'content-range': `bytes */${content.length}` }).end()
      const last = Math.min(Number(range[2]), first + 4095, content.length - 1)
      res.writeHead(206, { 'content-range': `bytes ${first}-${last}/${content.length}`, 'content-length': last - first + 1 })
      return res.end(content.subarray(first, last + 1))
    }
    res.writeHead(200, { 'content-length': content.length, 'content-type': 'application/octet-stream' })
    if (req.method === 'HEAD') return res.end()
    // In 64 KiB pieces, counting what went out before the client hung up.
    let at = 0
    const more = () => {
      while (at < content.length) {
        const piece = content.subarray(at, at + 65536)
        at += piece.length
        served = at
        if (!res.write(piece)) return void res.once('drain', more)
      }
      res.end()
    }
    more()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  const base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`

  const plain = await opened(t, `${base}/plain.img`)
  t.same(plain.capabilities, { truncate: false, ifMatch: false })
  t.equal(await plain.size(), content.length)
  const wanted = Buffer.alloc(1000)
  t.equal(await plain.read(wanted, 300_000), 1000)
  t.ok(wanted.equals(content.subarray(300_000, 301_000)), 'ignored: the right bytes, from the whole body')
  t.ok(served < content.length, `and the reply was dropped early (${served} of ${content.length} bytes sent)`)
  const tail = Buffer.alloc(100)
  t.equal(await plain.read(tail, content.length - 40), 40, 'across the end: the bytes that exist')
  t.equal(await plain.read(Buffer.alloc(10), content.length + 5), 0, 'past the end: none')

  const capped = await opened(t, `${base}/capped.img`)
  const big = Buffer.alloc(10_000)
  t.equal(await capped.read(big, 1_000), 10_000, 'in 4 KiB pieces: asked again for the rest, until full')
  t.ok(big.equals(content.subarray(1_000, 11_000)), 'the right bytes')
  const end = Buffer.alloc(10_000)
  t.equal(await capped.read(end, content.length - 5_000), 5_000, 'up to the end, and no further')
  t.ok(end.subarray(0, 5_000).equals(content.subarray(-5_000)))
})

t.test('another writer changed the remote: the next write gets 412 and fails with ECHANGED, not retryable', async (t) => {
  const remote = await filemirrorRemote(t)
  const file = await opened(t, remote.url)
  await file.write(Buffer.from('mine'), 0)
  const other = await raw(remote.url, { method: 'PUT', headers: { 'content-range': 'bytes 2-6/*' }, body: 'THEIR' })
  t.equal(other.status, 200, 'another writer writes to the remote volume directly')
  const err = await failure(t, file.write(Buffer.from('late'), 0), 'write after another writer')
  t.match(err, { code: 'ECHANGED', retryable: false, status: 412, method: 'PUT' }, 'ECHANGED')
  t.match(err.message, /another writer changed the remote since ETag "/, err.message)
  t.equal(isRetryable(err), false)
  t.equal((await readFile(remote.file)).toString(), 'miTHEIR', 'the refused write did not land')
  t.match(await failure(t, file.write(Buffer.from('x'), 100), 'again'), { code: 'ECHANGED' }, 'every later write is refused too, until the file is opened again')
  t.match(await failure(t, file.truncate(3), 'truncate'), { code: 'ECHANGED' }, 'and so is a truncate')
  t.equal(await file.reachable(), true, 'the remote answers (a HEAD)…')
  t.match(await failure(t, file.write(Buffer.from('x'), 100), 'after a HEAD'), { code: 'ECHANGED' }, '…and still nothing is written')
  const reopened = await opened(t, remote.url)
  await reopened.write(Buffer.from('MINE'), 0)
  t.equal((await readFile(remote.file)).toString(), 'MINEEIR', 'a file opened again takes the remote as it now is')

  const unconditional = await opened(t, remote.url, { ifMatch: false })
  t.same(unconditional.capabilities, { truncate: true, ifMatch: false }, 'ifMatch: false turns it off')
  await raw(remote.url, { method: 'PUT', headers: { 'content-range': 'bytes 0-0/*' }, body: 'z' })
  t.equal(await unconditional.write(Buffer.from('Z'), 0), 1, 'and then another writer goes unnoticed')
})

t.test('the remote down: retryable EREMOTE_UNAVAILABLE (refused, or no answer in time); back up: works again', async (t) => {
  const remote = await filemirrorRemote(t)
  const file = await opened(t, remote.url, { timeoutMs: 5_000 })
  await file.write(Buffer.from('before'), 0)
  t.equal(await file.reachable(), true, 'reachable while it runs')
  const port = Number(new URL(remote.base).port)
  await closeOnce(remote.app)

  for (const [what, op] of [
    ['read', () => file.read(Buffer.alloc(6), 0)],
    ['write', () => file.write(Buffer.from('during'), 6)],
    ['size', () => file.size()],
    ['truncate', () => file.truncate(3)],
  ] as const) {
    const err = await failure(t, op(), what)
    t.match(err, { code: 'EREMOTE_UNAVAILABLE', retryable: true, cause: { code: 'ECONNREFUSED' } }, `${what} while it is down: ${err.message}`)
  }
  t.equal(await file.reachable(), false, 'not reachable')

  // Back up on the same port, over the same DATA_DIR: a new process instance, whose ETags all differ.
  const { app } = await makeApp(t, { DATA_DIR: remote.dataDir })
  await app.listen({ port, host: '127.0.0.1' })
  t.equal(await file.reachable(), true, 'reachable again')
  const etag = file.etag
  t.equal(await file.write(Buffer.from('after!'), 6), 6, 'a write works again: contact was lost, so its ETag was read again first')
  t.not(file.etag, etag)
  const back = Buffer.alloc(12)
  t.equal(await file.read(back, 0), 12)
  t.equal(back.toString(), 'beforeafter!', 'with the bytes from before and after')

  // A remote that accepts connections but never answers: a timeout, retryable.
  // It reads (and drops) what comes, so it sees the client hang up.
  const silent = net.createServer((socket) => socket.resume().on('error', () => {}))
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => silent.close(resolve)))
  const started = Date.now()
  const err = await failure(t, HttpFile.open(`http://127.0.0.1:${(silent.address() as net.AddressInfo).port}/volumes/x/data`, { timeoutMs: 300 }), 'open of a silent remote')
  t.match(err, { code: 'EREMOTE_UNAVAILABLE', retryable: true, cause: { code: 'ETIMEDOUT' } }, `a remote that never answers times out: ${err.message}`)
  t.ok(Date.now() - started < 2_000, 'after about the timeout')
})

t.test('a remote that takes a write but answers late: timed out and retryable; the write landing later is not taken for another writer’s', async (t) => {
  const faults = new FaultInjector()
  // Without block checksums: with them, a write held at the remote's disk holds its 4 KiB block, so the next write to it waits.
  const remote = await filemirrorRemote(t, {}, faults, { checksums: false })
  const file = await opened(t, remote.url, { timeoutMs: 1_500 })
  await file.write(Buffer.from('one'), 0)
  let release!: () => void
  const held = new Promise<void>((resolve) => (release = resolve))
  t.teardown(() => release())
  let first = true
  // Only the next write is held at the remote's disk; later ones pass.
  faults.set(remote.file, { writeGate: () => (first ? ((first = false), held) : Promise.resolve()) })
  const err = await failure(t, file.write(Buffer.from('two'), 3), 'held write')
  t.match(err, { code: 'EREMOTE_UNAVAILABLE', retryable: true, cause: { code: 'ETIMEDOUT' } }, `no answer in time: ${err.message}`)
  t.equal(await file.write(Buffer.from('three'), 6), 5, 'the next write goes through: contact was lost, so the ETag was read again first')
  // Now the held write lands, after that one: the remote's ETag moves once more, by a write of this very file.
  release()
  await eventually(async () => json((await remote.app.inject({ url: '/volumes/remote/operations?status=pending' }))).operations.length === 0, 'the held write to settle on the remote')
  const moved = (await raw(remote.url, { method: 'HEAD' })).headers.get('etag')
  t.not(moved, file.etag, 'the remote’s ETag is not the one this file holds')
  t.equal(await file.write(Buffer.from('four'), 11), 4, 'a 412 so soon after a write without an answer reads the ETag again and tries again')
  t.equal(file.etag, (await raw(remote.url, { method: 'HEAD' })).headers.get('etag'), 'and holds the remote’s ETag again')
  const back = Buffer.alloc(15)
  await file.read(back, 0)
  t.equal(back.toString(), 'onetwothreefour')
  faults.clear()

  // A request slower than the kept-alive connections' idle timeout is not cut by it.
  const patient = await opened(t, remote.url, { keepAliveIdleMs: 50, timeoutMs: 5_000 })
  faults.set(remote.file, { delayMs: 300 })
  t.equal(await patient.write(Buffer.from('slow'), 15), 4, 'a write answered after 300 ms, with a 50 ms idle timeout')
  t.equal(await patient.read(Buffer.alloc(4), 15), 4, 'and a read')
  faults.clear()

  faults.set(remote.file, { failWrites: 'EIO' })
  const broken = await failure(t, patient.write(Buffer.from('x'), 0), 'write on a failing remote disk')
  t.match(broken, { code: 'EREMOTE_UNAVAILABLE', retryable: true, status: 500 }, `a 5xx is retryable: ${broken.message}`)
})

t.test('close() aborts the requests in flight and frees the agent; later calls fail with EBADF', async (t) => {
  const faults = new FaultInjector()
  const remote = await filemirrorRemote(t, {}, faults)
  const file = await HttpFile.open(remote.url)
  let release!: () => void
  const held = new Promise<void>((resolve) => (release = resolve))
  t.teardown(() => release())
  faults.set(remote.file, { writeGate: () => held })
  const writing = file.write(Buffer.from('held'), 0)
  const queued = file.write(Buffer.from('next'), 10)
  await new Promise((r) => setTimeout(r, 50))
  const started = Date.now()
  await file.close()
  t.match(await failure(t, writing, 'in-flight write'), { code: 'ECANCELED', retryable: false }, 'the write in flight is aborted')
  t.match(await failure(t, queued, 'queued write'), { code: 'EBADF' }, 'the write waiting for its turn is refused')
  t.ok(Date.now() - started < 1_000, 'at once')
  t.match(await failure(t, file.size(), 'size'), { code: 'EBADF' })
  t.match(await failure(t, file.sync(), 'sync'), { code: 'EBADF' })
  t.equal(await file.reachable(), false, 'a closed file is not reachable')
  await file.close()
  t.pass('closing twice is fine')
})

t.test('credentials: the token is sent as a bearer token; a missing or wrong one is EACCES, not retryable', async (t) => {
  const remote = await filemirrorRemote(t, { AUTH_TOKEN: TOKEN })
  for (const [what, token] of [['no token', undefined], ['a wrong token', 'wrong-token-0123456789abcdef']] as const) {
    const err = await failure(t, HttpFile.open(remote.url, token === undefined ? {} : { token }), what)
    t.match(err, { code: 'EACCES', retryable: false, status: 401, method: 'HEAD' }, `${what}: ${err.message}`)
    t.notMatch(err.message, /remote-token|wrong-token/, 'no token in the message')
    t.match(err.message, token === undefined ? /refused access \(401.*no bearer token was sent: give the replica a tokenEnv/ : /refused the credentials \(401.*check the bearer token/, `${what}: says what to check`)
  }
  const file = await opened(t, remote.url, { token: TOKEN })
  await file.write(Buffer.from('secret'), 0)
  const back = Buffer.alloc(6)
  await file.read(back, 0)
  t.equal(back.toString(), 'secret', 'the right token reads and writes')
})

t.test('https: a filemirror behind a TLS terminator, trusted with tls.ca; an untrusted certificate is EREMOTE_UNTRUSTED, not retryable', async (t) => {
  const remote = await filemirrorRemote(t)
  const upstream = Number(new URL(remote.base).port)
  const terminator = tls.createServer({ key: TLS_KEY, cert: TLS_CERT }, (client) => {
    const server = net.connect(upstream, '127.0.0.1')
    client.on('error', () => server.destroy())
    server.on('error', () => client.destroy())
    client.pipe(server).pipe(client)
  })
  await new Promise<void>((resolve) => terminator.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => terminator.close(resolve)))
  const url = `https://127.0.0.1:${(terminator.address() as net.AddressInfo).port}/volumes/remote/data`
  const err = await failure(t, HttpFile.open(url), 'open without the CA')
  t.match(err, { code: 'EREMOTE_UNTRUSTED', retryable: false, cause: { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' } }, err.message)
  const file = await opened(t, url, { tls: { ca: TLS_CERT } })
  t.same(file.capabilities, { truncate: true, ifMatch: true }, 'detected through the terminator')
  await file.write(Buffer.from('sealed'), 0)
  const back = Buffer.alloc(6)
  t.equal(await file.read(back, 0), 6)
  t.equal(back.toString(), 'sealed')
  t.equal((await readFile(remote.file)).toString(), 'sealed')
  await file.close()
})

t.test('a missing volume is ENOENT, not retryable, at open and once deleted', async (t) => {
  const remote = await filemirrorRemote(t)
  const err = await failure(t, HttpFile.open(`${remote.base}/volumes/nope/data`), 'open of a missing volume')
  t.match(err, { code: 'ENOENT', retryable: false, status: 404 }, err.message)
  t.match(err.message, /no such volume or file on the remote \(404 Not Found\)/, 'saying so (a HEAD has no problem body to quote)')
  t.match(await failure(t, HttpFile.open(`${remote.base}/volumes/nope/data`, { create: true }), 'create'), { code: 'ENOENT', status: 404 }, 'create cannot make a filemirror volume')
  const file = await opened(t, remote.url)
  await file.write(Buffer.from('x'), 0)
  const res = await remote.app.inject({ method: 'DELETE', url: '/volumes/remote?force=true' })
  t.ok(res.statusCode < 300, 'the volume is deleted on the remote')
  for (const [what, op] of [
    ['read', () => file.read(Buffer.alloc(1), 0)],
    ['write', () => file.write(Buffer.from('y'), 0)],
    ['size', () => file.size()],
  ] as const) {
    t.match(await failure(t, op(), what), { code: 'ENOENT', retryable: false, status: 404 }, `${what} of a deleted volume`)
  }
})

const apacheSkip = apacheMissing()
if (apacheSkip) console.log(`# skipping the Apache httpd tests: ${apacheSkip}`)

t.test('against Apache httpd mod_dav', { skip: apacheSkip ?? false }, async (t) => {
  const apache = await startApache(t)
  t.teardown(() => {
    if (t.passing()) return
    console.log(apache.errorLog())
  })

  t.test('what mod_dav answers to each request (the behaviour HttpFile relies on)', async (t) => {
    const url = `${apache.base}/probe.img`
    t.equal((await raw(url, { method: 'HEAD' })).status, 404, 'HEAD of a missing file: 404')
    const created = await raw(url, { method: 'PUT', headers: { 'if-none-match': '*' }, body: '' })
    t.equal(created.status, 201, 'an empty PUT with If-None-Match: * creates it: 201')
    t.equal((await raw(url, { method: 'PUT', headers: { 'if-none-match': '*' }, body: '' })).status, 412, 'and again: 412')
    const emptyHead = await raw(url, { method: 'HEAD' })
    t.equal(emptyHead.status, 200)
    t.equal(emptyHead.headers.get('content-length'), null, 'HEAD of an empty file: no Content-Length at all')
    const emptyRange = await raw(url, { headers: { range: 'bytes=0-9' } })
    t.same([emptyRange.status, emptyRange.headers.get('content-range'), emptyRange.body.length], [200, null, 0], 'a Range on an empty file: 200 with an empty body (not 416)')
    const putAt = Date.now()
    const put = await raw(url, { method: 'PUT', headers: { 'content-range': 'bytes 5-9/*' }, body: 'hello' })
    t.equal(put.status, 204, 'PUT with Content-Range bytes 5-9/*: 204')
    t.equal(put.headers.get('etag'), null, 'with no ETag in the reply')
    t.same([...(await readFile(join(apache.root, 'probe.img')))], [0, 0, 0, 0, 0, ...Buffer.from('hello')], 'the bytes land at the offset, the gap is zeros')
    const afterPut = (await raw(url, { method: 'HEAD' })).headers.get('etag')
    if (Date.now() - putAt < 900) t.match(afterPut, /^W\//, 'right after a change, its ETag is weak (mtime within the last second)')
    t.equal((await raw(url, { method: 'PUT', headers: { 'content-range': 'bytes 0-2/5' }, body: 'abc' })).status, 204, 'bytes 0-2/5 on a 10-byte file: 204…')
    t.equal((await stat(join(apache.root, 'probe.img'))).size, 10, '…and the complete length is ignored: no shrink')
    t.equal((await raw(url, { method: 'PUT', headers: { 'content-range': 'bytes 0-2/100' }, body: 'ABC' })).status, 204, 'bytes 0-2/100: 204…')
    t.equal((await stat(join(apache.root, 'probe.img'))).size, 10, '…and no growth either')
    t.equal((await raw(url, { method: 'PUT', headers: { 'content-range': 'bytes 3-1/*' }, body: 'abc' })).status, 400, 'an invalid range: 400')
    const across = await raw(url, { headers: { range: 'bytes=8-20' } })
    t.same([across.status, across.headers.get('content-range'), across.body.toString()], [206, 'bytes 8-9/10', 'lo'], 'a range across the end: 206 with the bytes that exist')
    const past = await raw(url, { headers: { range: 'bytes=50-60' } })
    t.same([past.status, past.headers.get('content-range')], [416, null], 'a range past the end: 416, without the Content-Range: bytes */10 RFC 9110 §15.5.17 suggests')
    await new Promise((r) => setTimeout(r, 1_100))
    const strong = (await raw(url, { method: 'HEAD' })).headers.get('etag')!
    t.match(strong, /^"/, 'a second later the ETag is strong')
    t.equal((await raw(url, { method: 'PUT', headers: { 'content-range': 'bytes 0-0/*', 'if-match': strong }, body: 'Z' })).status, 204, 'If-Match with it: 204')
    t.equal((await raw(url, { method: 'PUT', headers: { 'content-range': 'bytes 0-0/*', 'if-match': strong }, body: 'Y' })).status, 412, 'the same If-Match again: 412 (so If-Match works, but a PUT reply gives no ETag to chain)')
    t.equal((await raw(url, { method: 'PUT', body: '' })).status, 204, 'a whole PUT of an empty body: 204')
    t.equal((await stat(join(apache.root, 'probe.img'))).size, 0, 'replaces the file: empty')
    t.equal((await raw(`${apache.base}/no/such/dir/f.img`, { method: 'PUT', body: '' })).status, 409, 'a PUT into a missing collection: 409')
  })

  t.test('HttpFile: the contract but shrinking (ENOTSUP), truncate to 0 and growing work, capabilities detected', async (t) => {
    const url = `${apache.base}/sub/replica.img`
    const mkcol = await raw(`${apache.base}/sub/`, { method: 'MKCOL' })
    t.equal(mkcol.status, 201, 'its collection is made with MKCOL')
    const file = await opened(t, url, { create: true })
    t.same(file.capabilities, { truncate: false, ifMatch: false }, 'Apache takes neither resizing ranges nor gives ETags on PUT')
    t.match(file.remote, { filemirror: false, server: /^Apache\// })
    t.equal(file.etag, undefined, 'no If-Match is sent')
    await contractWithoutShrink(t, file, () => opened(t, url))
    const again = await opened(t, url)
    const err = await failure(t, again.truncate(10), 'shrink')
    t.match(err, { code: 'ENOTSUP', retryable: false }, `shrinking throws ENOTSUP: ${err.message}`)
    t.equal(await again.size(), 200_000, 'and changes nothing')
    await again.truncate(0)
    t.equal(await again.size(), 0, 'truncate to 0 works (a whole PUT of an empty body)')
    t.equal((await stat(join(apache.root, 'sub/replica.img'))).size, 0)
    await again.truncate(4096)
    t.equal(await again.size(), 4096, 'growing works (one zero byte written at the new end)')
    const forced = await opened(t, url, { truncate: true })
    const notShrunk = await failure(t, forced.truncate(10), 'forced shrink')
    t.match(notShrunk, { code: 'ENOTSUP' }, `told it can, it tries, finds the size unchanged and says so: ${notShrunk.message}`)
    t.equal(forced.capabilities.truncate, false, 'and stops claiming it')
    t.equal(await forced.size(), 4096)
  })

  t.test('HttpFile: a missing file is ENOENT; create makes it, but not in a missing collection', async (t) => {
    t.match(await failure(t, HttpFile.open(`${apache.base}/absent.img`), 'open'), { code: 'ENOENT', retryable: false, status: 404 })
    t.match(await failure(t, HttpFile.open(`${apache.base}/no/such/dir/f.img`, { create: true }), 'create'), { code: 'ENOENT', status: 409 }, 'a missing parent collection (409) is ENOENT')
    const file = await opened(t, `${apache.base}/created.img`, { create: true })
    t.equal(await file.size(), 0, 'created empty')
  })

  t.test('HttpFile: Apache stopped is retryable; started again, it works', async (t) => {
    const file = await opened(t, `${apache.base}/updown.img`, { create: true })
    await file.write(Buffer.from('up'), 0)
    await apache.stop()
    t.match(await failure(t, file.write(Buffer.from('down'), 2), 'write while stopped'), { code: 'EREMOTE_UNAVAILABLE', retryable: true })
    t.match(await failure(t, file.read(Buffer.alloc(2), 0), 'read while stopped'), { code: 'EREMOTE_UNAVAILABLE', retryable: true })
    t.equal(await file.reachable(), false)
    await apache.start()
    t.equal(await file.reachable(), true)
    await file.write(Buffer.from('again'), 2)
    const back = Buffer.alloc(7)
    t.equal(await file.read(back, 0), 7)
    t.equal(back.toString(), 'upagain')
  })
})
