import { BufferPool } from './buffer-pool.js'
import { EngineError } from './errors.js'
import type { OperationGroup } from './operation-group.js'
import type { BlockSums } from './replica-file.js'
import type { Replica } from './replica.js'

/**
 * Reads that verify and heal: every block a read returns is checked against the volume's block checksums; a block
 * that disagrees is served from another replica whose copy verifies, and the bad replica is repaired by writing the
 * good block straight to it (it is usually the write-behind source, which write-behind could not repair from itself).
 */

/** What reads and scrub need of the checksum store (BlockChecksums in block-checksums.ts); tickets are its own. */
export interface ChecksumStore {
  readonly blockBytes: number
  covered(start: number, end: number): boolean
  beginRead(start: number, end: number): unknown
  /** `known`: the checksums of `data`'s full blocks, computed where they were read (the short last block is not taken from it). */
  mismatches(ticket: unknown, offset: number, data: Buffer, known?: Uint32Array): number[]
  changedSince(ticket: unknown, start: number, end: number): boolean
  exclusive<T>(start: number, end: number, work: () => Promise<T>): Promise<T>
  cover(ticket: unknown, offset: number, data: Buffer): void
}

/** A block that failed its checksum on `replica`: repaired from `from` (null when no replica held a good copy). */
export interface ChecksumMismatch {
  replica: string
  offset: number
  length: number
  repaired: boolean
  from: string | null
}

/** What a replica read gave: how many bytes, from which replica; `summed`: the read's `sums` were filled where it read. */
export interface ReplicaRead {
  replica: Replica
  bytes: number
  summed?: boolean
}

/** What a verified read needs of its volume. */
export interface VerifyHost {
  readonly name: string
  readonly size: number
  readonly replicas: Replica[]
  readonly fsync: boolean
  /** The unverified read: from the named replica, else one holding the bytes, failing over on errors; `sums` as ReplicaFile.readSummed. */
  readFrom(buffer: Buffer, offset: number, group: OperationGroup, replicaId: string | undefined, count?: boolean, sums?: BlockSums): Promise<ReplicaRead>
  replicaFailed(replica: Replica, err: unknown): void
  /** Tells of a mismatch: an event, a warn line, a metric. */
  noteMismatch(mismatch: ChecksumMismatch): void
  wakeWriteBehind(): void
}

/** No replica holds a copy of a block that verifies: the read fails rather than serve wrong bytes. */
export class ChecksumMismatchError extends EngineError {
  constructor(
    readonly volume: string,
    readonly offset: number,
    readonly length: number,
    readonly tried: string[],
  ) {
    super(
      'read-failed',
      `bytes ${offset}-${offset + length - 1} of volume ${volume} fail their block checksum on every replica that holds them (${tried.join(', ')}): ` +
        'restore them from a backup, write the range again (a PUT with Content-Range), or name the replica that holds the truth (PUT the volume with {"source": "<replica id>"})',
      { code: 'ECHECKSUM' },
    )
    this.name = 'ChecksumMismatchError'
  }
}

/** Unaligned reads from this size are read straight into the caller's buffer, their two edge blocks beside it. */
const EDGED_FROM = 64 << 10
/** Scratch for small unaligned reads: the span around them is read here and copied out. */
const spans = new BufferPool(EDGED_FROM + 2 * 4096, 32)
/** The two edge blocks of a large unaligned read. */
const edgePairs = new BufferPool(2 * 4096, 64)

/** Reads from this size have their blocks checksummed on the thread that reads them, while the bytes are in its cache. */
const SUMMED_FROM = 64 << 10
/** Arrays for those checksums, reused: one per read up to 1 MiB (a typed array of 1 KiB is allocated outside V8's heap). */
const SUMMED_BLOCKS = 256
const summedArrays: Uint32Array[] = []

/** Attempts of a read whose blocks a write touched meanwhile, the last one alone on its span (writes there wait). */
const MAX_ATTEMPTS = 4

