import t from 'tap'
import { promises as fs } from 'node:fs'
import { readJournal } from '../../src/engine/journal.js'
import { volumeStatusSchema } from '../../src/engine/status.js'
import {
  Harness,
  readVolume,
  settledFiles,
  SOON_MS,
  turns,
  within,
  writeVolume,
} from '../helpers/engine.js'
import { pattern } from '../helpers/pattern.js'

const KiB = 1024

function harness(t: { testdir(): string; teardown(fn: () => unknown): void }): Harness {
  const h = new Harness(t.testdir())
  t.teardown(() => h.closeAll())
  return h
}

const rangesOf = (found: Awaited<ReturnType<typeof readJournal>>) => (found.kind === 'ok' ? [...found.dirty] : found)

/** Every replica's file equals `expected`. */
function allEqual(files: Map<string, Buffer>, expected: Buffer): Record<string, boolean> {
  return Object.fromEntries([...files].map(([id, bytes]) => [id, bytes.equals(expected)]))
}

t.test('a fresh volume over an existing file keeps its bytes and resyncs the other replicas', async (t) => {
  const h = harness(t)
  const data = pattern(300 * KiB, 1)
  await h.seed('a', data)
  await h.seed('b', pattern(500 * KiB, 2)) // different and longer: must be overwritten and cut
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b' }, { id: 'c', mode: 'async' }], {
    fresh: true,
    // Hold the first copy to each new replica so the state right after open can be seen.
    before: (id, file) => id !== 'a' && file.writeGate.arm(1),
  })
  t.equal(volume.size, data.length, 'the size is the existing file’s')
  const a = volume.replica('a')!
  const b = volume.replica('b')!
  const c = volume.replica('c')!
  t.equal(a.state, 'in-sync', 'the first reading replica is the truth')
  t.equal(a.dirtyBytes, 0)
  for (const r of [b, c]) {
    t.equal(r.state, 'resyncing', `${r.id} is resyncing`)
    t.equal(r.dirtyBytes, data.length, `${r.id} is wholly dirty`)
  }
  t.same(volume.source(), a, 'reads and copies come from a')
  t.ok((await h.readFile('a')).equals(data), 'a is untouched')
  const early = await readVolume(volume, 1000, 5000)
  t.ok(early.bytes.equals(data.subarray(1000, 6000)), 'reads during the resync return the existing bytes')

  for (const id of ['b', 'c']) h.file(id).writeGate.open()
  const files = await settledFiles(h, volume)
  t.same(allEqual(files, data), { a: true, b: true, c: true }, 'every replica ends identical to the existing file')
  for (const r of volume.replicas) {
    t.equal(r.state, 'in-sync', `${r.id} in-sync`)
    t.equal(r.dirtyBytes, 0)
    t.equal(r.resyncing, false)
  }
  t.same(h.file('b').truncates, [data.length], 'the longer replica was cut to the volume size')
  t.same(h.log.entries.filter((e) => e.level === 'warn'), [], 'nothing to warn about')
})

t.test('a write session: sync replicas hold each chunk before write() resolves, async ones follow', async (t) => {
  const h = harness(t)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true })
  const a = volume.replica('a')!
  const b = volume.replica('b')!
  t.equal(volume.size, 0)
  const data = pattern(256 * KiB, 3)
  const chunk = 32 * KiB
  // Hold write-behind's first copy: b stays behind while we look.
  h.file('b').writeGate.arm(1)

  const session = await volume.beginWrite({ offset: 0, length: data.length, resizeTo: null })
  t.equal(b.state, 'in-sync', 'an intended write that has sent nothing yet leaves b lacking nothing')
  t.equal(b.dirtyBytes, 0, 'the journal holds the intent, but no byte is missing yet')
  t.equal(a.state, 'in-sync', 'the sync replica stays in-sync')
  let landed = true
  for (let at = 0; at < data.length; at += chunk) {
    await session.write(data.subarray(at, at + chunk))
    if (at === 0) t.equal(b.state, 'behind', 'b is behind once the first chunk is written')
    const onDisk = await h.readFile('a')
    landed &&= onDisk.subarray(at, at + chunk).equals(data.subarray(at, at + chunk))
    landed &&= volume.size === at + chunk
  }
  t.ok(landed, 'every chunk was on a, and counted in the size, when its write() resolved')
  const group = await session.finish()
  t.ok((await h.readFile('a')).equals(data), 'a holds the whole write when finish() resolves')
  t.equal(group.length, data.length)
  t.match(group.find('a'), { status: 'done', bytes: data.length, mode: 'sync' }, 'a’s operation is done')
  t.match(group.find('b'), { status: 'started', mode: 'async' }, 'b’s operation waits for write-behind')
  t.equal(group.status, 'pending')
  t.equal(b.state, 'behind')
  t.equal(b.dirtyBytes, data.length, 'b lacks the whole write')
  t.ok(h.groups.get(group.id) === group, 'the group is registered')
  const read = await readVolume(volume, 0, data.length)
  t.ok(read.bytes.equals(data) && read.n === data.length, 'a read returns the write while b is behind')

  h.file('b').writeGate.open()
  await within(group.whenSettled(), SOON_MS, 'the group to settle')
  t.equal(group.status, 'done', 'the group is done once b holds the bytes')
  t.match(group.find('b'), { status: 'done', bytes: data.length, error: null })
  t.not(group.finishedAt, null)
  const files = await settledFiles(h, volume)
  t.same(allEqual(files, data), { a: true, b: true })
  t.equal(b.state, 'in-sync')
  t.equal(b.dirtyBytes, 0)
})

