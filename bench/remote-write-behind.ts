/**
 * Issue 14's benchmark: how fast write-behind fills a new replica of a 1 GiB volume on each backend, and how much
 * memory the service holding the volume uses meanwhile. Real servers, started here: the holding filemirror (one
 * local sync replica), and as the second replica, one at a time, a local file (async, the reference), another
 * filemirror process (an HTTP replica with a bearer token), Apache httpd with mod_dav, and s3rver (a test double
 * of S3 on the filesystem, not a real store). Each copy is timed from the PUT that adds the replica to its
 * `in-sync`, at write-behind copy units of 1, 4 and 16 MiB: REMOTE_HTTP_WRITE_BYTES for HTTP remotes, the
 * replica's chunkBytes for S3; a local file is always copied 1 MiB at a time (COPY_CHUNK). Every copy is checked
 * by sampled ranges against the source. Rounds alternate the backends' order; the summary keeps each cell's best.
 *
 *   npm run bench:remote                     1 GiB, 2 rounds
 *   BENCH_BYTES=67108864 BENCH_ROUNDS=1 …    smaller; BENCH_CHUNKS_MIB=1,4,16; BENCH_ONLY=local,filemirror,apache,s3
 */
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { chmodSync, copyFileSync, mkdirSync, rmSync } from 'node:fs'
import { mkdtemp, realpath } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createVolume, startApache, startFilemirror, type Server } from './peers.js'
import { makeRandomFile, peakRssMiB, readFileAt, resetPeakRss, sleep } from './proc.js'

const MiB = 1 << 20
const TOTAL = Number(process.env.BENCH_BYTES ?? 1 << 30)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2)
const CHUNKS = (process.env.BENCH_CHUNKS_MIB ?? '1,4,16').split(',').map((s) => Number(s) * MiB)
const BACKENDS = ['local', 'filemirror', 'apache', 's3'] as const
type Backend = (typeof BACKENDS)[number]
const ONLY = new Set((process.env.BENCH_ONLY ?? BACKENDS.join(',')).split(',').map((s) => s.trim()))
/** The bearer token node B asks for, and the variable the holder reads it from (tokenEnv). */
const B_TOKEN = 'remote-bench-token-0123456789'
const TOKEN_ENV = 'FILEMIRROR_REMOTE_B_TOKEN'
/** s3rver's fixed credentials: it refuses any other. */
const S3_KEYS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }
const BUCKET = 'bench'
/** Bytes compared per sampled range, and ranges per copy. */
const SAMPLE = 64 << 10
const SAMPLES = 16

interface Cell {
  round: number
  backend: Backend
  chunk: number
  seconds: number
  mbps: number
  peakRss: number
  remoteRss: number
  load1: number
}

// ------------------------------------------------------------------ servers

/** s3rver in a child process on a free loopback port, the bucket created; exits when our stdin to it closes. */
async function startS3rver(directory: string): Promise<{ endpoint: string; pid: number; stop: () => Promise<void> }> {
  const main = createRequire(import.meta.url).resolve('s3rver')
  const script = `
const S3rver = require(process.argv[1]);
process.stdin.on('end', () => process.exit(0)); process.stdin.resume();
new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: process.argv[2], configureBuckets: [{ name: process.argv[3] }] })
  .run().then((a) => process.stdout.write(a.port + '\\n'), (e) => { process.stderr.write(String(e.stack || e)); process.exit(1) });`
  // Its listing continuation tokens use DES, which OpenSSL 3 has only in the legacy provider.
  const child: ChildProcess = spawn(process.execPath, ['--openssl-legacy-provider', '-e', script, main, directory, BUCKET], { stdio: ['pipe', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d) => {
      out += d
      if (out.includes('\n')) resolve(Number(out.trim()))
    })
    child.once('exit', (code) => reject(new Error(`s3rver exited (${code}) before listening`)))
  })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  return {
    endpoint: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    stop: async () => {
      child.kill('SIGTERM')
      await exited
    },
  }
}

async function api(url: string, method = 'GET', body?: unknown, token?: string): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (token) headers.authorization = `Bearer ${token}`
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : undefined }
}

