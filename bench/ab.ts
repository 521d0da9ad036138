/**
 * A/B of filemirror builds or settings under one load, run alternately on one file: for checking that a
 * change to src/ or routes/ really cuts per-request cost. Reports requests/s, p50/p99 and server CPU per
 * request (user + system time from /proc, steadier than rates when the cores are shared).
 *
 * Usage: node dist/bench/ab.js <get4k|get1m|put4k|put1m|put4k-mirror> <variant>...
 *   variant: label=/path/to/dist/src/server.js[,ENV=value...][,NODE_ARGS=flags][,CHECKSUMS=false]   e.g. base=dist/src/server.js quiet=dist/src/server.js,LOG_LEVEL=warn
 * BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_FILE_MIB (256), BENCH_KEEP=1 (keep the work directory and the servers' logs),
 * BENCH_FM_NODE_ARGS (node flags for every variant, e.g. --trace-gc), BENCH_SYNC=1 (`sync` before each run, as the checksums section of run.ts does),
 * BENCH_TOGETHER=1 (every variant loaded at the same time, one `wrk -t1 -c16` each, each on its own copy of the file:
 * whatever else loads the machine loads them alike; the ratio per round is then the figure to read).
 */
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createVolume, startFilemirror, startMirroredFilemirror, type Server } from './peers.js'
import { cpuSplit, makeRandomFile, median } from './proc.js'
import { luaScript, namedLoads, runWrk, type WrkResult } from './wrk.js'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const FILE_SIZE = Number(process.env.BENCH_FILE_MIB ?? 256) * (1 << 20)
const TOGETHER = Boolean(process.env.BENCH_TOGETHER)
const loads = namedLoads(FILE_SIZE)
const [loadName, ...specs] = process.argv.slice(2)
const load = loads[loadName]
if (!load || specs.length === 0) {
  console.error('usage: node dist/bench/ab.js <get4k|get1m|put4k|put1m|put4k-mirror> label=/path/server.js[,ENV=value...] ...')
  process.exit(2)
}

const work = mkdtempSync(join(tmpdir(), 'fm-ab-'))
const data = join(work, 'data')
mkdirSync(data)
const file = join(data, 'bench.img')
makeRandomFile(file, FILE_SIZE)

type Run = { rps: number; p50: number; p99: number; cpuUs: number; sysUs: number }

/** One run's figures: the server's CPU between `before` and `after`, per request wrk counted. */
function runOf(r: WrkResult, before: { user: number; system: number }, after: { user: number; system: number }): Run {
  const perRequest = (s: number) => (s / Math.max(1, r.requests)) * 1e6
  const sysUs = perRequest(after.system - before.system)
  return { rps: r.requestsPerSecond, p50: r.p50Ms, p99: r.p99Ms, cpuUs: perRequest(after.user - before.user) + sysUs, sysUs }
}

interface Variant {
  label: string
  server: Server
  runs: Run[]
}

