import t from 'tap'
import fc from 'fast-check'
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { FileMirror } from '../../src/engine/file-mirror.js'
import { EndOfFileError, type Operation } from '../../src/engine/operation.js'
import { OperationList } from '../../src/engine/operation-list.js'
import { LocalFile, type ReplicaFile } from '../../src/engine/replica-file.js'
import { scratch } from '../helpers/scratch.js'

// ---------------------------------------------------------------- helpers

/** Every file a test opens, closed when the whole file's tests end (some tests leave theirs open on purpose). */
const opened: ReplicaFile[] = []
t.teardown(() => Promise.all(opened.map((f) => f.close().catch(() => {}))))

async function openLocal(path: string): Promise<LocalFile> {
  const file = await LocalFile.open(path)
  opened.push(file)
  return file
}

/** Lets the event loop run `n` full turns (I/O callbacks included): used only to show that something has NOT happened. */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve))
}

/** Resolves with 'settled' if `p` settles before the next macrotask (setImmediate) runs, 'macrotask' otherwise. */
function beforeNextMacrotask(p: Promise<unknown>): Promise<'settled' | 'macrotask'> {
  return Promise.race([p.then(() => 'settled' as const), new Promise<'macrotask'>((resolve) => setImmediate(resolve, 'macrotask'))])
}

/**
 * A test-only slow medium: wraps a real LocalFile; every write blocks (before touching the disk)
 * until the test releases it. Reads are not blocked.
 */
class SlowFile implements ReplicaFile {
  private held: Array<() => void> = []
  private watchers: Array<{ check: () => boolean; resolve: () => void }> = []
  private passThrough = false
  writesEntered = 0
  writesFinished = 0

  constructor(readonly inner: ReplicaFile) {}

  static async open(path: string): Promise<SlowFile> {
    return new SlowFile(await openLocal(path))
  }

  get path(): string {
    return this.inner.path
  }

  /** Writes waiting for release. */
  get blocked(): number {
    return this.held.length
  }

  async write(buffer: Buffer, offset: number): Promise<number> {
    this.writesEntered++
    if (!this.passThrough) {
      await new Promise<void>((resolve) => {
        this.held.push(resolve)
        this.changed()
      })
    }
    const n = await this.inner.write(buffer, offset)
    this.writesFinished++
    this.changed()
    return n
  }

  /** Lets the oldest blocked write go to disk. */
  releaseOne(): void {
    const next = this.held.shift()
    if (!next) throw new Error('no blocked write to release')
    next()
  }

  /** Lets every blocked write, and every later one, go to disk. */
  releaseAll(): void {
    this.passThrough = true
    for (const next of this.held.splice(0)) next()
  }

  /** Resolves once `check()` holds (re-checked whenever a write blocks or finishes). */
  until(check: () => boolean): Promise<void> {
    if (check()) return Promise.resolve()
    return new Promise((resolve) => this.watchers.push({ check, resolve }))
  }

  private changed(): void {
    const waiting = this.watchers
    this.watchers = []
    for (const w of waiting) {
      if (w.check()) w.resolve()
      else this.watchers.push(w)
    }
  }

  read(buffer: Buffer, offset: number): Promise<number> {
    return this.inner.read(buffer, offset)
  }
  size(): Promise<number> {
    return this.inner.size()
  }
  truncate(size: number): Promise<void> {
    return this.inner.truncate(size)
  }
  sync(): Promise<void> {
    return this.inner.sync()
  }
  close(): Promise<void> {
    return this.inner.close()
  }
}

interface Snapshot {
  op: Operation<unknown, unknown>
  started: boolean
  done: boolean
  bytes: number
  error: Error | null
  startedAt: number | undefined
  finishedAt: number | undefined
  durationMs: number
}

/** Records a copy of each operation's state at the moment the 'operation' event fires. */
function recordEvents(mirror: FileMirror<any, any>): Snapshot[] {
  const events: Snapshot[] = []
  mirror.on('operation', (op) => {
    events.push({
      op,
      started: op.started,
      done: op.done,
      bytes: op.bytes,
      error: op.error,
      startedAt: op.startedAt,
      finishedAt: op.finishedAt,
      durationMs: op.durationMs,
    })
  })
  return events
}

/** Opens (creating) real files `names` in `dir`, a fresh `scratch(t)`. */
async function setup(dir: string, names: string[]): Promise<{ dir: string; files: LocalFile[] }> {
  const files = await Promise.all(names.map((name) => openLocal(join(dir, name))))
  return { dir, files }
}

t.setTimeout(120_000)

// ---------------------------------------------------------------- the seed README flows

