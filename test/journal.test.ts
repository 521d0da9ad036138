import t from 'tap'
import fc from 'fast-check'
import nodeFs, { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { Journal, readJournal, replayJournal, WHOLE_FILE, type JournalOptions, type RecoveredJournal } from '../src/journal.js'
import { RangeSet } from '../src/range-set.js'
import { scratch } from './helpers/scratch.js'

const HEADER = 16
const RECORD = 24

const ranges = (set: RangeSet): Array<[number, number]> => [...set]

/** The recovered ranges of an ok replay; anything else comes back as is, so t.same() shows it. */
function okRanges(found: RecoveredJournal): Array<[number, number]> | RecoveredJournal {
  return found.kind === 'ok' ? ranges(found.dirty) : found
}

/** A journal whose compaction snapshot is a model kept in step with every append, as a Replica does. */
class Modelled {
  readonly model = new RangeSet()
  constructor(readonly journal: Journal) {}

  static async create(path: string, options: JournalOptions, initial = new RangeSet()): Promise<Modelled> {
    let self: Modelled | undefined
    const journal = await Journal.create(path, initial, options, () => self!.model.clone())
    self = new Modelled(journal)
    self.model.addAll(initial)
    return self
  }

  dirty(offset: number, length: number): Promise<void> {
    this.model.add(offset, Math.min(WHOLE_FILE, offset + length))
    return this.journal.markDirty(offset, length)
  }

  clean(offset: number, length: number): Promise<void> {
    this.model.remove(offset, Math.min(WHOLE_FILE, offset + length))
    return this.journal.markClean(offset, length)
  }
}

/** Counts the writes and datasyncs made through every fs.FileHandle while `body` runs. */
async function countHandleCalls<T>(dir: string, body: (counts: { writes: number; syncs: number }) => Promise<T>): Promise<T> {
  const probe = await fs.open(join(dir, 'probe'), 'w')
  const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> }
  await probe.close()
  // Appends are positional fs.write calls on the journal's descriptor; syncs go through its FileHandle.
  const write = nodeFs.write
  const datasync = proto.datasync
  const counts = { writes: 0, syncs: 0 }
  nodeFs.write = function (this: unknown, ...args: unknown[]) {
    counts.writes++
    return (write as (...a: unknown[]) => void).apply(this, args)
  } as typeof nodeFs.write
  proto.datasync = function (this: unknown) {
    counts.syncs++
    return datasync.apply(this)
  }
  try {
    return await body(counts)
  } finally {
    nodeFs.write = write
    proto.datasync = datasync
  }
}

/** A valid-checksum record built by hand, to craft what encode() never produces. */
function rawRecord(type: number, offset: number, length: number): Buffer {
  const record = Buffer.alloc(RECORD)
  record.writeUInt8(type, 4)
  record.writeBigUInt64LE(BigInt(offset), 8)
  record.writeBigUInt64LE(BigInt(length), 16)
  record.writeUInt32LE(crc32(record.subarray(4)), 0)
  return record
}

t.test('markDirty and markClean replay to the expected set', async (t) => {
  const path = join(await scratch(t), 'j', 'r.journal')
  const j = await Modelled.create(path, { fsync: false })
  await Promise.all([j.dirty(0, 100), j.dirty(200, 50), j.clean(50, 10), j.dirty(1000, 1), j.clean(1000, 1)])
  await j.dirty(5000, 10)
  await j.clean(4990, 15)
  await j.journal.close()
  const found = await readJournal(path)
  t.same(okRanges(found), [[0, 50], [60, 100], [200, 250], [5005, 5010]])
  t.same(okRanges(found), ranges(j.model), 'equals the model')
  t.equal(j.journal.recordCount, 7, 'one record per append')
  t.equal((await fs.stat(path)).size, HEADER + 7 * RECORD, 'header plus fixed-size records')
})

