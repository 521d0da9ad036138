import { randomBytes, randomUUID } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { dirname, join } from 'node:path'
import fc from 'fast-check'
import t from 'tap'
import { BLOCK_BYTES, BlockChecksums, ContentChecksums, decodeHeader, encodeHeader, paddedChecksum, REGION_BYTES, ZERO_BLOCK_CRC, type ChecksumHost } from '../../src/engine/block-checksums.js'
import { checksum } from '../../src/engine/block-hash.js'
import { memoryLog } from '../helpers/engine.js'

const MiB = 1 << 20

/** A volume's content in memory, as a store's host sees it. */
class Disk implements ChecksumHost {
  bytes = Buffer.alloc(0)
  readonly log = memoryLog()
  constructor(
    readonly path: string,
    readonly uuid: string = randomUUID(),
  ) {}
  fsync = () => false
  size = () => this.bytes.length
  quiet = async () => {}
  // Each flush clears what no write touches meanwhile (the service waits QUIET_MS: see the test of that).
  quietMs = 0
  readTruth = async (buffer: Buffer, offset: number) => this.bytes.copy(buffer, 0, offset, offset + buffer.length)
  /** Writes `data` at `offset`, growing with zeros. */
  put(offset: number, data: Buffer): void {
    if (offset + data.length > this.bytes.length) this.bytes = Buffer.concat([this.bytes, Buffer.alloc(offset + data.length - this.bytes.length)])
    data.copy(this.bytes, offset)
  }
}

function wrongBlocks(store: BlockChecksums, bytes: Buffer): number[] {
  const wrong: number[] = []
  for (let k = 0; k < Math.ceil(bytes.length / BLOCK_BYTES) + 2; k++) if (store.inspect(k).sum !== paddedChecksum(bytes.subarray(k * BLOCK_BYTES, (k + 1) * BLOCK_BYTES))) wrong.push(k)
  return wrong
}

/** A whole client write through the store: held, landed on the disk, its checksums set. */
async function write(store: BlockChecksums, disk: Disk, offset: number, data: Buffer): Promise<void> {
  const held = await store.beginWrite(offset, offset + data.length)
  disk.put(offset, data)
  await store.endWrite(held, data, async (buffer, at) => disk.bytes.copy(buffer, 0, at, at + buffer.length))
}

/** The in-flux bit of `region` as the file on disk holds it. */
async function bitOnDisk(path: string, region: number): Promise<boolean> {
  const file = await fs.readFile(path)
  return ((file[4096 + (region >> 3)] >> (region & 7)) & 1) === 1
}

async function setup(t: { testdir(): string; teardown(fn: () => unknown): void }, size = 0) {
  const disk = new Disk(join(t.testdir(), 'checksums'))
  disk.bytes = randomBytes(size)
  const store = await BlockChecksums.open(disk, true)
  t.teardown(() => store.close())
  return { disk, store }
}

t.test('the header round-trips; torn, foreign and other formats are refused', async (t) => {
  const uuid = randomUUID()
  const header = encodeHeader({ flags: 1, capacityRegions: 1234, uuid })
  t.same(decodeHeader(header, uuid), { flags: 1, capacityRegions: 1234, uuid })
  t.equal(decodeHeader(header, randomUUID()), "another volume's checksums")
  const torn = Buffer.from(header)
  torn[25] ^= 1
  t.equal(decodeHeader(torn, uuid), 'torn header')
  t.equal(decodeHeader(Buffer.from('hello'), uuid), 'short file')
  t.equal(decodeHeader(Buffer.alloc(4096), uuid), 'not a checksums file')
})