t.test('README sync flow: write to both, read from one', async (t) => {
  const { dir, files } = await setup(await scratch(t), ['fast', 'slow'])
  const [f, f2] = files
  const mirror = new FileMirror({ queueSize: 16 })
  t.teardown(() => mirror.close(true))
  t.equal(mirror.addReadingFile(f), true)
  t.equal(mirror.addWritingFile(f), true)
  t.equal(mirror.addWritingFile(f2), true)

  const data = randomBytes(10)
  const writes = await mirror.writeAt(data, 0)
  t.equal(writes.size, 2, 'one operation per writing file')
  t.equal(writes.done, true, 'sync operations are done when the call returns')
  t.equal(await writes.waitForDone(10_000), true)
  t.same(writes.pending(), [], 'no pending operations')
  t.same(writes.failed(), [], 'no errors')
  for (const op of writes.operations) {
    t.equal(op.type, 'write')
    t.equal(op.async, false)
    t.equal(op.bytes, 10)
    t.equal(op.error, null)
  }
  t.same(await readFile(join(dir, 'fast')), data, 'first file holds the data')
  t.same(await readFile(join(dir, 'slow')), data, 'second file holds the data')

  const reads = await mirror.readAt(Buffer.alloc(10), 0)
  t.equal(reads.size, 1, 'reads go to the reading set only')
  t.equal(await reads.waitForDone(10_000), true)
  t.same(reads.pending(), [])
  t.same(reads.failed(), [])
  t.equal(reads.firstAsync(), undefined, 'no async operation')
  const first = reads.firstSync()!
  t.equal(first.file, f, 'read from the reading file')
  t.equal(first.bytes, 10)
  t.same(first.buffer, data, "data is in the operation's buffer")
})

t.test('README async flow: calls return before the operations are done', async (t) => {
  const { dir, files } = await setup(await scratch(t), ['fast', 'slow'])
  const [f, f2] = files
  const mirror = new FileMirror({ queueSize: 16 })
  t.teardown(() => mirror.close(true))
  mirror.addReadingFile(f)
  mirror.addWritingFile(f)
  mirror.addWritingFile(f2)
  mirror.setFileAsync(f, true)
  mirror.setFileAsync(f2, true)
  t.equal(mirror.isFileAsync(f), true)
  t.equal(mirror.isFileAsync(f2), true)

  const data = randomBytes(10)
  const writes = await mirror.writeAt(data, 0)
  // A real file write completes in a libuv callback, never within the microtasks of writeAt.
  t.equal(writes.done, false, 'writeAt returned before the writes were done')
  t.equal(writes.pending().length, 2)
  t.equal(await writes.waitForDone(10_000), true)
  t.same(writes.pending(), [], 'no pending operations')
  t.same(writes.failed(), [], 'no errors')
  t.same(await readFile(join(dir, 'fast')), data)
  t.same(await readFile(join(dir, 'slow')), data)

  const reads = await mirror.readAt(Buffer.alloc(10), 0)
  t.equal(reads.done, false, 'readAt returned before the read was done')
  t.equal(await reads.waitForDone(10_000), true)
  t.same(reads.pending(), [])
  t.same(reads.failed(), [])
  t.equal(reads.firstSync(), undefined)
  const first = reads.firstAsync()!
  t.equal(first.async, true)
  t.equal(first.file, f)
  t.same(first.buffer, data, "data is in the first async operation's buffer")
})

// ---------------------------------------------------------------- the operation callback

t.test("'operation' event fires twice per operation: started, then done", async (t) => {
  const { files } = await setup(await scratch(t), ['sync', 'async'])
  const [syncFile, asyncFile] = files
  const mirror = new FileMirror<string, string>({ queueSize: 4 })
  t.teardown(() => mirror.close(true))
  mirror.addReadingFile(asyncFile)
  mirror.addWritingFile(syncFile)
  mirror.addWritingFile(asyncFile)
  mirror.setFileAsync(asyncFile, true)
  mirror.setFileUserData(syncFile, 'label-sync')
  mirror.setFileUserData(asyncFile, 'label-async')
  t.equal(mirror.fileUserData(syncFile), 'label-sync')
  const events = recordEvents(mirror)

  const writes = await mirror.writeAt(Buffer.from('0123456789'), 7, 'call-1')
  await writes.waitForDone(10_000)
  const reads = await mirror.readAt(Buffer.alloc(30), 0, 'call-2')
  await reads.waitForDone(10_000)

  const all = [...writes.operations, ...reads.operations]
  t.equal(all.length, 3)
  t.equal(events.length, 6, 'two events per operation')
  for (const op of all) {
    const mine = events.filter((e) => e.op === op)
    t.equal(mine.length, 2, `${op.type} on ${op.file.path}: two events`)
    const [start, end] = mine
    t.ok(events.indexOf(start) < events.indexOf(end), 'start event comes first')
    t.equal(start.started, true, 'first: started')
    t.equal(start.done, false, 'first: not done')
    t.equal(start.bytes, 0, 'first: no bytes yet')
    t.equal(start.error, null, 'first: no error yet')
    t.equal(end.started, true, 'second: started')
    t.equal(end.done, true, 'second: done')
    t.type(end.durationMs, 'number')
    t.ok(end.durationMs >= 0, 'duration is set')
    t.ok(end.finishedAt! >= end.startedAt!, 'finished after it started')
  }

  const [wSync, wAsync] = writes.operations
  t.equal(wSync.file, syncFile)
  t.equal(wAsync.file, asyncFile)
  for (const op of writes.operations) {
    t.equal(op.type, 'write')
    t.equal(op.offset, 7)
    t.equal(op.userData, 'call-1', "caller's user data")
    t.equal(events.filter((e) => e.op === op)[1].bytes, 10, 'done event carries the bytes')
    t.equal(events.filter((e) => e.op === op)[1].error, null, 'done event carries no error')
  }
  t.equal(wSync.async, false)
  t.equal(wSync.fileUserData, 'label-sync', "file's user data")
  t.equal(wAsync.async, true)
  t.equal(wAsync.fileUserData, 'label-async')

  const read = reads.operations[0]
  t.equal(read.type, 'read')
  t.equal(read.offset, 0)
  t.equal(read.userData, 'call-2')
  t.equal(read.fileUserData, 'label-async')
  const readDone = events.filter((e) => e.op === read)[1]
  t.equal(readDone.bytes, 17, 'read up to end of file: 7 zero bytes + 10 written')
  t.type(readDone.error, EndOfFileError, 'done event carries the EOF error')
})

