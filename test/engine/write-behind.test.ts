import t from 'tap'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { Journal, readJournal } from '../../src/engine/journal.js'
import { RangeSet } from '../../src/engine/range-set.js'
import { LocalFile } from '../../src/engine/replica-file.js'
import { Replica } from '../../src/engine/replica.js'
import { replicaSpecSchema } from '../../src/engine/spec.js'
import { COPY_CHUNK, WriteBehind, type WriteBehindHost } from '../../src/engine/write-behind.js'
import { HookFile, SOON_MS, turns, within } from '../helpers/engine.js'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'

const KiB = 1024

interface Rig {
  source: Replica
  target: Replica
  targetFile: HookFile
  sourceFile: HookFile
  copier: WriteBehind
  host: WriteBehindHost & { copies: Array<[number, number]>; sourceFailures: unknown[]; hasSource: boolean; volumeSize: number }
  data: Buffer
  dir: string
  /** Resolves once `n` copies in all have been made. */
  copied(n: number): Promise<void>
}

/**
 * A source replica holding `data` and a target holding `targetData` (default: `data` with the
 * pending ranges zeroed: what the target lacks), `pending` marked on the target and journaled.
 * The copier is not started.
 */
async function rig(
  dir: string,
  data: Buffer,
  pending: Array<[number, number]>,
  options: { maxBytesPerSecond?: number | null; targetData?: Buffer } = {},
): Promise<Rig> {
  await fs.writeFile(join(dir, 'source.img'), data)
  const lacking = Buffer.from(data)
  for (const [s, e] of pending) lacking.fill(0, s, e)
  await fs.writeFile(join(dir, 'target.img'), options.targetData ?? lacking)
  const spec = (id: string, mode: 'sync' | 'async', maxBytesPerSecond: number | null) => ({
    ...replicaSpecSchema.parse({ id, path: `${id}.img`, mode, maxBytesPerSecond }),
    resolvedPath: join(dir, `${id}.img`),
  })
  const sourceFile = new HookFile(await LocalFile.open(join(dir, 'source.img')))
  const targetFile = new HookFile(await LocalFile.open(join(dir, 'target.img')))
  const source: Replica = new Replica(spec('source', 'sync', null), sourceFile, undefined as unknown as Journal)
  source.journal = await Journal.create(join(dir, 'source.journal'), new RangeSet(), { fsync: false }, () => source.dirty())
  const target: Replica = new Replica(spec('target', 'async', options.maxBytesPerSecond ?? null), targetFile, undefined as unknown as Journal)
  for (const [s, e] of pending) target.markPending(s, e)
  target.journal = await Journal.create(join(dir, 'target.journal'), target.pending.clone(), { fsync: false }, () => target.dirty())
  const copyWaiters: Array<{ n: number; resolve: () => void }> = []
  const host: Rig['host'] = {
    copies: [],
    sourceFailures: [],
    hasSource: true,
    volumeSize: data.length,
    source: (r) => (host.hasSource && r !== source ? source : undefined),
    size: () => host.volumeSize,
    fsync: false,
    sourceFailed: (_source, err) => void host.sourceFailures.push(err),
    onCopy: (_r, start, end) => {
      host.copies.push([start, end])
      targetFile.changes.emit('change')
      for (const w of [...copyWaiters]) {
        if (host.copies.length >= w.n) {
          copyWaiters.splice(copyWaiters.indexOf(w), 1)
          w.resolve()
        }
      }
    },
  }
  const copier = new WriteBehind(target, host)
  const copied = (n: number) =>
    host.copies.length >= n
      ? Promise.resolve()
      : within(new Promise<void>((resolve) => copyWaiters.push({ n, resolve })), SOON_MS, `${n} copies (made ${host.copies.length})`)
  return { source, target, targetFile, sourceFile, copier, host, data, dir, copied }
}

async function teardown(r: Rig): Promise<void> {
  await r.copier.stop()
  await r.target.journal.close()
  await r.source.journal.close()
  await r.targetFile.close()
  await r.sourceFile.close()
}

