import t from 'tap'
import fc from 'fast-check'
import nodeFs, { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import {
  Journal,
  readJournal,
  readJournalIdentity,
  replayJournal,
  WHOLE_FILE,
  type JournalIdentity,
  type JournalOptions,
  type RecoveredJournal,
} from '../../src/engine/journal.js'
import { RangeSet } from '../../src/engine/range-set.js'
import { scratch } from '../helpers/scratch.js'

const HEADER = 80
const RECORD = 24
/** Where the header keeps the salt that seeds every record's CRC. */
const SALT_AT = 72

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

/** A valid-checksum record built by hand for the journal `of` (its salt), at place `sequence`, to craft what encode() never produces. */
function rawRecord(of: Buffer, sequence: number, type: number, offset: number, length: number): Buffer {
  const record = Buffer.alloc(RECORD)
  record.writeUInt8(type, 4)
  record.writeUIntLE(sequence, 5, 3)
  record.writeBigUInt64LE(BigInt(offset), 8)
  record.writeBigUInt64LE(BigInt(length), 16)
  record.writeUInt32LE(crc32(record.subarray(4), of.readUInt32LE(SALT_AT)), 0)
  return record
}

/** Whether a replay is corrupt with a reason matching `reason`; anything else comes back as is, so t.same() shows it. */
function corrupt(found: RecoveredJournal, reason: RegExp): true | RecoveredJournal {
  return found.kind === 'corrupt' && reason.test(found.reason) ? true : found
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

t.test('a torn tail after a crash (unsealed) recovers the valid prefix', async (t) => {
  const dir = await scratch(t)
  const path = join(dir, 'r.journal')
  const j = await Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet())
  await j.markDirty(0, 10)
  await j.markDirty(20, 10)
  await j.markClean(0, 5)
  await j.markDirty(100, 10)
  // As a kill -9 leaves it: every record written, no seal.
  await j.close({ seal: false })
  const whole = await fs.readFile(path)
  t.equal(whole.length, HEADER + 4 * RECORD)
  const afterThree = [[5, 10], [20, 30]]

  for (const cut of [1, 5, RECORD / 2, RECORD - 1]) {
    const torn = whole.subarray(0, HEADER + 3 * RECORD + cut)
    t.same(okRanges(replayJournal(torn)), afterThree, `cut ${cut}: the first three records`)
  }
  t.same(okRanges(replayJournal(whole.subarray(0, HEADER))), [], 'just a header of a journal created empty: nothing dirty (a crash before any append looks the same)')

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
  await j.close({ seal: false })
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

  const unknownType = Buffer.concat([whole.subarray(0, HEADER + RECORD), rawRecord(whole, 1, 3, 0, 10), whole.subarray(HEADER + RECORD)])
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
  const initialArb = fc.array(fc.tuple(fc.integer({ min: 0, max: 4000 }), fc.integer({ min: 1, max: 300 })), { maxLength: 4 })
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), initialArb, fc.boolean(), fc.double({ min: 0, max: 1, noNaN: true }), async (ops, start, seal, where) => {
      const path = join(dir, `t${n++}.journal`)
      const initial = new RangeSet()
      for (const [offset, length] of start) initial.add(offset, offset + length)
      // No compaction: the file is exactly the initial set and the appends in order, so a prefix of it is a prefix of history.
      const j = await Modelled.create(path, { fsync: false }, initial)
      const prefixes: RangeSet[] = [j.model.clone()]
      const inFlight: Promise<void>[] = []
      for (const op of ops) {
        inFlight.push(op.clean ? j.clean(op.offset, op.length) : j.dirty(op.offset, op.length))
        prefixes.push(j.model.clone())
        if (op.await) await Promise.all(inFlight)
      }
      await j.journal.close({ seal })
      const bytes = await fs.readFile(path)
      const cut = Math.floor(where * bytes.length)
      const found = replayJournal(bytes.subarray(0, cut))
      if (cut < HEADER) return found.kind === 'corrupt'
      const records = Math.floor((cut - HEADER) / RECORD)
      // Sealed, any cut at all is told; unsealed, one into the records written with the header is.
      if (seal && cut < bytes.length) return found.kind === 'corrupt'
      if (records < initial.count) return found.kind === 'corrupt'
      if (found.kind !== 'ok') return false
      const durable = prefixes[records - initial.count]
      // Never clean by accident: every byte dirty in the durable prefix is still dirty...
      for (const [s, e] of durable) if (!found.dirty.covers(s, e)) return false
      // ...and, as the file holds exactly that prefix, nothing more either.
      return found.dirty.bytes === durable.bytes
    }),
    { numRuns: 300 },
  )
  t.pass('300 random truncations kept every durably dirty range, or were told')
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

// ---------------------------------------------------------------- identity, sequence and seal