t.test('dirtyBytes and state are true at every moment while a throttled replica catches up', async (t) => {
  const h = harness(t)
  const rate = 512 * KiB
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async', maxBytesPerSecond: rate }], { fresh: true })
  const a = volume.replica('a')!
  const b = volume.replica('b')!
  const data = pattern(1536 * KiB, 4)
  const samples: Array<{ phase: 'writing' | 'finished'; where: string; dirty: number; state: string; aState: string; aDirty: number; status: number }> = []
  let phase: 'writing' | 'finished' = 'writing'
  const sample = (where: string) =>
    samples.push({
      phase,
      where,
      dirty: b.dirtyBytes,
      state: b.state,
      aState: a.state,
      aDirty: a.dirtyBytes,
      status: volume.status().replicas[1].dirtyBytes,
    })
  h.file('b').onWrite = () => sample('b write')
  h.file('a').onWrite = () => sample('a write')
  volume.on('operation', () => sample('operation'))
  volume.on('copied', () => sample('copied'))
  const ticker = setInterval(() => sample('timer'), 2)
  t.teardown(() => clearInterval(ticker))

  sample('before')
  const session = await volume.beginWrite({ offset: 0, length: null, resizeTo: null })
  sample('begun')
  for (let at = 0; at < data.length; at += 64 * KiB) {
    await session.write(data.subarray(at, at + 64 * KiB))
    sample('chunk')
  }
  const group = await session.finish()
  phase = 'finished'
  sample('finished')
  t.ok(b.dirtyBytes > 0, 'b is still behind when the write finishes (throttled)')
  await within(group.whenSettled(), SOON_MS, 'b to catch up')
  sample('settled')
  const files = await settledFiles(h, volume)
  clearInterval(ticker)
  sample('end')

  t.ok(samples.length > 50, `${samples.length} samples`)
  t.same(samples.filter((s) => s.dirty < 0), [], 'dirtyBytes is never negative')
  t.same(samples.filter((s) => s.status !== s.dirty), [], 'status() reports the same dirtyBytes')
  t.same(samples.filter((s) => (s.state === 'in-sync') !== (s.dirty === 0)), [], 'the async replica is in-sync exactly when nothing is dirty')
  t.same(samples.filter((s) => s.state !== 'in-sync' && s.state !== 'behind'), [], 'only in-sync or behind (no resync, no failure)')
  t.same(samples.filter((s) => s.aState !== 'in-sync' || s.aDirty !== 0), [], 'the sync source stays in-sync and clean throughout')
  const after = samples.filter((s) => s.phase === 'finished')
  const rises = after.slice(1).filter((s, i) => s.dirty > after[i].dirty)
  t.same(rises, [], 'once writes stop, dirtyBytes never grows')
  t.ok(after.length > 5 && after[0].dirty > 0 && after.at(-1)!.dirty === 0, 'it falls to zero')
  t.ok(after.some((s) => s.dirty > 0 && s.dirty < after[0].dirty), 'and was seen part way')
  t.same(allEqual(files, data), { a: true, b: true })
  t.ok(volumeStatusSchema.safeParse(volume.status()).success, 'status() matches its schema')
})

