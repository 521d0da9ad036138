/**
 * `npm run bench`: filemirror against nginx, Apache httpd (mod_dav) and @fastify/static on one shared file,
 * run alternately, plus the streaming-memory and flat-cost checks. Prints markdown tables and the ratios
 * against the targets, and writes them to bench/RESULTS.md with a description of the machine.
 *
 * Environment: BENCH_SECONDS (5) per measured run, BENCH_ROUNDS (2), BENCH_WARMUP (2) seconds,
 * BENCH_FILE_MIB (256), BENCH_STREAM_MIB (1024), BENCH_GROUPS (100000), BENCH_BIG_GIB (4),
 * BENCH_ONLY (comma list of main,mirror,checksums,flat,stream), BENCH_CHECKSUM_ROUNDS (12), BENCH_CHECKSUM_LOADS (get4k,put4k,get1m,put1m), BENCH_KEEP=1 keeps the work directory,
 * BENCH_PEER_LOGS=0 turns access logs off for every peer, BENCH_LOG_LEVEL (info) for filemirror,
 * BENCH_SERVER (path of a compiled server.js), BENCH_RESULTS (where to write RESULTS.md; "-" for nowhere).
 */
import { execFileSync } from 'node:child_process'
import { randomBytes, randomInt } from 'node:crypto'
import { chmodSync, closeSync, copyFileSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createVolume, deleteVolume, ensurePeers, projectRoot, startApache, startBareNode, startFastifyFloor, startFastifyStatic, startFilemirror, startMirroredFilemirror, startNginx, versions, type Server } from './peers.js'
import { cpuSeconds, makeRandomFile, median, peakRssMiB, readFileAt, resetPeakRss } from './proc.js'
import { luaScript, runWrk, type Load, type WrkResult } from './wrk.js'

const env = process.env
const SECONDS = Number(env.BENCH_SECONDS ?? 5)
const ROUNDS = Number(env.BENCH_ROUNDS ?? 2)
const WARMUP = Number(env.BENCH_WARMUP ?? 2)
const FILE_SIZE = Number(env.BENCH_FILE_MIB ?? 256) * (1 << 20)
const STREAM_BYTES = Number(env.BENCH_STREAM_MIB ?? 1024) * (1 << 20)
const GROUPS = Number(env.BENCH_GROUPS ?? 100_000)
const BIG_SIZE = Number(env.BENCH_BIG_GIB ?? 4) * (1 << 30)
const CHECKSUM_ROUNDS = Number(env.BENCH_CHECKSUM_ROUNDS ?? 12)
const CHECKSUM_LOADS = env.BENCH_CHECKSUM_LOADS ? new Set(env.BENCH_CHECKSUM_LOADS.split(',').map((s) => s.trim())) : undefined
const ONLY = new Set((env.BENCH_ONLY ?? 'main,mirror,checksums,flat,stream').split(',').map((s) => s.trim()))
const MIRROR_RATE = 8 << 20
const KiB4 = 4096
const MiB1 = 1 << 20
const CONNECTIONS = 32
const THREADS = 2

const FM_PATH = '/volumes/bench/data'
const PEER_PATH = '/bench.img'

// --- work directory and the shared file -------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), 'fm-bench-'))
const dataDir = join(work, 'data')
const luaDir = join(work, 'lua')
mkdirSync(dataDir, { recursive: true })
mkdirSync(luaDir)
// Apache's workers run as www-data and nginx's as nobody: the shared directory and file are world-writable.
chmodSync(work, 0o755)
chmodSync(dataDir, 0o777)
const benchFile = join(dataDir, 'bench.img')
// filemirror's volumes keep block checksums: the peers' PUTs into benchFile behind its back would read as rot, so it serves copies.
const fmFile = join(dataDir, 'fm.img')
const fmOffFile = join(dataDir, 'fm-checksums-off.img')

function makeSparseFile(path: string, size: number): void {
  const fd = openSync(path, 'w', 0o666)
  ftruncateSync(fd, size)
  closeSync(fd)
  chmodSync(path, 0o666)
}


// --- servers, cleaned up on any exit --------------------------------------------------------------

const running = new Set<Server>()
async function track(start: Promise<Server>): Promise<Server> {
  const server = await start
  running.add(server)
  return server
}
async function stop(server: Server): Promise<void> {
  running.delete(server)
  await server.stop()
}
async function stopAll(): Promise<void> {
  await Promise.all([...running].map((s) => stop(s)))
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    void stopAll().finally(() => {
      if (env.BENCH_KEEP !== '1') rmSync(work, { recursive: true, force: true })
      process.exit(130)
    })
  })
}

function fmServer(name: string, dir: string, extraEnv: Record<string, string> = {}): Promise<Server> {
  const fmDir = join(work, dir)
  return track(startFilemirror({ name, dataDir: fmDir, storageRoot: dataDir, logPath: join(fmDir, 'server.log'), env: extraEnv }))
}

// --- sanity: every server really serves and writes the shared file ------------------------------------

