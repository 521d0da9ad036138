/**
 * Instructions per request under callgrind: steadier than CPU time on shared cores (which moves by 20% from one run
 * to the next), though a mark-compact or a JIT compile inside the counted window still moves it by 10-15%: count
 * several thousand requests and run each variant twice. Each variant's server runs under
 * `valgrind --tool=callgrind --instr-atstart=no`; a warm-up (JIT, pools) goes uncounted, then counting is
 * switched on (callgrind_control -i on) for exactly N requests from a keep-alive client in this process, and
 * (callgrind_control must see the server's HOST: valgrind names its vgdb pipes after it) the total Ir (every thread of the server: main, libuv pool) is divided by N.
 *
 * Usage: node dist/bench/instructions.js <get4k|put4k|get1m|put1m> label=/path/server.js[,ENV=value...] ...
 * BENCH_IR_REQUESTS (2000), BENCH_IR_WARMUP (4000), BENCH_IR_CONCURRENCY (8), BENCH_FILE_MIB (64).
 */
import { execFileSync, spawn } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { freePort, makeRandomFile } from './proc.js'

const N = Number(process.env.BENCH_IR_REQUESTS ?? 2000)
const WARMUP = Number(process.env.BENCH_IR_WARMUP ?? 4000)
const CONCURRENCY = Number(process.env.BENCH_IR_CONCURRENCY ?? 8)
const FILE_SIZE = Number(process.env.BENCH_FILE_MIB ?? 64) << 20
const BLOCKS: Record<string, [method: 'GET' | 'PUT', block: number]> = { get4k: ['GET', 4096], put4k: ['PUT', 4096], get1m: ['GET', 1 << 20], put1m: ['PUT', 1 << 20] }

const [loadName, ...specs] = process.argv.slice(2)
if (!BLOCKS[loadName] || specs.length === 0) {
  console.error('usage: node dist/bench/instructions.js <get4k|put4k|get1m|put1m> label=/path/server.js[,ENV=value...] ...')
  process.exit(2)
}
const [method, block] = BLOCKS[loadName]
const body = randomFillSync(Buffer.alloc(block))

/** Sends `count` requests, `CONCURRENCY` at a time, at random block-aligned offsets; throws on a bad status. */
async function drive(port: number, count: number): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY })
  let sent = 0
  const one = () =>
    new Promise<void>((done, fail) => {
      const at = Math.floor(Math.random() * (FILE_SIZE / block)) * block
      const range = method === 'GET' ? { range: `bytes=${at}-${at + block - 1}` } : { 'content-range': `bytes ${at}-${at + block - 1}/*`, 'content-length': String(block) }
      const req = request({ host: '127.0.0.1', port, agent, method, path: '/volumes/bench/data', headers: range }, (res) => {
        res.resume()
        res.on('end', () => (res.statusCode! < 300 ? done() : fail(new Error(`status ${res.statusCode}`))))
      })
      req.on('error', fail)
      req.end(method === 'PUT' ? body : undefined)
    })
  const worker = async () => {
    while (sent < count) {
      sent++
      await one()
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  agent.destroy()
}

async function waitReady(port: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false)
    if (ok) return
    await new Promise((r) => setTimeout(r, 500))
  }
  throw new Error('server did not become ready under valgrind')
}

const work = mkdtempSync(join(tmpdir(), 'fm-ir-'))
const data = join(work, 'data')
mkdirSync(data)
const file = join(data, 'bench.img')
makeRandomFile(file, FILE_SIZE)

try {
  console.log(`| ${loadName} | instructions per request (${N} counted after ${WARMUP} uncounted) | vs first |`)
  console.log('|---|---|---|')
  let first = 0
  for (const [i, spec] of specs.entries()) {
    const [label, rest] = spec.split(/=(.*)/s, 2)
    const [path, ...envPairs] = rest.split(',')
    const env = Object.fromEntries(envPairs.map((p) => p.split(/=(.*)/s, 2) as [string, string]))
    const dir = join(work, `v${i}`)
    mkdirSync(dir)
    const port = await freePort()
    const out = join(dir, 'callgrind.out')
    const { AUTH_TOKEN: _, ...inherited } = process.env
    const child = spawn('valgrind', ['--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${out}`, process.execPath, resolve(path)], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'ignore'],
      env: { ...inherited, PORT: String(port), HOST: '127.0.0.1', DATA_DIR: dir, STORAGE_ROOTS: data, LOG_LEVEL: 'info', SHUTDOWN_GRACE_MS: '0', ...env },
    })
    const exited = new Promise((r) => child.once('exit', r))
    await waitReady(port)
    const created = await fetch(`http://127.0.0.1:${port}/volumes/bench`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ replicas: [{ id: 'main', path: file }] }) })
    if (created.status >= 300) throw new Error(`creating the volume: ${created.status} ${await created.text()}`)
    await drive(port, WARMUP)
    execFileSync('callgrind_control', ['-i', 'on', String(child.pid)], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, HOST: '127.0.0.1' } })
    await drive(port, N)
    execFileSync('callgrind_control', ['-i', 'off', String(child.pid)], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, HOST: '127.0.0.1' } })
    child.kill('SIGTERM')
    await exited
    const files = readdirSync(dir).filter((f) => f.startsWith('callgrind.out'))
    const total = files.reduce((sum, f) => sum + Number(/^totals: (\d+)/m.exec(readFileSync(join(dir, f), 'utf8'))?.[1] ?? 0), 0)
    const perRequest = total / N
    first ||= perRequest
    console.log(`| ${label} | ${Math.round(perRequest).toLocaleString('en')} | ${(perRequest / first).toFixed(3)}x |`)
  }
} finally {
  if (!process.env.BENCH_KEEP) rmSync(work, { recursive: true, force: true })
}
