import { randomBytes } from 'node:crypto'
import { constants, promises as fs } from 'node:fs'
import { dirname } from 'node:path'
import { crc32 } from 'node:zlib'
import { RangeSet } from './range-set.js'
import { writeFully } from './replica-file.js'

/*
 * On-disk format (all integers little-endian; 64-bit ones as two 32-bit halves).
 *
 * Header, HEADER_SIZE = 80 bytes:
 *    0  8  magic "FMJOURN2"
 *    8  4  CRC-32 of bytes 12..80
 *   12  1  flags: 1 = carries an identity, 2 = sealed (closed cleanly)
 *   13  3  zero
 *   16 16  volume UUID (binary; zero without an identity)
 *   32 16  replica UUID (binary; zero without an identity)
 *   48  8  generation (zero without an identity)
 *   56  8  base: records written with the header before the file was renamed into place (never fewer may follow)
 *   64  8  sealed count: the number of records at the seal (zero unless sealed)
 *   72  4  salt: random per file, the initial value of every record's CRC (records of another file never check out)
 *   76  4  zero
 *
 * Records, RECORD_SIZE = 24 bytes each, from byte 80 on:
 *    0  4  CRC-32 of bytes 4..24, started from the header's salt
 *    4  1  type: 1 dirty, 2 clean
 *    5  3  sequence: the record's index in the file, modulo 2^24
 *    8  8  offset
 *   16  8  length
 *
 * The older "FMJOURN1" format (a 16-byte header with no identity, records without sequence) is read as corrupt.
 */
const MAGIC = Buffer.from('FMJOURN2')
const OLD_MAGIC = Buffer.from('FMJOURN1')
const HEADER_SIZE = 80
const RECORD_SIZE = 24
const DIRTY = 1
const CLEAN = 2
const HAS_IDENTITY = 1
const SEALED = 2
const SEQUENCE_MASK = 0xffffff
/** Marks "everything": used for a full resync, before the size is known. */
export const WHOLE_FILE = Number.MAX_SAFE_INTEGER

/**
 * Whose journal this is: the volume and replica (UUIDs) and the volume's generation counter for it.
 * A journal read back must carry exactly the identity the volume expects: another volume, another replica,
 * or another generation (older: a stale copy; newer: the volume's own record is stale) means a full resync.
 */
export interface JournalIdentity {
  volume: string
  replica: string
  generation: number
}

export type RecoveredJournal =
  | { kind: 'missing' }
  /** Torn or corrupt beyond a torn tail, cut short, or another's: nothing in it can be trusted. */
  | { kind: 'corrupt'; reason: string }
  | { kind: 'ok'; dirty: RangeSet }

const TWO_32 = 2 ** 32
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

function uuidBytes(value: string, what: string): Buffer {
  if (typeof value !== 'string' || !UUID.test(value)) throw new TypeError(`journal identity: ${what} is not a UUID: ${String(value)}`)
  return Buffer.from(value.replace(/-/g, ''), 'hex')
}

