import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { assertProblem, createVolume, listen, makeApp } from '../helpers/app.js'

/** Sends raw bytes on a socket; resolves with everything received once the server closes it, and how long that took. */
function rawExchange(port: number, chunks: string[], gapMs = 0): Promise<{ text: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const socket = net.connect(port, '127.0.0.1')
    let text = ''
    socket.on('data', (d) => (text += d))
    socket.on('close', () => resolve({ text, ms: Date.now() - started }))
    socket.on('error', reject)
    socket.on('connect', async () => {
      for (const c of chunks) {
        socket.write(c)
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs))
      }
    })
  })
}

const portOf = (url: string) => Number(new URL(url).port)

t.test('a JSON body over MAX_JSON_BYTES is 413 and creates nothing', async (t) => {
  const { app, dataDir } = await makeApp(t, { MAX_JSON_BYTES: '1024' })
  const res = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas: [{ id: 'a', path: 'a.img', label: 'x'.repeat(2000) }] } })
  assertProblem(t, res, 413)
  t.notOk(existsSync(join(dataDir, 'a.img')))
})

t.test('a request head over MAX_HEADER_BYTES gets 431 as a problem', async (t) => {
  const { app } = await makeApp(t, { MAX_HEADER_BYTES: '2048' })
  const url = await listen(t, app)
  const { text } = await rawExchange(portOf(url), [`GET /volumes HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`])
  t.match(text, /^HTTP\/1\.1 431 /)
  t.match(text, /content-type: application\/problem\+json/i)
  t.match(text, /"status":431/)
})

t.test('a connection that never finishes its head is closed within the headers timeout', async (t) => {
  const { app } = await makeApp(t, { HEADERS_TIMEOUT_MS: '1000' })
  const url = await listen(t, app)
  const { text, ms } = await rawExchange(portOf(url), ['GET /volumes HTTP/1.1\r\n', 'Host: x\r\n'], 100)
  t.ok(ms < 5_000, `closed after ${ms} ms`)
  t.match(text, /^HTTP\/1\.1 408 /, 'with a 408 problem')
})

t.test('a write past MAX_VOLUME_BYTES is 413 before anything is written', async (t) => {
  const { app, dataDir } = await makeApp(t, { MAX_VOLUME_BYTES: String(1 << 20) })
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.img' }])
  const past = await app.inject({ method: 'PUT', url: '/volumes/v/data', headers: { 'content-range': `bytes ${1 << 20}-${(1 << 20) + 9}/*` }, payload: Buffer.alloc(10) })
  assertProblem(t, past, 413)
  const grow = await app.inject({ method: 'PUT', url: '/volumes/v/data', headers: { 'content-range': `bytes 0-9/${(1 << 20) + 1}` }, payload: Buffer.alloc(10) })
  assertProblem(t, grow, 413, 'a complete length past the limit')
  t.equal(statSync(join(dataDir, 'a.img')).size, 0, 'nothing written')
  const big = await app.inject({ method: 'PUT', url: '/volumes/v/data', payload: Buffer.alloc((1 << 20) + 1) })
  assertProblem(t, big, 413, 'a whole body past the limit')
})

t.test('more ranges than MAX_RANGES are ignored: the whole content, never more', async (t) => {
  const { app } = await makeApp(t, { MAX_RANGES: '3' })
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.img' }])
  const body = randomBytes(1000)
  await app.inject({ method: 'PUT', url: '/volumes/v/data', payload: body })
  const res = await app.inject({ url: '/volumes/v/data', headers: { range: 'bytes=0-0,10-10,20-20,30-30,40-40' } })
  t.equal(res.statusCode, 200)
  t.ok(res.rawPayload.equals(body))
})

t.test('writes beyond MAX_INFLIGHT_WRITES get 503 with Retry-After and change nothing', async (t) => {
  const { app, dataDir } = await makeApp(t, { MAX_INFLIGHT_WRITES: '1' })
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.img' }])
  const url = await listen(t, app)
  // One upload in flight, its body held open.
  const first = http.request(`${url}/volumes/v/data`, { method: 'PUT', headers: { 'content-length': '20' } })
  const firstReply = new Promise<number>((resolve) => first.on('response', (res) => (res.resume(), resolve(res.statusCode!))))
  first.write(Buffer.alloc(10, 1))
  await new Promise((r) => setTimeout(r, 100))
  const second = await fetch(`${url}/volumes/v/data`, { method: 'PUT', headers: { 'content-range': 'bytes 100-104/*' }, body: 'hello' })
  t.equal(second.status, 503)
  t.equal(second.headers.get('retry-after'), '1')
  t.match(second.headers.get('content-type'), /application\/problem\+json/)
  first.end(Buffer.alloc(10, 2))
  t.equal(await firstReply, 200)
  t.equal(readFileSync(join(dataDir, 'a.img')).length, 20, 'the refused write left nothing')
})

t.test('an upload that stalls is aborted with nothing acknowledged; a slow steady one is not cut', async (t) => {
  const { app } = await makeApp(t, { BODY_IDLE_TIMEOUT_MS: '400' })
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.img' }])
  const url = await listen(t, app)
  const port = portOf(url)
  const { text, ms } = await rawExchange(port, ['PUT /volumes/v/data HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n', 'x'.repeat(10)])
  t.ok(ms < 5_000, `stalled upload closed after ${ms} ms`)
  t.notMatch(text, /HTTP\/1\.1 20[02]/, 'never acknowledged')
  const ops = await (await fetch(`${url}/volumes/v/operations`)).json()
  t.equal(ops.operations[0].status, 'failed', 'its group is failed')

  // 12 chunks, 200 ms apart: 2.4 s in all, never idle for 400 ms.
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request(`${url}/volumes/v/data`, { method: 'PUT', headers: { 'transfer-encoding': 'chunked' } }, (res) => (res.resume(), resolve(res.statusCode!)))
    req.on('error', reject)
    let n = 0
    const tick = setInterval(() => {
      req.write(Buffer.alloc(1000, n))
      if (++n === 12) {
        clearInterval(tick)
        req.end()
      }
    }, 200)
  })
  t.equal(status, 200, 'a healthy slow upload completes')
})
