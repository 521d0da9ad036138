/**
 * A reference, not a peer: the least a Fastify server with filemirror's logging can do per request. Same
 * framework settings as the service (one pino line per request from an onResponse hook, request ids), one
 * positional fs.read per ranged GET and one fs.write per Content-Range PUT; no engine, no groups, no
 * metrics, no events. What filemirror costs above this is its own bookkeeping; what this costs above
 * bench/bare-server.ts is Fastify and the log line.
 * It serves BARE_FILE when set; otherwise PUT /volumes/{name} (the harness's createVolume) opens the first replica's absolute path.
 */
import { read, write, openSync, fstatSync } from 'node:fs'
import Fastify, { LogController } from 'fastify'

let fd = process.env.BARE_FILE ? openSync(process.env.BARE_FILE, 'r+') : -1
const RANGE = /^bytes=(\d+)-(\d+)$/
const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(?:\d+|\*)$/

const app = Fastify({
  logger: { level: process.env.LOG_LEVEL ?? 'info' },
  logController: new LogController({ requestIdLogLabel: 'requestId', disableRequestLogging: true }),
})
app.addHook('onResponse', (request, reply, done) => {
  request.log.info({ method: request.method, url: request.url, statusCode: reply.statusCode, responseTime: reply.elapsedTime }, 'request completed')
  done()
})
app.removeAllContentTypeParsers()
app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => done(null, JSON.parse(body as string)))
app.addContentTypeParser('*', (_request, _payload, done) => done(null))

app.get('/readyz', (_request, reply) => reply.send({ status: 'ready' }))
app.put<{ Body: { replicas: Array<{ path: string }> } }>('/volumes/:name', (request, reply) => {
  fd = openSync(request.body.replicas[0].path, 'r+')
  reply.code(201).send({ ok: true })
})
app.get('/volumes/:name/data', (request, reply) => {
  const size = fstatSync(fd).size
  const m = RANGE.exec(request.headers.range ?? '')
  const start = m ? Number(m[1]) : 0
  const end = m ? Math.min(Number(m[2]), size - 1) : size - 1
  const buffer = Buffer.allocUnsafe(end - start + 1)
  read(fd, buffer, 0, buffer.length, start, (err, n) => {
    if (err) return reply.code(500).send()
    reply.code(m ? 206 : 200).header('content-type', 'application/octet-stream')
    if (m) reply.header('content-range', `bytes ${start}-${start + n - 1}/${size}`)
    reply.send(buffer)
  })
  return reply
})
app.put('/volumes/:name/data', (request, reply) => {
  const m = CONTENT_RANGE.exec(request.headers['content-range'] ?? '')
  if (!m) return reply.code(400).send()
  const chunks: Buffer[] = []
  request.raw.on('data', (c: Buffer) => chunks.push(c))
  request.raw.on('end', () => {
    const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)
    write(fd, body, 0, body.length, Number(m[1]), (err) => reply.code(err ? 500 : 204).send())
  })
  return reply
})

await app.listen({ port: Number(process.env.PORT ?? 0), host: process.env.HOST ?? '127.0.0.1' })
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void app.close().then(() => process.exit(0)))