t.test('create starts from the given set and replaces an old journal atomically', async (t) => {
  const dir = t.testdir({ 'r.journal': 'garbage that is not a journal at all, longer than a header' })
  const path = join(dir, 'r.journal')
  t.equal((await readJournal(path)).kind, 'corrupt', 'the old file is not a journal')
  const j = await Journal.create(path, RangeSet.of([10, 20], [30, 40]), { fsync: false }, () => new RangeSet())
  t.same(okRanges(await readJournal(path)), [[10, 20], [30, 40]], 'durable as soon as create resolves')
  t.equal(j.recordCount, 2)
  await j.markDirty(100, 1)
  await j.close()
  t.same(okRanges(await readJournal(path)), [[10, 20], [30, 40], [100, 101]])
  t.same((await fs.readdir(dir)).sort(), ['r.journal'], 'no temporary file is left behind')
})

t.test('WHOLE_FILE marks everything and clamps at the end', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  const j = await Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet())
  await j.markDirty(0, WHOLE_FILE)
  await j.markClean(0, 4096)
  await j.markDirty(10, WHOLE_FILE)
  await j.close()
  t.same(okRanges(await readJournal(path)), [[10, WHOLE_FILE]], 'offset + WHOLE_FILE is clamped to WHOLE_FILE')
})

t.test('group commit: appends made in one tick are written as one batch', async (t) => {
  const dir = await scratch(t)
  const path = join(dir, 'r.journal')
  const j = await Journal.create(path, new RangeSet(), { fsync: true }, () => new RangeSet())
  await countHandleCalls(dir, async (counts) => {
    const all: Promise<void>[] = []
    for (let i = 0; i < 200; i++) all.push(j.markDirty(i * 10, 5))
    await Promise.all(all)
    t.equal(counts.writes, 1, '200 appends in one tick: one write')
    t.equal(counts.syncs, 1, '200 appends in one tick: one datasync')
    t.equal(j.recordCount, 200, 'every record is written')
    t.equal((await fs.stat(path)).size, HEADER + 200 * RECORD)

    counts.writes = 0
    counts.syncs = 0
    for (let i = 0; i < 5; i++) await j.markClean(i * 10, 5)
    t.equal(counts.writes, 5, 'appends awaited one by one: one write each')
    t.equal(counts.syncs, 5, 'and one datasync each')
  })
  await j.close()
  const found = await readJournal(path)
  t.equal(found.kind, 'ok')
  if (found.kind === 'ok') {
    t.equal(found.dirty.count, 195)
    t.equal(found.dirty.bytes, 195 * 5)
  }
})

t.test('fsync option: datasync before the append resolves, and only when asked', async (t) => {
  const dir = await scratch(t)
  await countHandleCalls(dir, async (counts) => {
    const plain = await Journal.create(join(dir, 'plain.journal'), new RangeSet(), { fsync: false }, () => new RangeSet())
    counts.syncs = 0
    await Promise.all([plain.markDirty(0, 1), plain.markClean(0, 1)])
    await plain.markDirty(5, 5)
    t.equal(counts.syncs, 0, 'fsync: false never syncs an append')
    await plain.close()

    const synced = await Journal.create(join(dir, 'synced.journal'), new RangeSet(), { fsync: true }, () => new RangeSet())
    counts.syncs = 0
    const p = synced.markDirty(0, 1)
    t.equal(counts.syncs, 0, 'nothing synced before the batch is written')
    await p
    t.equal(counts.syncs, 1, 'the record was synced by the time markDirty resolved')
    await synced.markDirty(10, 1)
    t.equal(counts.syncs, 2, 'one datasync per batch')
    await synced.close()
  })
  t.same(okRanges(await readJournal(join(dir, 'synced.journal'))), [[0, 1], [10, 11]])
})