// ---------------------------------------------------------------- reading past the end

t.test('reading an empty file gives EOF and 0 bytes', async (t) => {
  const { files } = await setup(await scratch(t), ['empty'])
  const [f] = files
  for (const async of [false, true]) {
    const mirror = new FileMirror({ queueSize: 2 })
    mirror.addReadingFile(f)
    mirror.setFileAsync(f, async)
    const group = await mirror.readAt(Buffer.alloc(10), 0)
    t.equal(await group.waitForDone(10_000), true)
    const op = group.operations[0]
    t.equal(op.bytes, 0, `${async ? 'async' : 'sync'}: 0 bytes`)
    t.type(op.error, EndOfFileError)
    t.equal((op.error as EndOfFileError).code, 'EOF')
    t.same(group.failed(), [op], 'EOF counts as a failed operation')
    t.equal(mirror.cachedRanges(f).bytes, 0, 'nothing was cached')
    await mirror.close(false)
  }
  await f.close()
})

t.test('reading past the end gives EOF with the bytes that were there', async (t) => {
  const { files } = await setup(await scratch(t), ['short'])
  const [f] = files
  const mirror = new FileMirror({ queueSize: 2 })
  t.teardown(() => mirror.close(true))
  mirror.addReadingFile(f)
  mirror.addWritingFile(f)
  await mirror.writeAt(Buffer.from('hello'), 0)

  const whole = (await mirror.readAt(Buffer.alloc(10), 0)).operations[0]
  t.equal(whole.bytes, 5)
  t.equal((whole.error as EndOfFileError | null)?.code, 'EOF')
  t.equal(whole.buffer.subarray(0, 5).toString(), 'hello')

  const tail = (await mirror.readAt(Buffer.alloc(10), 3)).operations[0]
  t.equal(tail.bytes, 2)
  t.type(tail.error, EndOfFileError)
  t.equal(tail.buffer.subarray(0, 2).toString(), 'lo')

  const beyond = (await mirror.readAt(Buffer.alloc(4), 100)).operations[0]
  t.equal(beyond.bytes, 0)
  t.type(beyond.error, EndOfFileError)

  const exact = (await mirror.readAt(Buffer.alloc(5), 0)).operations[0]
  t.equal(exact.bytes, 5)
  t.equal(exact.error, null, 'reading exactly up to the end is no error')
})

// ---------------------------------------------------------------- sets and explicit files

t.test('reading and writing sets report whether they changed', async (t) => {
  const { files } = await setup(await scratch(t), ['a', 'b'])
  const [a, b] = files
  const mirror = new FileMirror({ queueSize: 1 })
  t.teardown(() => mirror.close(true))

  t.equal(mirror.addReadingFile(a), true)
  t.equal(mirror.addReadingFile(a), false, 'already there')
  t.equal(mirror.addWritingFile(a), true, 'the writing set is separate')
  t.equal(mirror.addWritingFile(a), false)
  t.equal(mirror.addWritingFile(b), true)
  t.same(mirror.readingFiles, [a])
  t.same(mirror.writingFiles, [a, b])
  t.same(mirror.allFiles, [a, b], 'the union, without duplicates')

  t.equal(mirror.removeReadingFile(b), false, 'never was in the reading set')
  t.equal(mirror.removeReadingFile(a), true)
  t.equal(mirror.removeReadingFile(a), false, 'already removed')
  t.same(mirror.readingFiles, [])
  t.same(mirror.writingFiles, [a, b], 'removing from one set leaves the other')
  t.equal(mirror.removeWritingFile(a), true)
  t.equal(mirror.removeWritingFile(a), false)
  t.same(mirror.allFiles, [b])
})

t.test('explicit files on a call override the sets', async (t) => {
  const { dir, files } = await setup(await scratch(t), ['a', 'b', 'outsider'])
  const [a, b, outsider] = files
  const mirror = new FileMirror({ queueSize: 2 })
  t.teardown(async () => {
    await mirror.close(true)
    await outsider.close()
  })
  mirror.addReadingFile(a)
  mirror.addWritingFile(a)
  mirror.addWritingFile(b)

  const onlyB = await mirror.writeAt(Buffer.from('bbbb'), 0, undefined, [b])
  t.equal(onlyB.size, 1)
  t.equal(onlyB.operations[0].file, b)
  t.equal((await stat(join(dir, 'a'))).size, 0, 'the other writing file was not touched')
  t.equal((await readFile(join(dir, 'b'))).toString(), 'bbbb')

  const readB = await mirror.readAt(Buffer.alloc(4), 0, undefined, [b])
  t.equal(readB.size, 1)
  t.equal(readB.operations[0].file, b, 'read from a file outside the reading set')
  t.equal(readB.operations[0].buffer.toString(), 'bbbb')

  const both = await mirror.readAt(Buffer.alloc(4), 0, undefined, [a, b])
  t.equal(both.size, 2, 'one operation per named file')
  t.equal(both.operations[0].bytes, 0)
  t.equal(both.operations[1].bytes, 4)

  const out = await mirror.writeAt(Buffer.from('xy'), 1, undefined, [outsider])
  t.equal(out.operations[0].bytes, 2, 'a file in neither set can be named')
  t.equal((await readFile(join(dir, 'outsider'))).toString('latin1'), '\0xy')

  const none = await mirror.writeAt(Buffer.from('zz'), 0, undefined, [])
  t.equal(none.size, 0, 'an empty list means no file')
  t.equal(await none.waitForDone(0), true, 'an empty group is done at once')
})

