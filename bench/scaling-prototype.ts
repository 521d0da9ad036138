/**
 * Reads of one file on more than one core, the prototype bench/SCALING.md describes: N worker threads each run
 * a Fastify server on the same port (`reusePort`, Node >= 22.12: the kernel spreads connections over them) and
 * serve positional ranged GETs from their own descriptor of one file. The main thread plays the volume's owner:
 * it alone "writes", and publishes size and generation (the ETag) in a SharedArrayBuffer under a sequence lock
 * (odd while a write is in flight); a worker reads the state, reads the bytes, and prepares the reply again when
 * the sequence moved meanwhile, so a reply never mixes bytes of two instants (as ReadSession's torn retries do).
 *
 * Usage (the harness runs on any Node; the server on one with reusePort):
 *   SCALING_NODE=/path/to/node26/bin/node node dist/bench/scaling-prototype.js [1,2] [get4k|get1m]
 * BENCH_SECONDS (5), BENCH_ROUNDS (2), BENCH_FILE_MIB (256), SCALING_WRITES_PER_S (100: owner state changes).
 */
import { spawn } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, read, rmSync, writeSync, createWriteStream } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { cpuSplit, freePort, waitForHttp } from './proc.js'
import { luaScript, namedLoads, runWrk } from './wrk.js'

/** The owner's shared state: [sequence (odd while writing), size, generation, torn retries seen by workers]. */
const SEQ = 0
const SIZE = 1
const GEN = 2
const RETRIES = 3
const RANGE = /^bytes=(\d+)-(\d+)$/

interface WorkerData {
  shared: SharedArrayBuffer
  file: string
  port: number
  log: string
}

/** One worker: its own Fastify, its own descriptor, the owner's state read under the sequence lock. */
async function serveInWorker({ shared, file, port, log }: WorkerData): Promise<void> {
  const { default: Fastify, LogController } = await import('fastify')
  const state = new BigInt64Array(shared)
  const fd = openSync(file, 'r')
  const app = Fastify({
    logger: { level: 'info', stream: createWriteStream(log, { flags: 'a' }) },
    logController: new LogController({ requestIdLogLabel: 'requestId', disableRequestLogging: true }),
  })
  app.addHook('onResponse', (request, reply, done) => {
    request.log.info({ method: request.method, url: request.url, statusCode: reply.statusCode, responseTime: reply.elapsedTime }, 'request completed')
    done()
  })
  app.get('/readyz', (_request, reply) => reply.send({ status: 'ready' }))
  app.get('/volumes/:name/data', (request, reply) => {
    const attempt = (tries: number) => {
      const seq = Atomics.load(state, SEQ)
      // A write in flight: its bytes are not the instant any ETag names yet.
      if (seq & 1n) return void setImmediate(attempt, tries + 1)
      const size = Number(Atomics.load(state, SIZE))
      const etag = `"${Atomics.load(state, GEN).toString(36)}"`
      const m = RANGE.exec(request.headers.range ?? '')
      const start = m ? Number(m[1]) : 0
      const end = m ? Math.min(Number(m[2]), size - 1) : size - 1
      const buffer = Buffer.allocUnsafe(end - start + 1)
      read(fd, buffer, 0, buffer.length, start, (err, n) => {
        if (err) return void reply.code(500).send()
        // The owner wrote meanwhile: the bytes may be of two instants; prepare the reply again, as ReadSession does.
        if (Atomics.load(state, SEQ) !== seq && tries < 3) {
          Atomics.add(state, RETRIES, 1n)
          return attempt(tries + 1)
        }
        reply.code(m ? 206 : 200).header('content-type', 'application/octet-stream').header('etag', etag).header('accept-ranges', 'bytes')
        if (m) reply.header('content-range', `bytes ${start}-${start + n - 1}/${size}`)
        reply.send(buffer)
      })
    }
    attempt(0)
    return reply
  })
  await app.listen({ port, host: '127.0.0.1', reusePort: true } as { port: number; host: string })
  parentPort!.postMessage('listening')
}

