/**
 * A reference, not a peer: the least a Node server can do per request on this machine. node:http, no
 * framework, no logging; one positional fs.read per ranged GET and one fs.write per Content-Range PUT on
 * BARE_FILE, with callbacks (no FileHandle promises). It shows the ceiling filemirror's overhead is measured against.
 */
import { fstatSync, openSync, read, write } from 'node:fs'
import http from 'node:http'

const fd = openSync(process.env.BARE_FILE!, 'r+')
const RANGE = /^bytes=(\d+)-(\d+)$/
const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(?:\d+|\*)$/

const PATH = process.env.BARE_PATH ?? '/bench.img'

const server = http.createServer((req, res) => {
  if (req.url !== PATH) {
    res.writeHead(404).end()
    req.resume()
    return
  }
  if (req.method === 'GET') {
    const size = fstatSync(fd).size
    const m = RANGE.exec(req.headers.range ?? '')
    const start = m ? Number(m[1]) : 0
    const end = m ? Math.min(Number(m[2]), size - 1) : size - 1
    const buffer = Buffer.allocUnsafe(end - start + 1)
    read(fd, buffer, 0, buffer.length, start, (err, n) => {
      if (err) {
        res.writeHead(500).end()
        return
      }
      res.writeHead(m ? 206 : 200, {
        'content-type': 'application/octet-stream',
        'content-length': n,
        ...(m ? { 'content-range': `bytes ${start}-${start + n - 1}/${size}` } : {}),
      })
      res.end(buffer)
    })
    return
  }
  if (req.method === 'PUT') {
    const m = CONTENT_RANGE.exec(req.headers['content-range'] ?? '')
    if (!m) {
      res.writeHead(400).end()
      req.resume()
      return
    }
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)
      write(fd, body, 0, body.length, Number(m[1]), (err) => res.writeHead(err ? 500 : 204).end())
    })
    return
  }
  res.writeHead(405).end()
})
server.keepAliveTimeout = 65_000
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1')
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0))