t.test('a write that overwrites a range while it is being copied is not lost (async replica)', async (t) => {
  const h = harness(t)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true })
  const first = pattern(64 * KiB, 5)
  const second = pattern(64 * KiB, 6)
  h.file('b').writeGate.arm(1)
  await writeVolume(volume, 0, first)
  await within(h.file('b').writeGate.whenHeld(), SOON_MS, 'write-behind to copy the first write')
  t.same(volume.replica('b')!.copying.toJSON(), [[0, first.length]], 'the first write is being copied to b')
  // The same range is written again while the old bytes are on their way to b.
  const group = await writeVolume(volume, 0, second)
  t.ok((await h.readFile('a')).equals(second), 'a has the second write')
  h.file('b').writeGate.open()
  await within(group.whenSettled(), SOON_MS, 'the second write’s group')
  const files = await settledFiles(h, volume)
  t.same(allEqual(files, second), { a: true, b: true }, 'b ends with the second write, not the stale copy')
  t.ok(h.file('b').writes.filter((w) => w.offset === 0).length >= 2, 'the range was copied again')
})

t.test('a write during the resync copy of a sync replica is not overwritten by the stale copy', async (t) => {
  const h = harness(t)
  const old = pattern(128 * KiB, 7)
  await h.seed('a', old)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b' }], { fresh: true, before: (id, f) => id === 'b' && f.writeGate.arm(1) })
  await within(h.file('b').writeGate.whenHeld(), SOON_MS, 'the resync copy to reach b')
  t.equal(volume.replica('b')!.state, 'resyncing')
  const fresh = pattern(16 * KiB, 8)
  const group = await writeVolume(volume, 0, fresh)
  const expected = Buffer.concat([fresh, old.subarray(fresh.length)])
  t.ok((await h.readFile('a')).equals(expected), 'a took the write')
  h.file('b').writeGate.open()
  await within(group.whenSettled(), SOON_MS, 'the write’s group')
  t.equal(group.status, 'done')
  const files = await settledFiles(h, volume)
  t.same(allEqual(files, expected), { a: true, b: true }, 'b holds the new bytes, not the stale copy')
})

t.test('close(0) with a backlog keeps it in the journal; the reopened volume resyncs it', async (t) => {
  const h = harness(t)
  const slow = { id: 'b', mode: 'async' as const, maxBytesPerSecond: KiB }
  const v1 = await h.openVolume([{ id: 'a' }, slow], { fresh: true })
  const data = pattern(256 * KiB, 9)
  const group = await writeVolume(v1, 0, data, { chunk: 64 * KiB })
  t.equal(v1.replica('b')!.dirtyBytes, data.length, 'b is far behind')
  h.forget(v1)
  await within(v1.close(0), 5000, 'close(0) despite the backlog')
  t.equal(group.find('b')!.status, 'started', 'b’s share of the write was never acknowledged')
  t.same(rangesOf(await readJournal(h.journalPath('b'))), [[0, data.length]], 'b’s journal holds the backlog')
  t.same(rangesOf(await readJournal(h.journalPath('a'))), [], 'a’s journal is clean')

  const v2 = await h.openVolume([{ id: 'a' }, { ...slow, maxBytesPerSecond: null }], {
    fresh: false,
    before: (id, f) => id === 'b' && f.writeGate.arm(1),
  })
  t.equal(v2.size, data.length)
  t.equal(v2.replica('a')!.state, 'in-sync')
  t.equal(v2.replica('b')!.state, 'resyncing', 'b resumes as resyncing')
  t.equal(v2.replica('b')!.dirtyBytes, data.length, 'with exactly the backlog')
  h.file('b').writeGate.open()
  const files = await settledFiles(h, v2)
  t.same(allEqual(files, data), { a: true, b: true }, 'and converges')
  t.same(h.log.entries.filter((e) => e.level === 'warn'), [])
})

t.test(
  'close(0) right after a fresh open over an existing file keeps the initial resync in the journal',
  {},
  async (t) => {
    const h = harness(t)
    const data = pattern(256 * KiB, 10)
    await h.seed('a', data)
    const slow = { id: 'b', mode: 'async' as const, maxBytesPerSecond: KiB }
    const v1 = await h.openVolume([{ id: 'a' }, slow], { fresh: true })
    t.equal(v1.replica('b')!.dirtyBytes, data.length, 'b must be filled')
    h.forget(v1)
    await v1.close(0)
    const found = await readJournal(h.journalPath('b'))
    t.ok(found.kind === 'ok' && found.dirty.covers(0, data.length), 'b’s journal says b lacks the file')
    const v2 = await h.openVolume([{ id: 'a' }, { ...slow, maxBytesPerSecond: null }], { fresh: false })
    t.equal(v2.replica('b')!.state, 'resyncing', 'the reopened volume does not take b as clean')
    const files = await settledFiles(h, v2, 3000)
    t.same(allEqual(files, data), { a: true, b: true })
  },
)

