import t from 'tap'
import { promises as fs } from 'node:fs'
import { scrub, uncoveredRuns } from '../../src/engine/scrub.js'
import { flipByte } from '../helpers/flip.js'
import type { ChecksumMismatch } from '../../src/engine/verified-read.js'
import type { Volume } from '../../src/engine/volume.js'
import { FakeChecksums } from '../helpers/checksum-fake.js'
import { converge, Harness, settledFiles } from '../helpers/engine.js'
import { pattern } from '../helpers/pattern.js'

const KiB = 1024

function harness(t: { testdir(): string; teardown(fn: () => unknown): void }): Harness {
  const h = new Harness(t.testdir())
  t.teardown(() => h.closeAll())
  return h
}

async function flip(h: Harness, id: string, at: number): Promise<void> {
  flipByte(h.path(id), at)
}

async function opened(t: Parameters<typeof harness>[0], data: Buffer, b: { mode?: 'sync' | 'async'; read?: boolean }, sums: FakeChecksums | null) {
  const h = harness(t)
  await h.seed('a', data)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b', ...b }], { fresh: true })
  await settledFiles(h, volume)
  Object.defineProperty(volume, 'checksums', { value: sums, configurable: true, writable: true })
  const events: ChecksumMismatch[] = []
  volume.on('checksumMismatch', (e) => events.push(e))
  return { h, volume, events }
}

async function runScrub(volume: Volume, repair: boolean) {
  const group = volume.newGroup('scrub', 0)
  await scrub(volume, group, { repair, maxBytesPerSecond: null })
  return group
}

t.test('uncoveredRuns: the runs of blocks without a checksum', async (t) => {
  const sums = new FakeChecksums(Buffer.alloc(8192), 4096)
  t.same(uncoveredRuns(null, 10, 500), [[10, 500]], 'everything without checksums')
  t.same(uncoveredRuns(sums, 4096, 12288), [], 'covered')
  t.same(uncoveredRuns(sums, 0, 20000), [[0, 4096], [12288, 20000]], 'around the covered blocks')
  t.same(uncoveredRuns(sums, 100, 5000), [[100, 4096]], 'clipped to the range')
})

t.test('a byte flipped on the async, unread replica: found by scrub, repaired with repair=true', async (t) => {
  const data = pattern(3 * 1024 * KiB, 1)
  const { h, volume, events } = await opened(t, data, { mode: 'async', read: false }, new FakeChecksums(pattern(3 * 1024 * KiB, 1)))
  const at = 2_500_123
  await flip(h, 'b', at)
  const check = await runScrub(volume, false)
  t.equal(check.status, 'done')
  t.same(check.extra.mismatches, [{ replica: 'b', offset: at, length: 1, repaired: false }])
  t.not((await h.readFile('b'))[at], data[at], 'nothing changed without repair')
  t.same(volume.lastScrub?.mismatches, [{ replica: 'b', offset: at, length: 1, repaired: false }])
  t.equal(volume.lastScrub?.bytes, data.length)
  const fixed = await runScrub(volume, true)
  t.same(fixed.extra.mismatches, [{ replica: 'b', offset: at, length: 1, repaired: true }])
  t.ok((await h.readFile('b')).equals(data), 'b repaired')
  t.match(events, [{ replica: 'b', repaired: false, from: 'a' }, { replica: 'b', repaired: true, from: 'a' }])
  t.same((await runScrub(volume, false)).extra.mismatches, [], 'a clean scrub finds nothing')
  t.same(
    check.operations.map((op) => [op.replica, op.bytes]),
    [
      ['a', data.length],
      ['b', data.length],
    ],
    'every byte of both was checked',
  )
})

t.test('two sync replicas: the flipped one is repaired, whichever it is (the source too)', async (t) => {
  for (const bad of ['a', 'b']) {
    const data = pattern(1536 * KiB, 2)
    const { h, volume } = await opened(t, data, { mode: 'sync' }, new FakeChecksums(data))
    await flip(h, bad, 1_100_000)
    const group = await runScrub(volume, true)
    t.same(group.extra.mismatches, [{ replica: bad, offset: 1_100_000, length: 1, repaired: true }], `${bad} found`)
    t.ok((await h.readFile('a')).equals(data), `${bad}: a right`)
    t.ok((await h.readFile('b')).equals(data), `${bad}: b right`)
  }
})

t.test('both flipped in one block: listed on both, not repaired', async (t) => {
  const data = pattern(64 * KiB, 3)
  const { h, volume, events } = await opened(t, data, { mode: 'sync' }, new FakeChecksums(data))
  await flip(h, 'a', 5000)
  await flip(h, 'b', 6000)
  const group = await runScrub(volume, true)
  t.same(group.extra.mismatches, [
    { replica: 'a', offset: 4096, length: 4096, repaired: false },
    { replica: 'b', offset: 4096, length: 4096, repaired: false },
  ])
  t.match(events, [{ replica: 'a', from: null }, { replica: 'b', from: null }])
})

t.test('uncovered bytes: compared with the source as before, then checksummed from it', async (t) => {
  const data = pattern(2048 * KiB, 4)
  // Only the first MiB has checksums.
  const sums = new FakeChecksums(data.subarray(0, 1024 * KiB))
  const { h, volume } = await opened(t, data, { mode: 'async', read: false }, sums)
  await flip(h, 'b', 1_500_000)
  const group = await runScrub(volume, true)
  t.same(group.extra.mismatches, [{ replica: 'b', offset: 1_500_000, length: 1, repaired: true }], 'found by comparison; write-behind repairs it')
  await converge(volume)
  t.ok((await h.readFile('b')).equals(data), 'b copied back')
  t.ok(sums.covered(0, data.length), 'the rest is checksummed from the source')
})

t.test('without checksums: today\'s comparison against the source', async (t) => {
  const data = pattern(1024 * KiB, 5)
  const { h, volume, events } = await opened(t, data, { mode: 'async', read: false }, null)
  await flip(h, 'b', 7)
  const group = await runScrub(volume, false)
  t.same(group.extra.mismatches, [{ replica: 'b', offset: 7, length: 1, repaired: false }])
  t.same(events, [], 'no checksum events')
})

t.test('a replica cut short behind the server fails (ESHRUNK); nothing is copied from it', async (t) => {
  const data = pattern(2048 * KiB, 6)
  const { h, volume } = await opened(t, data, { mode: 'async', read: false }, new FakeChecksums(data))
  await fs.truncate(h.path('a'), 128 * KiB)
  const group = await runScrub(volume, true)
  t.match(volume.replica('a')?.error, { code: 'ESHRUNK' }, 'a failed')
  t.same(group.extra.mismatches, [], 'no mismatch listed for a file that is short')
  t.ok((await h.readFile('b')).equals(data), 'b untouched')
})