function uuidString(bytes: Buffer): string {
  const h = bytes.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/** Checks an identity before anything is written with it. */
function checkIdentity(identity: JournalIdentity): void {
  uuidBytes(identity.volume, 'volume')
  uuidBytes(identity.replica, 'replica')
  if (!Number.isSafeInteger(identity.generation) || identity.generation < 0) {
    throw new TypeError(`journal identity: generation is not a non-negative integer: ${String(identity.generation)}`)
  }
}

function writeUInt64(into: Buffer, value: number, at: number): void {
  into.writeUInt32LE(value % TWO_32, at)
  into.writeUInt32LE(Math.floor(value / TWO_32), at + 4)
}

function readUInt64(from: Buffer, at: number): number {
  return from.readUInt32LE(at) + from.readUInt32LE(at + 4) * TWO_32
}

interface Header {
  identity: JournalIdentity | undefined
  salt: number
  base: number
  /** The record count at the seal; undefined while the journal is open (or after a crash). */
  sealed: number | undefined
}

function encodeHeader(into: Buffer, header: Header): void {
  into.fill(0, 0, HEADER_SIZE)
  MAGIC.copy(into, 0)
  into[12] = (header.identity ? HAS_IDENTITY : 0) | (header.sealed !== undefined ? SEALED : 0)
  if (header.identity) {
    uuidBytes(header.identity.volume, 'volume').copy(into, 16)
    uuidBytes(header.identity.replica, 'replica').copy(into, 32)
    writeUInt64(into, header.identity.generation, 48)
  }
  writeUInt64(into, header.base, 56)
  writeUInt64(into, header.sealed ?? 0, 64)
  into.writeUInt32LE(header.salt, 72)
  into.writeUInt32LE(crc32(into.subarray(12, HEADER_SIZE)), 8)
}

function decodeHeader(bytes: Buffer): Header | { reason: string } {
  if (bytes.length >= OLD_MAGIC.length && bytes.subarray(0, OLD_MAGIC.length).equals(OLD_MAGIC)) {
    return { reason: 'journal has no identity (older format)' }
  }
  if (bytes.length < HEADER_SIZE || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) return { reason: 'bad header' }
  if (bytes.readUInt32LE(8) !== crc32(bytes.subarray(12, HEADER_SIZE))) return { reason: 'bad header' }
  const flags = bytes[12]
  const identity =
    flags & HAS_IDENTITY
      ? { volume: uuidString(bytes.subarray(16, 32)), replica: uuidString(bytes.subarray(32, 48)), generation: readUInt64(bytes, 48) }
      : undefined
  return { identity, salt: bytes.readUInt32LE(72), base: readUInt64(bytes, 56), sealed: flags & SEALED ? readUInt64(bytes, 64) : undefined }
}

/** Why a journal is not the one expected, or undefined when it is. */
function foreign(found: JournalIdentity | undefined, expected: JournalIdentity): string | undefined {
  if (!found) return 'journal has no identity'
  if (found.volume !== String(expected.volume).toLowerCase()) return `journal belongs to volume ${found.volume}, not ${expected.volume}`
  if (found.replica !== String(expected.replica).toLowerCase()) return `journal belongs to replica ${found.replica}, not ${expected.replica}`
  if (found.generation !== expected.generation) {
    return `journal belongs to generation ${found.generation} of replica ${found.replica}, not ${expected.generation}`
  }
  return undefined
}

/** Writes one record at `at` of `into`; 64-bit fields as two 32-bit halves (no BigInt per record). */
function encodeInto(into: Buffer, at: number, salt: number, sequence: number, type: number, offset: number, length: number): void {
  into[at + 4] = type
  into.writeUIntLE(sequence & SEQUENCE_MASK, at + 5, 3)
  into.writeUInt32LE(offset % TWO_32, at + 8)
  into.writeUInt32LE(Math.floor(offset / TWO_32), at + 12)
  into.writeUInt32LE(length % TWO_32, at + 16)
  into.writeUInt32LE(Math.floor(length / TWO_32), at + 20)
  into.writeUInt32LE(crc32(into.subarray(at + 4, at + RECORD_SIZE), salt), at)
}

/** Appends not yet written, flattened: type, offset, length for each. */
type Ops = number[]

/** Encodes `ops` as records numbered from `first` on. */
function encodeOps(ops: Ops, salt: number, first: number): Buffer {
  const bytes = Buffer.allocUnsafe((ops.length / 3) * RECORD_SIZE)
  for (let i = 0, at = 0; i < ops.length; i += 3, at += RECORD_SIZE) encodeInto(bytes, at, salt, first + i / 3, ops[i], ops[i + 1], ops[i + 2])
  return bytes
}

function newSalt(): number {
  return randomBytes(4).readUInt32LE(0)
}

/** Records encoded between two turns of the event loop while a compaction builds its file. */
const ENCODE_SLICE = 4096

/** A whole journal holding exactly `dirty`: the header (with a fresh salt), then one dirty record per interval. */
async function encodeJournal(dirty: RangeSet, identity: JournalIdentity | undefined, yieldEvery = Infinity): Promise<{ bytes: Buffer; salt: number }> {
  const salt = newSalt()
  const bytes = Buffer.allocUnsafe(HEADER_SIZE + dirty.count * RECORD_SIZE)
  encodeHeader(bytes, { identity, salt, base: dirty.count, sealed: undefined })
  let at = HEADER_SIZE
  let n = 0
  for (const [start, end] of dirty) {
    encodeInto(bytes, at, salt, n, DIRTY, start, end - start)
    at += RECORD_SIZE
    // A large live set is encoded in slices, so requests keep being served meanwhile.
    if (++n % yieldEvery === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  return { bytes, salt }
}

/**
 * Replays a journal's bytes. A bad record counts as a torn tail only if nothing valid follows it, and only
 * while the journal is unsealed (a crash); a record out of sequence (one missing or repeated), fewer records
 * than the header's base, a sealed journal with other than its sealed count, or an identity other than
 * `expected` (when given) is corrupt.
 */
export function replayJournal(bytes: Buffer, expected?: JournalIdentity): RecoveredJournal {
  const header = decodeHeader(bytes)
  if ('reason' in header) return { kind: 'corrupt', reason: header.reason }
  if (expected) {
    const reason = foreign(header.identity, expected)
    if (reason) return { kind: 'corrupt', reason }
  }
  const { salt, base, sealed } = header
  const dirty = new RangeSet()
  let tornAt = -1
  let count = 0
  for (let at = HEADER_SIZE; at + RECORD_SIZE <= bytes.length; at += RECORD_SIZE) {
    const record = bytes.subarray(at, at + RECORD_SIZE)
    const valid = record.readUInt32LE(0) === crc32(record.subarray(4), salt) && (record[4] === DIRTY || record[4] === CLEAN)
    if (!valid) {
      if (tornAt < 0) tornAt = at
      continue
    }
    if (tornAt >= 0) return { kind: 'corrupt', reason: `bad record at byte ${tornAt} followed by valid ones` }
    const sequence = record.readUIntLE(5, 3)
    if (sequence !== (count & SEQUENCE_MASK)) {
      return { kind: 'corrupt', reason: `record at byte ${at} has sequence ${sequence}, not ${count & SEQUENCE_MASK}: a record is missing or repeated` }
    }
    count++
    const offset = readUInt64(record, 8)
    const length = readUInt64(record, 16)
    const end = Math.min(WHOLE_FILE, offset + length)
    if (record[4] === DIRTY) dirty.add(offset, end)
    else dirty.remove(offset, end)
  }
  if (sealed !== undefined && count !== sealed) {
    return { kind: 'corrupt', reason: `sealed journal holds ${count} valid records, its seal says ${sealed}: ${count < sealed ? 'cut short' : 'written after its seal'}` }
  }
  if (count < base) return { kind: 'corrupt', reason: `journal cut short: ${count} valid records, ${base} were written with its header` }
  return { kind: 'ok', dirty }
}

/**
 * Reads a replica's journal back. With `expected`, a journal of another volume, replica or generation
 * (generation must be equal) is corrupt; without it, the identity is not looked at.
 */
export async function readJournal(path: string, expected?: JournalIdentity): Promise<RecoveredJournal> {
  try {
    return replayJournal(await fs.readFile(path), expected)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' }
    return { kind: 'corrupt', reason: (err as Error).message }
  }
}

/** The identity a journal's header carries: undefined when it is missing, unreadable, damaged, of the older format or carries none. */
export async function readJournalIdentity(path: string): Promise<JournalIdentity | undefined> {
  let handle: fs.FileHandle | undefined
  try {
    handle = await fs.open(path, constants.O_RDONLY)
    const bytes = Buffer.alloc(HEADER_SIZE)
    const { bytesRead } = await handle.read(bytes, 0, HEADER_SIZE, 0)
    const header = decodeHeader(bytes.subarray(0, bytesRead))
    return 'reason' in header ? undefined : header.identity
  } catch {
    return undefined
  } finally {
    await handle?.close().catch(() => {})
  }
}

export interface JournalOptions {
  /** fdatasync every batch before its appends resolve. */
  fsync: boolean
  /** Rewrite the journal from the live set once it holds this many records more than it needs. */
  compactAfter?: number
}

/** A compacted journal being built: the snapshot's file, and every batch appended since the snapshot. */
interface Compaction {
  done: Promise<void>
  /** The snapshot's file once written, at `size` bytes holding `records` records, its records' CRCs seeded with `salt`. */
  ready: { handle: fs.FileHandle; size: number; records: number; salt: number } | null
  /** Batches appended to the current journal since the snapshot: they go to the new file too (renumbered) before it replaces the old. */
  since: Ops[]
  sinceRecords: number
  finish: () => void
}

/**
 * A replica's dirty-range journal: a header carrying whose it is, then an append-only run of checksummed,
 * numbered "dirty" and "clean" records; sealed with the record count on a clean close.
 * Appends made together are written (and synced) as one batch: a group commit.
 */
export class Journal {
  private handle: fs.FileHandle | undefined
  private position = HEADER_SIZE
  private records = 0
  /** The current file's salt and base (records written with its header). */
  private salt = 0
  private base = 0
  /** Record count past which compaction is considered. */
  private compactAt = 0
  private batch: Ops = []
  private batchWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = []
  private flushing: Promise<void> | undefined
  /** A compaction under way: its file is built from a snapshot while appends go on to the current one. */
  private compaction: Compaction | undefined
  private closed = false

  private constructor(
    readonly path: string,
    private readonly options: JournalOptions,
    /** The live dirty set, written out whole when the journal is compacted. */
    private readonly snapshot: () => RangeSet,
    /** Whose journal this is, written in every header (none: an anonymous journal, refused by a reader that expects one). */
    readonly identity: JournalIdentity | undefined,
  ) {}

  /** Starts a fresh journal holding `dirty`, replacing any old one atomically; its header carries `identity`. */
  static async create(path: string, dirty: RangeSet, options: JournalOptions, snapshot: () => RangeSet, identity?: JournalIdentity): Promise<Journal> {
    if (identity) checkIdentity(identity)
    const journal = new Journal(path, options, snapshot, identity && { volume: identity.volume.toLowerCase(), replica: identity.replica.toLowerCase(), generation: identity.generation })
    await journal.rewrite(dirty)
    return journal
  }

  get recordCount(): number {
    return this.records
  }

  /** Turns fdatasync of each batch on or off from the next batch on (a volume's durability changed). */
  setFsync(fsync: boolean): void {
    this.options.fsync = fsync
  }

  /** Records [offset, offset+length) as dirty; resolves once the record is written (and synced in fsync mode). */
  markDirty(offset: number, length: number): Promise<void> {
    return this.append(DIRTY, offset, length)
  }

  /** Records [offset, offset+length) as clean; callers need not wait: a lost clean record only costs a resync. */
  markClean(offset: number, length: number): Promise<void> {
    return this.append(CLEAN, offset, length)
  }

  private append(type: number, offset: number, length: number): Promise<void> {
    if (this.closed) return Promise.reject(new Error('journal is closed'))
    // Encoded when its batch is written: a record's sequence is its place in the file.
    this.batch.push(type, offset, length)
    const done = new Promise<void>((resolve, reject) => this.batchWaiters.push({ resolve, reject }))
    this.flushSoon()
    return done
  }

  private flushSoon(): void {
    if (!this.flushing) this.flushing = this.flushLoop()
  }

  /**
   * Writes batches one at a time, so a torn write can only ever be the last one; switches to a compacted
   * file between two batches once it is ready.
   */
  private async flushLoop(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve))
    for (;;) {
      if (this.compaction?.ready) await this.switchToCompacted(this.compaction)
      if (this.batch.length === 0) break
      const ops = this.batch
      const count = ops.length / 3
      const waiters = this.batchWaiters
      this.batch = []
      this.batchWaiters = []
      try {
        const bytes = encodeOps(ops, this.salt, this.records)
        // Positional on the descriptor: no FileHandle bookkeeping per batch.
        await writeFully(this.handle!.fd, bytes, this.position)
        if (this.options.fsync) await this.handle!.datasync()
        this.position += bytes.length
        this.records += count
        if (this.compaction) {
          this.compaction.since.push(ops)
          this.compaction.sinceRecords += count
        }
        for (const w of waiters) w.resolve()
      } catch (err) {
        // Nothing counted: the next batch takes the same place (and the same sequence numbers).
        for (const w of waiters) w.reject(err as Error)
      }
      // The live set is built only once the journal has grown past the last mark, not after every batch.
      // Small journals (whose live set is small too) are checked after every batch; large ones at marks.
      if (!this.compaction && !this.closed && (this.records > this.compactAt || this.records < 1024)) {
        const live = this.snapshot()
        if (this.records > this.compactAfter + 2 * live.count) this.startCompaction(live)
        else this.postponeCompaction()
      }
    }
    this.flushing = undefined
  }

  /** Builds the compacted file from `live` (taken after the last batch written) without holding up appends. */
  private startCompaction(live: RangeSet): void {
    let finish!: () => void
    const compaction: Compaction = { done: new Promise((resolve) => (finish = resolve)), ready: null, since: [], sinceRecords: 0, finish }
    this.compaction = compaction
    const abandon = () => {
      this.compaction = undefined
      this.postponeCompaction()
      finish()
    }
    void encodeJournal(live, this.identity, ENCODE_SLICE)
      .then(async ({ bytes, salt }) => {
        const handle = await this.writeTemporary(bytes)
        compaction.ready = { handle, size: bytes.length, records: live.count, salt }
        this.flushSoon()
      })
      .catch(abandon)
  }

  /**
   * Between two batches: the batches appended since the snapshot go to the new file (numbered after the
   * snapshot's records, under its salt, and counted in its header's base), which then replaces the old.
   */
  private async switchToCompacted(compaction: Compaction): Promise<void> {
    const { handle, size, records, salt } = compaction.ready!
    this.compaction = undefined
    try {
      const base = records + compaction.sinceRecords
      const since = encodeOps(compaction.since.flat(), salt, records)
      await writeFully(handle.fd, since, size)
      if (compaction.sinceRecords > 0) {
        const header = Buffer.allocUnsafe(HEADER_SIZE)
        encodeHeader(header, { identity: this.identity, salt, base, sealed: undefined })
        await writeFully(handle.fd, header, 0)
      }
      if (this.options.fsync) await handle.datasync()
      await this.install(handle, size + since.length, base, salt)
    } catch {
      // The old journal still holds everything: keep it, and try again later.
      await handle.close().catch(() => {})
      this.postponeCompaction()
    } finally {
      compaction.finish()
    }
  }

  /** Renames the written temporary file over the journal and appends to it from now on. */
  private async install(handle: fs.FileHandle, size: number, records: number, salt: number): Promise<void> {
    await fs.rename(this.temporaryPath, this.path)
    if (this.options.fsync) await syncDirectory(dirname(this.path))
    await this.handle?.close()
    this.handle = handle
    this.position = size
    this.records = records
    this.base = records
    this.salt = salt
    this.compactAt = this.compactAfter
  }

  /** Looks at compaction again after an eighth more records: a bounded overshoot, an amortised snapshot. */
  private postponeCompaction(): void {
    this.compactAt = this.records + Math.max(1, this.records >> 3)
  }

  private get temporaryPath(): string {
    return `${this.path}.tmp`
  }

  /** The temporary file of a rewrite, written whole (and synced in fsync mode), still open. */
  private async writeTemporary(bytes: Buffer): Promise<fs.FileHandle> {
    await fs.mkdir(dirname(this.path), { recursive: true })
    const handle = await fs.open(this.temporaryPath, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC, 0o644)
    try {
      await writeFully(handle.fd, bytes, 0)
      // Without fsync durability appends are not synced either (a process crash loses nothing): a sync here would only stall appends.
      if (this.options.fsync) await handle.datasync()
      return handle
    } catch (err) {
      await handle.close()
      throw err
    }
  }

  /** Replaces the journal with one holding exactly `dirty`: write a temporary file, sync it in fsync mode, rename. */
  private async rewrite(dirty: RangeSet): Promise<void> {
    const { bytes, salt } = await encodeJournal(dirty, this.identity)
    await this.install(await this.writeTemporary(bytes), bytes.length, dirty.count, salt)
  }

  private get compactAfter(): number {
    return this.options.compactAfter ?? 4096
  }

  /** Waits for every append made so far, and for a compaction under way. */
  async flush(): Promise<void> {
    while (this.flushing || this.compaction) {
      if (this.flushing) await this.flushing
      else await this.compaction!.done
    }
  }

  /**
   * Writes every append made so far and closes the journal. Sealed (the default), its header then says how
   * many records it holds, so a reader tells a clean close from a file cut short; unsealed, it reads back
   * as after a crash.
   */
  async close(options: { seal?: boolean } = {}): Promise<void> {
    await this.flush()
    this.closed = true
    // An append made while the first flush was ending started another.
    await this.flush()
    const handle = this.handle
    this.handle = undefined
    if (!handle) return
    try {
      if (options.seal ?? true) await this.seal(handle)
    } finally {
      await handle.close()
    }
  }

  /** Drops whatever a failed batch left past the last record, then rewrites the header in place with the count. */
  private async seal(handle: fs.FileHandle): Promise<void> {
    await handle.truncate(this.position)
    const header = Buffer.allocUnsafe(HEADER_SIZE)
    encodeHeader(header, { identity: this.identity, salt: this.salt, base: this.base, sealed: this.records })
    await writeFully(handle.fd, header, 0)
    if (this.options.fsync) await handle.datasync()
  }
}

/** Makes a rename durable. */
export async function syncDirectory(path: string): Promise<void> {
  const dir = await fs.open(path, constants.O_RDONLY)
  try {
    await dir.datasync()
  } catch {
    // Some file systems refuse fsync on directories; the rename is still atomic.
  } finally {
    await dir.close()
  }
}

/** Writes a file atomically: temporary file, fsync, rename, fsync the directory. */
export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  await fs.mkdir(dirname(path), { recursive: true })
  const tmp = `${path}.${process.pid}.tmp`
  const handle = await fs.open(tmp, 'w', 0o644)
  try {
    await handle.writeFile(data)
    await handle.datasync()
  } finally {
    await handle.close()
  }
  await fs.rename(tmp, path)
  await syncDirectory(dirname(path))
}
