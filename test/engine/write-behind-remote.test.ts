// Write-behind to remote replicas: an S3-like target (whole chunks only, writeUnit) gets dirty ranges rounded out
// to its chunks, read whole from the source (zeros past the volume's end), never read back; an HTTP-like target
// gets copies of at most its preferredWriteUnit; retryable errors leave the replica behind and are retried with
// backoff on the throttle's clock, non-retryable ones and too long unreachable fail it.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { Journal } from '../../src/engine/journal.js'
import { RangeSet } from '../../src/engine/range-set.js'
import type { ReplicaFile } from '../../src/engine/replica-file.js'
import { Replica } from '../../src/engine/replica.js'
import { replicaSpecSchema } from '../../src/engine/spec.js'
import type { RemoteRetryPolicy } from '../../src/engine/remote.js'
import { WriteBehind, type WriteBehindHost } from '../../src/engine/write-behind.js'
import { FakeClock } from '../helpers/clock.js'
import { eventually } from '../helpers/eventually.js'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'

const KiB = 1024

const retryable = (message = 'connect ECONNREFUSED') => Object.assign(new Error(message), { code: 'EREMOTE_UNAVAILABLE', retryable: true })

/** A file in memory; with `writeUnit`, it refuses writes that are not whole aligned chunks (a short last one up to its size excepted), as S3File does. */
class MemoryFile implements ReplicaFile {
  readonly path = 'memory://replica'
  data: Buffer
  writes: Array<[number, number]> = []
  reads = 0
  syncs = 0
  truncates: number[] = []
  writeError: Error | null = null
  truncateError: Error | null = null
  up = true
  probes = 0
  writeUnit?: number
  preferredWriteUnit?: number

  constructor(data: Buffer, units: { writeUnit?: number; preferredWriteUnit?: number } = {}) {
    this.data = Buffer.from(data)
    if (units.writeUnit !== undefined) this.writeUnit = units.writeUnit
    if (units.preferredWriteUnit !== undefined) this.preferredWriteUnit = units.preferredWriteUnit
  }

  async read(buffer: Buffer, offset: number): Promise<number> {
    this.reads++
    const n = Math.max(0, Math.min(buffer.length, this.data.length - offset))
    this.data.copy(buffer, 0, offset, offset + n)
    return n
  }

  async write(buffer: Buffer, offset: number): Promise<number> {
    if (this.writeError) throw this.writeError
    const unit = this.writeUnit
    if (unit !== undefined && (offset % unit !== 0 || buffer.length > unit || (buffer.length < unit && offset + buffer.length < this.data.length))) {
      throw Object.assign(new Error(`unaligned write of ${buffer.length} at ${offset}`), { code: 'EALIGN' })
    }
    this.writes.push([offset, offset + buffer.length])
    if (offset + buffer.length > this.data.length) this.data = Buffer.concat([this.data, Buffer.alloc(offset + buffer.length - this.data.length)])
    buffer.copy(this.data, offset)
    return buffer.length
  }

  async size(): Promise<number> {
    return this.data.length
  }

  async truncate(size: number): Promise<void> {
    if (this.truncateError && size !== 0) throw this.truncateError
    this.truncates.push(size)
    this.data = size <= this.data.length ? Buffer.from(this.data.subarray(0, size)) : Buffer.concat([this.data, Buffer.alloc(size - this.data.length)])
  }

  async sync(): Promise<void> {
    this.syncs++
  }

  async close(): Promise<void> {}

  async reachable(): Promise<boolean> {
    this.probes++
    return this.up
  }
}

interface Rig {
  source: Replica
  target: Replica
  targetFile: MemoryFile
  copier: WriteBehind
  host: WriteBehindHost & { failures: unknown[]; reconnects: number; retryEvents: number }
  clock: FakeClock | undefined
}

async function rig(
  t: Test,
  data: Buffer,
  pending: Array<[number, number]>,
  options: { units?: { writeUnit?: number; preferredWriteUnit?: number }; targetData?: Buffer; retry?: RemoteRetryPolicy; clock?: FakeClock; file?: boolean } = {},
): Promise<Rig> {
  const dir = await scratch(t)
  const lacking = Buffer.from(data)
  for (const [s, e] of pending) lacking.fill(0, s, Math.min(e, lacking.length))
  const sourceFile = new MemoryFile(data)
  const targetFile = new MemoryFile(options.targetData ?? lacking, options.units)
  const source = new Replica({ ...replicaSpecSchema.parse({ id: 'fast', path: 'fast.img' }), resolvedPath: join(dir, 'fast.img') }, sourceFile, undefined as unknown as Journal)
  source.journal = await Journal.create(join(dir, 'fast.journal'), new RangeSet(), { fsync: false }, () => source.dirty())
  const spec = options.units?.writeUnit !== undefined ? { id: 's3', s3: { bucket: 'bucket-a', prefix: 'v/' } } : { id: 'dr', url: 'http://127.0.0.1:9/volumes/x/data' }
  const target = new Replica({ ...replicaSpecSchema.parse(spec), resolvedPath: 'remote' }, options.file === false ? null : targetFile, undefined as unknown as Journal)
  for (const [s, e] of pending) target.markPending(s, e)
  target.journal = await Journal.create(join(dir, 'remote.journal'), target.pending.clone(), { fsync: false }, () => target.dirty())
  const host: Rig['host'] = {
    failures: [],
    reconnects: 0,
    retryEvents: 0,
    source: (r) => (r !== source ? source : undefined),
    size: () => data.length,
    fsync: false,
    sourceFailed: () => {},
    clock: options.clock,
    retry: options.retry,
    targetFailed: (r, err) => {
      host.failures.push(err)
      r.fail(err)
    },
    retryChanged: () => void host.retryEvents++,
  }
  const copier = new WriteBehind(target, host)
  t.teardown(async () => {
    await copier.stop()
    await target.journal.close()
    await source.journal.close()
  })
  return { source, target, targetFile, copier, host, clock: options.clock }
}