/**
 * Reads [offset, offset + buffer.length) into `buffer`, verified, one call per read for the blocks it returns, bad
 * ones healed. An aligned range is read straight into `buffer`; a large unaligned one too, its edge blocks read
 * whole beside it; a small unaligned one through a pooled scratch span. Blocks a write touched meanwhile are read
 * again, not judged; the last attempt runs with client writes on the span held off, so a read racing a stream of
 * writes is judged too. Returns the bytes read.
 */
export async function readVerified(host: VerifyHost, sums: ChecksumStore, buffer: Buffer, offset: number, group: OperationGroup, replicaId: string | undefined): Promise<number> {
  const size = host.size
  const end = offset + buffer.length
  // Past the end (a shrink raced this read): there is nothing to verify it against.
  if (end > size || buffer.length === 0) return countRead(group, await host.readFrom(buffer, offset, group, replicaId), buffer.length)
  const bs = sums.blockBytes
  const start = offset - (offset % bs)
  const spanEnd = end % bs === 0 ? end : Math.min(size, end - (end % bs) + bs)
  if (start === offset && spanEnd === end) {
    // The common case, kept free of closures: they are made only for the last attempt.
    for (let attempt = 1; attempt < MAX_ATTEMPTS; attempt++) {
      const read = await readOnce(host, sums, buffer, start, spanEnd, group, replicaId, false)
      if (read) return countRead(group, read, read.bytes)
    }
    const read = await alone(host, sums, start, spanEnd, () => readOnce(host, sums, buffer, start, spanEnd, group, replicaId, true))
    return countRead(group, read, read.bytes)
  }
  if (buffer.length >= EDGED_FROM && 2 * bs <= edgePairs.bufferBytes) {
    const edges = edgePairs.take()
    try {
      const read = await attempts(host, sums, start, spanEnd, () => readEdgedOnce(host, sums, buffer, offset, edges, group, replicaId, false), () => readEdgedOnce(host, sums, buffer, offset, edges, group, replicaId, true))
      if (read !== 'short') return countRead(group, read, read.bytes)
    } finally {
      edgePairs.give(edges)
    }
  }
  const span = spanEnd - start
  const slab = span <= spans.bufferBytes ? spans.take() : undefined
  const data = slab ? slab.subarray(0, span) : Buffer.allocUnsafe(span)
  try {
    const read = await attempts(host, sums, start, spanEnd, () => readOnce(host, sums, data, start, spanEnd, group, replicaId, false), () => readOnce(host, sums, data, start, spanEnd, group, replicaId, true))
    const n = Math.max(0, Math.min(buffer.length, read.bytes - (offset - start)))
    data.copy(buffer, 0, offset - start, offset - start + n)
    return countRead(group, read, n)
  } finally {
    if (slab) spans.give(slab)
  }
}

/** Runs `once` until it need not be read again (not null), the last time as `last`, alone on [start, end). */
async function attempts<T>(host: VerifyHost, sums: ChecksumStore, start: number, end: number, once: () => Promise<T | null>, last: () => Promise<T | null>): Promise<T> {
  for (let attempt = 1; attempt < MAX_ATTEMPTS; attempt++) {
    const read = await once()
    if (read !== null) return read
  }
  return alone(host, sums, start, end, last)
}

/** The last attempt, with client writes on [start, end) held off; one whose healing still raced a write is refused for now. */
async function alone<T>(host: VerifyHost, sums: ChecksumStore, start: number, end: number, work: () => Promise<T | null>): Promise<T> {
  const read = await sums.exclusive(start, end, work)
  if (read === null) throw new EngineError('busy', `bytes ${start}-${end - 1} of volume ${host.name} keep changing while they are verified: retry the read`)
  return read
}

/**
 * One attempt: reads [start, end) into `data` and heals its bad blocks; null when a write touched it meanwhile (read
 * again). `held`: client writes on the span are held off, so its blocks are judged (the store knows its latest 1,024
 * changes block by block; only past that can writes elsewhere in a 1 MiB region leave a block unjudged, served as read).
 */