const variants: Variant[] = []
try {
  for (const spec of specs) {
    const [label, rest] = spec.split(/=(.*)/s, 2)
    const [path, ...envPairs] = rest.split(',')
    const { NODE_ARGS: nodeArgs, CHECKSUMS: checksums, ...env } = Object.fromEntries(envPairs.map((p) => p.split(/=(.*)/s, 2) as [string, string]))
    process.env.BENCH_SERVER = resolve(path)
    const dir = join(work, `fm-${variants.length}`)
    // Loaded together, each writes its own copy (one's PUTs would be rot to another's block checksums); every one a
    // copy, as a file just written and one copied by copyFileSync differ in the kernel's cost of writing into them.
    const own = TOGETHER ? join(data, `bench-${variants.length}.img`) : file
    if (own !== file) copyFileSync(file, own)
    // NODE_ARGS=... in a variant: node flags for that variant alone (space-separated), beside BENCH_FM_NODE_ARGS for all.
    const flags = [...(process.env.BENCH_FM_NODE_ARGS?.split(' ').filter(Boolean) ?? []), ...(nodeArgs?.split(' ').filter(Boolean) ?? [])]
    const common = { name: label, dataDir: dir, storageRoot: data, logPath: join(dir, 'server.log'), env, nodeArgs: flags }
    let server: Server
    if (loadName === 'put4k-mirror') {
      server = await startMirroredFilemirror({ ...common, file: own, mirror: join(data, `mirror-${variants.length}.img`), rate: 8 << 20 })
    } else {
      server = await startFilemirror(common)
      // CHECKSUMS=false in a variant: its volume without block checksums (the off/on comparison).
      await createVolume(server, 'bench', [{ id: 'main', path: own }], checksums === undefined ? {} : { checksums: checksums === 'true' })
    }
    variants.push({ label, server, runs: [] })
  }
  const path = '/volumes/bench/data'
  const script = luaScript(work, load, path)
  for (const v of variants) await runWrk(`${v.server.base}${path}`, script, load, { seconds: 2 })
  const perRound: number[][] = []
  for (let round = 0; round < ROUNDS && TOGETHER; round++) {
    if (process.env.BENCH_SYNC) execFileSync('sync')
    const before = variants.map((v) => cpuSplit(v.server.pid))
    const results = await Promise.all(variants.map((v) => runWrk(`${v.server.base}${path}`, script, load, { seconds: SECONDS, threads: 1, connections: 16 })))
    variants.forEach((v, i) => v.runs.push(runOf(results[i], before[i], cpuSplit(v.server.pid))))
    const row = variants.map((v) => v.runs[round].cpuUs / variants[0].runs[round].cpuUs)
    perRound.push(row)
    console.error(`round ${round + 1}: ${variants.map((v, i) => `${v.label} ${Math.round(v.runs[round].rps)} req/s ${v.runs[round].cpuUs.toFixed(0)} µs (${row[i].toFixed(3)}x)`).join(', ')}`)
  }
  for (let round = 0; round < ROUNDS && !TOGETHER; round++) {
    for (const v of round % 2 === 0 ? variants : [...variants].reverse()) {
      if (process.env.BENCH_SYNC) execFileSync('sync')
      const before = cpuSplit(v.server.pid)
      const r = await runWrk(`${v.server.base}${path}`, script, load, { seconds: SECONDS })
      const run = runOf(r, before, cpuSplit(v.server.pid))
      const { cpuUs, sysUs } = run
      v.runs.push(run)
      console.error(`${v.label} round ${round + 1}: ${Math.round(r.requestsPerSecond)} req/s, p50 ${r.p50Ms.toFixed(2)} ms, p99 ${r.p99Ms.toFixed(2)} ms, ${cpuUs.toFixed(0)} µs CPU/req (${sysUs.toFixed(0)} system)${r.badStatus + r.socketErrors ? `, ${r.badStatus + r.socketErrors} errors` : ''}`)
    }
  }
  const base = variants[0]
  console.log(`| ${loadName} | best req/s | median CPU µs/req | of which system | vs ${base.label} (CPU) | best p99 ms |`)
  console.log('|---|---|---|---|---|---|')
  variants.forEach((v, i) => {
    const cpu = median(v.runs.map((r) => r.cpuUs))
    const baseCpu = median(base.runs.map((r) => r.cpuUs))
    // Together, the median of the rounds' own ratios (each round's variants shared the same moment).
    const ratio = TOGETHER ? median(perRound.map((row) => row[i])) : cpu / baseCpu
    console.log(`| ${v.label} | ${Math.round(Math.max(...v.runs.map((r) => r.rps)))} | ${cpu.toFixed(0)} | ${median(v.runs.map((r) => r.sysUs)).toFixed(0)} | ${ratio.toFixed(3)}x | ${Math.min(...v.runs.map((r) => r.p99)).toFixed(2)} |`)
  })
} finally {
  for (const v of variants) await v.server.stop()
  // BENCH_KEEP=1 keeps the servers' logs (e.g. BENCH_FM_NODE_ARGS=--trace-gc output) in the work directory.
  if (process.env.BENCH_KEEP) console.error(`kept ${work}`)
  else rmSync(work, { recursive: true, force: true })
}