async function checkGet(server: Server, path: string, file: string, size: number): Promise<void> {
  const block = 4096
  const offset = randomInt(0, size / block) * block
  const res = await fetch(`${server.base}${path}`, { headers: { range: `bytes=${offset}-${offset + block - 1}` } })
  const body = Buffer.from(await res.arrayBuffer())
  if (res.status !== 206 || !body.equals(readFileAt(file, offset, block))) throw new Error(`${server.name}: GET ${path} range at ${offset} gave ${res.status}, ${body.length} bytes, not the file's bytes`)
}

async function checkPut(server: Server, path: string, file: string, size: number): Promise<void> {
  const block = 4096
  const offset = randomInt(0, size / block) * block
  const bytes = randomBytes(block)
  const res = await fetch(`${server.base}${path}`, {
    method: 'PUT',
    headers: { 'content-range': `bytes ${offset}-${offset + block - 1}/*`, 'content-type': 'application/octet-stream' },
    body: bytes,
  })
  await res.arrayBuffer()
  const now = readFileAt(file, offset, block)
  const tail = readFileAt(file, size - 16, 16)
  if (res.status >= 300 || !now.equals(bytes) || tail.length !== 16) throw new Error(`${server.name}: PUT ${path} with Content-Range at ${offset} gave ${res.status}; file bytes ${now.equals(bytes) ? 'match' : 'differ'}`)
}

// --- measurement ------------------------------------------------------------------------------------

interface Measured extends WrkResult {
  peakRssMiB: number
  round: number
  /** 1-minute load average when the run ended: how busy the shared cores were. */
  loadAvg: number
  /** Server CPU time (user + system, all its processes) per request, µs: steadier than rates on shared cores. */
  cpuUsPerRequest: number
}

const loadAvg = () => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0])

interface Target {
  server: Server
  /** Column name (a server may appear under another name in one row). */
  column: string
  path: string
}

interface Row {
  key: string
  label: string
  load: Load
  runs: Map<string, Measured[]>
}

const rows: Row[] = []
const columns: string[] = []
let rssResettable = true

async function measure(target: Target, load: Load, round: number): Promise<Measured> {
  const script = luaScript(luaDir, load, target.path)
  rssResettable = resetPeakRss(target.server.pid) && rssResettable
  const cpuBefore = cpuSeconds(target.server.pid)
  const result = await runWrk(`${target.server.base}${target.path}`, script, load, { seconds: SECONDS, threads: THREADS, connections: CONNECTIONS })
  const cpu = cpuSeconds(target.server.pid) - cpuBefore
  return { ...result, peakRssMiB: peakRssMiB(target.server.pid), round, loadAvg: loadAvg(), cpuUsPerRequest: (cpu / Math.max(1, result.requests)) * 1e6 }
}

/** Runs the load on each target in turn, `ROUNDS` times, reversing the order every other round. */
async function compare(key: string, label: string, load: Load, targets: Target[]): Promise<Row> {
  const row: Row = { key, label, load, runs: new Map() }
  rows.push(row)
  for (const t of targets) if (!columns.includes(t.column)) columns.push(t.column)
  if (WARMUP > 0) {
    for (const t of targets) await runWrk(`${t.server.base}${t.path}`, luaScript(luaDir, load, t.path), load, { seconds: WARMUP, threads: THREADS, connections: CONNECTIONS })
  }
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 === 1 ? targets : [...targets].reverse()
    for (const t of order) {
      const m = await measure(t, load, round)
      const list = row.runs.get(t.column) ?? []
      list.push(m)
      row.runs.set(t.column, list)
      log(`${label} | ${t.column} | round ${round}: ${fmtInt(m.requestsPerSecond)} req/s, ${m.mbPerSecond.toFixed(0)} MB/s, p50 ${m.p50Ms.toFixed(2)} ms, p99 ${m.p99Ms.toFixed(2)} ms, ${m.peakRssMiB.toFixed(0)} MiB, ${m.cpuUsPerRequest.toFixed(0)} µs CPU/req${errorsOf(m)}`)
    }
  }
  return row
}

/** The best round (highest requests/s): other engineers' jobs share the two cores, and they only ever slow a run. */
function best(row: Row | undefined, column: string): Measured | undefined {
  const runs = row?.runs.get(column)
  if (!runs?.length) return undefined
  return runs.reduce((a, b) => (b.requestsPerSecond > a.requestsPerSecond ? b : a))
}

