/**
 * Issue: write-behind must not slow the client nor grow memory. Streams 1 GiB (chunked) into a volume
 * whose async replica is throttled to 32 MiB/s, and into a single-replica volume, in one run, and prints
 * upload speeds, their ratio, and the server's peak RSS (VmHWM).
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const TOTAL = Number(process.env.BENCH_BYTES ?? 1 << 30)
const CHUNK = 1 << 20
const THROTTLE = 32 << 20

function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

async function startServer(dataDir: string): Promise<{ url: string; pid: number; stop: () => Promise<void> }> {
  const entry = fileURLToPath(new URL('../src/server.js', import.meta.url))
  const child = spawn(process.execPath, [entry], { env: { ...process.env, PORT: '0', DATA_DIR: dataDir, LOG_LEVEL: 'info', SHUTDOWN_GRACE_MS: '0' }, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout!.on('data', (d) => (out = (out + d).slice(-4096)))
  for (let i = 0; i < 800 && !/listening at http/.test(out); i++) await new Promise((r) => setTimeout(r, 25))
  const url = /listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)
  if (!url) throw new Error(`server did not start: ${out}`)
  return {
    url: url[1],
    pid: child.pid!,
    stop: () =>
      new Promise((resolve) => {
        child.on('exit', () => resolve())
        child.kill('SIGTERM')
      }),
  }
}

async function json(url: string, method = 'GET', body?: unknown): Promise<any> {
  const res = await fetch(url, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined })
  return res.json()
}

/** Streams TOTAL bytes with Transfer-Encoding: chunked; resolves with seconds taken. */
function upload(url: string): Promise<number> {
  const chunk = Buffer.alloc(CHUNK, 0x5a)
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const req = http.request(url, { method: 'PUT', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      res.resume()
      res.on('end', () => (res.statusCode! < 300 ? resolve((performance.now() - started) / 1000) : reject(new Error(`status ${res.statusCode}`))))
    })
    req.on('error', reject)
    let sent = 0
    const pump = () => {
      while (sent < TOTAL) {
        sent += CHUNK
        if (!req.write(chunk)) return void req.once('drain', pump)
      }
      req.end()
    }
    pump()
  })
}

async function run(label: string, replicas: unknown[]): Promise<{ label: string; seconds: number; mibps: number; peakRss: number; behindMiB: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'fm-bench-'))
  const server = await startServer(dir)
  try {
    await json(`${server.url}/volumes/bench`, 'PUT', { replicas })
    const seconds = await upload(`${server.url}/volumes/bench/data`)
    const status = await json(`${server.url}/volumes/bench`)
    const behind = status.replicas.reduce((n: number, r: { dirtyBytes: number }) => n + r.dirtyBytes, 0)
    return { label, seconds, mibps: TOTAL / (1 << 20) / seconds, peakRss: peakRssMiB(server.pid), behindMiB: behind / (1 << 20) }
  } finally {
    await server.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

const single = await run('fast replica only', [{ id: 'fast', path: 'fast.img' }])
const mirrored = await run('fast + async throttled to 32 MiB/s', [
  { id: 'fast', path: 'fast.img' },
  { id: 'slow', path: 'slow.img', mode: 'async', maxBytesPerSecond: THROTTLE },
])
console.log(`| ${(TOTAL / (1 << 30)).toFixed(2)} GiB chunked PUT | seconds | MiB/s | backlog at reply (MiB) | server peak RSS (MiB) |`)
console.log('|---|---|---|---|---|')
for (const r of [single, mirrored]) console.log(`| ${r.label} | ${r.seconds.toFixed(2)} | ${r.mibps.toFixed(0)} | ${r.behindMiB.toFixed(0)} | ${r.peakRss.toFixed(0)} |`)
console.log(`\nmirrored / single upload speed: ${(mirrored.mibps / single.mibps).toFixed(2)}x; the throttled replica alone would take ${(TOTAL / THROTTLE).toFixed(0)} s`)
