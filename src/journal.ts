import { constants, promises as fs } from 'node:fs'
import { dirname } from 'node:path'
import { crc32 } from 'node:zlib'
import { RangeSet } from './range-set.js'
import { writeFully } from './replica-file.js'

const MAGIC = Buffer.from('FMJOURN1')
const HEADER_SIZE = 16
const RECORD_SIZE = 24
const DIRTY = 1
const CLEAN = 2
/** Marks "everything": used for a full resync, before the size is known. */
export const WHOLE_FILE = Number.MAX_SAFE_INTEGER

export type RecoveredJournal =
  | { kind: 'missing' }
  /** Torn or corrupt beyond a torn tail: nothing in it can be trusted. */
  | { kind: 'corrupt'; reason: string }
  | { kind: 'ok'; dirty: RangeSet }

const TWO_32 = 2 ** 32

/** Writes one record at `at` of `into`; 64-bit fields as two 32-bit halves (no BigInt per record). */
function encodeInto(into: Buffer, at: number, type: number, offset: number, length: number): void {
  into.fill(0, at, at + RECORD_SIZE)
  into[at + 4] = type
  into.writeUInt32LE(offset % TWO_32, at + 8)
  into.writeUInt32LE(Math.floor(offset / TWO_32), at + 12)
  into.writeUInt32LE(length % TWO_32, at + 16)
  into.writeUInt32LE(Math.floor(length / TWO_32), at + 20)
  into.writeUInt32LE(crc32(into.subarray(at + 4, at + RECORD_SIZE)), at)
}

function encode(type: number, offset: number, length: number): Buffer {
  const record = Buffer.allocUnsafe(RECORD_SIZE)
  encodeInto(record, 0, type, offset, length)
  return record
}

/** Records encoded between two turns of the event loop while a compaction builds its file. */
const ENCODE_SLICE = 4096