for (const damage of ['deleted', 'bad header', 'bad middle record'] as const) {
  t.test(`a journal ${damage} before reopen means a full resync, never clean`, async (t) => {
    const h = harness(t)
    const v1 = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true })
    const data = pattern(200 * KiB, 11)
    await writeVolume(v1, 0, data.subarray(0, 100 * KiB))
    await writeVolume(v1, 100 * KiB, data.subarray(100 * KiB))
    await settledFiles(h, v1)
    h.forget(v1)
    await v1.close(SOON_MS)
    const path = h.journalPath('b')
    t.same(rangesOf(await readJournal(path)), [], 'b was clean at close')
    // b's file is damaged too, so a resync that does not happen shows.
    await fs.writeFile(h.path('b'), Buffer.alloc(data.length, 0xee))
    const bytes = await fs.readFile(path)
    if (damage === 'deleted') await fs.rm(path)
    else if (damage === 'bad header') await fs.writeFile(path, Buffer.concat([Buffer.from('NOTAJRNL'), bytes.subarray(8)]))
    else {
      t.ok(bytes.length >= 16 + 2 * 24, 'the journal has records to damage')
      bytes[16 + 5] ^= 0xff
      await fs.writeFile(path, bytes)
    }

    const v2 = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], {
      fresh: false,
      before: (id, f) => id === 'b' && f.writeGate.arm(1),
    })
    const b = v2.replica('b')!
    t.equal(b.state, 'resyncing', 'b is not taken as clean')
    t.equal(b.dirtyBytes, data.length, 'all of it is to be copied')
    t.equal(v2.replica('a')!.state, 'in-sync', 'a keeps its clean journal')
    const warned = h.log.entries.some((e) => e.level === 'warn' && /journal corrupt/.test(e.msg))
    t.equal(warned, damage !== 'deleted', damage === 'deleted' ? 'a missing journal is not a corruption' : 'the corruption is logged')
    h.file('b').writeGate.open()
    const files = await settledFiles(h, v2)
    t.same(allEqual(files, data), { a: true, b: true }, 'b is rebuilt from a')
    t.same(rangesOf(await readJournal(path)), [], 'the journal now says nothing is dirty')
  })
}

t.test('a torn tail of a sealed journal costs a full resync, never a lost range', async (t) => {
  const h = harness(t)
  const slow = { id: 'b', mode: 'async' as const, maxBytesPerSecond: 64 * KiB }
  const v1 = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true })
  const data = pattern(64 * KiB, 12)
  await writeVolume(v1, 0, data)
  await settledFiles(h, v1)
  h.forget(v1)
  await v1.close(SOON_MS)
  const path = h.journalPath('b')
  const bytes = await fs.readFile(path)
  // A clean close sealed the journal: a record torn off its end (b's "clean" for the write) is damage, not a crash.
  await fs.writeFile(path, bytes.subarray(0, bytes.length - 7))
  t.match(await readJournal(path), { kind: 'corrupt', reason: /cut short/ }, 'a sealed journal that lost its last record is corrupt')
  const v2 = await h.openVolume([{ id: 'a' }, slow], { fresh: false })
  t.equal(v2.replica('b')!.state, 'resyncing')
  t.equal(v2.replica('b')!.dirtyBytes, data.length)
  const files = await settledFiles(h, v2)
  t.same(allEqual(files, data), { a: true, b: true })
})