t.test('the CRC of a zero-padded short block, and of content streamed in any chunks', async (t) => {
  t.equal(ZERO_BLOCK_CRC, checksum(Buffer.alloc(BLOCK_BYTES)))
  const data = randomBytes(3 * BLOCK_BYTES + 77)
  t.equal(paddedChecksum(data.subarray(3 * BLOCK_BYTES)), checksum(Buffer.concat([data.subarray(3 * BLOCK_BYTES), Buffer.alloc(BLOCK_BYTES - 77)])))
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 9000 }), { maxLength: 6 }), (lengths) => {
      const chunks = lengths.map((n) => randomBytes(n))
      const all = Buffer.concat(chunks)
      const content = new ContentChecksums()
      for (const c of chunks) content.add(c)
      const sums = content.finish()
      if (sums.length !== Math.ceil(all.length / BLOCK_BYTES)) return false
      return [...sums].every((s, k) => s === paddedChecksum(all.subarray(k * BLOCK_BYTES, (k + 1) * BLOCK_BYTES)))
    }),
  )
})

t.test('a closed store reopens with every checksum and everything covered; a missing, torn or foreign file leaves all uncovered', async (t) => {
  const dir = t.testdir()
  const disk = new Disk(join(dir, 'checksums'))
  let store = await BlockChecksums.open(disk, true)
  await write(store, disk, 0, randomBytes(3 * MiB + 100))
  await write(store, disk, 5000, randomBytes(10))
  t.equal(store.coveredBytes(), disk.size(), 'written from empty: all covered')
  await store.close()
  store = await BlockChecksums.open(disk, false)
  t.equal(store.coveredBytes(), disk.size(), 'round trip: all covered')
  t.same(wrongBlocks(store, disk.bytes), [], 'round trip: every checksum')
  await store.close()
  const good = await fs.readFile(disk.path)
  t.equal(decodeHeader(good, disk.uuid) && (decodeHeader(good, disk.uuid) as { flags: number }).flags, 1, 'closed cleanly')

  const damaged = Buffer.from(good)
  damaged[20] ^= 0xff
  const cases: Array<[string, () => Promise<void>, Disk]> = [
    ['missing', () => fs.rm(disk.path), disk],
    ['torn', () => fs.writeFile(disk.path, damaged), disk],
    ['foreign', () => fs.writeFile(disk.path, good), Object.assign(new Disk(disk.path), { bytes: disk.bytes })],
    ['short', () => fs.writeFile(disk.path, good.subarray(0, good.length - 100)), disk],
  ]
  for (const [what, damage, host] of cases) {
    await damage()
    const reopened = await BlockChecksums.open(host, false)
    t.equal(reopened.coveredBytes(), 0, `${what}: nothing covered`)
    t.ok(host.log.entries.some((e) => e.level === 'warn' && /not trusted/.test(e.msg)), `${what}: warned`)
    reopened.startCoverage()
    await t.resolves(until(() => reopened.fullyCovered), `${what}: coverage from the truth`)
    t.same(wrongBlocks(reopened, disk.bytes), [], `${what}: every checksum recomputed`)
    await reopened.close()
    await fs.writeFile(disk.path, good)
  }
})

async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