const ID: JournalIdentity = { volume: '6f1c2a3e-9b8d-4c7a-a1e2-0f3b4c5d6e7f', replica: 'a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d', generation: 7 }
const OTHER_UUID = '11111111-2222-4333-8444-555555555555'

/** Removes `count` records from `at` (a record index) of a journal's bytes, keeping its header as is. */
function withoutRecords(bytes: Buffer, at: number, count = 1): Buffer {
  return Buffer.concat([bytes.subarray(0, HEADER + at * RECORD), bytes.subarray(HEADER + (at + count) * RECORD)])
}

t.test('identity round trip: written in the header, read back, checked against the expected one', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  const j = await Journal.create(path, RangeSet.of([0, 10]), { fsync: true }, () => new RangeSet(), ID)
  t.same(j.identity, ID)
  t.same(await readJournalIdentity(path), ID, 'the open journal carries it')
  await j.markDirty(100, 5)
  t.same(okRanges(await readJournal(path, ID)), [[0, 10], [100, 105]], 'open (unsealed): accepted for its own identity')
  await j.close()
  t.same(await readJournalIdentity(path), ID, 'the sealed journal too')
  t.same(okRanges(await readJournal(path, ID)), [[0, 10], [100, 105]], 'sealed: accepted for its own identity')
  t.same(okRanges(await readJournal(path)), [[0, 10], [100, 105]], 'without an expected identity it is not looked at')
  const upper = { volume: ID.volume.toUpperCase(), replica: ID.replica.toUpperCase(), generation: ID.generation }
  t.same(okRanges(await readJournal(path, upper)), [[0, 10], [100, 105]], 'UUIDs compare case-insensitively')
  t.equal(await readJournalIdentity(join(path, '..', 'nope')), undefined, 'no journal: no identity')
})

t.test('a journal of another volume, replica or generation is corrupt, with a reason', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  const j = await Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet(), ID)
  await j.markClean(0, 10)
  await j.close()
  const cases: Array<[string, JournalIdentity, RegExp]> = [
    ['another volume', { ...ID, volume: OTHER_UUID }, new RegExp(`^journal belongs to volume ${ID.volume}, not ${OTHER_UUID}$`)],
    ['another replica', { ...ID, replica: OTHER_UUID }, new RegExp(`^journal belongs to replica ${ID.replica}, not ${OTHER_UUID}$`)],
    ['an older generation (a stale journal)', { ...ID, generation: 8 }, /^journal belongs to generation 7 of replica .*, not 8$/],
    ['a newer generation (the volume’s record is stale)', { ...ID, generation: 6 }, /^journal belongs to generation 7 of replica .*, not 6$/],
    ['a different generation zero', { ...ID, generation: 0 }, /generation 7 .* not 0$/],
  ]
  for (const [what, expected, reason] of cases) t.equal(corrupt(await readJournal(path, expected), reason), true, what)

  const anonymous = join(path, '..', 'anonymous.journal')
  await (await Journal.create(anonymous, RangeSet.of([0, 1]), { fsync: false }, () => new RangeSet())).close()
  t.equal(corrupt(await readJournal(anonymous, ID), /^journal has no identity$/), true, 'a journal written without an identity, when one is expected')
  t.same(okRanges(await readJournal(anonymous)), [[0, 1]], 'and accepted when none is expected')
  t.equal(await readJournalIdentity(anonymous), undefined)
})

t.test('a malformed identity is refused before anything is written', async (t) => {
  const dir = await scratch(t)
  const path = join(dir, 'r.journal')
  for (const [what, bad] of [
    ['volume', { ...ID, volume: 'my-volume' }],
    ['replica', { ...ID, replica: 'b' }],
    ['generation', { ...ID, generation: -1 }],
    ['generation', { ...ID, generation: 1.5 }],
  ] as const) {
    await t.rejects(Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet(), bad), new RegExp(what), `bad ${what}`)
  }
  t.same(await fs.readdir(dir), [], 'no file was written')
})

t.test('a sealed journal with its last data record removed is corrupt', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  const j = await Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet(), ID)
  await j.markDirty(0, 32 * 1024)
  await j.markClean(0, 32 * 1024)
  await j.markDirty(64 * 1024, 32 * 1024)
  await j.close()
  const whole = await fs.readFile(path)
  t.equal(whole.length, HEADER + 3 * RECORD, 'sealed at exactly its records')
  t.same(okRanges(replayJournal(whole, ID)), [[64 * 1024, 96 * 1024]], 'whole: ok')
  t.equal(corrupt(replayJournal(whole.subarray(0, whole.length - RECORD), ID), /sealed journal holds 2 valid records, its seal says 3: cut short/), true, 'cut at a record boundary')
  t.equal(corrupt(replayJournal(whole.subarray(0, whole.length - 7), ID), /cut short/), true, 'the last record torn: not a crash, as the seal came after it')
  t.equal(corrupt(replayJournal(withoutRecords(whole, 1), ID), /sequence 2, not 1: a record is missing/), true, 'a record removed from the middle')
  const doubled = Buffer.concat([whole.subarray(0, HEADER + 2 * RECORD), whole.subarray(HEADER + RECORD)])
  t.equal(corrupt(replayJournal(doubled, ID), /sequence 1, not 2/), true, 'a record repeated')
  const extra = Buffer.concat([whole, rawRecord(whole, 3, 1, 0, 10)])
  t.equal(corrupt(replayJournal(extra, ID), /written after its seal/), true, 'a valid record after the seal')
  t.same(okRanges(replayJournal(Buffer.concat([whole, Buffer.alloc(RECORD + 5)]), ID)), [[64 * 1024, 96 * 1024]], 'zeros after the seal change nothing')
})

