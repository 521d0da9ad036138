import t from 'tap'
import fc from 'fast-check'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { conflicts, FileLane, LANE_CONCURRENCY, type Footprint } from '../../src/engine/file-lane.js'
import { FileMirror } from '../../src/engine/file-mirror.js'
import { EndOfFileError } from '../../src/engine/operation.js'
import { LocalFile, type ReplicaFile } from '../../src/engine/replica-file.js'
import { scratch } from '../helpers/scratch.js'

// ------------------------------------------------------------ a sequential model of one file

interface Op extends Footprint {
  byte: number
}

interface Outcome {
  bytes: number[]
  eof: boolean
}

/** Runs `op` on `file` (its bytes) as one positional read or write would. */
function apply(file: number[], op: Op): Outcome | null {
  if (op.write) {
    // pwrite of nothing leaves the file as it is, even past its end.
    if (op.end === op.start) return null
    while (file.length < op.start) file.push(0)
    for (let at = op.start; at < op.end; at++) file[at] = op.byte
    return null
  }
  const bytes = file.slice(op.start, op.end)
  return { bytes, eof: bytes.length < op.end - op.start }
}

/** Whether running a then b can give anything other than b then a, on a file of `size` bytes. */
function orderMatters(a: Op, b: Op, size: number): boolean {
  const one = Array.from({ length: size }, (_, i) => i + 1)
  const two = [...one]
  const ab = [apply(one, a), apply(one, b)]
  const ba = [apply(two, b), apply(two, a)].reverse()
  return JSON.stringify([ab, one]) !== JSON.stringify([ba, two])
}

t.test('conflicts: true whenever the order of two operations can change an outcome (exhaustive on small files)', async (t) => {
  const ops: Op[] = []
  for (const write of [false, true]) for (let start = 0; start <= 6; start++) for (let end = start; end <= 6; end++) ops.push({ start, end, write, byte: write ? 200 + start : 0 })
  let checked = 0
  const missed: string[] = []
  let asymmetric = 0
  let needless = 0
  for (const a of ops) {
    for (const b of ops) {
      const said = conflicts(a, b)
      if (said !== conflicts(b, a)) asymmetric++
      const matters = [0, 1, 2, 3, 4, 5, 6, 7].some((size) => orderMatters(a, b, size))
      if (matters && !said) missed.push(`${JSON.stringify(a)} / ${JSON.stringify(b)}`)
      if (!matters && said) needless++
      checked++
    }
  }
  t.equal(asymmetric, 0, 'symmetric: which of the two came first does not matter')
  t.same(missed.slice(0, 5), [], `no pair whose order matters is let through (${checked} pairs)`)
  // Conservative is allowed, but not by much: reads never conflict with reads, writes to other bytes never conflict.
  t.ok(needless < checked / 4, `few needless conflicts (${needless} of ${checked})`)
  t.notOk(conflicts({ start: 0, end: 10, write: false }, { start: 5, end: 15, write: false }), 'overlapping reads run together')
  t.notOk(conflicts({ start: 0, end: 10, write: true }, { start: 10, end: 20, write: true }), 'adjacent writes run together')
  t.ok(conflicts({ start: 0, end: 10, write: false }, { start: 20, end: 30, write: true }), 'a read waits for a write past it that may grow the file')
})

// ------------------------------------------------------------ the lane itself

/** A task that resolves when the test says so, recording when it started. */
function gate() {
  let open!: () => void
  const opened = new Promise<void>((resolve) => (open = resolve))
  const state = { started: false, run: async () => ((state.started = true), await opened), open }
  return state
}

t.test('a lane runs reads together, up to its limit, and a write alone in queue order', async (t) => {
  let idle = 0
  const lane = new FileLane(8, () => idle++)
  const reads = Array.from({ length: LANE_CONCURRENCY + 2 }, () => gate())
  for (const r of reads) lane.push(r.run, false, { start: 0, end: 10, write: false })
  const write = gate()
  lane.push(write.run, false, { start: 5, end: 6, write: true })
  const later = gate()
  lane.push(later.run, false, { start: 0, end: 1, write: false })
  t.same(reads.map((r) => r.started), reads.map((_, i) => i < LANE_CONCURRENCY), `${LANE_CONCURRENCY} reads run at once, the rest wait for room`)
  t.equal(lane.depth, reads.length + 2, 'depth counts running and queued tasks')
  for (const r of reads.slice(0, LANE_CONCURRENCY)) r.open()
  await new Promise((resolve) => setImmediate(resolve))
  t.ok(reads.every((r) => r.started), 'queued reads start as room frees')
  t.equal(write.started, false, 'the write waits for the reads queued before it')
  t.equal(later.started, false, 'a read queued after the write waits for it (the write may grow the file)')
  for (const r of reads) r.open()
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(write.started, true, 'the write runs once the reads before it are done')
  t.equal(later.started, false, 'and alone')
  write.open()
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(later.started, true)
  later.open()
  await lane.drained()
  t.equal(idle, 1, 'idle once, when everything has run')
})