function log(line: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`)
}

const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US')
const errorsOf = (m: WrkResult) => (m.socketErrors + m.badStatus > 0 ? ` (${m.badStatus} bad status, ${m.socketErrors} socket errors)` : '')

// --- streaming 1 GiB ---------------------------------------------------------------------------------

function streamPut(url: string, total: number): Promise<number> {
  const chunk = randomBytes(MiB1)
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const req = http.request(url, { method: 'PUT', headers: { 'transfer-encoding': 'chunked', 'content-type': 'application/octet-stream' } }, (res) => {
      res.resume()
      res.on('end', () => (res.statusCode! < 300 ? resolve((performance.now() - started) / 1000) : reject(new Error(`PUT status ${res.statusCode}`))))
    })
    req.on('error', reject)
    let sent = 0
    const pump = () => {
      while (sent < total) {
        sent += chunk.length
        if (!req.write(chunk)) return void req.once('drain', pump)
      }
      req.end()
    }
    pump()
  })
}

function streamGet(url: string, expected: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    http
      .get(url, (res) => {
        let n = 0
        res.on('data', (d: Buffer) => (n += d.length))
        res.on('end', () => (res.statusCode === 200 && n === expected ? resolve((performance.now() - started) / 1000) : reject(new Error(`GET status ${res.statusCode}, ${n} of ${expected} bytes`))))
        res.on('error', reject)
      })
      .on('error', reject)
  })
}

interface StreamResult {
  putSeconds: number
  putPeakRss: number
  getSeconds: number
  getPeakRss: number
  idleRss: number
}

async function streaming(): Promise<StreamResult> {
  const streamFile = join(dataDir, 'stream.img')
  log(`streaming: PUT ${STREAM_BYTES / MiB1} MiB chunked into a new volume, then GET it whole from a fresh process`)
  let server = await fmServer('filemirror', 'fm-stream')
  const idleRss = peakRssMiB(server.pid)
  await createVolume(server, 'stream', [{ id: 'main', path: streamFile }])
  const putSeconds = await streamPut(`${server.base}/volumes/stream/data`, STREAM_BYTES)
  const putPeakRss = peakRssMiB(server.pid)
  await stop(server)
  server = await fmServer('filemirror', 'fm-stream')
  const getSeconds = await streamGet(`${server.base}/volumes/stream/data`, STREAM_BYTES)
  const getPeakRss = peakRssMiB(server.pid)
  await stop(server)
  rmSync(streamFile, { force: true })
  log(`streaming: PUT ${putSeconds.toFixed(2)} s, peak RSS ${putPeakRss.toFixed(0)} MiB; GET ${getSeconds.toFixed(2)} s, peak RSS ${getPeakRss.toFixed(0)} MiB (idle ${idleRss.toFixed(0)} MiB)`)
  return { putSeconds, putPeakRss, getSeconds, getPeakRss, idleRss }
}

// --- the async-mirror volume: starts in sync (see startMirroredFilemirror) ---------------------------------

async function mirroredServer(): Promise<Server> {
  const dir = join(work, 'fm-mirror')
  const server = await track(
    startMirroredFilemirror({ name: 'filemirror + async mirror', dataDir: dir, storageRoot: dataDir, logPath: join(dir, 'server.log'), file: benchFile, mirror: join(dataDir, 'mirror.img'), rate: MIRROR_RATE }),
  )
  log('async mirror starts in sync, 0 dirty bytes')
  return server
}

// --- block checksums on / off: their cost (issue 15) ------------------------------------------------------

interface ChecksumCost {
  key: string
  label: string
  on: Measured[]
  off: Measured[]
  /** Median over the rounds of on / off CPU per request, each round's two runs back to back. */
  ratio: number
}

/**
 * Block checksums on and off in one service: two volumes, `on` (the default) and `off` (`checksums: false`), one load
 * at a time, CHECKSUM_ROUNDS rounds of the two side by side, each run after a `sync`. One process serves both, so its
 * JIT and GC luck are shared (two processes of one build differ by several percent), and the two volumes trade files
 * every other round and go first in turn (a file's layout moves the cost of writing into it as much as the checksums
 * do): the median of the pairs' ratios is the cost.
 */
async function checksumCost(loads: Array<[string, string, Load]>): Promise<ChecksumCost[]> {
  const files = [join(dataDir, 'fm-cs-a.img'), join(dataDir, 'fm-cs-b.img')]
  for (const f of files) copyFileSync(benchFile, f)
  const server = await fmServer('filemirror', 'fm-cs')
  const on: Target = { server, column: 'filemirror', path: '/volumes/on/data' }
  const off: Target = { server, column: 'filemirror, checksums off', path: '/volumes/off/data' }
  let placed = -1
  // `on` over files[swap], `off` over the other; recreated (and `on` checksummed anew) when they trade.
  const place = async (swap: number) => {
    if (placed === swap) return
    if (placed >= 0) for (const name of ['on', 'off']) await deleteVolume(server, name)
    await createVolume(server, 'on', [{ id: 'main', path: files[swap] }])
    await createVolume(server, 'off', [{ id: 'main', path: files[1 - swap] }], { checksums: false })
    placed = swap
  }
  const out: ChecksumCost[] = []
  for (const [key, label, load] of loads) {
    const pair: Array<[Target, Measured[]]> = [
      [on, []],
      [off, []],
    ]
    await place(0)
    if (WARMUP > 0) for (const [t] of pair) await runWrk(`${server.base}${t.path}`, luaScript(luaDir, load, t.path), load, { seconds: WARMUP, threads: THREADS, connections: CONNECTIONS })
    const ratios: number[] = []
    for (let round = 1; round <= CHECKSUM_ROUNDS; round++) {
      // Every four rounds, each volume on each file, going first and second.
      await place(((round - 1) >> 1) & 1)
      for (const [t, list] of round % 2 === 1 ? pair : [...pair].reverse()) {
        // Each run starts with no dirty pages: otherwise a PUT run pays for the writeback of the run before it.
        execFileSync('sync')
        list.push(await measure(t, load, round))
      }
      ratios.push(pair[0][1][round - 1].cpuUsPerRequest / pair[1][1][round - 1].cpuUsPerRequest)
    }
    const cost = { key, label, on: pair[0][1], off: pair[1][1], ratio: median(ratios) }
    out.push(cost)
    log(`checksums on / off, ${label}: ${cost.ratio.toFixed(3)}x CPU per request (median of ${CHECKSUM_ROUNDS} pairs: ${ratios.map((r) => r.toFixed(2)).join(' ')})`)
  }
  await stop(server)
  for (const f of files) rmSync(f, { force: true })
  return out
}

// --- flat cost: volume size and groups retained ---------------------------------------------------------

interface FlatResult {
  rows: Array<{ label: string; base: Measured; other: Measured; ratio: number; baseRuns: Measured[]; otherRuns: Measured[]; baseName: string; otherName: string }>
  fillRequests: number
  fillReads: number
  fillSeconds: number
}

async function flat(): Promise<FlatResult> {
  const bigFile = join(dataDir, 'big.img')
  makeSparseFile(bigFile, BIG_SIZE)
  // "~0 groups": the registry keeps one group per window. "full": production limits, filled first with GROUPS
  // PUTs (the write window) and GROUPS random GETs on the 4 GiB volume (the read window, and as many distinct
  // ranges in the engine's per-file bookkeeping of what was read).
  const none = await fmServer('filemirror, ~0 groups', 'fm-flat0', { MAX_GROUPS: '1', MAX_READ_GROUPS: '1' })
  const full = await fmServer(`filemirror, ${GROUPS / 1000}k groups`, 'fm-flatN')
  for (const s of [none, full]) {
    await createVolume(s, 'bench', [{ id: 'main', path: benchFile }])
    await createVolume(s, 'big', [{ id: 'main', path: bigFile }])
  }
  const BIG_PATH = '/volumes/big/data'
  const put4k: Load = { method: 'PUT', block: KiB4, size: FILE_SIZE }
  const get4k: Load = { method: 'GET', block: KiB4, size: FILE_SIZE }
  const getBig: Load = { method: 'GET', block: KiB4, size: BIG_SIZE }
  // wrk always runs its whole duration, so a fill goes in 5 s slices until enough requests went through.
  const fillUp = async (path: string, load: Load): Promise<{ requests: number; seconds: number; errors: number }> => {
    const fill = { requests: 0, seconds: 0, errors: 0 }
    while (fill.requests < GROUPS) {
      const slice = await runWrk(`${full.base}${path}`, luaScript(luaDir, load, path), load, { seconds: 5, threads: THREADS, connections: CONNECTIONS })
      fill.requests += slice.requests - slice.badStatus
      fill.seconds += slice.seconds
      fill.errors += slice.badStatus + slice.socketErrors
      if (slice.requests === slice.badStatus) throw new Error(`flat: the fill ${load.method}s all failed`)
    }
    return fill
  }
  log(`flat: filling ${fmtInt(GROUPS)} write groups (PUT 4 KiB on the 256 MiB volume) and reading ${fmtInt(GROUPS)} random 4 KiB ranges of the 4 GiB one`)
  const puts = await fillUp(FM_PATH, put4k)
  const gets = await fillUp(BIG_PATH, getBig)
  log(`flat: ${fmtInt(puts.requests)} PUTs in ${puts.seconds.toFixed(1)} s, ${fmtInt(gets.requests)} GETs in ${gets.seconds.toFixed(1)} s${puts.errors + gets.errors > 0 ? `, ${puts.errors + gets.errors} errors` : ''}`)

  type Side = { server: Server; path: string; load: Load; name: string }
  const side = (server: Server, path: string, load: Load, what: string): Side => ({ server, path, load, name: `${server.name}, ${what}` })
  const cases: Array<{ label: string; base: Side; other: Side }> = [
    {
      label: `GET 4 KiB: 4 GiB volume after ${GROUPS / 1000}k random ranges were read vs 256 MiB volume`,
      base: side(none, FM_PATH, get4k, '256 MiB'),
      other: side(full, BIG_PATH, getBig, '4 GiB, ranges read'),
    },
    { label: 'GET 4 KiB: 4 GiB sparse volume vs 256 MiB volume', base: side(none, FM_PATH, get4k, '256 MiB'), other: side(none, BIG_PATH, getBig, '4 GiB') },
    { label: `GET 4 KiB: ${GROUPS / 1000}k groups retained vs ~0`, base: side(none, FM_PATH, get4k, '256 MiB'), other: side(full, FM_PATH, get4k, '256 MiB') },
    { label: `PUT 4 KiB: ${GROUPS / 1000}k groups retained vs ~0`, base: side(none, FM_PATH, put4k, '256 MiB'), other: side(full, FM_PATH, put4k, '256 MiB') },
  ]
  const out: FlatResult['rows'] = []
  for (const c of cases) {
    const baseRuns: Measured[] = []
    const otherRuns: Measured[] = []
    const pair: Array<[Side, Measured[]]> = [
      [c.base, baseRuns],
      [c.other, otherRuns],
    ]
    if (WARMUP > 0) for (const [x] of pair) await runWrk(`${x.server.base}${x.path}`, luaScript(luaDir, x.load, x.path), x.load, { seconds: WARMUP, threads: THREADS, connections: CONNECTIONS })
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [x, list] of round % 2 === 1 ? pair : [...pair].reverse()) list.push(await measure({ server: x.server, column: x.name, path: x.path }, x.load, round))
    }
    const pick = (runs: Measured[]) => runs.reduce((a, b) => (b.requestsPerSecond > a.requestsPerSecond ? b : a))
    const base = pick(baseRuns)
    const other = pick(otherRuns)
    out.push({ label: c.label, base, other, ratio: other.requestsPerSecond / base.requestsPerSecond, baseRuns, otherRuns, baseName: c.base.name, otherName: c.other.name })
    log(`${c.label}: ${fmtInt(other.requestsPerSecond)} vs ${fmtInt(base.requestsPerSecond)} req/s = ${(other.requestsPerSecond / base.requestsPerSecond).toFixed(2)}x`)
  }
  await stop(none)
  await stop(full)
  rmSync(bigFile, { force: true })
  return { rows: out, fillRequests: puts.requests, fillSeconds: puts.seconds + gets.seconds, fillReads: gets.requests }
}

// --- report -----------------------------------------------------------------------------------------

function machine(): Record<string, string> {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8')
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? '?'
  const mem = /MemTotal:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]
  return {
    cpus: `${cpus().length} x ${model}`,
    memory: mem ? `${(Number(mem) / (1 << 20)).toFixed(1)} GiB` : '?',
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    node: process.version,
    date: new Date().toISOString(),
  }
}

const mark = (ok: boolean | undefined) => (ok === undefined ? 'n/a' : ok ? 'PASS' : 'FAIL')

function cell(m: Measured | undefined): string {
  if (!m) return ''
  const rps = m.requestsPerSecond >= 10_000 ? `${(m.requestsPerSecond / 1000).toFixed(1)}k` : fmtInt(m.requestsPerSecond)
  const mb = m.mbPerSecond >= 1000 ? `${(m.mbPerSecond / 1000).toFixed(2)} GB/s` : `${m.mbPerSecond.toFixed(0)} MB/s`
  return `${rps} req/s, ${mb}, p50 ${m.p50Ms.toFixed(2)} / p99 ${m.p99Ms.toFixed(2)} ms, ${m.peakRssMiB.toFixed(0)} MiB${m.badStatus + m.socketErrors > 0 ? ` **(${m.badStatus + m.socketErrors} errors)**` : ''}`
}

function report(stream: StreamResult | undefined, flatResult: FlatResult | undefined, costs: ChecksumCost[], peerVersions: Record<string, string>): string {
  const lines: string[] = []
  const m = machine()
  lines.push('# Benchmark results', '')
  lines.push(`Latest \`npm run bench\`: ${m.date}. Machine: ${m.cpus}, ${m.memory} RAM, Linux ${m.kernel}, Node ${m.node}; nginx ${peerVersions.nginx}, Apache ${peerVersions.apache} (mpm_event, mod_dav_fs), @fastify/static ${peerVersions['@fastify/static']}, wrk ${peerVersions.wrk}.`)
  lines.push('')
  lines.push(
    `Loopback, \`wrk -t${THREADS} -c${CONNECTIONS} -d${SECONDS}s --latency\` with Lua scripts picking random block-aligned offsets in one ${FILE_SIZE / MiB1} MiB file that every server serves ` +
      `(GET \`Range: bytes=a-b\`; PUT a body with \`Content-Range: bytes a-b/*\`). Servers run alternately, ${ROUNDS} round${ROUNDS === 1 ? '' : 's'} (the order reversed every other round) after a ${WARMUP} s warm-up per server and load; ` +
      `each cell is the best round (requests/s, payload MB/s = requests x block, wrk's p50 / p99 latency, summed VmHWM of the server's processes during that run${rssResettable ? '' : ' — could not reset VmHWM, so peaks are since start'}). ` +
      `Every peer logs each request (nginx/Apache access logs, Fastify's default request logging at info, to files); ` +
      `"bare node" is a reference, not a peer: node:http with one positional fs.read/fs.write per request and no logging (bench/bare-server.ts). ` +
      `"Fastify floor" is another: filemirror's Fastify settings and one log line per request around the same single read or write, no engine (bench/fastify-floor.ts); what filemirror costs above it is its own bookkeeping. ` +
      `wrk and the servers share the 2 cores with other engineers' test runs: figures are noisy, ratios from one run only. ` +
      `The last column of the targets is the server's CPU time per request (user + system of all its processes, from /proc): steadier than rates on shared cores, though contention inflates it too. ` +
      `Profiles and recommendations: bench/PROFILE.md.`,
  )
  lines.push('')
  if (rows.length > 0) {
    lines.push(`| load | ${columns.join(' | ')} |`)
    lines.push(`|---|${columns.map(() => '---').join('|')}|`)
    for (const row of rows) lines.push(`| ${row.label} | ${columns.map((c) => cell(best(row, c))).join(' | ')} |`)
    lines.push('')
  }

  const ratio = (key: string, a: string, b: string, field: 'requestsPerSecond' | 'p99Ms' = 'requestsPerSecond') => {
    const row = rows.find((r) => r.key === key)
    const x = best(row, a)
    const y = best(row, b)
    return x && y ? x[field] / y[field] : undefined
  }
  /** Mean server CPU µs per request over the rounds: "a vs b". */
  const cpu = (key: string, a: string, b: string) => {
    const row = rows.find((r) => r.key === key)
    const mean = (c: string) => {
      const runs = row?.runs.get(c) ?? []
      return runs.length ? runs.reduce((n, r) => n + r.cpuUsPerRequest, 0) / runs.length : NaN
    }
    return row ? `${mean(a).toFixed(0)} vs ${mean(b).toFixed(0)} µs` : ''
  }
  /** Mean server CPU per request of `a` over that of `b` (issue 17: "<= 1.3x the Fastify floor"). */
  const cpuRatio = (key: string, a: string, b: string) => {
    const runs = (c: string) => rows.find((r) => r.key === key)?.runs.get(c) ?? []
    const mean = (c: string) => runs(c).reduce((n, r) => n + r.cpuUsPerRequest, 0) / runs(c).length
    return runs(a).length && runs(b).length ? mean(a) / mean(b) : undefined
  }
  /** The worst round of `a` against the best of `b`: "in every run". */
  const worstRatio = (key: string, a: string, b: string) => {
    const row = rows.find((r) => r.key === key)
    const worst = Math.min(...(row?.runs.get(a) ?? []).map((r) => r.requestsPerSecond))
    const y = best(row, b)
    return Number.isFinite(worst) && y ? worst / y.requestsPerSecond : undefined
  }
  // Issue 17's targets; with block checksums on (the default) they must all hold.
  const targets: Array<[string, number | undefined, string, (v: number) => boolean, string]> = [
    ['GET random 4 KiB: filemirror / Fastify floor, CPU per request', cpuRatio('get4k', 'filemirror', 'Fastify floor'), '<= 1.3x', (v) => v <= 1.3, cpu('get4k', 'filemirror', 'Fastify floor')],
    ['GET random 4 KiB: filemirror / @fastify/static', ratio('get4k', 'filemirror', '@fastify/static'), '>= 3x', (v) => v >= 3, cpu('get4k', 'filemirror', '@fastify/static')],
    ['PUT random 4 KiB, one sync replica: filemirror / Fastify floor, CPU per request', cpuRatio('put4k', 'filemirror', 'Fastify floor'), '<= 1.3x', (v) => v <= 1.3, cpu('put4k', 'filemirror', 'Fastify floor')],
    ['PUT random 4 KiB, one sync replica: filemirror / Apache mod_dav', ratio('put4k', 'filemirror', 'apache'), '>= 1.0x', (v) => v >= 1, cpu('put4k', 'filemirror', 'apache')],
    ['GET random 1 MiB: filemirror / nginx', ratio('get1m', 'filemirror', 'nginx'), '>= 1.0x', (v) => v >= 1, cpu('get1m', 'filemirror', 'nginx')],
    ['PUT random 1 MiB, one sync replica: filemirror (worst round) / Apache mod_dav', worstRatio('put1m', 'filemirror', 'apache'), '>= 1.5x', (v) => v >= 1.5, cpu('put1m', 'filemirror', 'apache')],
    ['PUT random 4 KiB + async mirror at 8 MiB/s: rate / single replica', ratio('put4k-mirror', 'filemirror + async mirror', 'filemirror'), '>= 0.9x', (v) => v >= 0.9, cpu('put4k-mirror', 'filemirror + async mirror', 'filemirror')],
    ['PUT random 4 KiB + async mirror at 8 MiB/s: p99 / single replica', ratio('put4k-mirror', 'filemirror + async mirror', 'filemirror', 'p99Ms'), '<= 1.5x', (v) => v <= 1.5, ''],
  ]
  // Issue 15: block checksums on (the default) against the same build with them off, CPU per request: from the
  // paired rounds of the checksums section when it ran, else from the main table's rounds.
  const OFF = 'filemirror, checksums off'
  const limits: Record<string, number> = { get4k: 1.2, put4k: 1.2, get1m: 1.1, put1m: 1.1 }
  const names: Record<string, string> = { get4k: 'GET random 4 KiB', put4k: 'PUT random 4 KiB', get1m: 'GET random 1 MiB', put1m: 'PUT random 1 MiB' }
  for (const key of Object.keys(limits)) {
    const paired = costs.find((c) => c.key === key)
    const limit = limits[key]
    const medianCpu = (runs: Measured[]) => median(runs.map((r) => r.cpuUsPerRequest)).toFixed(0)
    if (paired) {
      targets.push([`block checksums on / off, ${names[key]}, CPU per request (median of ${paired.on.length} paired rounds)`, paired.ratio, `<= ${limit}x`, (v) => v <= limit, `${medianCpu(paired.on)} vs ${medianCpu(paired.off)} µs (medians)`])
    } else {
      targets.push([`block checksums on / off, ${names[key]}, CPU per request`, cpuRatio(key, 'filemirror', OFF), `<= ${limit}x`, (v) => v <= limit, cpu(key, 'filemirror', OFF)])
    }
  }
  lines.push('| target | measured | required | | server CPU per request (mean of rounds) |', '|---|---|---|---|---|')
  for (const [label, value, required, ok, cpuText] of targets) lines.push(`| ${label} | ${value === undefined ? 'not run' : `${value.toFixed(2)}x`} | ${required} | ${mark(value === undefined ? undefined : ok(value))} | ${cpuText} |`)
  if (stream) {
    lines.push(`| streaming ${STREAM_BYTES / MiB1} MiB chunked PUT: peak RSS (${(STREAM_BYTES / MiB1 / stream.putSeconds).toFixed(0)} MiB/s) | ${stream.putPeakRss.toFixed(0)} MiB | <= 200 MiB | ${mark(stream.putPeakRss <= 200)} | |`)
    lines.push(`| streaming ${STREAM_BYTES / MiB1} MiB GET: peak RSS (${(STREAM_BYTES / MiB1 / stream.getSeconds).toFixed(0)} MiB/s) | ${stream.getPeakRss.toFixed(0)} MiB | <= 150 MiB | ${mark(stream.getPeakRss <= 150)} | |`)
  }
  if (flatResult) {
    const meanCpu = (runs: Measured[]) => runs.reduce((n, r) => n + r.cpuUsPerRequest, 0) / runs.length
    for (const r of flatResult.rows) {
      lines.push(
        `| flat cost, ${r.label} (${fmtInt(r.other.requestsPerSecond)} vs ${fmtInt(r.base.requestsPerSecond)} req/s) | ${r.ratio.toFixed(2)}x | >= 0.9x (flat within noise) | ${mark(r.ratio >= 0.9)} | ` +
          `${meanCpu(r.otherRuns).toFixed(0)} vs ${meanCpu(r.baseRuns).toFixed(0)} µs (${(meanCpu(r.otherRuns) / meanCpu(r.baseRuns)).toFixed(2)}x) |`,
      )
    }
  }
  lines.push('')
  if (stream) lines.push(`Streaming: a fresh service (idle RSS ${stream.idleRss.toFixed(0)} MiB) took the chunked PUT in ${stream.putSeconds.toFixed(1)} s; a second fresh one served the whole GET in ${stream.getSeconds.toFixed(1)} s; peaks are VmHWM since start.`)
  if (flatResult) {
    lines.push(
      `Flat cost: "~0 groups" is a service with MAX_GROUPS=1 and MAX_READ_GROUPS=1; the other keeps the defaults and took ${fmtInt(flatResult.fillRequests)} random 4 KiB PUTs ` +
        `and ${fmtInt(flatResult.fillReads)} random 4 KiB GETs of the 4 GiB volume (${flatResult.fillSeconds.toFixed(0)} s) before measuring; the 4 GiB volume is a sparse file. ` +
        `Flat means within 10% (one run on shared cores).`,
    )
  }
  lines.push('')
  lines.push('<details><summary>Every round</summary>', '', '| load | server | round | req/s | MB/s | p50 ms | p99 ms | max ms | peak RSS MiB | server CPU µs/req | errors | load avg |', '|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const row of rows) {
    for (const [column, runs] of row.runs) {
      for (const r of runs) lines.push(`| ${row.label} | ${column} | ${r.round} | ${fmtInt(r.requestsPerSecond)} | ${r.mbPerSecond.toFixed(0)} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} | ${r.maxMs.toFixed(1)} | ${r.peakRssMiB.toFixed(0)} | ${r.cpuUsPerRequest.toFixed(0)} | ${r.badStatus + r.socketErrors} | ${r.loadAvg.toFixed(1)} |`)
    }
  }
  for (const c of costs) {
    for (const [name, runs] of [['filemirror', c.on], [OFF, c.off]] as const) {
      for (const x of runs) lines.push(`| checksums: ${c.label} | ${name} | ${x.round} | ${fmtInt(x.requestsPerSecond)} | ${x.mbPerSecond.toFixed(0)} | ${x.p50Ms.toFixed(2)} | ${x.p99Ms.toFixed(2)} | ${x.maxMs.toFixed(1)} | ${x.peakRssMiB.toFixed(0)} | ${x.cpuUsPerRequest.toFixed(0)} | ${x.badStatus + x.socketErrors} | ${x.loadAvg.toFixed(1)} |`)
    }
  }
  for (const r of flatResult?.rows ?? []) {
    for (const [name, runs] of [[r.baseName, r.baseRuns], [r.otherName, r.otherRuns]] as const) {
      for (const x of runs) lines.push(`| flat: ${r.label} | ${name} | ${x.round} | ${fmtInt(x.requestsPerSecond)} | ${x.mbPerSecond.toFixed(0)} | ${x.p50Ms.toFixed(2)} | ${x.p99Ms.toFixed(2)} | ${x.maxMs.toFixed(1)} | ${x.peakRssMiB.toFixed(0)} | ${x.cpuUsPerRequest.toFixed(0)} | ${x.badStatus + x.socketErrors} | ${x.loadAvg.toFixed(1)} |`)
    }
  }
  lines.push('', '</details>', '')
  return lines.join('\n')
}