t.test('a sealed journal cut to its header is corrupt', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  // Created with nothing dirty: only the seal says there were records.
  const j = await Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet(), ID)
  await j.markDirty(0, 4096)
  await j.close()
  await fs.truncate(path, HEADER)
  t.equal(corrupt(await readJournal(path, ID), /sealed journal holds 0 valid records, its seal says 1/), true)

  // A journal sealed with no record at all, cut to its header, is itself: nothing to tell.
  const empty = await Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet(), ID)
  await empty.close()
  t.equal((await fs.stat(path)).size, HEADER)
  t.same(okRanges(await readJournal(path, ID)), [])
})

t.test('a journal created with dirty ranges and cut to its header after a crash is corrupt', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  const j = await Journal.create(path, RangeSet.of([0, 10], [20, 30], [40, 50]), { fsync: false }, () => new RangeSet(), ID)
  await j.markDirty(100, 10)
  await j.close({ seal: false })
  const whole = await fs.readFile(path)
  t.same(okRanges(replayJournal(whole, ID)), [[0, 10], [20, 30], [40, 50], [100, 110]], 'unsealed, whole: ok')
  t.equal(corrupt(replayJournal(whole.subarray(0, HEADER), ID), /journal cut short: 0 valid records, 3 were written with its header/), true, 'cut to its header')
  t.equal(corrupt(replayJournal(whole.subarray(0, HEADER + 2 * RECORD + 3), ID), /cut short: 2 valid records, 3/), true, 'cut inside the records written with the header')
  t.same(okRanges(replayJournal(whole.subarray(0, HEADER + 3 * RECORD), ID)), [[0, 10], [20, 30], [40, 50]], 'cut after them: a crash before the last append, ok')
})

t.test('a torn partial last record after a crash is accepted with the records before it', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  const j = await Journal.create(path, RangeSet.of([0, 10]), { fsync: true }, () => new RangeSet(), ID)
  await j.markDirty(100, 10)
  await j.markClean(0, 10)
  await j.markDirty(200, 10)
  await j.close({ seal: false })
  for (const keep of [1, 11, RECORD - 1]) {
    await fs.truncate(path, HEADER + 3 * RECORD + keep)
    t.same(okRanges(await readJournal(path, ID)), [[100, 110]], `${keep} bytes of the last record`)
  }
})

t.test('records of another journal file do not check out, even of the same identity', async (t) => {
  const dir = await scratch(t)
  const write = async (name: string) => {
    const j = await Journal.create(join(dir, name), new RangeSet(), { fsync: false }, () => new RangeSet(), ID)
    await j.markDirty(0, 10)
    await j.markDirty(20, 10)
    await j.close({ seal: false })
    return fs.readFile(join(dir, name))
  }
  const one = await write('one')
  const two = await write('two')
  t.not(one.readUInt32LE(SALT_AT), two.readUInt32LE(SALT_AT), 'each file has its own salt')
  const spliced = Buffer.concat([one.subarray(0, HEADER + RECORD), two.subarray(HEADER + RECORD)])
  t.same(okRanges(replayJournal(spliced, ID)), [[0, 10]], 'a foreign last record is no record (a torn tail)')
  const splicedMiddle = Buffer.concat([one.subarray(0, HEADER), two.subarray(HEADER, HEADER + RECORD), one.subarray(HEADER + RECORD)])
  t.equal(corrupt(replayJournal(splicedMiddle, ID), /bad record at byte 80 followed by valid ones/), true, 'a foreign record in the middle is corrupt')
})

t.test('a damaged header is corrupt', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  await (await Journal.create(path, RangeSet.of([0, 1]), { fsync: false }, () => new RangeSet(), ID)).close()
  const good = await fs.readFile(path)
  for (const at of [8, 12, 16, 33, 48, 56, 64, 72, 79]) {
    const bad = Buffer.from(good)
    bad[at] ^= 0x01
    t.match(replayJournal(bad, ID), { kind: 'corrupt', reason: 'bad header' }, `byte ${at} flipped`)
    t.match(replayJournal(bad), { kind: 'corrupt', reason: 'bad header' }, `byte ${at} flipped, no identity expected`)
  }
})