t.test('compaction rewrites the journal from the live set', async (t) => {
  const dir = await scratch(t)
  const path = join(dir, 'r.journal')
  const compactAfter = 4
  const j = await Modelled.create(path, { fsync: false, compactAfter })
  const sizes: number[] = []
  // Churn: the same few ranges are dirtied and cleaned over and over; the live set stays small.
  for (let round = 0; round < 50; round++) {
    await Promise.all([j.dirty(round % 7, 3), j.dirty(1000 + round, 2)])
    await j.clean(1000 + round, 2)
    await j.dirty(500, 10)
    if (round % 3 === 0) await j.clean(500, 10)
    sizes.push((await fs.stat(path)).size)
    // A compaction runs beside the appends: once it has switched files, the count is back within bounds.
    await j.journal.flush()
    t.ok(j.journal.recordCount <= compactAfter + 2 * j.model.count + 2, `round ${round}: ${j.journal.recordCount} records stay bounded`)
  }
  const maxRecords = (Math.max(...sizes) - HEADER) / RECORD
  t.ok(maxRecords < 50, `the file never grows with history (at most ${maxRecords} records, 200 appended)`)
  t.same(okRanges(await readJournal(path)), ranges(j.model), 'the live set survives compaction (read while open)')
  await j.journal.close()
  t.same(okRanges(await readJournal(path)), ranges(j.model), 'and after close')
  t.same((await fs.readdir(dir)).sort(), ['r.journal'], 'no temporary file is left behind')

  // Appends after a compaction land after the rewritten records.
  const again = await Modelled.create(path, { fsync: false, compactAfter: 1 }, RangeSet.of([0, 10]))
  for (let i = 0; i < 20; i++) await again.dirty(100 + i * 10, 5)
  for (let i = 0; i < 20; i += 2) await again.clean(100 + i * 10, 5)
  await again.journal.close()
  t.same(okRanges(await readJournal(path)), ranges(again.model))
})

t.test('a torn tail recovers the valid prefix', async (t) => {
  const dir = await scratch(t)
  const path = join(dir, 'r.journal')
  const j = await Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet())
  await j.markDirty(0, 10)
  await j.markDirty(20, 10)
  await j.markClean(0, 5)
  await j.markDirty(100, 10)
  await j.close()
  const whole = await fs.readFile(path)
  t.equal(whole.length, HEADER + 4 * RECORD)
  const afterThree = [[5, 10], [20, 30]]

  for (const cut of [1, 5, RECORD / 2, RECORD - 1]) {
    const torn = whole.subarray(0, HEADER + 3 * RECORD + cut)
    t.same(okRanges(replayJournal(torn)), afterThree, `cut ${cut}: the first three records`)
  }
  t.same(okRanges(replayJournal(whole.subarray(0, HEADER))), [], 'just a header: nothing dirty')

  for (const zeros of [1, RECORD, RECORD + 7, 3 * RECORD]) {
    const padded = Buffer.concat([whole, Buffer.alloc(zeros)])
    t.same(okRanges(replayJournal(padded)), [[5, 10], [20, 30], [100, 110]], `${zeros} trailing zeros are a torn tail`)
  }
  const garbage = Buffer.from('this is not a record, it is noise from a torn write....')
  t.same(okRanges(replayJournal(Buffer.concat([whole, garbage]))), [[5, 10], [20, 30], [100, 110]], 'trailing garbage is a torn tail')

  // A torn last record in place (its bytes half overwritten with zeros), as a crash mid-write leaves it.
  const halfZeroed = Buffer.from(whole)
  halfZeroed.fill(0, HEADER + 3 * RECORD + 12)
  t.same(okRanges(replayJournal(halfZeroed)), afterThree)

  // And through the file, as recovery reads it.
  await fs.truncate(path, HEADER + 2 * RECORD + 9)
  t.same(okRanges(await readJournal(path)), [[0, 10], [20, 30]])
})

t.test('a bad record followed by valid ones is corrupt', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  const j = await Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet())
  for (let i = 0; i < 5; i++) await j.markDirty(i * 100, 10)
  await j.close()
  const whole = await fs.readFile(path)

  for (const [record, byte] of [[0, 0], [1, 4], [2, 9], [3, 23]]) {
    const flipped = Buffer.from(whole)
    flipped[HEADER + record * RECORD + byte] ^= 0x40
    const found = replayJournal(flipped)
    t.equal(found.kind, 'corrupt', `record ${record} byte ${byte} flipped: corrupt`)
    if (found.kind === 'corrupt') t.match(found.reason, new RegExp(`byte ${HEADER + record * RECORD}\\b`), 'the reason names where')
  }
  const lastFlipped = Buffer.from(whole)
  lastFlipped[HEADER + 4 * RECORD + 10] ^= 1
  t.same(okRanges(replayJournal(lastFlipped)), [[0, 10], [100, 110], [200, 210], [300, 310]], 'the last record bad: a torn tail')

  const zeroedMiddle = Buffer.from(whole)
  zeroedMiddle.fill(0, HEADER + RECORD, HEADER + 2 * RECORD)
  t.equal(replayJournal(zeroedMiddle).kind, 'corrupt', 'a zeroed record in the middle (a lost sector) is corrupt')

  const unknownType = Buffer.concat([whole.subarray(0, HEADER + RECORD), rawRecord(3, 0, 10), whole.subarray(HEADER + RECORD)])
  t.equal(replayJournal(unknownType).kind, 'corrupt', 'a well-checksummed record of an unknown type is not trusted')

  await fs.writeFile(path, zeroedMiddle)
  t.equal((await readJournal(path)).kind, 'corrupt', 'readJournal reports it too')
})