t.test('a write to other bytes overtakes a blocked one; a rejected task still frees the lane', async (t) => {
  const lane = new FileLane(8, () => {})
  const first = gate()
  lane.push(first.run, false, { start: 0, end: 10, write: true })
  const blocked = gate()
  lane.push(blocked.run, false, { start: 5, end: 15, write: true })
  const other = gate()
  lane.push(other.run, false, { start: 100, end: 110, write: true })
  t.equal(blocked.started, false, 'an overlapping write waits')
  t.equal(other.started, true, 'a write to other bytes does not wait behind it')
  lane.push(() => Promise.reject(new Error('boom')), false, { start: 200, end: 210, write: true })
  first.open()
  other.open()
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(blocked.started, true)
  blocked.open()
  await lane.drained()
  t.equal(lane.busy, false, 'nothing left running or queued')
})

// ------------------------------------------------------------ through the mirror, on real files, with jitter

/** A test-only file that delays each read and write by a random few milliseconds, so operations overlap in time. */
class JitteryFile implements ReplicaFile {
  inFlight = 0
  maxInFlight = 0
  constructor(
    readonly inner: ReplicaFile,
    private readonly random: () => number,
  ) {}
  get path() {
    return this.inner.path
  }
  private async jitter<T>(work: () => Promise<T>): Promise<T> {
    this.inFlight++
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight)
    try {
      await new Promise((resolve) => setTimeout(resolve, Math.floor(this.random() * 3)))
      return await work()
    } finally {
      this.inFlight--
    }
  }
  read(buffer: Buffer, offset: number) {
    return this.jitter(() => this.inner.read(buffer, offset))
  }
  write(buffer: Buffer, offset: number) {
    return this.jitter(() => this.inner.write(buffer, offset))
  }
  size() {
    return this.inner.size()
  }
  truncate(size: number) {
    return this.inner.truncate(size)
  }
  sync() {
    return this.inner.sync()
  }
  close() {
    return this.inner.close()
  }
}

t.test('mixed reads and writes issued at once give exactly what running them one by one gives (property)', async (t) => {
  const root = await scratch(t, 'filemirror-lane-')
  const opArb = fc.record({ write: fc.boolean(), start: fc.integer({ min: 0, max: 40 }), length: fc.integer({ min: 1, max: 12 }), byte: fc.integer({ min: 1, max: 255 }) })
  let run = 0
  let overlapped = 0
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 30 }), fc.integer({ min: 0, max: 20 }), fc.boolean(), async (ops, initial, async) => {
      const dir = join(root, String(run++))
      await mkdir(dir)
      const seed = { s: run * 7919 }
      const random = () => ((seed.s = (seed.s * 48271) % 2147483647) / 2147483647)
      const file = new JitteryFile(await LocalFile.open(join(dir, 'f')), random)
      const model = Array.from({ length: initial }, (_, i) => (i % 250) + 1)
      await file.inner.write(Buffer.from(model), 0)
      const mirror = new FileMirror({ queueSize: 64 })
      mirror.addReadingFile(file)
      mirror.addWritingFile(file)
      mirror.setFileAsync(file, async)
      const expected = ops.map((o) => apply(model, { write: o.write, start: o.start, end: o.start + o.length, byte: o.byte }))
      const calls = ops.map((o) => (o.write ? mirror.writeAt(Buffer.alloc(o.length, o.byte), o.start) : mirror.readAt(Buffer.alloc(o.length), o.start)))
      const groups = await Promise.all(calls)
      await Promise.all(groups.map((g) => g.waitForDone(10_000)))
      groups.forEach((g, i) => {
        const op = g.operations[0]
        const want = expected[i]
        if (!want) return
        const got = { bytes: [...op.buffer.subarray(0, op.bytes)], eof: op.error instanceof EndOfFileError }
        if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`op ${i} ${JSON.stringify(ops[i])}: read ${JSON.stringify(got)}, one by one gives ${JSON.stringify(want)}`)
      })
      await mirror.close(true)
      const content = [...(await readFile(join(dir, 'f')))]
      if (JSON.stringify(content) !== JSON.stringify(model)) throw new Error(`file ${JSON.stringify(content)} != ${JSON.stringify(model)}`)
      if (file.maxInFlight > 1) overlapped++
    }),
    { numRuns: 60, seed: 20261124 },
  )
  t.equal(run, 60, 'every generated case ran')
  t.ok(overlapped > 10, `operations really ran at the same time in many cases (${overlapped} of 60)`)
})