t.test('the older FMJOURN1 format is read as corrupt: it has no identity', async (t) => {
  const dir = await scratch(t)
  // As bench/peers.ts writes it: "FMJOURN1", 8 zero bytes, then 24-byte records.
  const header = Buffer.alloc(16)
  header.write('FMJOURN1')
  const record = Buffer.alloc(RECORD)
  record[4] = 1
  record.writeBigUInt64LE(10n, 16)
  record.writeUInt32LE(crc32(record.subarray(4)), 0)
  for (const [name, bytes] of [['header-only', header], ['with-a-record', Buffer.concat([header, record])]] as const) {
    const path = join(dir, `${name}.journal`)
    await fs.writeFile(path, bytes)
    const reason = /^journal has no identity \(older format\)$/
    t.equal(corrupt(await readJournal(path), reason), true, `${name}: corrupt without an expected identity`)
    t.equal(corrupt(await readJournal(path, ID), reason), true, `${name}: and with one`)
    t.equal(await readJournalIdentity(path), undefined)
  }
})

t.test('compaction keeps the identity, the numbering and the seal rules', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  let live = new RangeSet()
  const j = await Journal.create(path, new RangeSet(), { fsync: false, compactAfter: 2 }, () => live.clone(), ID)
  const salts = new Set<number>()
  for (let round = 0; round < 30; round++) {
    live.add(round * 100, round * 100 + 10)
    await j.markDirty(round * 100, 10)
    await j.markDirty(5000, 10)
    live.add(5000, 5010)
    await j.markClean(5000, 10)
    live.remove(5000, 5010)
    await j.flush()
    salts.add((await fs.readFile(path)).readUInt32LE(SALT_AT))
    t.same(okRanges(await readJournal(path, ID)), ranges(live), `round ${round}: the open journal reads back for its identity`)
  }
  t.ok(salts.size > 1, `the journal was compacted (${salts.size} files)`)
  t.ok(j.recordCount < 90, `and holds ${j.recordCount} of the 90 records appended`)
  t.same(await readJournalIdentity(path), ID)
  // The compacted file's header counts the records it was written with: cut back to it, it is told.
  const open = await fs.readFile(path)
  t.equal(corrupt(replayJournal(open.subarray(0, HEADER), ID), /journal cut short/), true, 'the compacted file cut to its header')
  t.equal(corrupt(replayJournal(open, { ...ID, generation: 8 }), /generation 7/), true, 'and it is still not another generation’s')
  await j.close()
  t.same(okRanges(await readJournal(path, ID)), ranges(live), 'sealed after compaction')
  const sealed = await fs.readFile(path)
  t.equal(corrupt(replayJournal(sealed.subarray(0, sealed.length - RECORD), ID), /cut short/), true, 'and its seal counts every record')
  live = new RangeSet()
})

t.test('close seals by default; close({ seal: false }) reads back as after a crash', async (t) => {
  const dir = await scratch(t)
  const flags = async (path: string) => (await fs.readFile(path))[12]
  const sealed = await Journal.create(join(dir, 'sealed'), new RangeSet(), { fsync: true }, () => new RangeSet(), ID)
  const unsealed = await Journal.create(join(dir, 'unsealed'), new RangeSet(), { fsync: true }, () => new RangeSet(), ID)
  t.equal(await flags(join(dir, 'sealed')), 1, 'an open journal: identity, no seal')
  await Promise.all([sealed.markDirty(0, 1), unsealed.markDirty(0, 1)])
  await sealed.close()
  await unsealed.close({ seal: false })
  t.equal(await flags(join(dir, 'sealed')), 3, 'closed: sealed')
  t.equal(await flags(join(dir, 'unsealed')), 1, 'closed unsealed: as it was')
  for (const name of ['sealed', 'unsealed']) t.same(okRanges(await readJournal(join(dir, name), ID)), [[0, 1]], `${name} reads back`)
  await t.rejects(sealed.markDirty(5, 1), /closed/)
})

t.test('an append made while close is flushing is written before the seal, or refused', async (t) => {
  const path = join(await scratch(t), 'r.journal')
  const j = await Journal.create(path, new RangeSet(), { fsync: false }, () => new RangeSet(), ID)
  const first = j.markDirty(0, 1)
  const closing = j.close()
  const late = j.markDirty(10, 1).then(
    () => 'written',
    () => 'refused',
  )
  await closing
  await first
  const outcome = await late
  const found = await readJournal(path, ID)
  t.same(okRanges(found), outcome === 'written' ? [[0, 1], [10, 11]] : [[0, 1]], `the late append was ${outcome}, and the seal agrees`)
})
