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

function encode(type: number, offset: number, length: number): Buffer {
  const record = Buffer.alloc(RECORD_SIZE)
  record.writeUInt8(type, 4)
  record.writeBigUInt64LE(BigInt(offset), 8)
  record.writeBigUInt64LE(BigInt(length), 16)
  record.writeUInt32LE(crc32(record.subarray(4)), 0)
  return record
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
    if (!this.flushing) this.flushing = this.flushLoop()
    return done
  }

  /** Writes batches one at a time, so a torn write can only ever be the last one. */
  private async flushLoop(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve))
    while (this.batch.length > 0) {
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
        for (const w of waiters) w.resolve()
      } catch (err) {
        for (const w of waiters) w.reject(err as Error)
      }
      // The live set is built only once the journal has grown past the last mark, not after every batch.
      // Small journals (whose live set is small too) are checked after every batch; large ones at marks.
      if (this.records > this.compactAt || this.records < 1024) {
        const live = this.snapshot()
        if (this.records > this.compactAfter + 2 * live.count) await this.rewrite(live).catch(() => {})
        // Not yet: look again after an eighth more records (a bounded overshoot, an amortised snapshot).
        else this.compactAt = this.records + Math.max(1, this.records >> 3)
      }
    }
    this.flushing = undefined
  }

  /** Replaces the journal with one holding exactly `dirty`: write a temporary file, sync, rename. */
  private async rewrite(dirty: RangeSet): Promise<void> {
    const parts: Buffer[] = [Buffer.concat([MAGIC, Buffer.alloc(HEADER_SIZE - MAGIC.length)])]
    for (const [start, end] of dirty) parts.push(encode(DIRTY, start, end - start))
    const bytes = Buffer.concat(parts)
    await fs.mkdir(dirname(this.path), { recursive: true })
    const tmp = `${this.path}.tmp`
    const tmpHandle = await fs.open(tmp, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC, 0o644)
    try {
      await tmpHandle.write(bytes, 0, bytes.length, 0)
      await tmpHandle.datasync()
    } catch (err) {
      await tmpHandle.close()
      throw err
    }
    await fs.rename(tmp, this.path)
    await syncDirectory(dirname(this.path))
    await this.handle?.close()
    this.handle = tmpHandle
    this.position = bytes.length
    this.records = dirty.count
    this.compactAt = this.compactAfter
  }

  private get compactAfter(): number {
    return this.options.compactAfter ?? 4096
  }

  /** Waits for every append made so far. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing
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