// ---------------------------------------------------------------- buffers

t.test('fixedBuffer mode: operations share the caller buffer', async (t) => {
  const { files } = await setup(await scratch(t), ['a', 'b'])
  const [a, b] = files
  const mirror = new FileMirror({ queueSize: 2, fixedBuffer: true })
  t.teardown(() => mirror.close(true))
  mirror.addReadingFile(a)
  mirror.addWritingFile(a)
  mirror.addWritingFile(b)

  const data = Buffer.from('fixed!')
  const writes = await mirror.writeAt(data, 0)
  for (const op of writes.operations) t.equal(op.buffer, data, 'the very same Buffer object')

  const target = Buffer.alloc(6, 0xee)
  const reads = await mirror.readAt(target, 0)
  t.equal(reads.operations[0].buffer, target)
  t.equal(target.toString(), 'fixed!', "the caller's buffer received the data")
})

t.test("copy mode: each operation works on its own copy of the caller's buffer", async (t) => {
  const { dir, files } = await setup(await scratch(t), ['a', 'b'])
  const [a, b] = files
  const slowB = new SlowFile(b)
  const mirror = new FileMirror({ queueSize: 2 })
  t.teardown(() => mirror.close(true))
  mirror.addReadingFile(a)
  mirror.addWritingFile(a)
  mirror.addWritingFile(slowB)
  mirror.setFileAsync(slowB, true)

  const data = Buffer.from('copied')
  const writes = await mirror.writeAt(data, 0)
  const [opA, opB] = writes.operations
  t.not(opA.buffer, data, 'not the caller buffer')
  t.not(opB.buffer, data)
  t.not(opA.buffer, opB.buffer, 'not shared between operations')
  t.same(opB.buffer, Buffer.from('copied'))
  // The caller reuses its buffer while the async write is still blocked: the write must not see it.
  data.fill(0x21)
  t.equal(slowB.blocked, 1)
  slowB.releaseAll()
  t.equal(await writes.waitForDone(10_000), true)
  t.equal((await readFile(join(dir, 'b'))).toString(), 'copied', 'the async write used the copy taken at call time')

  const target = Buffer.alloc(6, 0xee)
  const reads = await mirror.readAt(target, 0)
  t.equal(reads.operations[0].buffer.toString(), 'copied')
  t.same(target, Buffer.alloc(6, 0xee), "the caller's buffer is untouched by a read")
})

// ---------------------------------------------------------------- cached ranges

t.test('cached ranges: a read marks cached, a write marks not cached', async (t) => {
  const { files } = await setup(await scratch(t), ['a', 'b'])
  const [a, b] = files
  const mirror = new FileMirror({ queueSize: 2 })
  t.teardown(() => mirror.close(true))
  mirror.addReadingFile(a)
  mirror.addWritingFile(a)
  mirror.addWritingFile(b)

  await mirror.writeAt(randomBytes(100), 0)
  t.same(mirror.cachedRanges(a).toJSON(), [], 'nothing read yet')
  t.equal(mirror.isFullyCached(a, 100), false)
  t.equal(mirror.cachedPercent(a, 100), 0)

  await mirror.readAt(Buffer.alloc(40), 0)
  t.same(mirror.cachedRanges(a).toJSON(), [[0, 40]])
  t.equal(mirror.cachedPercent(a, 100), 40)
  t.equal(mirror.isFullyCached(a, 100), false)
  t.equal(mirror.isFullyCached(a, 40), true, 'the first 40 bytes are cached')

  await mirror.readAt(Buffer.alloc(60), 40)
  t.same(mirror.cachedRanges(a).toJSON(), [[0, 100]])
  t.equal(mirror.isFullyCached(a, 100), true)
  t.equal(mirror.cachedPercent(a, 100), 100)

  await mirror.writeAt(Buffer.alloc(10), 20)
  t.same(mirror.cachedRanges(a).toJSON(), [[0, 20], [30, 100]], 'the written range is no longer cached')
  t.equal(mirror.isFullyCached(a, 100), false)
  t.equal(mirror.cachedPercent(a, 100), 90)

  await mirror.readAt(Buffer.alloc(50), 80)
  t.same(mirror.cachedRanges(a).toJSON(), [[0, 20], [30, 100]], 'a read past the end caches only the bytes read')

  t.equal(mirror.cachedPercent(b, 100), 0, 'a file never read has nothing cached')
  t.equal(mirror.isFullyCached(b, 0), true, 'an empty file is fully cached')
  t.equal(mirror.cachedPercent(b, 0), 100)

  const copy = mirror.cachedRanges(a)
  copy.add(0, 1000)
  t.same(mirror.cachedRanges(a).toJSON(), [[0, 20], [30, 100]], 'cachedRanges returns a copy')
})

// ---------------------------------------------------------------- ordering and the bounded queue