const caughtUp = (r: Rig, what = 'the target to catch up') => eventually(() => r.target.state === 'in-sync' && r.target.pending.isEmpty, what, 10_000)

/** Lets the loop run until it waits on a timer of the fake clock (or `ms` of real time passed). */
async function settleOn(clock: FakeClock): Promise<void> {
  await Promise.race([clock.whenTimerSet(), new Promise((r) => setTimeout(r, 2_000))])
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r))
}

t.test('an S3-like target gets whole chunks read from the source, a short last one up to the volume end, never read back', async (t) => {
  const unit = 64 * KiB
  const data = pattern(10 * unit + 300, 21)
  const pending: Array<[number, number]> = [
    [100, 200],
    [3 * unit + 5, 5 * unit + 7],
    [10 * unit + 10, 10 * unit + 20],
  ]
  const r = await rig(t, data, pending, { units: { writeUnit: unit } })
  r.copier.start()
  await caughtUp(r)
  t.same(
    r.targetFile.writes,
    [
      [0, unit],
      [3 * unit, 4 * unit],
      [4 * unit, 5 * unit],
      [5 * unit, 6 * unit],
      [10 * unit, 10 * unit + 300],
    ],
    'each dirty chunk once, whole; the last one short, ending at the volume end',
  )
  t.equal(r.targetFile.reads, 0, 'the store is never read (no read-modify-write)')
  t.ok(r.targetFile.data.equals(data), 'the target holds the volume byte for byte')
})

t.test('an S3-like target past the volume end gets zeros in the chunk, then is cut to the volume size', async (t) => {
  const unit = 16 * KiB
  const data = pattern(2 * unit + 100, 22)
  // The target is longer (the volume shrank): the last chunk is written up to the target's end, then cut.
  const longer = Buffer.concat([data, pattern(3 * unit, 23)])
  const r = await rig(t, data, [[2 * unit, 2 * unit + 100]], { units: { writeUnit: unit }, targetData: longer })
  r.copier.start()
  await eventually(() => r.targetFile.truncates.length > 0 && r.target.state === 'in-sync', 'the target cut to size', 10_000)
  t.same(r.targetFile.writes, [[2 * unit, 3 * unit]], 'a whole chunk (the target still reaches past it)')
  t.same(r.targetFile.truncates, [data.length])
  t.ok(r.targetFile.data.equals(data), 'identical once cut')
})

t.test('a chunk copy that grows the store is synced (the size lives in its manifest)', async (t) => {
  const unit = 16 * KiB
  const data = pattern(3 * unit, 24)
  const r = await rig(t, data, [[0, data.length]], { units: { writeUnit: unit }, targetData: Buffer.alloc(0) })
  r.copier.start()
  await caughtUp(r)
  t.equal(r.targetFile.writes.length, 3)
  t.ok(r.targetFile.syncs >= 3, `every growing copy synced (${r.targetFile.syncs})`)
})

t.test('an HTTP-like target gets copies of at most its preferredWriteUnit', async (t) => {
  const data = pattern(200 * KiB, 25)
  const r = await rig(t, data, [[5, 150 * KiB]], { units: { preferredWriteUnit: 32 * KiB } })
  r.copier.start()
  await caughtUp(r)
  t.ok(r.targetFile.writes.length >= 5, `${r.targetFile.writes.length} copies`)
  for (const [s, e] of r.targetFile.writes) t.ok(e - s <= 32 * KiB, `[${s}, ${e}) is at most 32 KiB`)
  t.ok(r.targetFile.data.equals(data))
})

const POLICY: RemoteRetryPolicy = { baseMs: 1000, maxMs: 4000, failAfterMs: 60_000 }

