// The throttle on a fake clock: the token bucket's arithmetic, and write-behind and scrub paced by it,
// checked to the millisecond without waiting for any of those milliseconds in real time.
import t from 'tap'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { Journal } from '../../src/engine/journal.js'
import { RangeSet } from '../../src/engine/range-set.js'
import { LocalFile } from '../../src/engine/replica-file.js'
import { Replica } from '../../src/engine/replica.js'
import { scrub, SCRUB_CHUNK } from '../../src/engine/scrub.js'
import { replicaSpecSchema } from '../../src/engine/spec.js'
import { realClock, Throttle } from '../../src/engine/throttle.js'
import { WriteBehind, type WriteBehindHost } from '../../src/engine/write-behind.js'
import { FakeClock } from '../helpers/clock.js'
import { Harness, HookFile, settledFiles, SOON_MS, turns, within } from '../helpers/engine.js'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'

const KiB = 1024

// ------------------------------------------------------------------ the bucket

t.test('the bucket starts full with one second of tokens, refills at the rate and holds no more than a second', async (t) => {
  const clock = new FakeClock()
  const throttle = new Throttle(1000, clock)
  t.equal(throttle.take(1000), 0, 'a full second of bytes at once: no wait')
  t.equal(throttle.take(500), 500, 'then 500 bytes wait 500 ms')
  clock.advance(500)
  t.equal(throttle.take(0), 0, 'the debt is paid off after those 500 ms')
  clock.advance(10_000)
  t.equal(throttle.take(1000), 0, 'ten idle seconds still buy only one second of bytes')
  t.equal(throttle.take(1), 1, 'and the next byte waits its 1 ms')
})

t.test('one large take goes into debt instead of stalling forever', async (t) => {
  const clock = new FakeClock()
  const throttle = new Throttle(1000, clock)
  t.equal(throttle.take(3000), 2000, 'three seconds of bytes from a full bucket: 2 s')
  clock.advance(1000)
  t.equal(throttle.take(0), 1000, 'half way there, 1 s still owed')
  clock.advance(1000)
  t.equal(throttle.take(100), 100, 'paid off: the next 100 bytes wait their own 100 ms')
})

t.test('null is unthrottled; setRate caps the tokens at the new rate', async (t) => {
  const clock = new FakeClock()
  const free = new Throttle(null, clock)
  t.equal(free.take(1 << 30), 0, 'null: never a wait')
  const throttle = new Throttle(1000, clock)
  throttle.setRate(100)
  t.equal(throttle.take(100), 0, 'the bucket now holds 100 bytes')
  t.equal(throttle.take(100), 1000, 'and refills at 100 B/s')
  throttle.setRate(null)
  t.equal(throttle.take(1 << 30), 0, 'back to unthrottled')
})

t.test('without a clock the throttle runs on the real one', async (t) => {
  t.equal(new Throttle(1000).clock, realClock)
  const before = realClock.now()
  await new Throttle(1000).sleep(5)
  t.ok(realClock.now() - before >= 4, 'sleep() waits in real time')
  let fired = false
  realClock.setTimer(() => (fired = true), 1)()
  await new Promise((resolve) => setTimeout(resolve, 10))
  t.notOk(fired, 'a cancelled real timer never fires')
})

// ------------------------------------------------------------------ write-behind on the fake clock

/** A target replica lacking `pending` of `data`, fed by a WriteBehind on `clock` from an in-sync source. */
async function copier(t: { teardown(fn: () => unknown): void }, rate: number, data: Buffer, pending: Array<[number, number]>, clock: FakeClock) {
  const dir = await scratch(t)
  await fs.writeFile(join(dir, 'source.img'), data)
  const lacking = Buffer.from(data)
  for (const [s, e] of pending) lacking.fill(0, s, e)
  await fs.writeFile(join(dir, 'target.img'), lacking)
  const spec = (id: string, mode: 'sync' | 'async', maxBytesPerSecond: number | null) => ({
    ...replicaSpecSchema.parse({ id, path: `${id}.img`, mode, maxBytesPerSecond }),
    resolvedPath: join(dir, `${id}.img`),
  })
  const sourceFile = new HookFile(await LocalFile.open(join(dir, 'source.img')))
  const targetFile = new HookFile(await LocalFile.open(join(dir, 'target.img')))
  const source = new Replica(spec('source', 'sync', null), sourceFile, undefined as unknown as Journal)
  source.journal = await Journal.create(join(dir, 'source.journal'), new RangeSet(), { fsync: false }, () => source.dirty())
  const target = new Replica(spec('target', 'async', rate), targetFile, undefined as unknown as Journal)
  for (const [s, e] of pending) target.markPending(s, e)
  target.journal = await Journal.create(join(dir, 'target.journal'), target.pending.clone(), { fsync: false }, () => target.dirty())
  /** When each copy was made, on the fake clock, and what it covered. */
  const copies: Array<{ at: number; start: number; end: number }> = []
  const host: WriteBehindHost = {
    source: (r) => (r !== source ? source : undefined),
    size: () => data.length,
    fsync: false,
    sourceFailed: (_source, err) => {
      throw err
    },
    onCopy: (_r, start, end) => {
      copies.push({ at: clock.now(), start, end })
      targetFile.changes.emit('change')
    },
    clock,
  }
  const writeBehind = new WriteBehind(target, host)
  t.teardown(async () => {
    await writeBehind.stop()
    await target.journal.close()
    await source.journal.close()
    await targetFile.close()
    await sourceFile.close()
  })
  const copied = (n: number) => targetFile.until(() => copies.length >= n, SOON_MS, `${n} copies (made ${copies.length})`)
  return { dir, writeBehind, target, targetFile, copies, copied }
}

