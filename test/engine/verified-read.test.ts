import t from 'tap'
import { closeSync, openSync, writeSync } from 'node:fs'
import { readBlocks } from '../../src/engine/block-hash.js'
import { ChecksumMismatchError, type ChecksumMismatch } from '../../src/engine/verified-read.js'
import { flipByte } from '../helpers/flip.js'
import type { Volume } from '../../src/engine/volume.js'
import { FakeChecksums } from '../helpers/checksum-fake.js'
import { Harness, readVolume, settledFiles } from '../helpers/engine.js'
import { pattern } from '../helpers/pattern.js'

const KiB = 1024

function harness(t: { testdir(): string; teardown(fn: () => unknown): void }): Harness {
  const h = new Harness(t.testdir())
  t.teardown(() => h.closeAll())
  return h
}

/** Gives the volume a checksum store (the fake, or A1's real one when the volume has it). */
function withChecksums(volume: Volume, sums: FakeChecksums): FakeChecksums {
  Object.defineProperty(volume, 'checksums', { value: sums, configurable: true, writable: true })
  return sums
}

async function flip(h: Harness, id: string, at: number): Promise<void> {
  flipByte(h.path(id), at)
}

/** An open two-replica volume (a reads, b async and not read) over `data`, in sync, with checksums of `data`. */
async function mirrored(t: Parameters<typeof harness>[0], data: Buffer, second: { mode?: 'sync' | 'async'; read?: boolean } = { mode: 'async', read: false }) {
  const h = harness(t)
  await h.seed('a', data)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b', ...second }], { fresh: true })
  await settledFiles(h, volume)
  const sums = withChecksums(volume, new FakeChecksums(data))
  const events: ChecksumMismatch[] = []
  volume.on('checksumMismatch', (e) => events.push(e))
  return { h, volume, sums, events }
}

t.test('a flipped byte on the reading replica is never served: read from b, a repaired', async (t) => {
  const data = pattern(3 * 1024 * KiB + 1000, 1)
  const { h, volume, sums, events } = await mirrored(t, data)
  const at = 1024 * KiB + 5000
  await flip(h, 'a', at)
  for (const [offset, length, what] of [
    [1024 * KiB + 4096, 4096, 'aligned 4 KiB'],
    [1024 * KiB, 1024 * KiB, 'aligned 1 MiB'],
    [at - 10, 100, 'unaligned'],
    [at - 3000, 1024 * KiB, 'unaligned 1 MiB (larger than a slab once aligned)'],
  ] as const) {
    const { bytes, n } = await readVolume(volume, offset, length)
    t.equal(n, length, `${what}: every byte`)
    t.ok(bytes.equals(data.subarray(offset, offset + length)), `${what}: the right bytes`)
  }
  t.ok((await h.readFile('a')).equals(data), 'a repaired on disk')
  if (readBlocks) t.ok(sums.knownReads > 0, 'the aligned 1 MiB read was judged by checksums computed where it was read')
  t.same(events.slice(0, 1), [{ volume: 'vol', replica: 'a', offset: at - (at % 4096), length: 4096, repaired: true, from: 'b' }], 'one event')
  t.equal(events.length, 1, 'the repaired block reads clean afterwards')
  const warn = h.log.entries.find((e) => e.level === 'warn' && e.msg.startsWith('block checksum mismatch'))
  t.match(warn?.obj, { volume: 'vol', replica: 'a', offset: at - (at % 4096) }, 'a warn line names volume, replica, offset')
})

t.test('the tail block (short, at the volume end) is verified too', async (t) => {
  const data = pattern(64 * KiB + 100, 2)
  const { h, volume, sums, events } = await mirrored(t, data)
  await flip(h, 'a', data.length - 1)
  const { bytes } = await readVolume(volume, 0, data.length)
  t.ok(bytes.equals(data))
  if (readBlocks) t.equal(sums.knownReads, 1, 'read with its checksums computed where it was read, the short tail judged zero-padded')
  t.equal(events[0]?.offset, 64 * KiB)
  t.equal(events[0]?.length, 100)
  t.ok((await h.readFile('a')).equals(data))
})

t.test('no replica verifies: the read fails naming offset and replicas, nothing is served', async (t) => {
  const data = pattern(256 * KiB, 3)
  const { h, volume, events } = await mirrored(t, data)
  await flip(h, 'a', 70_000)
  await flip(h, 'b', 70_001)
  const err = await readVolume(volume, 0, data.length).then(
    () => null,
    (e: unknown) => e,
  )
  t.ok(err instanceof ChecksumMismatchError, 'a checksum mismatch error')
  t.match((err as Error).message, /bytes 69632-73727 .*\(a, b\).*backup/)
  t.equal((err as ChecksumMismatchError).kind, 'read-failed')
  t.same(events, [{ volume: 'vol', replica: 'a', offset: 69632, length: 4096, repaired: false, from: null }])
  // The bad block is still bad on both: nothing was "repaired" with wrong bytes.
  t.not((await h.readFile('a'))[70_000], data[70_000])
  t.ok((await readVolume(volume, 0, 64 * KiB)).bytes.equals(data.subarray(0, 64 * KiB)), 'other blocks still read')
})