t.test('a bad header is corrupt; a missing file is missing', async (t) => {
  const dir = t.testdir({ empty: '', short: 'FMJOURN1', 'not-a-dir': {} })
  const j = await Journal.create(join(dir, 'good'), RangeSet.of([0, 1]), { fsync: false }, () => new RangeSet())
  await j.close()
  const good = await fs.readFile(join(dir, 'good'))

  const wrongMagic = Buffer.from(good)
  wrongMagic[0] = 'X'.charCodeAt(0)
  t.match(replayJournal(wrongMagic), { kind: 'corrupt', reason: 'bad header' }, 'wrong magic')
  t.match(replayJournal(Buffer.alloc(0)), { kind: 'corrupt', reason: 'bad header' }, 'empty')
  t.match(replayJournal(good.subarray(0, HEADER - 1)), { kind: 'corrupt', reason: 'bad header' }, 'shorter than a header')
  t.match(replayJournal(Buffer.alloc(HEADER + RECORD)), { kind: 'corrupt', reason: 'bad header' }, 'all zeros')

  t.match(await readJournal(join(dir, 'empty')), { kind: 'corrupt' }, 'an empty file is corrupt, not clean')
  t.match(await readJournal(join(dir, 'short')), { kind: 'corrupt' }, 'a file cut inside its header is corrupt')
  t.same(await readJournal(join(dir, 'nope')), { kind: 'missing' }, 'no file: missing')
  t.same(await readJournal(join(dir, 'nowhere', 'nope')), { kind: 'missing' }, 'no directory: missing')
  t.match(await readJournal(join(dir, 'not-a-dir')), { kind: 'corrupt' }, 'an unreadable path is corrupt, never clean')
})

t.test('a closed journal refuses appends', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  const j = await Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet())
  const before = j.markDirty(0, 10)
  await j.close()
  await t.resolves(before, 'an append made before close is flushed by close')
  await t.rejects(j.markDirty(10, 10), /closed/)
  await t.rejects(j.markClean(0, 10), /closed/)
  t.same(okRanges(await readJournal(path)), [[0, 10]])
})

// ---------------------------------------------------------------- properties

const opArb = fc.record({
  clean: fc.boolean(),
  offset: fc.integer({ min: 0, max: 4000 }),
  length: fc.integer({ min: 1, max: 600 }),
  /** Wait for this append (and everything before it) before the next one: a batch boundary. */
  await: fc.boolean(),
})

t.test('property: any sequence of dirty/clean appends replays to the model', async (t) => {
  const dir = await scratch(t)
  let n = 0
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { maxLength: 60 }), fc.option(fc.integer({ min: 1, max: 8 })), fc.boolean(), async (ops, compactAfter, closeFirst) => {
      const path = join(dir, `p${n++}.journal`)
      const j = await Modelled.create(path, { fsync: false, compactAfter: compactAfter ?? undefined })
      const inFlight: Promise<void>[] = []
      for (const op of ops) {
        const p = op.clean ? j.clean(op.offset, op.length) : j.dirty(op.offset, op.length)
        inFlight.push(p)
        if (op.await) await Promise.all(inFlight)
      }
      if (closeFirst) await j.journal.close()
      else await j.journal.flush()
      const found = await readJournal(path)
      if (!closeFirst) await j.journal.close()
      return found.kind === 'ok' && JSON.stringify(ranges(found.dirty)) === JSON.stringify(ranges(j.model))
    }),
    { numRuns: 150 },
  )
  t.pass('150 random sequences replayed to their model')
})