// --- main ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  ensurePeers()
  const peerVersions = versions()
  log(`work directory ${work}; writing a ${FILE_SIZE / MiB1} MiB file of random bytes`)
  makeRandomFile(benchFile, FILE_SIZE)
  const get4k: Load = { method: 'GET', block: KiB4, size: FILE_SIZE }
  const get1m: Load = { method: 'GET', block: MiB1, size: FILE_SIZE }
  const put4k: Load = { method: 'PUT', block: KiB4, size: FILE_SIZE }
  const put1m: Load = { method: 'PUT', block: MiB1, size: FILE_SIZE }

  let stream: StreamResult | undefined
  let flatResult: FlatResult | undefined
  let costs: ChecksumCost[] = []
  try {
    if (ONLY.has('main') || ONLY.has('mirror')) {
      copyFileSync(benchFile, fmFile)
      const fm = await fmServer('filemirror', 'fm-main')
      await createVolume(fm, 'bench', [{ id: 'main', path: fmFile }])
      const fmTarget: Target = { server: fm, column: 'filemirror', path: FM_PATH }
      await checkGet(fm, FM_PATH, fmFile, FILE_SIZE)
      await checkPut(fm, FM_PATH, fmFile, FILE_SIZE)
      if (ONLY.has('main')) {
        // The same build with block checksums off (issue 15: their cost, same run).
        copyFileSync(benchFile, fmOffFile)
        const fmOff = await fmServer('filemirror, checksums off', 'fm-off')
        await createVolume(fmOff, 'bench', [{ id: 'main', path: fmOffFile }], { checksums: false })
        await checkGet(fmOff, FM_PATH, fmOffFile, FILE_SIZE)
        await checkPut(fmOff, FM_PATH, fmOffFile, FILE_SIZE)
        const fmOffTarget: Target = { server: fmOff, column: fmOff.name, path: FM_PATH }
        const nginx = await track(startNginx(work, dataDir))
        const apache = await track(startApache(work, dataDir))
        const fstatic = await track(startFastifyStatic(work, dataDir))
        const bare = await track(startBareNode(work, benchFile))
        await checkGet(bare, PEER_PATH, benchFile, FILE_SIZE)
        await checkPut(bare, PEER_PATH, benchFile, FILE_SIZE)
        const floor = await track(startFastifyFloor(work, benchFile))
        await checkGet(floor, FM_PATH, benchFile, FILE_SIZE)
        await checkPut(floor, FM_PATH, benchFile, FILE_SIZE)
        await checkGet(nginx, PEER_PATH, benchFile, FILE_SIZE)
        await checkGet(fstatic, PEER_PATH, benchFile, FILE_SIZE)
        await checkGet(apache, PEER_PATH, benchFile, FILE_SIZE)
        await checkPut(apache, PEER_PATH, benchFile, FILE_SIZE)
        log('sanity: every server returns the file bytes for a range; Apache mod_dav and filemirror write a Content-Range PUT in place')
        const peer = (server: Server): Target => ({ server, column: server.name, path: PEER_PATH })
        const floorTarget: Target = { server: floor, column: floor.name, path: FM_PATH }
        await compare('get4k', 'GET random 4 KiB ranges', get4k, [peer(nginx), peer(fstatic), peer(bare), floorTarget, fmTarget, fmOffTarget])
        await compare('get1m', 'GET random 1 MiB ranges', get1m, [peer(nginx), peer(fstatic), peer(bare), floorTarget, fmTarget, fmOffTarget])
        await compare('put4k', 'PUT random 4 KiB, one sync replica', put4k, [peer(apache), peer(bare), floorTarget, fmTarget, fmOffTarget])
        await compare('put1m', 'PUT random 1 MiB, one sync replica', put1m, [peer(apache), peer(bare), floorTarget, fmTarget, fmOffTarget])
        for (const s of [nginx, apache, fstatic, bare, floor, fmOff]) await stop(s)
      }
      if (ONLY.has('mirror')) {
        const mirrored = await mirroredServer()
        await checkPut(mirrored, FM_PATH, benchFile, FILE_SIZE)
        await compare('put4k-mirror', 'PUT random 4 KiB, + async mirror throttled to 8 MiB/s', put4k, [fmTarget, { server: mirrored, column: mirrored.name, path: FM_PATH }])
        await stop(mirrored)
      }
      await stop(fm)
    }
    if (ONLY.has('checksums')) {
      const costLoads: Array<[string, string, Load]> = [
        ['get4k', 'GET random 4 KiB', get4k],
        ['put4k', 'PUT random 4 KiB', put4k],
        ['get1m', 'GET random 1 MiB', get1m],
        ['put1m', 'PUT random 1 MiB', put1m],
      ]
      costs = await checksumCost(costLoads.filter(([key]) => !CHECKSUM_LOADS || CHECKSUM_LOADS.has(key)))
    }
    if (ONLY.has('flat')) flatResult = await flat()
    if (ONLY.has('stream')) stream = await streaming()
  } finally {
    await stopAll()
  }

  const text = report(stream, flatResult, costs, peerVersions)
  console.log(text)
  const out = env.BENCH_RESULTS ?? join(projectRoot(), 'bench', 'RESULTS.md')
  if (out !== '-') {
    writeFileSync(out, text)
    log(`wrote ${out}`)
  }
  if (env.BENCH_KEEP === '1') log(`kept ${work}`)
  else rmSync(work, { recursive: true, force: true })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch(async (err) => {
    console.error(err)
    await stopAll()
    if (env.BENCH_KEEP !== '1') rmSync(work, { recursive: true, force: true })
    process.exit(1)
  })
}