t.test('per-file ordering: async writes to the same offsets land in call order', async (t) => {
  const { dir, files } = await setup(await scratch(t), ['a', 'b'])
  const mirror = new FileMirror({ queueSize: 3 })
  t.teardown(() => mirror.close(true))
  for (const f of files) {
    mirror.addWritingFile(f)
    mirror.setFileAsync(f, true)
  }
  const doneOrder = new Map<ReplicaFile, number[]>(files.map((f) => [f, []]))
  mirror.on('operation', (op) => {
    if (op.done) doneOrder.get(op.file)!.push(op.buffer[0])
  })
  const N = 40
  // All calls issued at once, without awaiting: more than the queue holds, so most wait for room.
  const calls = Array.from({ length: N }, (_, i) => mirror.writeAt(Buffer.alloc(16, i), 0))
  const groups = await Promise.all(calls)
  await mirror.drained()
  t.ok(groups.every((g) => g.done && g.failed().length === 0), 'every write done without error')
  for (const f of files) {
    t.same(doneOrder.get(f), Array.from({ length: N }, (_, i) => i), `${f.path}: done in call order`)
  }
  t.same(await readFile(join(dir, 'a')), Buffer.alloc(16, N - 1), 'final content is the last write')
  t.same(await readFile(join(dir, 'b')), Buffer.alloc(16, N - 1))
})

t.test('per-file ordering holds for random overlapping writes (property)', async (t) => {
  const root = await scratch(t)
  let run = 0
  const writeArb = fc.record({
    offset: fc.integer({ min: 0, max: 48 }),
    length: fc.integer({ min: 1, max: 16 }),
    byte: fc.integer({ min: 1, max: 255 }),
  })
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 4 }), fc.array(writeArb, { minLength: 1, maxLength: 25 }), async (queueSize, writes) => {
      const dir = join(root, String(run++))
      await mkdir(dir)
      const a = await openLocal(join(dir, 'a'))
      const b = await openLocal(join(dir, 'b'))
      const mirror = new FileMirror({ queueSize })
      mirror.addWritingFile(a)
      mirror.addWritingFile(b)
      mirror.setFileAsync(a, true) // one async, one sync: both must end up equal to the model
      const model = Buffer.alloc(64)
      let size = 0
      const calls = writes.map(({ offset, length, byte }) => {
        model.fill(byte, offset, offset + length)
        size = Math.max(size, offset + length)
        return mirror.writeAt(Buffer.alloc(length, byte), offset)
      })
      await Promise.all(calls)
      await mirror.close(true)
      const expected = model.subarray(0, size)
      const gotA = await readFile(join(dir, 'a'))
      const gotB = await readFile(join(dir, 'b'))
      if (!gotA.equals(expected)) throw new Error(`async file: ${gotA.toString('hex')} != ${expected.toString('hex')}`)
      if (!gotB.equals(expected)) throw new Error(`sync file: ${gotB.toString('hex')} != ${expected.toString('hex')}`)
    }),
    { numRuns: 40, seed: 424242 },
  )
  t.equal(run, 40, 'every generated case ran')
})

t.test('a write issued while an earlier one waits for room is never overtaken', async (t) => {
  // queueSize 1: w1 blocks in the slow file, w2 waits for room. When w1 finishes, a third write
  // is issued after `hops` microtask hops; it must land after w2, whatever the hop count.
  const dir = await scratch(t)
  for (let hops = 0; hops < 12; hops++) {
    const slow = await SlowFile.open(join(dir, `f${hops}`))
    const mirror = new FileMirror({ queueSize: 1 })
    mirror.addWritingFile(slow)
    mirror.setFileAsync(slow, true)
    let third!: Promise<unknown>
    const issuedThird = new Promise<void>((resolve) => {
      mirror.on('operation', (op) => {
        if (op.done && op.buffer.toString() === '1') {
          let chain = Promise.resolve()
          for (let i = 0; i < hops; i++) chain = chain.then(() => {})
          third = chain.then(() => mirror.writeAt(Buffer.from('3'), 0))
          resolve()
        }
      })
    })
    await mirror.writeAt(Buffer.from('1'), 0)
    const second = mirror.writeAt(Buffer.from('2'), 0)
    await slow.until(() => slow.blocked === 1)
    slow.releaseAll()
    await issuedThird
    await Promise.all([second, third])
    await mirror.close(true)
    t.equal((await readFile(join(dir, `f${hops}`))).toString(), '3', `${hops} hops: the later call landed last`)
  }
})

t.test('bounded queue: an async writeAt waits for room', async (t) => {
  const dir = await scratch(t)
  const slow = await SlowFile.open(join(dir, 'slow'))
  const mirror = new FileMirror({ queueSize: 1 })
  t.teardown(() => mirror.close(true))
  mirror.addWritingFile(slow)
  mirror.setFileAsync(slow, true)

  const first = await mirror.writeAt(Buffer.from('first'), 0)
  await slow.until(() => slow.blocked === 1)
  let secondQueued = false
  const secondCall = mirror.writeAt(Buffer.from('SECOND'), 0).then((g) => {
    secondQueued = true
    return g
  })
  await turns(10)
  t.equal(secondQueued, false, 'the second call waits while the queue is full')
  t.equal(mirror.queueDepth(slow), 1, 'only the first operation is in the lane')
  t.equal(slow.writesEntered, 1, 'the second write has not reached the file')

  slow.releaseOne()
  const second = await secondCall
  t.equal(secondQueued, true, 'room made: the second call returned')
  t.equal(first.done, true, 'the first write finished before the second was queued')
  t.equal(second.done, false, 'the second write is queued, not done')
  await slow.until(() => slow.blocked === 1)
  slow.releaseOne()
  t.equal(await second.waitForDone(10_000), true)
  t.equal((await readFile(join(dir, 'slow'))).toString(), 'SECOND')
})