/** Waits until the target has nothing pending or being copied and its copier has gone back to sleep. */
async function caughtUp(r: Rig): Promise<void> {
  await r.targetFile.until(
    () => r.target.pending.isEmpty && r.target.copying.isEmpty && r.targetFile.sizedSinceLastWrite,
    SOON_MS,
    'the target to catch up',
  )
  await turns(3)
}

t.test('adjacent small pending ranges are coalesced into few copies', async (t) => {
  const dir = await scratch(t)
  const data = pattern(512 * KiB, 1)
  // 100 ranges of 1 KiB with 1 KiB gaps: one span of ~200 KiB.
  const pending = Array.from({ length: 100 }, (_, i): [number, number] => [i * 2 * KiB, i * 2 * KiB + KiB])
  const r = await rig(dir, data, pending)
  t.teardown(() => teardown(r))
  t.equal(r.target.pending.count, 100)
  r.copier.start()
  await r.copied(1)
  await caughtUp(r)
  t.same(r.host.copies, [[0, 199 * KiB]], 'one copy covers all 100 ranges')
  t.equal(r.targetFile.writes.length, 1, 'one write to the target')
  t.ok((await r.targetFile.inner.size()) === data.length)
  const got = await fs.readFile(join(dir, 'target.img'))
  for (const [s, e] of pending) t.ok(got.subarray(s, e).equals(data.subarray(s, e)), `range ${s} copied`)
  await r.target.journal.flush()
  t.same(await readJournal(r.target.journal.path), { kind: 'ok', dirty: new RangeSet() }, 'the journal records it all clean')
})

t.test('coalescing stops at the gap limit and at the copy chunk', async (t) => {
  const dir = await scratch(t)
  const size = 3 * COPY_CHUNK
  const data = pattern(size, 2)
  const far = 200 * KiB // well beyond the 64 KiB coalescing gap
  const pending: Array<[number, number]> = [
    [0, KiB],
    [KiB + far, 2 * KiB + far],
    // One large range: split into chunks of at most COPY_CHUNK.
    [COPY_CHUNK / 2, COPY_CHUNK / 2 + 2 * COPY_CHUNK + 10],
  ]
  const r = await rig(dir, data, pending)
  t.teardown(() => teardown(r))
  r.copier.start()
  await caughtUp(r)
  for (const [s, e] of r.host.copies) t.ok(e - s <= COPY_CHUNK, `copy [${s}, ${e}) is at most one chunk`)
  t.same(r.host.copies.slice(0, 2), [[0, KiB], [KiB + far, 2 * KiB + far]], 'ranges further apart than the gap limit are copied apart')
  t.equal(r.host.copies.length, 5, 'the large range takes three chunks')
  const covered = RangeSet.of(...r.host.copies)
  for (const [s, e] of pending) t.ok(covered.covers(s, e), `[${s}, ${e}) copied`)
  t.ok((await fs.readFile(join(dir, 'target.img'))).equals(data), 'the target equals the source')
})

t.test('sweeps go up from the cursor and wrap around', async (t) => {
  const dir = await scratch(t)
  const data = pattern(1024 * KiB, 3)
  const r = await rig(dir, data, [[500 * KiB, 501 * KiB], [100 * KiB, 101 * KiB], [300 * KiB, 301 * KiB]])
  t.teardown(() => teardown(r))
  let added = false
  r.targetFile.onWrite = (offset) => {
    // While the first range is being copied, a write lands behind the cursor and one ahead of it.
    if (offset === 100 * KiB && !added) {
      added = true
      r.target.markPending(0, KiB)
      r.target.markPending(900 * KiB, 901 * KiB)
    }
  }
  r.copier.start()
  await r.copied(5)
  t.same(
    r.host.copies.map(([s]) => s / KiB),
    [100, 300, 500, 900, 0],
    'ascending from the cursor; what landed behind it waits for the next sweep',
  )
  await caughtUp(r)
  // A new sweep starts where the last copy ended.
  r.target.markPending(200 * KiB, 201 * KiB)
  r.target.markPending(2 * KiB, 3 * KiB)
  r.copier.wake()
  await r.copied(7)
  t.same(r.host.copies.slice(5).map(([s]) => s / KiB), [2, 200], 'from the cursor (just past 0 KiB) upward')
})