t.test('property: truncating the file anywhere never loses a range that was durably dirty before the cut', async (t) => {
  const dir = await scratch(t)
  let n = 0
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), fc.double({ min: 0, max: 1, noNaN: true }), async (ops, where) => {
      const path = join(dir, `t${n++}.journal`)
      // No compaction: the file is exactly the appends in order, so a prefix of it is a prefix of history.
      const j = await Modelled.create(path, { fsync: false })
      const prefixes: RangeSet[] = [new RangeSet()]
      const inFlight: Promise<void>[] = []
      for (const op of ops) {
        inFlight.push(op.clean ? j.clean(op.offset, op.length) : j.dirty(op.offset, op.length))
        prefixes.push(j.model.clone())
        if (op.await) await Promise.all(inFlight)
      }
      await j.journal.close()
      const bytes = await fs.readFile(path)
      const cut = Math.floor(where * bytes.length)
      const found = replayJournal(bytes.subarray(0, cut))
      if (cut < HEADER) return found.kind === 'corrupt'
      if (found.kind !== 'ok') return false
      const durable = prefixes[Math.floor((cut - HEADER) / RECORD)]
      // Never clean by accident: every byte dirty in the durable prefix is still dirty...
      for (const [s, e] of durable) if (!found.dirty.covers(s, e)) return false
      // ...and, as the file holds exactly that prefix, nothing more either.
      return found.dirty.bytes === durable.bytes
    }),
    { numRuns: 300 },
  )
  t.pass('300 random truncations kept every durably dirty range')
})

t.test('property: garbage after the last record never changes the recovered set', async (t) => {
  const path = join(await scratch(t), 'g.journal')
  const j = await Modelled.create(path, { fsync: false })
  for (let i = 0; i < 10; i++) await j.dirty(i * 50, 20 + i)
  await j.clean(60, 100)
  await j.journal.close()
  const bytes = await fs.readFile(path)
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 3 * RECORD }), (tail) => {
      const found = replayJournal(Buffer.concat([bytes, tail]))
      // A random tail could in theory checksum as a record; a 32-bit CRC makes that astronomically rare.
      return found.kind === 'ok' && JSON.stringify(ranges(found.dirty)) === JSON.stringify(ranges(j.model))
    }),
    { numRuns: 500 },
  )
  t.pass('500 random tails ignored')
})

t.test('a compaction never holds up appends: they go on while its file is built, and land in it', async (t) => {
  const dir = await scratch(t)
  const path = join(dir, 'r.journal')
  const j = await Modelled.create(path, { fsync: false, compactAfter: 2 })
  // Hold the compacted file's creation until the test lets it go.
  const open = fs.open
  let release!: () => void
  const held = new Promise<void>((resolve) => (release = resolve))
  let compactions = 0
  fs.open = (async (file: string, ...rest: unknown[]) => {
    if (String(file).endsWith('.tmp')) {
      compactions++
      await held
    }
    return (open as (...a: unknown[]) => Promise<unknown>)(file, ...rest)
  }) as typeof fs.open
  t.teardown(() => void (fs.open = open))
  // Churn on one range: the log grows while the live set stays small, so a compaction starts.
  for (let i = 0; i < 6 && compactions === 0; i++) {
    await j.dirty(0, 10)
    await j.clean(0, 10)
  }
  for (let turn = 0; turn < 50 && compactions === 0; turn++) await new Promise((resolve) => setImmediate(resolve))
  t.equal(compactions, 1, 'a compaction started and is waiting for its file')
  // While it waits, appends are written and acknowledged as usual.
  for (let i = 0; i < 20; i++) await (i % 3 === 0 ? j.clean(i * 50, 20) : j.dirty(5000 + i * 10, 5))
  t.pass('twenty appends were acknowledged while the compaction was held')
  release()
  await j.journal.flush()
  fs.open = open
  t.same(okRanges(await readJournal(path)), ranges(j.model), 'the compacted journal holds the snapshot and every append made meanwhile')
  t.ok(j.journal.recordCount <= j.model.count + 21, `it is compact (${j.journal.recordCount} records for ${j.model.count} live ranges)`)
  await j.dirty(9000, 1)
  await j.journal.close()
  t.same(okRanges(await readJournal(path)), ranges(j.model), 'appends after the switch land in the new file')
  t.same((await fs.readdir(dir)).sort(), ['r.journal'], 'no temporary file is left behind')
})