t.test("the 'idle' event fires when every queue has run empty", async (t) => {
  const dir = await scratch(t)
  const slow = await SlowFile.open(join(dir, 'slow'))
  const fast = await openLocal(join(dir, 'fast'))
  const mirror = new FileMirror({ queueSize: 4 })
  t.teardown(() => mirror.close(true))
  for (const f of [slow, fast]) {
    mirror.addWritingFile(f)
    mirror.setFileAsync(f, true)
  }
  const idles: unknown[] = []
  mirror.on('idle', (m) => idles.push(m))

  const group = await mirror.writeAt(Buffer.from('data'), 0)
  const fastOp = group.operations.find((op) => op.file === fast)!
  t.equal(await new OperationList([fastOp]).waitForDone(10_000), true, 'the fast file finished its work')
  await turns(5)
  t.equal(idles.length, 0, 'no idle while the slow file still has work')
  t.equal(mirror.queueDepth(slow), 1)
  t.equal(mirror.queueDepth(fast), 0)

  const idle = new Promise((resolve) => mirror.once('idle', resolve))
  slow.releaseAll()
  t.equal(await idle, mirror, 'idle fires with the mirror')
  t.equal(group.done, true)
  t.equal(mirror.queueDepth(slow), 0)
  t.equal(idles.length, 1)
})

// ---------------------------------------------------------------- the operation group

t.test('operation group: firstAsync/firstSync/pending/asyncOperations/syncOperations', async (t) => {
  const dir = await scratch(t)
  const syncFile = await openLocal(join(dir, 'sync'))
  const slow = await SlowFile.open(join(dir, 'slow'))
  const mirror = new FileMirror({ queueSize: 4 })
  t.teardown(() => mirror.close(true))
  mirror.addWritingFile(syncFile)
  mirror.addWritingFile(slow)
  mirror.setFileAsync(slow, true)

  const group = await mirror.writeAt(Buffer.from('abc'), 0)
  const [syncOp, asyncOp] = group.operations
  t.equal(group.size, 2)
  t.equal(group.firstSync(), syncOp)
  t.equal(group.firstAsync(), asyncOp)
  t.equal(syncOp.file, syncFile)
  t.equal(asyncOp.file, slow)
  t.same(group.syncOperations(), [syncOp])
  t.same(group.asyncOperations(), [asyncOp])
  t.same(group.pending(), [asyncOp], 'the sync operation is done, the blocked async one pending')
  t.equal(group.done, false)

  slow.releaseAll()
  t.equal(await group.waitForDone(10_000), true)
  t.same(group.pending(), [])
  t.equal(group.done, true)

  const onlySync = new OperationList([syncOp])
  t.equal(onlySync.firstAsync(), undefined)
  t.same(onlySync.asyncOperations(), [])
})

t.test('waitForDone/waitForStart with a timeout: false while blocked, true later', async (t) => {
  const dir = await scratch(t)
  const slow = await SlowFile.open(join(dir, 'slow'))
  const mirror = new FileMirror({ queueSize: 4 })
  t.teardown(() => mirror.close(true))
  mirror.addWritingFile(slow)
  mirror.setFileAsync(slow, true)

  const first = await mirror.writeAt(Buffer.from('one'), 0)
  // Overlapping the first: it must wait for it.
  const second = await mirror.writeAt(Buffer.from('two'), 2)
  await slow.until(() => slow.blocked === 1)
  t.equal(await first.waitForStart(10_000), true, 'the first operation has started')
  t.equal(await first.waitForDone(25), false, 'not done: timed out')
  t.equal(await second.waitForStart(25), false, 'queued behind it: not even started')
  t.equal(second.operations[0].started, false)
  t.equal(second.operations[0].durationMs, 0, 'no duration before it starts')

  slow.releaseAll()
  t.equal(await first.waitForDone(10_000), true)
  t.equal(await second.waitForDone(10_000), true)
  t.equal(await second.waitForDone(0), true, 'already done: true even with a zero timeout')
  t.equal((await readFile(join(dir, 'slow'))).toString(), 'ontwo')
})

t.test('a failing file: the error is on its operation, the other file is unaffected', async (t) => {
  const { dir, files } = await setup(await scratch(t), ['good', 'bad'])
  const [good, bad] = files
  const mirror = new FileMirror({ queueSize: 2 })
  t.teardown(() => mirror.close(false).then(() => good.close()))
  mirror.addWritingFile(good)
  mirror.addWritingFile(bad)
  mirror.setFileAsync(bad, true)
  await bad.close() // a real failure: writing to a closed handle
  const events = recordEvents(mirror)
  const group = await mirror.writeAt(Buffer.from('ok'), 0)
  t.equal(await group.waitForDone(10_000), true)
  const failed = group.failed()
  t.equal(failed.length, 1)
  t.equal(failed[0].file, bad)
  t.type(failed[0].error, Error)
  t.equal(failed[0].bytes, 0)
  t.equal(failed[0].done, true)
  const badDone = events.filter((e) => e.op === failed[0])
  t.equal(badDone.length, 2, 'a failed operation also fires twice')
  t.equal(badDone[1].error, failed[0].error, 'the done event carries the error')
  t.equal((await readFile(join(dir, 'good'))).toString(), 'ok')
})

