import { randomBytes, randomInt } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { Readable } from 'node:stream'
import t from 'tap'
import { BLOCK_BYTES, paddedChecksum } from '../../src/engine/block-checksums.js'
import type { Volume } from '../../src/engine/volume.js'
import { Harness, writeVolume } from '../helpers/engine.js'
import { eventually } from '../helpers/eventually.js'

const KiB = 1024
const MiB = 1024 * KiB

function harness(t: { testdir(): string; teardown(fn: () => unknown): void }): Harness {
  const h = new Harness(t.testdir())
  t.teardown(() => h.closeAll())
  return h
}

/** Blocks whose stored checksum is not the CRC of `bytes` (zero-padded), up to `extra` blocks past its end too. */
function wrongBlocks(volume: Volume, bytes: Buffer, extra = 4): number[] {
  const sums = volume.checksums!
  const wrong: number[] = []
  const blocks = Math.ceil(bytes.length / BLOCK_BYTES) + extra
  for (let k = 0; k < blocks; k++) if (sums.inspect(k).sum !== paddedChecksum(bytes.subarray(k * BLOCK_BYTES, (k + 1) * BLOCK_BYTES))) wrong.push(k)
  return wrong
}

const limits = { idleTimeoutMs: 10_000, maxVolumeBytes: 1 << 30 }

t.test('aligned, unaligned and past-the-end writes, a shrink and a whole replace keep every checksum the CRC of the source replica', async (t) => {
  const h = harness(t)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b' }], { fresh: true })
  t.equal(volume.checksums!.coveredBytes(), 0, 'an empty volume')
  await writeVolume(volume, 0, randomBytes(256 * KiB))
  t.same(wrongBlocks(volume, await h.readFile('a')), [], 'aligned')
  await writeVolume(volume, 1000, randomBytes(10_001))
  await writeVolume(volume, 4095, randomBytes(2))
  await writeVolume(volume, 70_000, randomBytes(100), { chunk: 7 })
  t.same(wrongBlocks(volume, await h.readFile('a')), [], 'unaligned, edges read back')
  await writeVolume(volume, 300 * KiB + 123, randomBytes(5000))
  t.equal(volume.size, 300 * KiB + 5123)
  t.same(wrongBlocks(volume, await h.readFile('a')), [], 'past the end: zeros between, a short last block padded')
  await writeVolume(volume, 0, randomBytes(10), { resizeTo: 100 * KiB + 17 })
  t.equal(volume.size, 100 * KiB + 17)
  t.same(wrongBlocks(volume, await h.readFile('a'), 80), [], 'shrunk: the last block padded, the ones past it zeros')
  await writeVolume(volume, 0, randomBytes(10), { resizeTo: 200 * KiB })
  t.same(wrongBlocks(volume, await h.readFile('a'), 80), [], 'grown by a complete length: zeros')
  const replacement = randomBytes(3 * MiB + 5)
  await volume.write({ offset: 0, length: replacement.length, resizeTo: 'end' }, Readable.from([replacement.subarray(0, 1000), replacement.subarray(1000)]), limits)
  t.ok((await h.readFile('a')).equals(replacement))
  t.same(wrongBlocks(volume, replacement, 80), [], 'a whole replace swaps in the checksums computed while staging')
  t.equal(volume.status().checksums!.coveredPercent, 100)
  t.equal(volume.status().checksums!.coveredBytes, replacement.length)
  const smaller = randomBytes(5000)
  await volume.write({ offset: 0, length: smaller.length, resizeTo: 'end' }, Readable.from([smaller]), limits)
  t.same(wrongBlocks(volume, smaller, 800), [], 'a smaller replace: zeros past it')
})

t.test('overlapping concurrent writes, landing in any order, leave each block the CRC of its final bytes', async (t) => {
  const h = harness(t)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b' }], { fresh: true })
  await writeVolume(volume, 0, randomBytes(64 * KiB))
  for (let round = 0; round < 20; round++) {
    const writes = Array.from({ length: 12 }, () => {
      const offset = randomInt(0, 60 * KiB)
      return writeVolume(volume, offset, randomBytes(randomInt(1, 9000)))
    })
    await Promise.all(writes)
    // A replica still being filled, or blocks left to coverage (an edge that could not be read back), settle first.
    const settled = await eventually(() => volume.status().replicas.every((r) => r.state === 'in-sync') && volume.checksums!.fullyCovered, 'in sync and covered', 10_000).then(
      () => true,
      () => false,
    )
    if (!settled) t.comment(`round ${round}: not settled: ${JSON.stringify(volume.status().replicas)} ${JSON.stringify(h.log.entries.slice(-10))}`)
    const a = await h.readFile('a')
    if (!t.ok(a.equals(await h.readFile('b')), 'replicas agree', { replicas: volume.status().replicas, log: h.log.entries.slice(-10) })) return
    const wrong = wrongBlocks(volume, a)
    if (wrong.length > 0) t.fail(`round ${round}: blocks ${wrong.join(', ')} disagree`)
  }
  t.pass('20 rounds of 12 overlapping writes')
})

t.test('an async-only volume (buffered writes) keeps checksums right too', async (t) => {
  const h = harness(t)
  const volume = await h.openVolume([{ id: 'a', mode: 'async' }], { fresh: true })
  await Promise.all(Array.from({ length: 10 }, () => writeVolume(volume, randomInt(0, 40 * KiB), randomBytes(randomInt(1, 9000)))))
  t.same(wrongBlocks(volume, await h.readFile('a')), [])
})

t.test('a volume over an existing file starts uncovered and is checksummed in the background; a reopen trusts the file', async (t) => {
  const h = harness(t)
  const data = randomBytes(5 * MiB + 300)
  await h.seed('a', data)
  const volume = await h.openVolume([{ id: 'a' }], { fresh: true })
  t.ok(volume.status().checksums!.coveredBytes < data.length, 'not covered at once')
  await eventually(() => volume.status().checksums!.coveredPercent === 100, 'coverage')
  t.same(wrongBlocks(volume, data), [], 'covered from the file')
  await writeVolume(volume, 12345, randomBytes(3))
  const after = await h.readFile('a')
  await volume.close(0)
  h.forget(volume)
  const again = await h.openVolume([{ id: 'a' }], { fresh: false })
  t.equal(again.status().checksums!.coveredPercent, 100, 'closed cleanly: everything trusted at once')
  t.same(wrongBlocks(again, after), [])
})

t.test('switching checksums off deletes the store; on again starts uncovered', async (t) => {
  const h = harness(t)
  const volume = await h.openVolume([{ id: 'a' }], { fresh: true })
  await writeVolume(volume, 0, randomBytes(2 * MiB))
  const path = volume.checksumsPath
  await eventually(() => fs.stat(path).then(() => true, () => false), 'the file')
  await volume.setChecksums(false)
  t.equal(volume.checksums, null)
  t.equal(volume.status().checksums!.enabled, false)
  await t.rejects(fs.stat(path), 'deleted')
  await writeVolume(volume, 100, randomBytes(5000))
  await volume.setChecksums(true)
  await eventually(() => volume.status().checksums!.coveredPercent === 100, 'coverage')
  t.same(wrongBlocks(volume, await h.readFile('a')), [])
})