t.test('a retryable error leaves the remote behind with its error and retries with backoff, doubling to the cap', async (t) => {
  const clock = new FakeClock()
  const data = pattern(64 * KiB, 26)
  const r = await rig(t, data, [[0, 8 * KiB]], { retry: POLICY, clock })
  r.targetFile.writeError = retryable()
  r.targetFile.up = false
  r.copier.start()
  await eventually(() => r.target.retry !== null, 'the first failure', 10_000)
  t.equal(r.target.state, 'behind', 'behind, not failed')
  t.equal(r.target.failed, false)
  t.match(r.target.retry, { error: { code: 'EREMOTE_UNAVAILABLE' }, attempt: 0 })
  t.same([...r.target.pending], [[0, 8 * KiB]], 'its dirty range is kept')
  const delays: number[] = []
  for (let i = 0; i < 4; i++) {
    await settleOn(clock)
    delays.push(clock.pending[0])
    clock.advance(clock.pending[0])
  }
  t.same(delays, [1000, 2000, 4000, 4000], 'backoff: 1 s, doubling, capped')
  t.ok(r.targetFile.probes >= 3, 'while it is down, retries are probes, not copies')
  t.equal(r.targetFile.writes.length, 0)
  // It answers again.
  r.targetFile.writeError = null
  r.targetFile.up = true
  await settleOn(clock)
  clock.advance(clock.pending[0])
  await caughtUp(r)
  t.equal(r.target.retry, null, 'no more retry')
  t.ok(r.targetFile.data.equals(data), 'caught up byte for byte')
  t.ok(r.host.retryEvents >= 2, 'the host heard of the retry and of its end')
  t.same(r.host.failures, [], 'never failed')
})

t.test('unreachable past failAfterMs, the remote is failed saying for how long', async (t) => {
  const clock = new FakeClock()
  const data = pattern(16 * KiB, 27)
  const r = await rig(t, data, [[0, KiB]], { retry: { ...POLICY, failAfterMs: 5_000 }, clock })
  r.targetFile.writeError = retryable('connect ECONNREFUSED 127.0.0.1:9')
  r.targetFile.up = false
  r.copier.start()
  await eventually(() => r.target.retry !== null, 'the first failure', 10_000)
  for (let i = 0; i < 10 && !r.target.failed; i++) {
    await settleOn(clock)
    if (clock.pending.length > 0) clock.advance(clock.pending[0])
  }
  t.equal(r.target.state, 'failed')
  t.match(r.target.error, { code: 'EREMOTE_UNAVAILABLE', message: /unreachable for 5 s .*ECONNREFUSED/ })
  t.same([...r.target.pending], [[0, KiB]], 'its backlog is kept for a resync')
})

t.test('an error retrying cannot fix (credentials) fails the remote at once', async (t) => {
  const clock = new FakeClock()
  const data = pattern(16 * KiB, 28)
  const r = await rig(t, data, [[0, KiB]], { retry: POLICY, clock })
  r.targetFile.writeError = Object.assign(new Error('PUT: the remote refused the credentials (401)'), { code: 'EACCES', retryable: false })
  r.copier.start()
  await eventually(() => r.target.failed, 'the failure', 10_000)
  t.equal(r.target.state, 'failed')
  t.equal(r.target.retry, null)
  t.match(r.target.error, { code: 'EACCES' })
  t.equal(r.host.failures.length, 1, 'the host is told (the volume logs it and lets the file go)')
})

t.test('a remote that failed to open with a retryable error is reopened after its backoff', async (t) => {
  const clock = new FakeClock()
  const data = pattern(16 * KiB, 29)
  const r = await rig(t, data, [[0, data.length]], { retry: POLICY, clock, file: false })
  r.target.fail(retryable('connect ECONNREFUSED'))
  t.equal(r.target.state, 'behind', 'an unreachable remote is behind, not failed')
  let attempts = 0
  r.host.reconnect = async (target) => {
    attempts++
    if (attempts < 2) throw Object.assign(new Error('could not be reopened'), { cause: retryable() })
    target.file = r.targetFile
    target.error = null
  }
  r.copier.start()
  await settleOn(clock)
  t.equal(clock.pending[0], 1000, 'the first retry in 1 s')
  clock.advance(1000)
  await settleOn(clock)
  t.equal(attempts, 1)
  t.equal(clock.pending[0], 2000, 'then 2 s')
  clock.advance(2000)
  await caughtUp(r)
  t.equal(attempts, 2)
  t.equal(r.target.retry, null)
  t.ok(r.targetFile.data.equals(data))
})

t.test('a remote that cannot shrink a file (mod_dav) is emptied and copied whole', async (t) => {
  const data = pattern(40 * KiB, 30)
  const r = await rig(t, data, [], { targetData: Buffer.concat([data, pattern(10 * KiB, 31)]) })
  r.targetFile.truncateError = Object.assign(new Error('cannot shrink'), { code: 'ENOTSUP' })
  r.copier.start()
  await eventually(() => r.targetFile.truncates.includes(0) && r.target.state === 'in-sync', 'emptied and refilled', 10_000)
  t.ok(r.targetFile.data.equals(data), 'the volume, byte for byte, at its size')
  t.equal(r.target.failed, false)
})