t.test('a block a write changes while it is read is read again, not judged', async (t) => {
  const data = pattern(128 * KiB, 4)
  const { h, volume, sums, events } = await mirrored(t, data)
  const block = 8 * 4096
  const written = Buffer.from(data.subarray(block, block + 4096))
  written[10] ^= 0x55
  let raced = false
  sums.onBeginRead = () => {
    if (raced) return
    raced = true
    // A client write lands on a after the read's ticket and before its bytes are judged (a and b both take it).
    sums.write(block, written)
    for (const id of ['a', 'b']) {
      const fd = openSync(h.path(id), 'r+')
      writeSync(fd, written, 0, 4096, block)
      closeSync(fd)
    }
  }
  const expected = Buffer.from(data)
  written.copy(expected, block)
  const { bytes } = await readVolume(volume, 0, data.length)
  t.ok(raced)
  t.ok(bytes.equals(expected), 'the new bytes, verified on the second read')
  t.same(events, [], 'no mismatch reported')
})

t.test('a flipped byte in a block being rewritten concurrently is not reported as rot', async (t) => {
  const data = pattern(64 * KiB, 5)
  const { h, volume, sums, events } = await mirrored(t, data)
  await flip(h, 'a', 4096 + 7)
  // The block is touched by a write after every read's ticket: it is never judged, so never reported.
  sums.onBeginRead = (start) => sums.write(4096, data.subarray(4096, 8192).map((b, i) => (i === 7 ? b ^ 0xff : b)) as Buffer)
  await readVolume(volume, 0, data.length)
  t.same(events, [], 'no mismatch event')
  t.equal(h.log.entries.filter((e) => e.msg.startsWith('block checksum mismatch')).length, 0)
})

t.test('without checksums nothing is verified', async (t) => {
  const data = pattern(64 * KiB, 6)
  const h = harness(t)
  await h.seed('a', data)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async', read: false }], { fresh: true })
  await settledFiles(h, volume)
  Object.defineProperty(volume, 'checksums', { value: null, configurable: true, writable: true })
  await flip(h, 'a', 100)
  const { bytes } = await readVolume(volume, 0, 4096)
  t.not(bytes[100], data[100], 'the flipped byte is what a holds')
})

t.test('with two sync replicas, whichever is flipped is the one repaired', async (t) => {
  for (const bad of ['a', 'b']) {
    const data = pattern(64 * KiB, 7)
    const { h, volume, events } = await mirrored(t, data, { mode: 'sync', read: true })
    await flip(h, bad, 9000)
    // Read from the flipped one by name: it is the one that must heal.
    const { bytes } = await readVolume(volume, 8192, 4096, bad)
    t.ok(bytes.equals(data.subarray(8192, 12288)), `${bad}: right bytes`)
    t.ok((await h.readFile(bad)).equals(data), `${bad}: repaired`)
    t.match(events, [{ replica: bad, repaired: true, from: bad === 'a' ? 'b' : 'a' }])
  }
})

t.test('a failed repair write fails the bad replica; the read still gets the right bytes', async (t) => {
  const data = pattern(64 * KiB, 8)
  const { h, volume, events } = await mirrored(t, data, { mode: 'sync', read: true })
  await flip(h, 'a', 100)
  h.file('a').writeError = Object.assign(new Error('EIO: disk'), { code: 'EIO' })
  const { bytes } = await readVolume(volume, 0, 4096)
  t.ok(bytes.equals(data.subarray(0, 4096)))
  t.equal(volume.replica('a')?.state, 'failed')
  t.match(events, [{ replica: 'a', repaired: false, from: 'b' }])
})

t.test('a large unaligned read: its edge blocks and its middle are verified and healed', async (t) => {
  const data = pattern(2 * 1024 * KiB, 9)
  const { h, volume, events } = await mirrored(t, data)
  const offset = 300 * KiB + 123
  const length = 700 * KiB + 77
  const end = offset + length
  // In the head block before the range, in the middle, in the tail block past the range.
  const flips = [offset - 50, offset + 200 * KiB, end + 10]
  for (const at of flips) await flip(h, 'a', at)
  const { bytes, n } = await readVolume(volume, offset, length)
  t.equal(n, length)
  t.ok(bytes.equals(data.subarray(offset, end)), 'the right bytes')
  t.same(
    events.map((e) => e.offset).sort((a, b) => a - b),
    flips.map((at) => at - (at % 4096)),
    'each bad block found, edges included',
  )
  t.ok((await h.readFile('a')).equals(data), 'a repaired')
})

t.test('a large unaligned read whose edge block has no good copy fails', async (t) => {
  const data = pattern(512 * KiB, 10)
  const { h, volume } = await mirrored(t, data)
  await flip(h, 'a', 100 * KiB + 1)
  await flip(h, 'b', 100 * KiB + 2)
  const err = await readVolume(volume, 100 * KiB + 10, 200 * KiB).then(
    () => null,
    (e: unknown) => e,
  )
  t.ok(err instanceof ChecksumMismatchError)
  t.equal((err as ChecksumMismatchError).offset, 100 * KiB)
})