/** The server process: the owner (main thread) and `workers` reader threads on one port. */
async function serve(workers: number, file: string, port: number, size: number, log: string): Promise<void> {
  const shared = new SharedArrayBuffer(8 * 4)
  const state = new BigInt64Array(shared)
  state[SIZE] = BigInt(size)
  const threads = Array.from({ length: workers }, () => new Worker(fileURLToPath(import.meta.url), { workerData: { shared, file, port, log } satisfies WorkerData }))
  await Promise.all(threads.map((w) => new Promise((resolve, reject) => w.once('message', resolve).once('error', reject))))
  // The owner's writes: the sequence is odd for as long as one is in flight (here: no bytes, only state).
  const perSecond = Number(process.env.SCALING_WRITES_PER_S ?? 100)
  if (perSecond > 0)
    setInterval(() => {
      Atomics.add(state, SEQ, 1n)
      Atomics.add(state, GEN, 1n)
      Atomics.add(state, SEQ, 1n)
    }, 1000 / perSecond)
  process.stdout.write('ready\n')
  process.on('SIGTERM', () => {
    console.error(`torn reads prepared again: ${state[RETRIES]}`)
    process.exit(0)
  })
}

async function harness(): Promise<void> {
  const counts = (process.argv[2] ?? '1,2').split(',').map(Number)
  const loadName = process.argv[3] ?? 'get4k'
  const seconds = Number(process.env.BENCH_SECONDS ?? 5)
  const rounds = Number(process.env.BENCH_ROUNDS ?? 2)
  const size = Number(process.env.BENCH_FILE_MIB ?? 256) << 20
  const nodeBin = process.env.SCALING_NODE ?? process.execPath
  const load = namedLoads(size)[loadName]
  const work = mkdtempSync(join(tmpdir(), 'fm-scaling-'))
  const file = join(work, 'bench.img')
  const fd = openSync(file, 'w')
  const chunk = Buffer.allocUnsafe(4 << 20)
  for (let at = 0; at < size; at += chunk.length) writeSync(fd, randomFillSync(chunk), 0, chunk.length, at)
  closeSync(fd)
  const servers = []
  try {
    for (const n of counts) {
      const port = await freePort()
      const child = spawn(nodeBin, [fileURLToPath(import.meta.url), 'serve', String(n), file, String(port), String(size), join(work, `server-${n}.log`)], { stdio: ['ignore', 'pipe', 'inherit'] })
      await waitForHttp(`http://127.0.0.1:${port}/readyz`, 30_000)
      servers.push({ n, port, child, runs: [] as Array<{ rps: number; cpuUs: number; p99: number }> })
    }
    const path = '/volumes/bench/data'
    const script = luaScript(work, load, path)
    for (const s of servers) await runWrk(`http://127.0.0.1:${s.port}${path}`, script, load, { seconds: 2, threads: 1 })
    for (let round = 0; round < rounds; round++) {
      for (const s of round % 2 ? [...servers].reverse() : servers) {
        const before = cpuSplit(s.child.pid!)
        const r = await runWrk(`http://127.0.0.1:${s.port}${path}`, script, load, { seconds, threads: 1 })
        const after = cpuSplit(s.child.pid!)
        const cpuUs = ((after.user + after.system - before.user - before.system) / r.requests) * 1e6
        s.runs.push({ rps: r.requestsPerSecond, cpuUs, p99: r.p99Ms })
        console.error(`${s.n} worker(s) round ${round + 1}: ${Math.round(r.requestsPerSecond)} req/s, ${cpuUs.toFixed(0)} µs CPU/req, p99 ${r.p99Ms.toFixed(2)} ms, ${r.badStatus + r.socketErrors} errors`)
      }
    }
    console.log(`| ${loadName}, ${nodeBin.includes('26') ? 'Node 26' : process.version} | best req/s | median server CPU µs/req | best p99 ms |`)
    console.log('|---|---|---|---|')
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
    for (const s of servers) console.log(`| ${s.n} worker(s) | ${Math.round(Math.max(...s.runs.map((r) => r.rps)))} | ${median(s.runs.map((r) => r.cpuUs)).toFixed(0)} | ${Math.min(...s.runs.map((r) => r.p99)).toFixed(2)} |`)
  } finally {
    for (const s of servers) s.child.kill('SIGTERM')
    await new Promise((r) => setTimeout(r, 500))
    rmSync(work, { recursive: true, force: true })
  }
}

if (!isMainThread) await serveInWorker(workerData as WorkerData)
else if (process.argv[2] === 'serve') await serve(Number(process.argv[3]), process.argv[4], Number(process.argv[5]), Number(process.argv[6]), process.argv[7])
else await harness()