async function readOnce(
  host: VerifyHost,
  sums: ChecksumStore,
  data: Buffer,
  start: number,
  end: number,
  group: OperationGroup,
  replicaId: string | undefined,
  held: boolean,
): Promise<ReplicaRead | null> {
  const ticket = sums.beginRead(start, end)
  const blocks = Math.ceil(data.length / sums.blockBytes)
  const out = data.length < SUMMED_FROM ? undefined : blocks <= SUMMED_BLOCKS ? (summedArrays.pop() ?? new Uint32Array(SUMMED_BLOCKS)) : new Uint32Array(blocks)
  let read: ReplicaRead
  let bad: number[]
  try {
    read = await host.readFrom(data, start, group, replicaId, false, out && { blockBytes: sums.blockBytes, out })
    bad = sums.mismatches(ticket, start, judged(data, read.bytes, start, host.size, sums.blockBytes), read.summed ? out : undefined)
  } finally {
    // A failed read has completed too (the pool is done with the array).
    if (out?.length === SUMMED_BLOCKS && summedArrays.length < 64) summedArrays.push(out)
  }
  if (bad.length > 0 && !(await healRead(host, sums, ticket, read.replica, data, start, bad, held))) return null
  return held || !sums.changedSince(ticket, start, end) ? read : null
}

/**
 * One attempt of a large unaligned read: [offset, end) straight into `buffer`, its partial edge blocks whole into
 * `edges` from the same replica; the aligned middle and the edges are judged and healed, and the edges' verified
 * bytes are what the buffer gets. 'short' when a read comes back short or an edge read fails: the caller reads the
 * span instead (with its failover).
 */
async function readEdgedOnce(
  host: VerifyHost,
  sums: ChecksumStore,
  buffer: Buffer,
  offset: number,
  edges: Buffer,
  group: OperationGroup,
  replicaId: string | undefined,
  held: boolean,
): Promise<ReplicaRead | 'short' | null> {
  const bs = sums.blockBytes
  const size = host.size
  const end = offset + buffer.length
  const headStart = offset - (offset % bs)
  const inner = headStart === offset ? offset : headStart + bs
  const innerEnd = end % bs === 0 || end === size ? end : end - (end % bs)
  const spanEnd = innerEnd === end ? end : Math.min(size, innerEnd + bs)
  const ticket = sums.beginRead(headStart, spanEnd)
  const read = await host.readFrom(buffer, offset, group, replicaId)
  if (read.bytes < buffer.length) return 'short'
  const head = inner > offset ? edges.subarray(0, bs) : null
  const tail = spanEnd > innerEnd ? edges.subarray(bs, bs + spanEnd - innerEnd) : null
  const file = read.replica.file
  try {
    if (!file || (head && (await file.read(head, headStart)) < bs) || (tail && (await file.read(tail, innerEnd)) < tail.length)) return 'short'
  } catch {
    return 'short'
  }
  const middle = buffer.subarray(inner - offset, innerEnd - offset)
  for (const [data, at] of [[middle, inner], [head, headStart], [tail, innerEnd]] as const) {
    if (!data) continue
    const bad = sums.mismatches(ticket, at, data)
    if (bad.length > 0 && !(await healRead(host, sums, ticket, read.replica, data, at, bad, held))) return null
  }
  if (head) head.copy(buffer, 0, offset - headStart)
  if (tail) tail.copy(buffer, innerEnd - offset, 0, end - innerEnd)
  return held || !sums.changedSince(ticket, headStart, spanEnd) ? read : null
}

function countRead(group: OperationGroup, read: ReplicaRead, bytes: number): number {
  const op = group.find(read.replica.id)
  if (op) op.bytes += bytes
  return bytes
}

/** The whole blocks of a read that came back `bytes` long (its last block may end at the volume's end). */
function judged(data: Buffer, bytes: number, start: number, size: number, bs: number): Buffer {
  if (bytes === data.length) return data
  return data.subarray(0, start + bytes === size ? bytes : bytes - (bytes % bs))
}

