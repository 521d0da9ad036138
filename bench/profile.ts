/**
 * CPU profiles of filemirror under load: for each load a fresh service runs with `node --cpu-prof`
 * (production settings, LOG_LEVEL=info to a file), wrk drives it, SIGTERM flushes the profile, and the
 * .cpuprofile is summarised (bench/cpuprofile.ts). Open the kept .cpuprofile files in Chrome DevTools or
 * speedscope for flame graphs.
 * Usage: node dist/bench/profile.js [get4k,put4k,get1m,put1m,put4k-mirror]; BENCH_PROFILE_SECONDS (10), BENCH_FILE_MIB (256),
 * BENCH_PROFILE_DIR (where the profiles and summaries go; a temporary directory otherwise).
 */
import { randomFillSync } from 'node:crypto'
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { formatSummary, summarize } from './cpuprofile.js'
import { createVolume, startFilemirror, startMirroredFilemirror, type Server } from './peers.js'
import { luaScript, namedLoads, runWrk } from './wrk.js'

const SECONDS = Number(process.env.BENCH_PROFILE_SECONDS ?? 10)
const FILE_SIZE = Number(process.env.BENCH_FILE_MIB ?? 256) * (1 << 20)
const loads = namedLoads(FILE_SIZE)
const wanted = (process.argv[2] ?? 'get4k,put4k').split(',')

const out = process.env.BENCH_PROFILE_DIR ?? mkdtempSync(join(tmpdir(), 'fm-profile-'))
const work = mkdtempSync(join(tmpdir(), 'fm-profile-work-'))
const data = join(work, 'data')
mkdirSync(data, { recursive: true })
mkdirSync(out, { recursive: true })
const file = join(data, 'bench.img')
const fd = openSync(file, 'w', 0o666)
const chunk = Buffer.allocUnsafe(4 << 20)
for (let at = 0; at < FILE_SIZE; at += chunk.length) writeSync(fd, randomFillSync(chunk), 0, Math.min(chunk.length, FILE_SIZE - at), at)
closeSync(fd)
chmodSync(file, 0o666)

try {
  for (const name of wanted) {
    const load = loads[name]
    if (!load) throw new Error(`unknown load ${name}; one of ${Object.keys(loads).join(', ')}`)
    const profDir = join(out, name)
    rmSync(profDir, { recursive: true, force: true })
    mkdirSync(profDir, { recursive: true })
    const fmDir = join(work, `fm-${name}`)
    const common = { dataDir: fmDir, storageRoot: data, logPath: join(fmDir, 'server.log'), nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profDir] }
    let server: Server
    if (name === 'put4k-mirror') {
      server = await startMirroredFilemirror({ ...common, file, mirror: join(data, 'mirror.img'), rate: 8 << 20 })
      // The first start (creating the volume) wrote a profile too: keep only the measured process's.
      for (const f of readdirSync(profDir)) if (f.endsWith('.cpuprofile')) rmSync(join(profDir, f))
    } else {
      server = await startFilemirror(common)
      await createVolume(server, 'bench', [{ id: 'main', path: file }])
    }
    const path = '/volumes/bench/data'
    // A short warm-up, then the profiled run; the profile covers both (and start-up), which the summary shows as such.
    const warm = await runWrk(`${server.base}${path}`, luaScript(work, load, path), load, { seconds: 2 })
    const result = await runWrk(`${server.base}${path}`, luaScript(work, load, path), load, { seconds: SECONDS })
    await server.stop()
    const prof = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'))
    if (!prof) throw new Error(`no profile written in ${profDir}`)
    const summary = summarize(JSON.parse(readFileSync(join(profDir, prof), 'utf8')))
    const text =
      `## ${name}: ${load.method} random ${load.block >= 1 << 20 ? `${load.block >> 20} MiB` : `${load.block >> 10} KiB`}\n\n` +
      `${Math.round(result.requestsPerSecond)} req/s under the profiler, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms; ` +
      `CPU per request ${((summary.busyMs / (result.requests + warm.requests)) * 1000).toFixed(0)} µs (busy time, start-up included, over the warm-up's and the run's requests).\n\n` +
      `${formatSummary(summary, 30)}\n`
    writeFileSync(join(profDir, 'summary.md'), text)
    console.log(text)
    console.error(`profile: ${join(profDir, prof)}`)
  }
} finally {
  rmSync(work, { recursive: true, force: true })
}