function must(r: { status: number; body: unknown }, what: string, ok = [200, 201, 204]): any {
  if (!ok.includes(r.status)) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}

// ------------------------------------------------------------------ the data

/** Sampled offsets: the first and last bytes, and random ones. */
function sampleOffsets(): number[] {
  const last = Math.max(0, TOTAL - SAMPLE)
  return [0, last, ...Array.from({ length: SAMPLES - 2 }, () => randomInt(0, last + 1))]
}

async function httpRange(url: string, start: number, length: number, token?: string): Promise<Buffer> {
  const headers: Record<string, string> = { range: `bytes=${start}-${start + length - 1}` }
  if (token) headers.authorization = `Bearer ${token}`
  const res = await fetch(url, { headers })
  if (res.status !== 206) throw new Error(`GET ${url} ${headers.range}: ${res.status}`)
  return Buffer.from(await res.arrayBuffer())
}

// ------------------------------------------------------------------ one copy

interface Target {
  id: string
  spec: Record<string, unknown>
  /** Reads `length` bytes at `start` from where the replica landed. */
  read(start: number, length: number): Promise<Buffer>
  /** Frees the space once the replica is removed. */
  cleanup(): Promise<void>
  /** The remote server's pid, for its peak RSS. */
  remotePid?: number
}

interface Env {
  work: string
  holderDisk: string
  master: string
  nodeB: Server
  bDisk: string
  apache: Server
  davDir: string
  s3: { endpoint: string; pid: number }
  s3Dir: string
  s3Client: S3Client
}

async function target(env: Env, backend: Backend, chunk: number, round: number): Promise<Target> {
  const tag = `r${round}-c${chunk / MiB}`
  switch (backend) {
    case 'local': {
      const path = join(env.holderDisk, `${tag}.img`)
      return { id: 'copy', spec: { path, mode: 'async' }, read: async (s, n) => readFileAt(path, s, n), cleanup: async () => rmSync(path, { force: true }) }
    }
    case 'filemirror': {
      const path = join(env.bDisk, `${tag}.img`)
      must(await api(`${env.nodeB.base}/volumes/${tag}`, 'PUT', { replicas: [{ id: 'disk', path }] }, B_TOKEN), 'creating the volume on node B')
      const url = `${env.nodeB.base}/volumes/${tag}/data`
      return {
        id: 'dr',
        spec: { url, read: false, tokenEnv: TOKEN_ENV },
        read: (s, n) => httpRange(url, s, n, B_TOKEN),
        cleanup: async () => {
          must(await api(`${env.nodeB.base}/volumes/${tag}?force=true`, 'DELETE', undefined, B_TOKEN), 'forgetting the volume on node B')
          rmSync(path, { force: true })
        },
        remotePid: env.nodeB.pid,
      }
    }
    case 'apache': {
      const url = `${env.apache.base}/${tag}.img`
      return { id: 'dav', spec: { url, read: false }, read: (s, n) => httpRange(url, s, n), cleanup: async () => rmSync(join(env.davDir, `${tag}.img`), { force: true }), remotePid: env.apache.pid }
    }
    case 's3': {
      const prefix = `${tag}/`
      return {
        id: 's3',
        spec: { read: false, s3: { bucket: BUCKET, prefix, endpoint: env.s3.endpoint, region: 'us-east-1', forcePathStyle: true, chunkBytes: chunk } },
        read: async (s, n) => {
          // The bytes of [s, s+n) lie in chunk objects of `chunk` bytes each.
          const parts: Buffer[] = []
          for (let at = s; at < s + n; ) {
            const index = Math.floor(at / chunk)
            const end = Math.min(s + n, (index + 1) * chunk)
            const key = `${prefix}chunks/${index.toString(16).padStart(12, '0')}`
            const got = await env.s3Client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key, Range: `bytes=${at - index * chunk}-${end - index * chunk - 1}` }))
            parts.push(Buffer.from(await got.Body!.transformToByteArray()))
            at = end
          }
          return Buffer.concat(parts)
        },
        cleanup: async () => rmSync(join(env.s3Dir, BUCKET, tag), { recursive: true, force: true }),
        remotePid: env.s3.pid,
      }
    }
  }
}