// ---------------------------------------------------------------- the seed's weak points, fixed

t.test('weak point 1: a slow async file does not delay another file async work', async (t) => {
  const dir = await scratch(t)
  const slow = await SlowFile.open(join(dir, 'slow'))
  const fast = await openLocal(join(dir, 'fast'))
  const mirror = new FileMirror({ queueSize: 8 })
  t.teardown(() => mirror.close(true))
  for (const f of [slow, fast]) {
    mirror.addWritingFile(f)
    mirror.setFileAsync(f, true)
  }
  mirror.addReadingFile(fast)

  // Three writes queued after the slow file's first one blocked.
  const groups = []
  for (const text of ['aaaa', 'bbbb', 'cccc']) groups.push(await mirror.writeAt(Buffer.from(text), 0))
  await slow.until(() => slow.blocked === 1)
  const fastOps = groups.map((g) => g.operations.find((op) => op.file === fast)!)
  const slowOps = groups.map((g) => g.operations.find((op) => op.file === slow)!)

  t.equal(await new OperationList(fastOps).waitForDone(10_000), true, "every fast write is done while the slow file's first write is blocked")
  t.equal(slow.blocked, 1, 'the slow file is still blocked')
  t.equal(slow.writesFinished, 0, 'nothing reached the slow file')
  t.ok(slowOps.every((op) => !op.done), 'no slow operation is done')
  t.same(fastOps.map((op) => op.error), [null, null, null])
  t.equal((await readFile(join(dir, 'fast'))).toString(), 'cccc', 'the fast file holds the last write')

  const read = await mirror.readAt(Buffer.alloc(4), 0)
  t.equal(await read.waitForDone(10_000), true, 'an async read of the fast file is not delayed either')
  t.equal(read.operations[0].buffer.toString(), 'cccc')
  t.equal(slow.blocked, 1, 'still blocked')

  slow.releaseAll()
  for (const g of groups) t.equal(await g.waitForDone(10_000), true)
  t.equal((await readFile(join(dir, 'slow'))).toString(), 'cccc')
})

t.test('weak point 2: the cached map is a range set, not a byte map', async (t) => {
  const { files } = await setup(await scratch(t), ['big'])
  const [f] = files
  const size = 4 * 1024 * 1024
  const mirror = new FileMirror({ queueSize: 2 })
  t.teardown(() => mirror.close(true))
  mirror.addReadingFile(f)
  mirror.addWritingFile(f)
  await mirror.writeAt(randomBytes(size), 0)

  await mirror.readAt(Buffer.alloc(size), 0)
  const cached = mirror.cachedRanges(f)
  t.equal(cached.count, 1, 'a 4 MiB read is one interval')
  t.equal(cached.bytes, size)
  t.equal(mirror.isFullyCached(f, size), true)

  // Punch three holes: three more intervals, however large the file.
  for (const at of [1000, 2_000_000, 3_000_000]) await mirror.writeAt(Buffer.alloc(10), at)
  t.equal(mirror.cachedRanges(f).count, 4)
  t.equal(mirror.cachedRanges(f).bytes, size - 30)

  // Many small adjacent reads merge back into one interval.
  for (let off = 0; off < size; off += 256 * 1024) await mirror.readAt(Buffer.alloc(256 * 1024), off)
  t.equal(mirror.cachedRanges(f).count, 1)
  t.equal(mirror.cachedPercent(f, size), 100)
})

t.test('weak point 3: waiting resolves through promises, not polling', async (t) => {
  const dir = await scratch(t)
  const slow = await SlowFile.open(join(dir, 'slow'))
  const mirror = new FileMirror({ queueSize: 2 })
  t.teardown(() => mirror.close(true))
  mirror.addWritingFile(slow)
  mirror.setFileAsync(slow, true)

  const group = await mirror.writeAt(Buffer.from('x'), 0)
  await slow.until(() => slow.blocked === 1)
  const waiting = group.waitForDone(60_000)
  const started = group.waitForStart(60_000)
  t.equal(await beforeNextMacrotask(started), 'settled', 'waitForStart on a started operation settles without a timer')

  let settled = false
  void waiting.then(() => (settled = true))
  await turns(5)
  t.equal(settled, false, 'still waiting while blocked')

  slow.releaseOne()
  // The disk write itself completes in an I/O callback; from there to the waiter it must be
  // promise resolution only, so the waiter settles before the next macrotask. A polling loop
  // (setTimeout/setInterval) could not.
  await slow.until(() => slow.writesFinished === 1)
  t.equal(await beforeNextMacrotask(waiting), 'settled', 'waitForDone settled in the same microtask chain')
  t.equal(await waiting, true)
  t.equal(await beforeNextMacrotask(group.waitForDone(60_000)), 'settled', 'waiting on a done group settles at once')
})