/** A whole journal holding exactly `dirty`: the header, then one dirty record per interval. */
async function encodeJournal(dirty: RangeSet, yieldEvery = Infinity): Promise<Buffer> {
  const bytes = Buffer.allocUnsafe(HEADER_SIZE + dirty.count * RECORD_SIZE)
  bytes.fill(0, 0, HEADER_SIZE)
  MAGIC.copy(bytes, 0)
  let at = HEADER_SIZE
  let n = 0
  for (const [start, end] of dirty) {
    encodeInto(bytes, at, DIRTY, start, end - start)
    at += RECORD_SIZE
    // A large live set is encoded in slices, so requests keep being served meanwhile.
    if (++n % yieldEvery === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  return bytes
}

/** Replays a journal's bytes; a bad record counts as a torn tail only if nothing valid follows it. */
export function replayJournal(bytes: Buffer): RecoveredJournal {
  if (bytes.length < HEADER_SIZE || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) return { kind: 'corrupt', reason: 'bad header' }
  const dirty = new RangeSet()
  let tornAt = -1
  for (let at = HEADER_SIZE; at + RECORD_SIZE <= bytes.length; at += RECORD_SIZE) {
    const record = bytes.subarray(at, at + RECORD_SIZE)
    const valid = record.readUInt32LE(0) === crc32(record.subarray(4)) && (record[4] === DIRTY || record[4] === CLEAN)
    if (!valid) {
      if (tornAt < 0) tornAt = at
      continue
    }
    if (tornAt >= 0) return { kind: 'corrupt', reason: `bad record at byte ${tornAt} followed by valid ones` }
    const offset = Number(record.readBigUInt64LE(8))
    const length = Number(record.readBigUInt64LE(16))
    const end = Math.min(WHOLE_FILE, offset + length)
    if (record[4] === DIRTY) dirty.add(offset, end)
    else dirty.remove(offset, end)
  }
  return { kind: 'ok', dirty }
}

export async function readJournal(path: string): Promise<RecoveredJournal> {
  try {
    return replayJournal(await fs.readFile(path))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' }
    return { kind: 'corrupt', reason: (err as Error).message }
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
  /** The snapshot's file once written, at `size` bytes holding `records` records. */
  ready: { handle: fs.FileHandle; size: number; records: number } | null
  /** Batches appended to the current journal since the snapshot: they go to the new file too before it replaces the old. */
  since: Buffer[]
  sinceRecords: number
  finish: () => void
}

/**
 * A replica's dirty-range journal: an append-only file of checksummed "dirty" and "clean" records.
 * Appends made together are written (and synced) as one batch: a group commit.
 */
export class Journal {
  private handle: fs.FileHandle | undefined
  private position = HEADER_SIZE
  private records = 0
  /** Record count past which compaction is considered. */
  private compactAt = 0
  private batch: Buffer[] = []
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
  ) {}

  /** Starts a fresh journal holding `dirty`, replacing any old one atomically. */
  static async create(path: string, dirty: RangeSet, options: JournalOptions, snapshot: () => RangeSet): Promise<Journal> {
    const journal = new Journal(path, options, snapshot)
    await journal.rewrite(dirty)
    return journal
  }

  get recordCount(): number {
    return this.records
  }

  /** Records [offset, offset+length) as dirty; resolves once the record is written (and synced in fsync mode). */
  markDirty(offset: number, length: number): Promise<void> {
    return this.append(encode(DIRTY, offset, length))
  }

  /** Records [offset, offset+length) as clean; callers need not wait: a lost clean record only costs a resync. */
  markClean(offset: number, length: number): Promise<void> {
    return this.append(encode(CLEAN, offset, length))
  }

  private append(record: Buffer): Promise<void> {
    if (this.closed) return Promise.reject(new Error('journal is closed'))
    this.batch.push(record)
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
      const records = this.batch
      const waiters = this.batchWaiters
      this.batch = []
      this.batchWaiters = []
      try {
        const bytes = records.length === 1 ? records[0] : Buffer.concat(records)
        // Positional on the descriptor: no FileHandle bookkeeping per batch.
        await writeFully(this.handle!.fd, bytes, this.position)
        if (this.options.fsync) await this.handle!.datasync()
        this.position += bytes.length
        this.records += records.length
        if (this.compaction) {
          this.compaction.since.push(bytes)
          this.compaction.sinceRecords += records.length
        }
        for (const w of waiters) w.resolve()
      } catch (err) {
        for (const w of waiters) w.reject(err as Error)
      }
      // The live set is built only once the journal has grown past the last mark, not after every batch.
      // Small journals (whose live set is small too) are checked after every batch; large ones at marks.
      if (!this.compaction && (this.records > this.compactAt || this.records < 1024)) {
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
    void encodeJournal(live, ENCODE_SLICE)
      .then(async (bytes) => {
        const handle = await this.writeTemporary(bytes)
        compaction.ready = { handle, size: bytes.length, records: live.count }
        this.flushSoon()
      })
      .catch(abandon)
  }

  /** Between two batches: the batches appended since the snapshot go to the new file, which then replaces the old. */
  private async switchToCompacted(compaction: Compaction): Promise<void> {
    const { handle, size, records } = compaction.ready!
    this.compaction = undefined
    try {
      const since = Buffer.concat(compaction.since)
      await writeFully(handle.fd, since, size)
      if (this.options.fsync) await handle.datasync()
      await this.install(handle, size + since.length, records + compaction.sinceRecords)
    } catch {
      // The old journal still holds everything: keep it, and try again later.
      await handle.close().catch(() => {})
      this.postponeCompaction()
    } finally {
      compaction.finish()
    }
  }

  /** Renames the written temporary file over the journal and appends to it from now on. */
  private async install(handle: fs.FileHandle, size: number, records: number): Promise<void> {
    await fs.rename(this.temporaryPath, this.path)
    if (this.options.fsync) await syncDirectory(dirname(this.path))
    await this.handle?.close()
    this.handle = handle
    this.position = size
    this.records = records
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
    const bytes = await encodeJournal(dirty)
    await this.install(await this.writeTemporary(bytes), bytes.length, dirty.count)
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

  async close(): Promise<void> {
    await this.flush()
    this.closed = true
    await this.handle?.close()
    this.handle = undefined
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