/** Adds the replica, waits for it to be in-sync sampling the holder's peak RSS, checks sampled ranges, removes it. */
async function measure(env: Env, holder: Server, backend: Backend, chunk: number, round: number): Promise<Cell> {
  const t = await target(env, backend, chunk, round)
  resetPeakRss(holder.pid)
  if (t.remotePid) resetPeakRss(t.remotePid)
  let peak = 0
  const started = performance.now()
  must(await api(`${holder.base}/volumes/bench/replicas/${t.id}`, 'PUT', t.spec), `adding the ${backend} replica`)
  for (;;) {
    peak = Math.max(peak, peakRssMiB(holder.pid))
    const status = must(await api(`${holder.base}/volumes/bench`), 'volume status')
    const r = status.replicas.find((x: { id: string }) => x.id === t.id)
    if (r.state === 'failed') throw new Error(`${backend} replica failed: ${JSON.stringify(r.error)}`)
    if (r.state === 'in-sync' && r.dirtyBytes === 0) break
    await sleep(100)
  }
  const seconds = (performance.now() - started) / 1000
  peak = Math.max(peak, peakRssMiB(holder.pid))
  const remoteRss = t.remotePid ? peakRssMiB(t.remotePid) : NaN
  for (const at of sampleOffsets()) {
    const want = readFileAt(env.master, at, Math.min(SAMPLE, TOTAL - at))
    const got = await t.read(at, want.length)
    if (!got.equals(want)) throw new Error(`${backend} (${chunk / MiB} MiB): the bytes at ${at} differ from the volume's`)
  }
  must(await api(`${holder.base}/volumes/bench/replicas/${t.id}`, 'DELETE'), `removing the ${backend} replica`)
  await t.cleanup()
  return { round, backend, chunk, seconds, mbps: TOTAL / 1e6 / seconds, peakRss: peak, remoteRss, load1: loadavg()[0] }
}

// ------------------------------------------------------------------ the run

const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '–')
const label: Record<Backend, string> = { local: 'local file (async)', filemirror: 'filemirror (HTTP)', apache: 'Apache mod_dav (HTTP)', s3: 's3rver (S3 test double)' }

