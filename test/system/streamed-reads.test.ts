// A reply under one strong ETag is the bytes of one instant (RFC 9110 §8.8.1): a write landing on bytes a
// streamed reply has yet to send cuts the reply short, so the client sees an incomplete body, never a mix.
// And a client that stops reading never keeps a close (SIGTERM, DELETE) past its grace period.
import { request, type IncomingMessage } from 'node:http'
import t from 'tap'
import { closeOnce, createVolume, listen, makeApp, putData } from '../helpers/app.js'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'
import { serverBuilt, startServer, whenReady } from '../helpers/server-process.js'

const MiB = 1 << 20

/** Opens a GET and returns the response, paused after its first chunk. */
function openPaused(url: string): Promise<{ res: IncomingMessage; first: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      res.once('data', (first: Buffer) => {
        res.pause()
        resolve({ res, first })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

/** Reads the rest of a paused response: the bytes, and whether it ended complete. */
function drain(res: IncomingMessage): Promise<{ body: Buffer; complete: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    res.on('data', (c: Buffer) => chunks.push(c))
    const done = () => resolve({ body: Buffer.concat(chunks), complete: res.complete })
    res.once('end', done)
    res.once('close', done)
    res.once('error', () => {})
    res.resume()
  })
}

t.test('a write that lands on bytes a streamed reply has yet to send cuts it short; one that lands behind it does not', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.bin' }])
  const before = pattern(16 * MiB, 1)
  t.equal((await putData(app, 'v', before)).statusCode, 200)
  const base = await listen(t, app)

  // Ahead of the reader: the reply must not show it under the old ETag.
  const ahead = await openPaused(`${base}/volumes/v/data`)
  t.equal((await putData(app, 'v', pattern(4096, 2), { 'content-range': `bytes ${12 * MiB}-${12 * MiB + 4095}/*` })).statusCode, 200, 'a write ahead of the reader is acknowledged')
  const rest = await drain(ahead.res)
  const got = Buffer.concat([ahead.first, rest.body])
  t.notOk(rest.complete && got.length === before.length, 'the reply is cut short: the client sees an incomplete body')
  t.ok(before.subarray(0, got.length).equals(got), 'and every byte it did get is of the instant its ETag names')

  // Behind the reader (bytes already sent): the reply stays whole and is still one instant.
  const now = Buffer.from((await app.inject({ url: '/volumes/v/data' })).rawPayload)
  const behind = await openPaused(`${base}/volumes/v/data`)
  t.equal((await putData(app, 'v', pattern(16, 3), { 'content-range': 'bytes 0-15/*' })).statusCode, 200)
  const whole = await drain(behind.res)
  const body = Buffer.concat([behind.first, whole.body])
  t.ok(whole.complete, 'a write behind the reader does not cut it')
  t.ok(body.equals(now), 'and the reply is the content at its start')
})

t.test('a client that stops reading does not hold a close past the grace period', async (t) => {
  const { app } = await makeApp(t, { SHUTDOWN_GRACE_MS: '500' })
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.bin' }])
  t.equal((await putData(app, 'v', pattern(32 * MiB, 4))).statusCode, 200)
  const base = await listen(t, app)
  const stalled = await openPaused(`${base}/volumes/v/data`)
  stalled.res.on('error', () => {})
  const started = Date.now()
  await closeOnce(app)
  const took = Date.now() - started
  t.ok(took < 5_000, `the app closed in ${took} ms with a reader that stopped reading (grace 500 ms)`)
  stalled.res.destroy()
})

t.test('SIGTERM ends the real server within its grace period plus a small bound, whatever a reader does', { skip: serverBuilt ? false : 'dist/src/server.js is missing: run npm run build' }, async (t) => {
  const dataDir = await scratch(t, 'filemirror-stalled-')
  const server = await startServer({ DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: '1000' })
  t.teardown(() => void server.child.kill('SIGKILL'))
  await whenReady(server)
  const put = (url: string, body: Buffer | string, headers: Record<string, string> = {}) => fetch(`${server.url}${url}`, { method: 'PUT', body: new Uint8Array(typeof body === 'string' ? Buffer.from(body) : body), headers })
  t.equal((await put('/volumes/v', JSON.stringify({ replicas: [{ id: 'a', path: 'a.bin' }] }), { 'content-type': 'application/json' })).status, 201)
  t.equal((await put('/volumes/v/data', pattern(32 * MiB, 5))).status, 200)
  const stalled = await openPaused(`${server.url}/volumes/v/data`)
  stalled.res.on('error', () => {})
  const started = Date.now()
  server.child.kill('SIGTERM')
  const exit = await server.exited
  const took = Date.now() - started
  t.equal(exit.code, 0, 'a clean stop')
  t.ok(took < 4_000, `stopped in ${took} ms with SHUTDOWN_GRACE_MS=1000 and a reader that stopped reading`)
  stalled.res.destroy()
})

t.test('against the real server process: a 16 MiB reply never shows a later write without an earlier one', { skip: serverBuilt ? false : 'run npm run build first' }, async (t) => {
  const server = await startServer({ DATA_DIR: await scratch(t, 'filemirror-instant-') })
  t.teardown(() => void server.child.kill('SIGKILL'))
  await whenReady(server)
  const put = (url: string, body: string | Buffer, headers: Record<string, string> = {}) =>
    fetch(`${server.url}${url}`, { method: 'PUT', body: typeof body === 'string' ? body : (new Uint8Array(body) as Uint8Array<ArrayBuffer>), headers })
  t.equal((await put('/volumes/v', JSON.stringify({ replicas: [{ id: 'a', path: 'a.bin' }] }), { 'content-type': 'application/json' })).status, 201)
  const before = pattern(16 * MiB, 6)
  t.equal((await put('/volumes/v/data', before)).status, 200)
  const reply = await openPaused(`${server.url}/volumes/v/data`)
  // A then B, both acknowledged: A lands where the reply has been, B where it has yet to go.
  const a = pattern(4096, 7)
  const b = pattern(4096, 8)
  t.equal((await put('/volumes/v/data', a, { 'content-range': `bytes 0-4095/*` })).status, 200, 'A acknowledged')
  t.equal((await put('/volumes/v/data', b, { 'content-range': `bytes ${14 * MiB}-${14 * MiB + 4095}/*` })).status, 200, 'B acknowledged')
  const rest = await drain(reply.res)
  const got = Buffer.concat([reply.first, rest.body])
  const showsB = got.length >= 14 * MiB + 4096 && got.subarray(14 * MiB, 14 * MiB + 4096).equals(b)
  t.notOk(rest.complete && showsB, 'never a complete reply with B but without A: it is cut short')
  t.ok(before.subarray(0, got.length).equals(got), 'what it did send is the content at its start')
})