t.test('a region is in flux on disk before a write into it is sent; the flusher clears only regions no write touched or holds', async (t) => {
  const { disk, store } = await setup(t, 4 * MiB)
  t.equal(await bitOnDisk(disk.path, 1), true, 'a new store over data: in flux until covered')
  store.startCoverage()
  await until(() => store.fullyCovered)
  await store.flush()
  for (let r = 0; r < 4; r++) t.equal(await bitOnDisk(disk.path, r), false, `region ${r} covered and flushed: clear`)

  const first = await store.beginWrite(REGION_BYTES + 10, REGION_BYTES + 20)
  t.equal(await bitOnDisk(disk.path, 1), true, 'set on disk when beginWrite resolves, before any byte is sent')
  disk.put(REGION_BYTES + 10, Buffer.alloc(10, 7))
  await store.endWrite(first, Buffer.alloc(10, 7), async (b, at) => disk.bytes.copy(b, 0, at, at + b.length))
  const held = await store.beginWrite(3 * REGION_BYTES, 3 * REGION_BYTES + 4096)
  t.equal(await bitOnDisk(disk.path, 3), true)
  await store.flush()
  t.equal(await bitOnDisk(disk.path, 1), false, 'the finished write is flushed and its region cleared')
  t.equal(await bitOnDisk(disk.path, 3), true, 'a region with a write in flight stays in flux')

  // A kill -9 now: the region in flux is uncovered at the next open, the rest trusted as flushed.
  const crashed = join(dirname(disk.path), 'crashed')
  await fs.copyFile(disk.path, crashed)
  disk.put(3 * REGION_BYTES, Buffer.alloc(4096, 9))
  await store.endWrite(held, Buffer.alloc(4096, 9), async (b, at) => disk.bytes.copy(b, 0, at, at + b.length))
  const after = new Disk(crashed, disk.uuid)
  after.bytes = disk.bytes
  const reopened = await BlockChecksums.open(after, false)
  t.equal(reopened.covered(0, 3 * REGION_BYTES), true, 'regions not in flux are trusted')
  t.equal(reopened.covered(3 * REGION_BYTES, 3 * REGION_BYTES + 1), false, 'the region in flux is not')
  t.same(wrongBlocks(reopened, disk.bytes).filter((k) => k < 3 * 256), [], 'what it trusts is right')
  reopened.startCoverage()
  await until(() => reopened.fullyCovered)
  t.same(wrongBlocks(reopened, disk.bytes), [], 'and the recomputed region too')
  await reopened.close()

  // A region touched after the flusher's snapshot keeps its bit: a write into a region already in flux costs no I/O.
  const again = await store.beginWrite(2 * REGION_BYTES, 2 * REGION_BYTES + 1)
  const flushing = store.flush()
  const inFlux = store.beginWrite(2 * REGION_BYTES + 8192, 2 * REGION_BYTES + 8193)
  await store.endWrite(again, Buffer.alloc(1), async (b, at) => disk.bytes.copy(b, 0, at, at + b.length))
  await flushing
  await store.endWrite(await inFlux, Buffer.alloc(1), async (b, at) => disk.bytes.copy(b, 0, at, at + b.length))
  t.equal(await bitOnDisk(disk.path, 2), true, 'still in flux after a flush that overlapped its writes')
  await store.flush()
  t.equal(await bitOnDisk(disk.path, 2), false, 'cleared by the next')
})

t.test('mismatches: covered blocks that disagree, never ones a write touched since the ticket', async (t) => {
  const { disk, store } = await setup(t)
  await write(store, disk, 0, randomBytes(2 * MiB + 1000))
  const ticket = store.beginRead(0, disk.size())
  const read = Buffer.from(disk.bytes)
  t.same(store.mismatches(ticket, 0, read), [], 'the bytes as written verify')
  read[5 * BLOCK_BYTES + 3] ^= 1
  read[read.length - 1] ^= 1
  t.same(store.mismatches(ticket, 0, read), [5 * BLOCK_BYTES, 512 * BLOCK_BYTES], 'a flipped byte names its block, the short last one too')
  t.same(store.mismatches(ticket, 4 * BLOCK_BYTES, read.subarray(4 * BLOCK_BYTES, 8 * BLOCK_BYTES)), [5 * BLOCK_BYTES], 'at an offset')
  await write(store, disk, 5 * BLOCK_BYTES + 100, Buffer.alloc(1))
  t.equal(store.changedSince(ticket, 5 * BLOCK_BYTES, 6 * BLOCK_BYTES), true)
  t.equal(store.changedSince(ticket, 4 * BLOCK_BYTES, 5 * BLOCK_BYTES), false, 'a write to another block of the same region is not a change of this one')
  t.same(store.mismatches(ticket, 0, read), [512 * BLOCK_BYTES], 'a block written since the ticket is not judged')
  const during = await store.beginWrite(512 * BLOCK_BYTES, 512 * BLOCK_BYTES + 1)
  const fresh = store.beginRead(0, disk.size())
  t.same(store.mismatches(fresh, 0, read), [5 * BLOCK_BYTES], 'nor one with a write in flight (block 5 was rewritten before this ticket: judged)')
  await store.endWrite(during, Buffer.from([disk.bytes[512 * BLOCK_BYTES]]), async (b, at) => disk.bytes.copy(b, 0, at, at + b.length))
  t.throws(() => store.mismatches(fresh, 100, read), RangeError)
  // A read of the old last block, judged after the volume grew past it: not the zero-padded block the store holds.
  const short = Buffer.from(disk.bytes.subarray(512 * BLOCK_BYTES))
  short[0] ^= 1
  const before = store.beginRead(512 * BLOCK_BYTES, disk.size())
  t.same(store.mismatches(before, 512 * BLOCK_BYTES, short), [512 * BLOCK_BYTES], 'a short last block ending at the size is judged')
  disk.bytes = Buffer.concat([disk.bytes, Buffer.alloc(5000)])
  t.same(store.mismatches(before, 512 * BLOCK_BYTES, short), [], 'once the size has moved on, it is not')
})