/**
 * Heals the bad blocks of a read: each is replaced in `data` by a copy from another replica that verifies, and the
 * bad replica is repaired. False when a write touched one meanwhile (read again); throws when no copy verifies.
 */
async function healRead(host: VerifyHost, sums: ChecksumStore, ticket: unknown, bad: Replica, data: Buffer, start: number, blocks: number[], held: boolean): Promise<boolean> {
  for (const at of blocks) {
    const blockEnd = Math.min(at + sums.blockBytes, host.size)
    const found = await goodCopy(host, sums, ticket, bad, at, blockEnd)
    if (found === 'raced') return false
    if (!found) {
      host.noteMismatch({ replica: bad.id, offset: at, length: blockEnd - at, repaired: false, from: null })
      throw new ChecksumMismatchError(host.name, at, blockEnd - at, [bad.id, ...holders(host, bad, at, blockEnd).map((r) => r.id)])
    }
    found.bytes.copy(data, at - start)
    const repaired = held ? await writeGood(host, sums, bad, found.replica, at, blockEnd) : await repairBlock(host, sums, bad, found.replica, at, blockEnd)
    host.noteMismatch({ replica: bad.id, offset: at, length: blockEnd - at, repaired, from: found.replica.id })
  }
  return true
}

/** The other replicas that hold [start, end): healthy, taking writes, lacking none of it (remote ones too). */
export function holders(host: VerifyHost, except: Replica, start: number, end: number): Replica[] {
  return host.replicas.filter((r) => r !== except && !r.failed && r.spec.write && !r.lacks(start, end))
}

/**
 * The first copy of block [start, end) on another replica that verifies against `ticket`; 'raced' when a write
 * touched the block since (nothing can be judged), undefined when none verifies. A replica that cannot be read fails.
 */
export async function goodCopy(
  host: VerifyHost,
  sums: ChecksumStore,
  ticket: unknown,
  bad: Replica,
  start: number,
  end: number,
): Promise<{ replica: Replica; bytes: Buffer } | 'raced' | undefined> {
  const bytes = Buffer.allocUnsafe(end - start)
  for (const candidate of holders(host, bad, start, end)) {
    let n: number
    try {
      n = await candidate.file!.read(bytes, start)
    } catch (err) {
      host.replicaFailed(candidate, err)
      continue
    }
    if (sums.changedSince(ticket, start, end)) return 'raced'
    if (n === bytes.length && sums.mismatches(ticket, start, bytes).length === 0) return { replica: candidate, bytes }
  }
  return sums.changedSince(ticket, start, end) ? 'raced' : undefined
}

/**
 * Writes the good block of `good` over `bad`'s, with no client write on it meanwhile: the good copy is read and
 * verified again inside, so a repair never overwrites a newer write. A remote that takes only whole chunks (S3) has
 * the block copied by write-behind instead. A failed write fails the replica. Whether it was repaired.
 */
export function repairBlock(host: VerifyHost, sums: ChecksumStore, bad: Replica, good: Replica, start: number, end: number): Promise<boolean> {
  return sums.exclusive(start, end, () => writeGood(host, sums, bad, good, start, end))
}

/** The repair itself, run with client writes on [start, end) held off. */
async function writeGood(host: VerifyHost, sums: ChecksumStore, bad: Replica, good: Replica, start: number, end: number): Promise<boolean> {
  // Client writes on the block are held off: an intent of one waiting to start is no reason not to repair.
  if (bad.failed || good.failed || bad.lacksAcknowledged(start, end) || good.lacksAcknowledged(start, end)) return false
  const ticket = sums.beginRead(start, end)
  const bytes = Buffer.allocUnsafe(end - start)
  const n = await good.file!.read(bytes, start).catch(() => -1)
  if (n !== bytes.length || sums.mismatches(ticket, start, bytes).length > 0 || sums.changedSince(ticket, start, end)) return false
  return overwriteBlock(host, bad, bytes, start)
}

/**
 * Writes a block's right bytes over `replica`'s copy (client writes on it held off by the caller); a remote that takes
 * only whole chunks (S3) has it copied by write-behind instead. A failed write fails the replica. Whether it was done.
 */