t.test('both journals lost: the volume opens read-only, says why, and takes the truth the operator names', async (t) => {
  const h = harness(t)
  const data = pattern(50 * KiB, 13)
  await h.seed('a', data)
  await h.seed('b', pattern(50 * KiB, 14))
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b' }], { fresh: false })
  t.match(volume.status(), { state: 'read-only', error: { code: 'ENOTRUTH', message: /no replica is known to hold every acknowledged write.*"source"/ } }, 'no guess: read-only, and why')
  t.ok(h.log.entries.some((e) => e.level === 'warn' && /read-only/.test(e.msg)), 'logged at warn')
  await t.rejects(writeVolume(volume, 0, pattern(10, 1)), /read-only/, 'writes are refused')
  await volume.declareSource('a')
  t.equal(volume.status().state, 'ok', 'the operator named the truth')
  t.equal(volume.replica('b')!.state, 'resyncing')
  const files = await settledFiles(h, volume)
  t.same(allEqual(files, data), { a: true, b: true })
})

for (const durability of ['os', 'fsync'] as const) {
  t.test(`durability ${durability}, end to end`, async (t) => {
    const h = harness(t)
    const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true, durability })
    const probe = await fs.open(h.path('a'), 'r')
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> }
    await probe.close()
    const datasync = proto.datasync
    let handleSyncs = 0
    proto.datasync = function (this: unknown) {
      handleSyncs++
      return datasync.apply(this)
    }
    t.teardown(() => void (proto.datasync = datasync))
    const data = pattern(128 * KiB, 15)
    const group = await writeVolume(volume, 0, data, { chunk: 32 * KiB })
    const syncedAtFinish = h.file('a').syncs
    await within(group.whenSettled(), SOON_MS, 'write-behind')
    const files = await settledFiles(h, volume)
    proto.datasync = datasync
    t.same(allEqual(files, data), { a: true, b: true })
    if (durability === 'fsync') {
      t.ok(syncedAtFinish >= 1, 'the sync replica was synced before finish() resolved')
      t.ok(h.file('b').syncs >= 1, 'write-behind syncs each copy')
      t.ok(handleSyncs > h.file('a').syncs + h.file('b').syncs, `the journals were synced too (${handleSyncs} datasyncs in all)`)
    } else {
      t.equal(syncedAtFinish, 0, 'no file sync')
      t.equal(h.file('b').syncs, 0)
      t.equal(handleSyncs, 0, 'no datasync at all: journals included')
    }
  })
}

t.test('with only async replicas (buffered mode) writes converge', async (t) => {
  const h = harness(t)
  const volume = await h.openVolume([{ id: 'a', mode: 'async' }, { id: 'b', mode: 'async' }], { fresh: true })
  t.equal(volume.buffered, true, 'no sync replica: writes are buffered for the async ones')
  t.equal(volume.source()?.id, 'a', 'an async replica that lacks nothing is what a resync would copy from')
  const data = pattern(300 * KiB, 16)
  const group = await writeVolume(volume, 0, data, { chunk: 16 * KiB })
  t.equal(group.status, 'done', 'the buffered writes are done when finish() resolves')
  t.match(group.find('a'), { status: 'done', bytes: data.length })
  t.match(group.find('b'), { status: 'done', bytes: data.length })
  t.equal(volume.size, data.length)
  t.equal(volume.bufferedBytes, 0, 'nothing is left queued in memory')
  for (const r of volume.replicas) {
    t.equal(r.state, 'in-sync', `${r.id} in-sync`)
    t.equal(r.dirtyBytes, 0)
  }
  const files = await settledFiles(h, volume)
  t.same(allEqual(files, data), { a: true, b: true })
})

t.test(
  'with only async replicas (buffered mode) a read returns the written bytes',
  async (t) => {
    const h = harness(t)
    const volume = await h.openVolume([{ id: 'a', mode: 'async' }, { id: 'b', mode: 'async' }], { fresh: true })
    const data = pattern(64 * KiB, 17)
    await writeVolume(volume, 0, data)
    const read = await readVolume(volume, 0, data.length)
    t.equal(read.n, data.length, 'every byte is read')
    t.ok(read.bytes.equals(data), 'the bytes are the write')
  },
)

t.test(
  'a read from a named async replica returns its bytes',
  async (t) => {
    const h = harness(t)
    const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true })
    const data = pattern(64 * KiB, 18)
    await writeVolume(volume, 0, data)
    await settledFiles(h, volume)
    const read = await readVolume(volume, 0, data.length, 'b')
    t.equal(read.n, data.length)
    t.ok(read.bytes.equals(data))
  },
)