t.test('write-behind copies at the rate: three seconds of bytes take two on the clock, a burst of one second first', async (t) => {
  const clock = new FakeClock()
  const rate = 64 * KiB
  // Six 32 KiB ranges far enough apart (96 KiB gaps) that each is a copy of its own.
  const pending: Array<[number, number]> = Array.from({ length: 6 }, (_, i) => [i * 128 * KiB, i * 128 * KiB + 32 * KiB])
  const data = pattern(6 * 128 * KiB, 1)
  const r = await copier(t, rate, data, pending, clock)
  r.writeBehind.start()
  await r.copied(2)
  t.same(r.copies.map((c) => c.at), [0, 0], 'the first second of tokens (two copies) goes at once')
  for (const due of [500, 1000, 1500, 2000]) {
    await within(clock.whenTimerSet(), SOON_MS, `the pause before the copy due at ${due} ms`)
    t.same(clock.pending, [500], `a 500 ms pause before the copy due at ${due} ms`)
    const made = r.copies.length
    await turns(5)
    t.equal(r.copies.length, made, 'nothing is copied while the pause lasts')
    clock.advance(499)
    await turns(5)
    t.equal(r.copies.length, made, 'nor 1 ms before it ends')
    clock.advance(1)
    await r.copied(made + 1)
    t.equal(r.copies.at(-1)!.at, due, `copied at ${due} ms`)
  }
  t.same(
    r.copies.map((c) => [c.start, c.end]),
    pending,
    'every range was copied once, in order',
  )
  await r.targetFile.until(() => r.target.pending.isEmpty && r.target.copying.isEmpty, SOON_MS, 'nothing left to copy')
  t.ok((await fs.readFile(join(r.dir, 'target.img'))).equals(data), 'the target holds the source’s bytes')
  t.same(clock.pending, [], 'no pause is left once everything is copied')
})

t.test('stop() cancels a throttle pause on the clock and copies nothing more', async (t) => {
  const clock = new FakeClock()
  const data = pattern(256 * KiB, 2)
  // 1 KiB/s: the 256 KiB copy would wait 255 s.
  const r = await copier(t, KiB, data, [[0, data.length]], clock)
  r.writeBehind.start()
  await within(clock.whenTimerSet(), SOON_MS, 'the throttle pause')
  t.same(clock.pending, [255_000], 'a 255 s pause')
  t.equal(r.targetFile.writes.length, 0, 'nothing copied yet')
  await within(r.writeBehind.stop(), 2000, 'stop() during the pause')
  t.same(clock.pending, [], 'the pause’s timer is cancelled')
  clock.advance(300_000)
  await turns(5)
  t.equal(r.targetFile.writes.length, 0, 'nothing copied, even once the pause would have ended')
  t.same([...r.target.pending], [[0, data.length]], 'everything still pending')
})

// ------------------------------------------------------------------ scrub on the fake clock

t.test('scrub reads at its rate: three chunks at one chunk per second take two seconds on the clock', async (t) => {
  const h = new Harness(await scratch(t))
  t.teardown(() => h.closeAll())
  const data = pattern(3 * SCRUB_CHUNK, 3)
  await h.seed('a', data)
  await h.seed('b', data)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b' }], { fresh: true })
  await settledFiles(h, volume)
  const clock = new FakeClock()
  const group = volume.newGroup('scrub', 0)
  let done = false
  const scrubbing = scrub(volume, group, { repair: false, maxBytesPerSecond: SCRUB_CHUNK, clock }).finally(() => (done = true))
  for (const chunk of [2, 3]) {
    await within(clock.whenTimerSet(), SOON_MS, `the pause before chunk ${chunk}`)
    t.same(clock.pending, [1000], `chunk ${chunk} waits 1 s`)
    t.notOk(done, 'the scrub is not done')
    clock.advance(1000)
  }
  await within(scrubbing, SOON_MS, 'the scrub')
  t.equal(clock.now(), 2000, 'two seconds on the clock')
  t.equal(group.status, 'done')
  t.same(group.extra.mismatches, [], 'the replicas match')
  t.same(
    group.operations.map((op) => [op.replica, op.bytes]),
    [
      ['a', data.length],
      ['b', data.length],
    ],
    'every byte of both was read',
  )
})