t.test('exclusive holds writes off its range; cover fills only uncovered regions a write did not touch', async (t) => {
  const { disk, store } = await setup(t, 3 * MiB)
  t.equal(store.covered(0, 1), false)
  let landed = false
  const order: string[] = []
  const repair = store.exclusive(0, BLOCK_BYTES, async () => {
    await new Promise((resolve) => setTimeout(resolve, 30))
    order.push('repair')
  })
  const writing = Promise.resolve(store.beginWrite(100, 200)).then(async (held) => {
    order.push('write')
    landed = true
    await store.endWrite(held, Buffer.alloc(100), null)
  })
  await Promise.all([repair, writing])
  t.same(order, ['repair', 'write'], 'the write waited for the exclusive work')
  t.ok(landed)
  const ticket = store.beginRead(MiB, 2 * MiB)
  await write(store, disk, MiB + 10, Buffer.alloc(1, 1))
  store.cover(ticket, MiB, disk.bytes.subarray(MiB, 2 * MiB))
  t.equal(store.covered(MiB, 2 * MiB), false, 'written since the ticket: not covered')
  const second = store.beginRead(MiB, 2 * MiB)
  store.cover(second, MiB, disk.bytes.subarray(MiB, 2 * MiB))
  t.equal(store.covered(MiB, 2 * MiB), true, 'covered from bytes read with no write since')
  store.cover(store.beginRead(2 * MiB, 3 * MiB), 2 * MiB, disk.bytes.subarray(2 * MiB, 2 * MiB + 4096))
  t.equal(store.covered(2 * MiB, 3 * MiB), false, 'part of a region does not cover it')
})

t.test('a write still waiting for its blocks has changed nothing: a repair under an exclusive hold is not vetoed by it', async (t) => {
  const { disk, store } = await setup(t)
  await write(store, disk, 0, randomBytes(MiB))
  let waiting!: Promise<void>
  const seen = await store.exclusive(0, BLOCK_BYTES, async () => {
    const ticket = store.beginRead(0, BLOCK_BYTES)
    // A client write of the same block arrives during the repair: it waits for the hold.
    waiting = Promise.resolve(store.beginWrite(100, 200)).then((held) => store.endWrite(held, Buffer.alloc(100), async (b, at) => disk.bytes.copy(b, 0, at, at + b.length)))
    await new Promise((resolve) => setTimeout(resolve, 10))
    return { changed: store.changedSince(ticket, 0, BLOCK_BYTES), bad: store.mismatches(ticket, 0, disk.bytes.subarray(0, BLOCK_BYTES)) }
  })
  t.same(seen, { changed: false, bad: [] }, 'the queued write is no change')
  await waiting
  const ticket = store.beginRead(0, BLOCK_BYTES)
  const during = await store.beginWrite(0, 10)
  t.equal(store.changedSince(ticket, 0, BLOCK_BYTES), true, 'once it holds the block, it is')
  await store.endWrite(during, Buffer.alloc(10), null)
})

