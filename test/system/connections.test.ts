// A refused or failed body never leaves a keep-alive connection hanging: the reply says
// Connection: close and the server closes the socket (RFC 9112 §9.6), so the client's next request
// goes on a new connection instead of waiting for an answer that never comes.
import { connect, type Socket } from 'node:net'
import t from 'tap'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { openLocalFile } from '../../src/engine/replica-file.js'
import { createVolume, formData, listen, makeApp } from '../helpers/app.js'
import { scratch } from '../helpers/scratch.js'
import { serverBuilt, startServer, whenReady } from '../helpers/server-process.js'

interface RawReply {
  status: number
  headers: Record<string, string>
  /** The socket was closed by the server within the wait. */
  closed: boolean
}

/** Sends `head` then `body` on a fresh socket, reads one reply and waits up to `waitMs` for the server to close. */
async function exchange(base: string, head: string, body: Buffer, waitMs = 3_000): Promise<RawReply> {
  const { hostname, port } = new URL(base)
  const socket: Socket = connect(Number(port), hostname)
  let received = Buffer.alloc(0)
  let closed = false
  socket.on('data', (d: Buffer) => (received = Buffer.concat([received, d])))
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.on('error', () => {})
  socket.once('close', () => (closed = true))
  socket.write(head)
  socket.write(body)
  // The body is never finished: a server that waits for the rest would wait forever.
  const deadline = Date.now() + waitMs
  while (!closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  if (!closed) socket.destroy()
  await ended
  const text = received.toString('latin1')
  const [statusLine, ...lines] = text.split('\r\n\r\n')[0].split('\r\n')
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]))
  return { status: Number(statusLine?.split(' ')[1]), headers, closed }
}

t.test('a chunked PUT longer than its Content-Range: 400, Connection: close, the socket is closed', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.bin' }])
  const base = await listen(t, app)
  const chunk = Buffer.alloc(20, 0x41)
  const reply = await exchange(
    base,
    'PUT /volumes/v/data HTTP/1.1\r\nHost: x\r\nContent-Range: bytes 0-9/*\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n',
    Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]),
  )
  t.equal(reply.status, 400, 'the body is refused')
  t.equal(reply.headers['connection'], 'close', 'the reply says the connection ends')
  t.ok(reply.closed, 'and the server closes it')
  t.equal((await app.inject({ url: '/volumes/v/data' })).rawPayload.length, 0, 'nothing past the range was written')
})

t.test('a multipart POST with an offset past the end: 400, Connection: close, the socket is closed', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.bin' }])
  const base = await listen(t, app)
  const form = formData([
    { name: 'offset', value: '99' },
    { name: 'file', filename: 'f.bin', data: Buffer.alloc(1000, 1) },
  ])
  // Content-Length promises more than is sent: the server must not wait for the rest.
  const reply = await exchange(base, `POST /volumes/v/data HTTP/1.1\r\nHost: x\r\nContent-Type: ${form.contentType}\r\nContent-Length: ${form.body.length + 100_000}\r\n\r\n`, form.body)
  t.equal(reply.status, 400)
  t.equal(reply.headers['connection'], 'close')
  t.ok(reply.closed, 'the server closes the connection')
})

t.test('a write failing mid-body: 500 problem, Connection: close, the socket is closed', async (t) => {
  const faults = new FaultInjector(openLocalFile)
  const { app, dataDir } = await makeApp(t, {}, { openFile: faults.opener })
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.bin' }])
  const base = await listen(t, app)
  faults.set(`${dataDir}/a.bin`, { failWrites: 'EIO' })
  const reply = await exchange(base, 'PUT /volumes/v/data HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n', Buffer.alloc(512 << 10, 7))
  t.equal(reply.status, 500, 'the write failed')
  t.equal(reply.headers['content-type'], 'application/problem+json')
  t.equal(reply.headers['connection'], 'close')
  t.ok(reply.closed, 'the server closes the connection')
})

t.test('a complete request that is refused keeps its connection: the next request is answered', async (t) => {
  const { app } = await makeApp(t)
  const base = await listen(t, app)
  const { hostname, port } = new URL(base)
  const socket = connect(Number(port), hostname)
  t.teardown(() => socket.destroy())
  let received = ''
  socket.on('data', (d: Buffer) => (received += d.toString('latin1')))
  socket.write('GET /volumes/nope HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')
  const deadline = Date.now() + 3_000
  while (!/HTTP\/1\.1 200/.test(received) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  t.match(received, /HTTP\/1\.1 404[\s\S]*HTTP\/1\.1 200/, 'a 404 then the next request on the same connection')
})

t.test('against the real server process: a refused body ends its connection, the next request goes on a new one', { skip: serverBuilt ? false : 'run npm run build first' }, async (t) => {
  const server = await startServer({ DATA_DIR: await scratch(t, 'filemirror-conn-') })
  t.teardown(() => void server.child.kill('SIGKILL'))
  await whenReady(server)
  const created = await fetch(`${server.url}/volumes/v`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ replicas: [{ id: 'a', path: 'a.bin' }] }) })
  t.equal(created.status, 201)
  const chunk = Buffer.alloc(20, 0x41)
  const reply = await exchange(
    server.url,
    'PUT /volumes/v/data HTTP/1.1\r\nHost: x\r\nContent-Range: bytes 0-9/*\r\nTransfer-Encoding: chunked\r\n\r\n',
    Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]),
  )
  t.equal(reply.status, 400)
  t.equal(reply.headers['connection'], 'close')
  t.ok(reply.closed, 'the server closed the connection instead of leaving it hanging')
  t.equal((await fetch(`${server.url}/healthz`)).status, 200, 'and answers the next request')
})