async function main(): Promise<void> {
  const work = await realpath(await mkdtemp(join(tmpdir(), 'fm-remote-bench-')))
  const stops: Array<() => Promise<void>> = []
  let failed = false
  try {
    const holderDir = join(work, 'holder')
    const holderDisk = join(holderDir, 'disk')
    const bDisk = join(work, 'node-b', 'disk')
    const davDir = join(work, 'dav')
    const s3Dir = join(work, 's3rver')
    for (const d of [holderDisk, bDisk, davDir, s3Dir]) mkdirSync(d, { recursive: true })
    // Apache's workers (www-data) must reach the work directory and write the DAV directory.
    chmodSync(work, 0o755)
    chmodSync(davDir, 0o777)
    const master = join(work, 'master.img')
    makeRandomFile(master, TOTAL)

    const nodeB = await startFilemirror({ name: 'node-b', dataDir: join(work, 'node-b'), storageRoot: bDisk, logPath: join(work, 'node-b.log'), env: { AUTH_TOKEN: B_TOKEN, LOG_LEVEL: 'warn' } })
    stops.push(nodeB.stop)
    const apache = await startApache(work, davDir)
    stops.push(apache.stop)
    const s3 = await startS3rver(s3Dir)
    stops.push(s3.stop)
    const s3Client = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3_KEYS, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' })
    const env: Env = { work, holderDisk, master, nodeB, bDisk, apache, davDir, s3, s3Dir, s3Client }

    // The volume: one local sync replica over a file that already holds the bytes (a volume over a file keeps them).
    const fast = join(holderDisk, 'fast.img')
    copyFileSync(master, fast)
    const holderEnv = (chunk: number): Record<string, string> => ({
      REMOTE_ALLOW: [nodeB.base, apache.base, s3.endpoint].join(','),
      REMOTE_HTTP_WRITE_BYTES: String(chunk),
      [TOKEN_ENV]: B_TOKEN,
      AWS_ACCESS_KEY_ID: S3_KEYS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: S3_KEYS.secretAccessKey,
      AWS_REGION: 'us-east-1',
      LOG_LEVEL: 'warn',
    })
    const startHolder = (chunk: number) => startFilemirror({ name: 'holder', dataDir: holderDir, storageRoot: holderDisk, logPath: join(work, 'holder.log'), env: holderEnv(chunk) })
    const first = await startHolder(CHUNKS[0])
    try {
      await createVolume(first, 'bench', [{ id: 'fast', path: fast }])
    } finally {
      await first.stop()
    }

    const cells: Cell[] = []
    const order = BACKENDS.filter((b) => ONLY.has(b))
    console.log(`write-behind to a new replica of a ${fmt(TOTAL / MiB)} MiB volume; ${cpus().length} cores, load average at start ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`)
    console.log('| round | backend | copy unit (MiB) | seconds | MB/s | holder peak RSS (MiB) | remote peak RSS (MiB) | load (1 min) |')
    console.log('|---|---|---|---|---|---|---|---|')
    for (let round = 1; round <= ROUNDS; round++) {
      // Every other round runs in reverse, so no backend always follows the same one.
      const chunks = round % 2 === 1 ? CHUNKS : [...CHUNKS].reverse()
      const backends = round % 2 === 1 ? order : [...order].reverse()
      for (const chunk of chunks) {
        // REMOTE_HTTP_WRITE_BYTES is read at start: the holder is restarted over the same volume per copy unit.
        const holder = await startHolder(chunk)
        try {
          for (const backend of backends) {
            const cell = await measure(env, holder, backend, chunk, round)
            cells.push(cell)
            const unit = backend === 'local' ? '1 (fixed)' : fmt(chunk / MiB)
            console.log(`| ${round} | ${label[backend]} | ${unit} | ${fmt(cell.seconds, 2)} | ${fmt(cell.mbps)} | ${fmt(cell.peakRss)} | ${fmt(cell.remoteRss)} | ${cell.load1.toFixed(2)} |`)
          }
        } finally {
          await holder.stop()
        }
      }
    }

    // Best of the rounds per cell (other jobs only ever slow a copy down); peak RSS is the highest seen.
    const best = (backend: Backend, chunk: number) => {
      const of = cells.filter((c) => c.backend === backend && c.chunk === chunk)
      return of.length === 0 ? undefined : { mbps: Math.max(...of.map((c) => c.mbps)), peakRss: Math.max(...of.map((c) => c.peakRss)) }
    }
    console.log(`\nBest of ${ROUNDS} round(s); MB/s = 10^6 bytes/s; peak RSS = VmHWM of the holding filemirror during the copy, highest of the rounds.\n`)
    console.log('| copy unit | backend | MB/s | × local file | holder peak RSS (MiB) |')
    console.log('|---|---|---|---|---|')
    for (const chunk of CHUNKS) {
      const local = best('local', chunk)
      // The local file is always copied 1 MiB at a time: the row is the same holder run's reference.
      if (local) console.log(`| ${chunk / MiB} MiB | ${label.local}, 1 MiB copies | ${fmt(local.mbps)} | 1 | ${fmt(local.peakRss)} |`)
      for (const backend of order) {
        const b = best(backend, chunk)
        if (!b || backend === 'local') continue
        const unit = backend === 's3' ? ' (chunkBytes)' : ''
        console.log(`| ${chunk / MiB} MiB${unit} | ${label[backend]} | ${fmt(b.mbps)} | ${local ? fmt(b.mbps / local.mbps, 2) : '–'} | ${fmt(b.peakRss)} |`)
      }
    }
    console.log(`\nload average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`)
  } catch (err) {
    // The servers' logs say why: keep them.
    failed = true
    throw err
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined)
    if (process.env.BENCH_KEEP !== '1' && !failed) rmSync(work, { recursive: true, force: true })
    else console.error(`kept ${work} (holder.log, node-b.log, apache/)`)
  }
}

await main()