t.test('maxBytesPerSecond limits the copy rate', async (t) => {
  const h = harness(t)
  const rate = 64 * KiB
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async', maxBytesPerSecond: rate }], { fresh: true })
  const data = pattern(3 * rate, 19)
  const started = performance.now()
  const group = await writeVolume(volume, 0, data, { chunk: 16 * KiB })
  await within(group.whenSettled(), SOON_MS, 'the throttled copy')
  const b = h.file('b')
  const copied = b.bytesWritten
  const seconds = (b.writes.at(-1)!.at - started) / 1000
  t.equal(copied, data.length, 'everything was copied')
  // The bucket holds one second of tokens, so 3 seconds' worth takes at least 2 s: 1.5x the rate at most.
  t.ok(copied / seconds < 3 * rate, `copied ${copied} B in ${seconds.toFixed(2)} s: under 3x ${rate} B/s`)
  const files = await settledFiles(h, volume)
  t.same(allEqual(files, data), { a: true, b: true })
})

t.test('resize: "end" shrinks, a number shrinks', async (t) => {
  const h = harness(t)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true })
  const data = pattern(200 * KiB, 20)
  await writeVolume(volume, 0, data)
  await settledFiles(h, volume)

  const head = pattern(50 * KiB, 21)
  await writeVolume(volume, 0, head, { resizeTo: 'end' })
  t.equal(volume.size, head.length, '"end": the volume ends where the write did')
  t.equal((await fs.stat(h.path('a'))).size, head.length, 'the sync replica is cut before finish() resolves')
  let files = await settledFiles(h, volume)
  t.same(allEqual(files, head), { a: true, b: true }, 'the async replica is cut by write-behind')

  await writeVolume(volume, 0, Buffer.alloc(0), { resizeTo: 20 * KiB })
  t.equal(volume.size, 20 * KiB)
  files = await settledFiles(h, volume)
  t.same(allEqual(files, head.subarray(0, 20 * KiB)), { a: true, b: true }, 'a declared smaller length shrinks every replica')
})

t.test(
  'resize: a number past the end grows every replica',
  {},
  async (t) => {
    const h = harness(t)
    const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true })
    const head = pattern(10 * KiB, 22)
    await writeVolume(volume, 0, head, { resizeTo: 100 * KiB })
    t.equal(volume.size, 100 * KiB)
    t.equal((await fs.stat(h.path('a'))).size, 100 * KiB, 'the sync replica grows at once')
    const files = await settledFiles(h, volume, 3000)
    t.same(allEqual(files, Buffer.concat([head, Buffer.alloc(90 * KiB)])), { a: true, b: true }, 'both end zero-filled to the new size')
  },
)

t.test(
  'resize in buffered mode cuts the replica files',
  {},
  async (t) => {
    const h = harness(t)
    const volume = await h.openVolume([{ id: 'a', mode: 'async' }, { id: 'b', mode: 'async' }], { fresh: true })
    await writeVolume(volume, 0, pattern(100 * KiB, 23))
    const head = pattern(10 * KiB, 24)
    await writeVolume(volume, 0, head, { resizeTo: 'end' })
    t.equal(volume.size, head.length)
    const files = await settledFiles(h, volume, 3000)
    t.same(allEqual(files, head), { a: true, b: true })
  },
)

t.test('a failing read fails over to the next reading replica', async (t) => {
  const h = harness(t)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b' }], { fresh: true })
  const data = pattern(32 * KiB, 25)
  await writeVolume(volume, 0, data)
  await settledFiles(h, volume)
  h.file('a').readError = Object.assign(new Error('bad sector'), { code: 'EIO' })
  const group = volume.newGroup('read', 0)
  const bytes = Buffer.alloc(data.length)
  t.equal(await volume.readInto(bytes, 0, group), data.length)
  t.ok(bytes.equals(data), 'the bytes come from b')
  t.match(group.find('a'), { status: 'failed', error: { code: 'EIO' } })
  t.match(group.find('b'), { status: 'started', bytes: data.length })
  t.equal(volume.replica('a')!.state, 'failed')
  t.equal(volume.status().state, 'degraded')
  t.equal(volume.source(), volume.replica('b'), 'b is the source now')

  // A later write still lands on b and is kept for a: its backlog.
  await writeVolume(volume, 0, pattern(KiB, 26))
  t.equal(volume.replica('a')!.dirtyBytes, KiB, 'the failed replica keeps what it missed')
  h.file('b').readError = Object.assign(new Error('bad sector'), { code: 'EIO' })
  await t.rejects(readVolume(volume, 0, 10), { message: /read failed on replica any: EIO bad sector/, error: { code: 'EIO' } }, 'no replica left to read')
})