t.test('property: random overlapping writes landing in random order leave every checksum the CRC of the final bytes', async (t) => {
  const dir = t.testdir()
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ offset: fc.integer({ min: 0, max: 3 * MiB }), length: fc.integer({ min: 1, max: 20_000 }), delay: fc.integer({ min: 0, max: 3 }) }), { minLength: 1, maxLength: 25 }),
      fc.integer({ min: 0, max: 2 * MiB }),
      async (writes, initial) => {
        const disk = new Disk(join(dir, `p-${randomUUID()}`))
        disk.bytes = randomBytes(initial)
        const store = await BlockChecksums.open(disk, true)
        try {
          store.startCoverage()
          await until(() => store.fullyCovered)
          await Promise.all(
            writes.map(async ({ offset, length, delay }) => {
              const data = randomBytes(length)
              const held = await store.beginWrite(offset, offset + length)
              // Lands after a random number of turns: writes that do not overlap complete in any order.
              for (let i = 0; i < delay; i++) await new Promise((resolve) => setImmediate(resolve))
              disk.put(offset, data)
              await store.endWrite(held, data, async (b, at) => disk.bytes.copy(b, 0, at, Math.min(at + b.length, disk.bytes.length)))
            }),
          )
          return wrongBlocks(store, disk.bytes).length === 0 && store.fullyCovered
        } finally {
          await store.close()
        }
      },
    ),
    { numRuns: 60 },
  )
  t.pass('60 runs')
})

t.test('a file too small for a growing volume is rewritten larger; regions past an old file are uncovered at open', async (t) => {
  const { disk, store } = await setup(t)
  await write(store, disk, 100 * MiB, randomBytes(5000))
  t.equal(store.coveredBytes(), disk.size(), 'grown past the first capacity: zeros between are covered')
  await store.flush()
  const reopened = await BlockChecksums.open(Object.assign(new Disk(disk.path, disk.uuid), { bytes: disk.bytes }), false)
  t.equal(reopened.covered(100 * MiB, 100 * MiB + 5000), true, 'the larger file holds the new region, flushed')
  t.same(wrongBlocks(reopened, disk.bytes).length, 0)
  await reopened.close()
})

t.test('a shrink and a whole replace hold their regions in flux until their checksums are in', async (t) => {
  const { disk, store } = await setup(t)
  await write(store, disk, 0, randomBytes(3 * MiB))
  await store.flush()
  t.equal(await bitOnDisk(disk.path, 2), false)
  const cut = await store.beginShrink(MiB + 100, 3 * MiB)
  t.equal(await bitOnDisk(disk.path, 1), true, 'the region of the new end is in flux before the files shrink')
  t.equal(await bitOnDisk(disk.path, 2), true)
  await store.flush()
  t.equal(await bitOnDisk(disk.path, 2), true, 'and stays so while the shrink is under way')
  disk.bytes = disk.bytes.subarray(0, MiB + 100)
  await store.endShrink(cut, async (b, at) => disk.bytes.copy(b, 0, at, at + b.length))
  t.same(wrongBlocks(store, disk.bytes), [], 'the new last block padded, zeros past it')
  await store.flush()
  t.equal(await bitOnDisk(disk.path, 2), false, 'cleared once flushed')

  const replacing = await store.beginReplace(2 * MiB)
  await store.flush()
  t.equal(await bitOnDisk(disk.path, 0), true, 'a replace keeps every region in flux')
  const content = randomBytes(2 * MiB)
  const sums = new ContentChecksums()
  sums.add(content)
  disk.bytes = content
  store.replaced(replacing, sums.finish(), content.length)
  t.same(wrongBlocks(store, content), [], 'the staged checksums are swapped in')
  await store.flush()
  t.equal(await bitOnDisk(disk.path, 0), false)
})