t.test('stop() finishes the copy in progress and leaves the rest pending and journaled', async (t) => {
  const dir = await scratch(t)
  const data = pattern(1024 * KiB, 4)
  const pending: Array<[number, number]> = [[0, KiB], [200 * KiB, 201 * KiB], [400 * KiB, 401 * KiB]]
  const r = await rig(dir, data, pending)
  t.teardown(() => teardown(r))
  r.targetFile.writeGate.arm(1)
  r.copier.start()
  await within(r.targetFile.writeGate.whenHeld(), SOON_MS, 'the first copy to reach the target')
  t.same(r.target.copying.toJSON(), [[0, KiB]], 'the first range is being copied')
  t.equal(r.target.dirtyBytes, 3 * KiB, 'dirty counts the range being copied')
  const stopped = r.copier.stop()
  await turns()
  r.targetFile.writeGate.open()
  await within(stopped, SOON_MS, 'stop()')
  t.same(r.host.copies, [[0, KiB]], 'the copy in progress completed')
  t.same([...r.target.pending], pending.slice(1), 'the rest is still pending')
  t.ok(r.target.copying.isEmpty)
  t.equal(r.target.state, 'behind')
  await r.target.journal.flush()
  const found = await readJournal(r.target.journal.path)
  t.same(found.kind === 'ok' ? [...found.dirty] : found, pending.slice(1), 'the journal holds exactly the rest')
  const got = await fs.readFile(join(dir, 'target.img'))
  t.ok(got.subarray(0, KiB).equals(data.subarray(0, KiB)), 'the copied range landed')
  t.ok(got.subarray(200 * KiB, 201 * KiB).equals(Buffer.alloc(KiB)), 'nothing else was copied')

  r.copier.start()
  await caughtUp(r)
  t.ok((await fs.readFile(join(dir, 'target.img'))).equals(data), 'started again, it finishes the rest')
})

t.test('stop() cuts a throttle pause short and copies nothing more', async (t) => {
  const dir = await scratch(t)
  const data = pattern(256 * KiB, 5)
  // 1 KiB/s: the 256 KiB copy would wait minutes.
  const r = await rig(dir, data, [[0, data.length]], { maxBytesPerSecond: KiB })
  t.teardown(() => teardown(r))
  r.copier.start()
  await turns(10)
  t.equal(r.targetFile.writes.length, 0, 'throttled: nothing copied yet')
  await within(r.copier.stop(), 2000, 'stop() during a throttle pause')
  t.equal(r.targetFile.writes.length, 0, 'nothing copied')
  t.same([...r.target.pending], [[0, data.length]], 'everything still pending')
})

t.test('a failing source read keeps the range pending; a failing target write fails the replica', async (t) => {
  const dir = await scratch(t)
  const data = pattern(64 * KiB, 6)
  const r = await rig(dir, data, [[0, 4 * KiB]])
  t.teardown(() => teardown(r))
  r.sourceFile.readError = Object.assign(new Error('disk gone'), { code: 'EIO' })
  // The host answers a source failure by offering no source (as a volume with one failed source does).
  let failed!: () => void
  const sourceFailed = new Promise<void>((resolve) => (failed = resolve))
  r.host.sourceFailed = (_s, err) => {
    r.host.sourceFailures.push(err)
    r.host.hasSource = false
    failed()
  }
  r.copier.start()
  await within(sourceFailed, SOON_MS, 'the source failure')
  await turns()
  t.equal(r.host.sourceFailures.length, 1, 'the host hears of the source failure once')
  t.match(r.host.sourceFailures[0], { code: 'EIO' })
  t.same([...r.target.pending], [[0, 4 * KiB]], 'the range is pending again')
  t.ok(r.target.copying.isEmpty)
  t.equal(r.target.failed, false, 'the target is not blamed')
  t.equal(r.targetFile.writes.length, 0)

  // The source comes back.
  r.sourceFile.readError = null
  r.host.hasSource = true
  r.copier.wake()
  await caughtUp(r)
  t.ok((await fs.readFile(join(dir, 'target.img'))).subarray(0, 4 * KiB).equals(data.subarray(0, 4 * KiB)))

  // Now the target's write fails.
  r.targetFile.writeError = Object.assign(new Error('no space'), { code: 'ENOSPC' })
  r.target.markPending(8 * KiB, 9 * KiB)
  r.copier.wake()
  await r.targetFile.until(() => r.target.failed, SOON_MS, 'the target to fail')
  t.same(r.target.error, { code: 'ENOSPC', message: 'no space' })
  t.equal(r.target.state, 'failed')
  t.same([...r.target.pending], [[8 * KiB, 9 * KiB]], 'its backlog is kept for a resync')
})