t.test('close waits for writes in flight and refuses new ones', async (t) => {
  const h = harness(t)
  const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true })
  const session = await volume.beginWrite({ offset: 0, length: 2 * KiB, resizeTo: null })
  await session.write(pattern(KiB, 27))
  h.forget(volume)
  let closed = false
  const closing = volume.close(SOON_MS).then(() => (closed = true))
  await turns(10)
  t.equal(closed, false, 'close waits for the open write')
  await t.rejects(volume.beginWrite({ offset: 0, length: 1, resizeTo: null }), /closing/, 'a new write is refused')
  await session.write(pattern(KiB, 28))
  await session.finish()
  await within(closing, SOON_MS, 'close')
  t.ok((await h.readFile('b')).equals(Buffer.concat([pattern(KiB, 27), pattern(KiB, 28)])), 'the grace period let b catch up')
  t.same(rangesOf(await readJournal(h.journalPath('b'))), [], 'so its journal is clean')
})

t.test(
  'when the only holder of the bytes fails, a read does not return a lagging replica’s stale bytes',
  {},
  async (t) => {
    const h = harness(t)
    // b copies at 1 KiB/s: it will not have the write for minutes.
    const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async', maxBytesPerSecond: KiB }], { fresh: true })
    const data = pattern(64 * KiB, 29)
    await writeVolume(volume, 0, data)
    t.equal(volume.replica('b')!.dirtyBytes, data.length, 'b lacks the write')
    h.file('a').readError = Object.assign(new Error('bad sector'), { code: 'EIO' })
    let result: { bytes: Buffer; n: number } | Error
    try {
      result = await readVolume(volume, 0, data.length)
    } catch (err) {
      result = err as Error
    }
    t.ok(result instanceof Error || result.bytes.equals(data), 'either an error or the written bytes, never what b held before the write')
  },
)

t.test(
  'a replica file lost while the volume was closed is failed on reopen (never recreated), and a full resync brings it back',
  {},
  async (t) => {
    const h = harness(t)
    const v1 = await h.openVolume([{ id: 'a' }, { id: 'b' }], { fresh: true })
    const data = pattern(64 * KiB, 30)
    await writeVolume(v1, 0, data)
    await settledFiles(h, v1)
    h.forget(v1)
    await v1.close(SOON_MS)
    await fs.rm(h.path('b'))
    const v2 = await h.openVolume([{ id: 'a' }, { id: 'b' }], { fresh: false })
    t.equal(v2.replica('b')!.state, 'failed', 'b is failed: its file vanished behind the server')
    t.match(v2.replica('b')!.error, { code: 'ECHANGED', message: /missing/ }, 'with a clear error')
    t.equal(await fs.stat(h.path('b')).catch(() => null), null, 'and the file is not recreated')
    t.ok(h.log.entries.some((e) => e.level === 'warn' && /changed behind the server/.test(e.msg)), 'logged at warn')
    // The operator puts a new disk in place and asks for a resync: b is copied whole.
    await v2.resync(v2.replica('b')!, true)
    const files = await settledFiles(h, v2, 3000)
    t.same(allEqual(files, data), { a: true, b: true })
  },
)

t.test(
  'an empty write leaves an async replica in-sync with nothing dirty',
  {},
  async (t) => {
    const h = harness(t)
    const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true })
    const b = volume.replica('b')!
    const session = await volume.beginWrite({ offset: 0, length: 0, resizeTo: null })
    t.equal(b.dirtyBytes, 0)
    t.equal(b.state, 'in-sync', 'in-sync exactly when nothing is dirty')
    await session.finish()
  },
)

t.test(
  'while a stream of unknown length is written, an async replica’s dirtyBytes are the bytes it lacks',
  {},
  async (t) => {
    const h = harness(t)
    const volume = await h.openVolume([{ id: 'a' }, { id: 'b', mode: 'async' }], { fresh: true, before: (id, f) => id === 'b' && f.writeGate.arm(1) })
    const b = volume.replica('b')!
    const session = await volume.beginWrite({ offset: 0, length: null, resizeTo: null })
    await session.write(pattern(KiB, 31))
    t.equal(b.dirtyBytes, KiB, 'one KiB written, one KiB lacking')
    await session.finish()
    t.equal(b.dirtyBytes, KiB)
    h.file('b').writeGate.open()
  },
)