t.test('changedSince knows the latest changes block by block; a ticket older than them is judged by region', async (t) => {
  const { disk, store } = await setup(t)
  await write(store, disk, 0, randomBytes(2 * MiB))
  const ticket = store.beginRead(0, BLOCK_BYTES)
  for (let i = 0; i < 1000; i++) await write(store, disk, (10 + (i % 200)) * BLOCK_BYTES, Buffer.alloc(1))
  t.equal(store.changedSince(ticket, 0, BLOCK_BYTES), false, 'a thousand writes to other blocks of its region: block 0 unchanged')
  t.equal(store.changedSince(ticket, 10 * BLOCK_BYTES, 11 * BLOCK_BYTES), true, 'block 10 changed')
  t.equal(store.changedSince(ticket, REGION_BYTES, REGION_BYTES + BLOCK_BYTES), false, 'another region: unchanged')
  for (let i = 0; i < 100; i++) await write(store, disk, 20 * BLOCK_BYTES, Buffer.alloc(1))
  t.equal(store.changedSince(ticket, 0, BLOCK_BYTES), true, 'past what it knows block by block: any change in the region counts')
  t.equal(store.changedSince(ticket, REGION_BYTES, REGION_BYTES + BLOCK_BYTES), false, 'another region still unchanged')
})

t.test('the flusher clears a region only once no write has touched it for quietMs; a close clears every region no write holds', async (t) => {
  const { disk, store } = await setup(t)
  Object.assign(disk, { quietMs: 60_000 })
  await write(store, disk, 0, randomBytes(2 * MiB))
  await store.flush()
  t.equal(await bitOnDisk(disk.path, 0), true, 'written just now: still in flux, so the next write to it costs no bitmap write')
  const ticket = store.beginRead(0, 2 * MiB)
  await write(store, disk, 4096, randomBytes(10))
  t.equal(store.changedSince(ticket, 4096, 8192), true)
  await store.close()
  t.equal(await bitOnDisk(disk.path, 0), false, 'a clean close clears it')
  const reopened = await BlockChecksums.open(Object.assign(new Disk(disk.path, disk.uuid), { bytes: disk.bytes }), false)
  t.equal(reopened.covered(0, 2 * MiB), true, 'and the next open trusts it')
  t.same(wrongBlocks(reopened, disk.bytes), [])
  await reopened.close()
})

t.test("a block-aligned write no other holds against, into regions already in flux, takes no promise; precomputed sums land right", async (t) => {
  const { disk, store } = await setup(t)
  await write(store, disk, 0, randomBytes(MiB))
  const data = randomBytes(256 << 10)
  const held = store.beginWrite(64 << 10, (64 << 10) + data.length)
  t.notOk(held instanceof Promise, 'held at once: the region is in flux and nothing overlaps')
  const overlapping = store.beginWrite(100 << 10, 200 << 10)
  t.ok(overlapping instanceof Promise, 'an overlapping write waits')
  const first = held as Exclude<typeof held, Promise<unknown>>
  t.equal(store.captureEdges(first, async () => ({ from: null, refused: [] })), undefined, 'aligned: no edge block to read')
  store.precompute(first, data)
  disk.put(64 << 10, data)
  t.equal(store.endWrite(first, data, async () => t.fail('nothing to read back') as never), undefined, 'landed without a promise')
  const second = await overlapping
  const more = randomBytes(100 << 10)
  disk.put(100 << 10, more)
  // Unaligned edges' bytes are read back: a promise, as before.
  store.precompute(second, more)
  await store.endWrite(second, more, async (buffer, at) => disk.bytes.copy(buffer, 0, at, at + buffer.length))
  // A third write reuses a pooled array of the first: its sums are its own.
  const third = randomBytes(256 << 10)
  const h3 = await store.beginWrite(MiB, MiB + third.length)
  store.precompute(h3, third)
  disk.put(MiB, third)
  await store.endWrite(h3, third, async (buffer, at) => disk.bytes.copy(buffer, 0, at, at + buffer.length))
  t.same(wrongBlocks(store, disk.bytes), [], 'every checksum agrees with the bytes')
  const region = store.beginWrite(3 * MiB, 3 * MiB + BLOCK_BYTES)
  t.ok(region instanceof Promise, 'a region not yet in flux: its bit is written first')
  await store.endWrite(await region, Buffer.alloc(BLOCK_BYTES), null)
})