t.test('weak point 4: close drains, queued async writes are on disk after close(true)', async (t) => {
  const dir = await scratch(t)
  const slow = await SlowFile.open(join(dir, 'slow'))
  const fast = await openLocal(join(dir, 'fast'))
  const mirror = new FileMirror({ queueSize: 8 })
  for (const f of [slow, fast]) {
    mirror.addWritingFile(f)
    mirror.setFileAsync(f, true)
  }
  const groups = []
  for (let i = 0; i < 5; i++) groups.push(await mirror.writeAt(Buffer.from(`w${i}`), i * 2))
  await slow.until(() => slow.blocked >= 1)

  let closed = false
  const closing = mirror.close(true).then(() => (closed = true))
  await turns(5)
  t.equal(closed, false, 'close waits for the queued writes')
  await t.rejects(mirror.writeAt(Buffer.from('late'), 0), /closed/, 'no new operations once closing')

  slow.releaseAll()
  await closing
  t.ok(groups.every((g) => g.done && g.failed().length === 0), 'every queued write ran, none failed')
  t.equal((await readFile(join(dir, 'slow'))).toString(), 'w0w1w2w3w4', 'all queued writes reached the slow file')
  t.equal((await readFile(join(dir, 'fast'))).toString(), 'w0w1w2w3w4')
  await t.rejects(fast.read(Buffer.alloc(1), 0), 'close(true) closed the files')
})

t.test('weak point 4: close also drains a write still waiting for room in a full queue', async (t) => {
  const dir = await scratch(t)
  const slow = await SlowFile.open(join(dir, 'slow'))
  const mirror = new FileMirror({ queueSize: 1 })
  mirror.addWritingFile(slow)
  mirror.setFileAsync(slow, true)

  await mirror.writeAt(Buffer.from('AAAA'), 0)
  const waitingForRoom = mirror.writeAt(Buffer.from('BB'), 0)
  await slow.until(() => slow.blocked === 1)
  let closed = false
  const closing = mirror.close(true).then(() => (closed = true))
  slow.releaseOne() // the first write finishes; the waiting one gets room and blocks in turn
  await slow.until(() => slow.writesEntered === 2 && slow.blocked === 1)
  await turns(5)
  t.equal(closed, false, 'close waits for the write that was waiting for room')
  slow.releaseAll()
  await closing
  const second = await waitingForRoom
  t.equal(second.done, true, 'the write that waited for room ran before close finished')
  t.equal(second.operations[0].error, null, 'and it did not hit a closed file')
  t.equal((await readFile(join(dir, 'slow'))).toString(), 'BBAA')
})

t.test('close(false) drains but leaves the files open', async (t) => {
  const { dir, files } = await setup(await scratch(t), ['a'])
  const [a] = files
  const mirror = new FileMirror({ queueSize: 2 })
  mirror.addWritingFile(a)
  mirror.setFileAsync(a, true)
  await mirror.writeAt(Buffer.from('kept'), 0)
  await mirror.close(false)
  t.equal((await readFile(join(dir, 'a'))).toString(), 'kept')
  const buf = Buffer.alloc(4)
  t.equal(await a.read(buf, 0), 4, 'the file is still open')
  t.equal(buf.toString(), 'kept')
  await a.close()
})

t.test('weak point 7: operation state is consistent, done implies started and bytes set', async (t) => {
  const { files } = await setup(await scratch(t), ['sync', 'async'])
  const [syncFile, asyncFile] = files
  const mirror = new FileMirror({ queueSize: 2 })
  t.teardown(() => mirror.close(true))
  mirror.addReadingFile(syncFile)
  mirror.addReadingFile(asyncFile)
  mirror.addWritingFile(syncFile)
  mirror.addWritingFile(asyncFile)
  mirror.setFileAsync(asyncFile, true)
  const events = recordEvents(mirror)

  const expected = new Map<Operation<unknown, unknown>, { bytes: number; eof: boolean }>()
  const groups: OperationList[] = []
  for (let i = 0; i < 20; i++) {
    const len = 1 + (i % 7)
    const w = await mirror.writeAt(Buffer.alloc(len, i), i * 3)
    for (const op of w.operations) expected.set(op, { bytes: len, eof: false })
    groups.push(w)
    const r = await mirror.readAt(Buffer.alloc(8), i * 3 + 4)
    groups.push(r)
    // read expectations are checked against the file size once everything is done
  }
  for (const g of groups) t.equal(await g.waitForDone(10_000), true)

  let inconsistent = 0
  for (const e of events) {
    if (e.done && !e.started) inconsistent++
    if (e.done && e.finishedAt === undefined) inconsistent++
    if (e.started && e.startedAt === undefined) inconsistent++
    if (!e.done && (e.bytes !== 0 || e.error !== null || e.finishedAt !== undefined)) inconsistent++
    const exp = expected.get(e.op)
    if (e.done && exp && (e.bytes !== exp.bytes || e.error !== null)) inconsistent++
    if (e.done && e.op.type === 'read' && e.bytes < e.op.buffer.length && !(e.error instanceof EndOfFileError)) inconsistent++
    if (e.done && e.op.type === 'read' && e.bytes === e.op.buffer.length && e.error !== null) inconsistent++
  }
  t.equal(events.length, groups.reduce((n, g) => n + g.size, 0) * 2, 'two events per operation')
  t.equal(inconsistent, 0, 'no event showed an inconsistent operation')

  for (const g of groups) {
    for (const op of g.operations) {
      t.ok(op.started && op.done && op.startedAt !== undefined && op.finishedAt !== undefined, `${op.type}@${op.offset} ${op.async ? 'async' : 'sync'}: started and done`)
    }
  }
  // whenStarted always settles before whenDone
  const order: string[] = []
  const g = await mirror.writeAt(Buffer.from('zz'), 0, undefined, [asyncFile])
  const op = g.operations[0]
  await Promise.all([op.whenDone.then(() => order.push('done')), op.whenStarted.then(() => order.push('started'))])
  t.same(order, ['started', 'done'])
})