t.test('with no source the copier waits, and copies once woken with one', async (t) => {
  const dir = await scratch(t)
  const data = pattern(16 * KiB, 7)
  const r = await rig(dir, data, [[0, data.length]])
  t.teardown(() => teardown(r))
  r.host.hasSource = false
  r.copier.start()
  await turns(10)
  t.equal(r.targetFile.writes.length, 0, 'nothing to copy from')
  r.host.hasSource = true
  r.copier.wake()
  await caughtUp(r)
  t.ok((await fs.readFile(join(dir, 'target.img'))).equals(data))
})

t.test('when caught up the target is cut to the volume size and leaves resync', async (t) => {
  const dir = await scratch(t)
  const data = pattern(32 * KiB, 8)
  const r = await rig(dir, data, [[0, data.length]], { targetData: pattern(100 * KiB, 9) })
  t.teardown(() => teardown(r))
  r.target.resyncing = true
  t.equal(r.target.state, 'resyncing')
  r.copier.start()
  await r.targetFile.until(() => r.targetFile.truncates.length > 0 && !r.target.resyncing, SOON_MS, 'the target to be cut')
  t.same(r.targetFile.truncates, [data.length])
  t.equal(r.target.state, 'in-sync')
  t.ok((await fs.readFile(join(dir, 'target.img'))).equals(data), 'identical, extra tail gone')
})

t.test(
  'a wake() that arrives while the caught-up copier checks the target size is not lost',
  async (t) => {
    const dir = await scratch(t)
    const data = pattern(16 * KiB, 10)
    const r = await rig(dir, data, [])
    t.teardown(() => teardown(r))
    r.targetFile.sizeGate.arm(1)
    r.copier.start()
    await within(r.targetFile.sizeGate.whenHeld(), SOON_MS, 'settle() to ask the target size')
    // A write lands meanwhile: bytes pending, copier woken (as Volume.wakeWriteBehind does).
    r.target.markPending(0, KiB)
    r.copier.wake()
    r.targetFile.sizeGate.open()
    await t.resolves(r.copied(1), 'the pending range is copied')
    t.equal(r.target.state, 'in-sync')
  },
)

t.test('a wake() that arrives during a copy is not lost', async (t) => {
  const dir = await scratch(t)
  const data = pattern(512 * KiB, 12)
  const r = await rig(dir, data, [[0, KiB]])
  t.teardown(() => teardown(r))
  r.targetFile.writeGate.arm(1)
  r.copier.start()
  await within(r.targetFile.writeGate.whenHeld(), SOON_MS, 'the first copy')
  // Far from the range in flight, so it cannot have been folded into it.
  r.target.markPending(400 * KiB, 401 * KiB)
  r.copier.wake()
  r.targetFile.writeGate.open()
  await r.copied(2)
  t.same(r.host.copies, [[0, KiB], [400 * KiB, 401 * KiB]])
  await caughtUp(r)
  t.ok((await fs.readFile(join(dir, 'target.img'))).equals(data))
})

t.test(
  'coalescing does not count the clean gap bytes as dirty',
  {},
  async (t) => {
    const dir = await scratch(t)
    const data = pattern(64 * KiB, 11)
    const r = await rig(dir, data, [[0, KiB], [10 * KiB, 11 * KiB]])
    t.teardown(() => teardown(r))
    const samples: number[] = [r.target.dirtyBytes]
    r.targetFile.onWrite = () => samples.push(r.target.dirtyBytes)
    r.copier.start()
    await caughtUp(r)
    samples.push(r.target.dirtyBytes)
    t.same(samples, [2 * KiB, 2 * KiB, 0], 'two KiB dirty before, during and none after the copy')
  },
)