export async function overwriteBlock(host: Pick<VerifyHost, 'fsync' | 'replicaFailed' | 'wakeWriteBehind'>, replica: Replica, bytes: Buffer, start: number): Promise<boolean> {
  const file = replica.file
  if (!file) return false
  try {
    if (file.writeUnit !== undefined) {
      await replica.journal.markDirty(start, bytes.length)
      replica.markPending(start, start + bytes.length)
      host.wakeWriteBehind()
      return true
    }
    await file.write(bytes, start)
    if (host.fsync) await file.sync()
    return true
  } catch (err) {
    host.replicaFailed(replica, err)
    return false
  }
}

/**
 * Verifies what write-behind read from `source` for a copy to `target`, [start, start + bytes) of `chunk`, read after
 * `ticket` was taken: a bad block is replaced by a copy that verifies — from a replica that holds it, else from the
 * target's own block (a full resync marks it all dirty, yet bytes that verify are the content) — and the source is
 * repaired, so rot never spreads over good bytes. A block no replica has a good copy of is copied as it is (noted:
 * nothing better exists); a block a write touched meanwhile is left to that write, which marks it dirty again.
 */
export async function verifyCopy(host: VerifyHost, sums: ChecksumStore, ticket: unknown, source: Replica, target: Replica, chunk: Buffer, start: number, bytes: number): Promise<void> {
  const bs = sums.blockBytes
  const size = host.size
  // Whole blocks only: a copy's edges that cut a block are checked by the copy that holds the rest.
  const first = start % bs === 0 ? start : start - (start % bs) + bs
  const end = Math.min(start + bytes, size)
  const last = end === size ? end : end - (end % bs)
  if (last <= first || !sums.covered(first, last)) return
  for (const at of sums.mismatches(ticket, first, chunk.subarray(first - start, last - start))) {
    const blockEnd = Math.min(at + bs, size)
    let found = await goodCopy(host, sums, ticket, source, at, blockEnd)
    if (found === undefined) found = await ownCopy(sums, ticket, target, at, blockEnd)
    if (found === 'raced') continue
    if (!found) {
      host.noteMismatch({ replica: source.id, offset: at, length: blockEnd - at, repaired: false, from: null })
      continue
    }
    found.bytes.copy(chunk, at - start)
    const repaired = found.replica === target ? await writeVerified(host, sums, source, found.bytes, at) : await repairBlock(host, sums, source, found.replica, at, blockEnd)
    host.noteMismatch({ replica: source.id, offset: at, length: blockEnd - at, repaired, from: found.replica.id })
  }
}

/** The target's own block [start, end), when it verifies against `ticket`. */
async function ownCopy(sums: ChecksumStore, ticket: unknown, target: Replica, start: number, end: number): Promise<{ replica: Replica; bytes: Buffer } | 'raced' | undefined> {
  if (!target.file || target.failed || target.file.writeUnit !== undefined) return undefined
  const bytes = Buffer.allocUnsafe(end - start)
  const n = await target.file.read(bytes, start).catch(() => -1)
  if (sums.changedSince(ticket, start, end)) return 'raced'
  return n === bytes.length && sums.mismatches(ticket, start, bytes).length === 0 ? { replica: target, bytes } : undefined
}

/** Writes `bytes`, verified, over `bad`'s block at `start` with client writes on it held off, if none came since. */
function writeVerified(host: VerifyHost, sums: ChecksumStore, bad: Replica, bytes: Buffer, start: number): Promise<boolean> {
  const end = start + bytes.length
  return sums.exclusive(start, end, async () => {
    const ticket = sums.beginRead(start, end)
    if (bad.failed || !bad.file || sums.mismatches(ticket, start, bytes).length > 0) return false
    try {
      await bad.file.write(bytes, start)
      if (host.fsync) await bad.file.sync()
      return true
    } catch (err) {
      host.replicaFailed(bad, err)
      return false
    }
  })
}
