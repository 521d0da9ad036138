import { randomUUID } from 'node:crypto'
import { promises as fs } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { blockChecksums, checksum } from './block-hash.js'
import { writeFileAtomic } from './journal.js'

/**
 * Block checksums at rest: CRC-32C of every 4 KiB block of a volume's content (zero-padded past its size), kept in
 * memory (4 bytes per block: 1 MiB per GiB of volume) and persisted beside the journals. Crash safety is md-RAID's
 * write-intent bitmap: a 1 MiB region is marked "in flux" in the file before any write into it since its last
 * flush is sent; a background flusher writes changed checksums, then clears the bits of regions no write touched
 * since. At open, in-flux regions (all of them when the file is missing, torn or foreign) are uncovered: not trusted
 * and recomputed in the background from the volume's truth.
 *
 * File: a 4 KiB header (magic, version, block size, region size, flags, capacity in regions, the volume's UUID,
 * CRC-32C of the header), the region bitmap (one bit per region of the capacity), then the checksum array (host byte
 * order, little-endian on every platform this runs on). The file grows (rewritten atomically, capacity doubled)
 * when a write reaches past its capacity; regions past a file's capacity are uncovered at open.
 */
export const BLOCK_BYTES = 4096
export const REGION_BLOCKS = 256
export const REGION_BYTES = BLOCK_BYTES * REGION_BLOCKS

const MAGIC = Buffer.from('FMBLKSUM')
const VERSION = 1
const HEADER_BYTES = 4096
const HEADER_CRC_AT = 60
const CLOSED_CLEANLY = 1
/** Bitmap pages written at once: a write into a new region rewrites only its page. */
const BITMAP_PAGE = 4096
/** Capacity of a new file, in regions (64 MiB of volume: 64 KiB of checksums). */
const MIN_CAPACITY_REGIONS = 64
const FLUSH_EVERY_MS = 1_000
/** A region's bit is cleared only once no write has touched it for this long: a region written again and again stays in flux, so its writes cost no bitmap write. */
const QUIET_MS = 5_000
/** Longest coverage defers to client writes before it reads its next region anyway. */
const COVER_YIELD_MS = 1_000
/** How long coverage waits before trying again when no replica holds the truth. */
const COVER_RETRY_MS = 1_000
/** Optimistic attempts at a region a client keeps writing, before coverage holds its writes off for one read. */
const COVER_TRIES = 2
/** How many of the latest changes changedSince() knows block by block; a read older than that is judged by region. */
const RECENT = 1024
/** precompute's arrays of one body chunk's blocks (256 KiB) are pooled, this many at most. */
const POOLED_SUMS = 64
const POOL_SIZE = 32

/** The CRC-32C of a block of zeros: every block past the volume's size. */
export const ZERO_BLOCK_CRC = checksum(Buffer.alloc(BLOCK_BYTES))

/** CRC-32C of one block given short (the volume's last block): zero-padded to the block size. */
export function paddedChecksum(bytes: Buffer): number {
  if (bytes.length === BLOCK_BYTES) return checksum(bytes)
  const block = Buffer.alloc(BLOCK_BYTES)
  bytes.copy(block, 0, 0, Math.min(bytes.length, BLOCK_BYTES))
  return checksum(block)
}

/** Checksums of consecutive blocks of `data` (the last may be short: zero-padded) into `out` from `index`. */
function sumsOf(data: Buffer, out: Uint32Array, index: number): number {
  const full = Math.floor(data.length / BLOCK_BYTES)
  if (full > 0) blockChecksums(data.length === full * BLOCK_BYTES ? data : data.subarray(0, full * BLOCK_BYTES), BLOCK_BYTES, out, index)
  if (full * BLOCK_BYTES < data.length) out[index + full] = paddedChecksum(data.subarray(full * BLOCK_BYTES))
  return Math.ceil(data.length / BLOCK_BYTES)
}

/** A read's view of time: mismatches() and cover() ignore blocks a write touched since it was taken. */
export interface ReadTicket {
  readonly seq: number
  readonly start: number
  readonly end: number
}

/** A block range held against overlapping writes: a write landing, or exclusive work (repair, coverage). */
interface Hold {
  readonly kind: 'write' | 'exclusive'
  /** Blocks [first, end). */
  readonly first: number
  readonly end: number
  readonly done: Promise<void>
  /** Taken: no earlier hold overlaps it any more. Until then it has written nothing, so no read need heed it. */
  granted: boolean
  release(): void
}

/** A hold in the store's list; its promise is made only when a later hold waits for it. */
class BlockHold implements Hold {
  granted = false
  private released = false
  private waiting: Promise<void> | undefined
  private wake: (() => void) | undefined

  constructor(
    readonly kind: Hold['kind'],
    readonly first: number,
    readonly end: number,
    private readonly list: Hold[],
  ) {}

  get done(): Promise<void> {
    if (!this.waiting) this.waiting = this.released ? Promise.resolve() : new Promise<void>((resolve) => (this.wake = resolve))
    return this.waiting
  }

  release(): void {
    if (this.released) return
    this.released = true
    const i = this.list.indexOf(this)
    if (i >= 0) this.list.splice(i, 1)
    this.wake?.()
  }
}

/** A client write of [start, end) holding its blocks, with the volume's size when it took them. */
export interface WriteHold {
  readonly start: number
  readonly end: number
  readonly sizeBefore: number
  readonly hold: Hold
  /** Checksums of the write's full blocks, computed from its bytes while they were being written (precompute). */
  full?: Uint32Array
  /** Its partial edge blocks' old bytes from a copy that verified (captureEdges); the block's new bytes once landed. */
  bases?: Map<number, Buffer>
  /** Per edge block, the replicas whose old copy failed its checksum, and the one whose copy verified. */
  rotten?: Map<number, { replicas: string[]; from: string }>
}

/**
 * Reads `buffer.length` bytes at `offset` from each replica that holds them, in turn, until `good` takes them: whether
 * one did (and which), and the replicas whose copy it refused.
 */
export type OldBlockReader = (buffer: Buffer, offset: number, good: (bytes: Buffer) => boolean) => Promise<{ from: string | null; refused: string[] }>

/** Writes a block's right bytes (`from`'s copy with the write laid over) over the replicas whose old copy of it had rot. */
export type EdgeRepair = (replicas: string[], block: Buffer, offset: number, from: string) => Promise<void>

/** Reads the replica's bytes at `offset` into `buffer`; returns how many (fewer only at its end). */
export type ReadBack = (buffer: Buffer, offset: number) => Promise<number>

/** What the store needs of its volume. */
export interface ChecksumHost {
  /** The file: `<DATA_DIR>/.filemirror/journals/<volume>/checksums`. */
  readonly path: string
  /** The volume's UUID (its health record): a file of another volume is foreign. */
  readonly uuid: string
  fsync(): boolean
  size(): number
  /** Reads the volume's truth (its source replica); null when no replica holds every acknowledged byte now. */
  readTruth(buffer: Buffer, offset: number): Promise<number | null>
  /** Resolves once no client write is in flight, or after `ms`. */
  quiet(ms: number): Promise<void>
  log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void }
  /** How long a region must go unwritten before the flusher clears its bit (QUIET_MS when absent; tests set 0). */
  readonly quietMs?: number
}

/** Header fields, as read back. */
interface Header {
  flags: number
  capacityRegions: number
  uuid: string
}

function uuidBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex')
}

export function encodeHeader(h: Header): Buffer {
  const b = Buffer.alloc(HEADER_BYTES)
  MAGIC.copy(b, 0)
  b.writeUInt32LE(VERSION, 8)
  b.writeUInt32LE(BLOCK_BYTES, 12)
  b.writeUInt32LE(REGION_BLOCKS, 16)
  b.writeUInt32LE(h.flags, 20)
  b.writeUInt32LE(h.capacityRegions, 24)
  uuidBytes(h.uuid).copy(b, 32)
  b.writeUInt32LE(checksum(b.subarray(0, HEADER_CRC_AT)), HEADER_CRC_AT)
  return b
}

/** The header, or why it cannot be trusted (torn, another format, another volume). */
export function decodeHeader(b: Buffer, uuid: string): Header | string {
  if (b.length < HEADER_BYTES) return 'short file'
  if (!b.subarray(0, 8).equals(MAGIC)) return 'not a checksums file'
  if (b.readUInt32LE(HEADER_CRC_AT) !== checksum(b.subarray(0, HEADER_CRC_AT))) return 'torn header'
  if (b.readUInt32LE(8) !== VERSION) return `version ${b.readUInt32LE(8)}`
  if (b.readUInt32LE(12) !== BLOCK_BYTES || b.readUInt32LE(16) !== REGION_BLOCKS) return 'another block or region size'
  if (!b.subarray(32, 48).equals(uuidBytes(uuid))) return "another volume's checksums"
  return { flags: b.readUInt32LE(20), capacityRegions: b.readUInt32LE(24), uuid }
}

const bitmapBytes = (regions: number) => Math.ceil(regions / 8)
const arrayAt = (capacityRegions: number) => HEADER_BYTES + bitmapBytes(capacityRegions)
const fileBytes = (capacityRegions: number) => arrayAt(capacityRegions) + capacityRegions * REGION_BLOCKS * 4
const getBit = (bits: Buffer, i: number) => (bits[i >> 3] >> (i & 7)) & 1
const regionsOf = (bytes: number) => Math.ceil(bytes / REGION_BYTES)

/**
 * The checksum array of one volume: kept right by the write path (beginWrite/endWrite around every chunk a client
 * writes, shrinks, whole replaces), verified against by reads (covered/beginRead/mismatches), filled in the
 * background where uncovered (coverage), persisted crash-safely (intent bitmap and flusher).
 */
export class BlockChecksums {
  readonly blockBytes = BLOCK_BYTES
  private sums: Uint32Array
  /** Regions allocated in memory (sums and the per-region arrays below). */
  private regions: number
  /** Per region: 1 when its checksums are not trusted (recomputed by coverage). */
  private uncovered: Uint8Array
  private uncoveredCount = 0
  /** Per region: moved on by every change of its checksums or coverage (the flusher clears only unmoved ones). */
  private epoch: Uint32Array
  /** Per region: the sequence number of the last write that ended in it (tickets compare against it). */
  private stamp: Float64Array
  /** When a client write last began in each region (performance.now()). */
  private writtenAt: Float64Array
  private seq = 0
  /** The blocks [first, end) of the latest RECENT stamps, by seq % RECENT: a write elsewhere in a region is not a change here. */
  private readonly recentFirst = new Float64Array(RECENT)
  private readonly recentEnd = new Float64Array(RECENT)
  /** In flux as wanted (packed bits, capacity of the file) and as last written to the file. */
  private flux: Buffer
  private durable: Buffer
  private readonly fluxed = new Set<number>()
  private readonly dirtyPages = new Set<number>()
  /** Regions whose checksums changed since the flusher last wrote them. */
  private readonly dirty = new Set<number>()
  private capacityRegions: number
  private readonly holds: Hold[] = []
  private readonly pooledSums: Uint32Array[] = []
  private io: Promise<unknown> = Promise.resolve()
  private bitmapQueued: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  private flushing: Promise<void> | undefined
  private closed = false
  /** The file could not be written: nothing is trusted any more (reads go unverified), the file is removed. */
  private broken = false
  private coverage: Promise<void> | undefined
  private coverWake: (() => void) | undefined
  private coverCursor = 0

  private constructor(
    private readonly host: ChecksumHost,
    private fd: FileHandle | undefined,
    capacityRegions: number,
  ) {
    this.capacityRegions = capacityRegions
    this.regions = Math.max(capacityRegions, 1)
    this.sums = new Uint32Array(this.regions * REGION_BLOCKS).fill(ZERO_BLOCK_CRC)
    this.uncovered = new Uint8Array(this.regions)
    this.epoch = new Uint32Array(this.regions)
    this.stamp = new Float64Array(this.regions)
    this.writtenAt = new Float64Array(this.regions)
    this.flux = Buffer.alloc(bitmapBytes(capacityRegions))
    this.durable = Buffer.alloc(bitmapBytes(capacityRegions))
  }

  /**
   * Opens the store of a volume whose content is `host.size()` bytes: trusts what the file holds except regions
   * in flux; `fresh` (a new volume, or checksums just switched on) or a missing, torn or foreign file leaves every
   * region holding data uncovered. Writes the file (not closed cleanly) before it returns. Coverage starts with
   * startCoverage().
   */
  static async open(host: ChecksumHost, fresh: boolean): Promise<BlockChecksums> {
    const size = host.size()
    const used = regionsOf(size)
    const found = fresh ? null : await fs.readFile(host.path).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? null : Promise.reject(err)))
    const header = found ? decodeHeader(found, host.uuid) : 'no file'
    const usable = typeof header !== 'string' && found!.length >= fileBytes(header.capacityRegions)
    if (!fresh && !usable) host.log.warn({ path: host.path, reason: typeof header === 'string' ? header : 'short file' }, 'block checksums not found or not trusted: recomputed in the background')
    const capacity = Math.max(MIN_CAPACITY_REGIONS, used, usable ? header.capacityRegions : 0)
    const store = new BlockChecksums(host, undefined, capacity)
    if (usable) {
      const fileRegions = header.capacityRegions
      const at = arrayAt(fileRegions)
      const onDisk = new Uint32Array(found!.buffer.slice(found!.byteOffset + at, found!.byteOffset + at + fileRegions * REGION_BLOCKS * 4))
      store.sums.set(onDisk.subarray(0, Math.min(onDisk.length, store.sums.length)))
      const bits = found!.subarray(HEADER_BYTES, at)
      bits.copy(store.durable)
      // In flux at the crash: uncovered when it holds data; past the size, cleared once its zeros are flushed.
      for (let r = 0; r < fileRegions; r++) {
        if (!getBit(bits, r)) continue
        store.setFlux(r)
        if (r < used) store.markUncovered(r)
      }
      for (let r = fileRegions; r < used; r++) store.markUncovered(r)
    } else {
      for (let r = 0; r < used; r++) store.markUncovered(r)
    }
    // Past the size every block is zeros by definition, whatever an older content left there.
    store.zeroFrom(size)
    for (let r = 0; r < Math.min(store.regions, capacity); r++) if (store.uncovered[r] && !getBit(store.flux, r)) store.setFlux(r)
    if (usable && capacity === header.capacityRegions) {
      store.fd = await fs.open(host.path, 'r+')
      await store.fd.write(encodeHeader({ flags: 0, capacityRegions: capacity, uuid: host.uuid }), 0, HEADER_BYTES, 0)
      await store.writeBitmapNow()
    } else {
      await store.rewrite(capacity)
    }
    if (used > 0) host.log.info({ path: host.path, coveredBytes: store.coveredBytes(), size }, 'block checksums opened')
    store.timer = setInterval(() => void store.flush(), FLUSH_EVERY_MS)
    store.timer.unref()
    return store
  }

  /** Whether every block touching [start, end) has a trusted checksum. */
  covered(start: number, end: number): boolean {
    if (this.broken) return false
    const last = Math.min(regionsOf(end), this.regions)
    for (let r = Math.floor(start / REGION_BYTES); r < last; r++) if (this.uncovered[r]) return false
    return true
  }

  /** A read is starting on [start, end): the ticket lets mismatches() ignore blocks a write touched meanwhile. */
  beginRead(start: number, end: number): ReadTicket {
    return { seq: this.seq, start, end }
  }

  /**
   * Offsets of covered blocks of `data` (read at block-aligned `offset`; its length a multiple of blockBytes, or
   * ending at the volume's size) whose CRC disagrees with the store — excluding blocks with a write in flight or
   * written since the ticket was taken (those are not rot: the caller re-reads). `known`: the CRCs of `data`'s full
   * blocks, computed where they were read; a short last block is checksummed here, zero-padded as the store keeps it.
   */
  mismatches(ticket: ReadTicket, offset: number, data: Buffer, known?: Uint32Array): number[] {
    if (offset % BLOCK_BYTES !== 0) throw new RangeError('mismatches: offset must be block-aligned')
    data = judgeable(data, offset, this.host.size())
    if (this.broken || data.length === 0) return []
    const first = offset / BLOCK_BYTES
    const count = Math.ceil(data.length / BLOCK_BYTES)
    let seen: Uint32Array
    if (known && known.length >= count) {
      seen = known
      const full = Math.floor(data.length / BLOCK_BYTES)
      if (full < count) seen[full] = paddedChecksum(data.subarray(full * BLOCK_BYTES))
    } else {
      seen = scratch(count)
      sumsOf(data, seen, 0)
    }
    // The common case of a large read, every block as stored: one native comparison of the two arrays, not a loop.
    if (count >= 16 && first + count <= this.sums.length && Buffer.from(seen.buffer, seen.byteOffset, count * 4).equals(Buffer.from(this.sums.buffer, this.sums.byteOffset + first * 4, count * 4))) return []
    const found: number[] = []
    for (let i = 0; i < count; i++) {
      const k = first + i
      if (seen[i] === this.sumOf(k) || this.uncovered[k >> 8]) continue
      if (!this.changedSince(ticket, k * BLOCK_BYTES, (k + 1) * BLOCK_BYTES)) found.push(k * BLOCK_BYTES)
    }
    return found
  }

  /** Whether a write touched [start, end) since the ticket (the caller then re-reads instead of judging). */
  changedSince(ticket: ReadTicket, start: number, end: number): boolean {
    const first = Math.floor(start / BLOCK_BYTES)
    const last = Math.ceil(end / BLOCK_BYTES)
    for (const h of this.holds) if (h.kind === 'write' && h.granted && h.first < last && first < h.end) return true
    if (this.seq - ticket.seq <= RECENT) {
      for (let seq = this.seq; seq > ticket.seq; seq--) {
        const i = seq % RECENT
        if (this.recentFirst[i] < last && first < this.recentEnd[i]) return true
      }
      return false
    }
    const lastRegion = Math.min(Math.ceil(last / REGION_BLOCKS), this.regions)
    for (let r = first >> 8; r < lastRegion; r++) if (this.stamp[r] > ticket.seq) return true
    return false
  }

  /** Runs `work` while no client write overlaps [start, end) (new ones wait): a repair writes good bytes back under it. */
  async exclusive<T>(start: number, end: number, work: () => Promise<T>): Promise<T> {
    const hold = await this.take('exclusive', start, end)
    try {
      return await work()
    } finally {
      // A read that overlapped the work may have seen bytes half repaired: it re-reads rather than judge them.
      this.stampRange(start, end)
      hold.release()
    }
  }

  /**
   * Sets checksums of [offset, offset + data.length) from bytes known good (coverage, scrub of uncovered data).
   * Only uncovered regions take them; a region becomes covered once `data` spans all of it (up to the volume's
   * size) and no write touched it since the ticket. `offset` is block-aligned; `data` ends on a block or at the size.
   */
  cover(ticket: ReadTicket, offset: number, data: Buffer): void {
    if (offset % BLOCK_BYTES !== 0) throw new RangeError('cover: offset must be block-aligned')
    if (this.broken || this.closed) return
    const size = this.host.size()
    data = judgeable(data, offset, size)
    const end = Math.min(offset + data.length, size)
    if (end <= offset) return
    const first = offset / BLOCK_BYTES
    const seen = scratch(Math.ceil((end - offset) / BLOCK_BYTES))
    const count = sumsOf(data.subarray(0, end - offset), seen, 0)
    for (let r = Math.floor(offset / REGION_BYTES); r < regionsOf(end); r++) {
      if (!this.uncovered[r]) continue
      const regionStart = r * REGION_BYTES
      const regionEnd = Math.min(regionStart + REGION_BYTES, size)
      const from = Math.max(first, r * REGION_BLOCKS)
      const to = Math.min(first + count, (r + 1) * REGION_BLOCKS)
      if (this.changedSince(ticket, from * BLOCK_BYTES, to * BLOCK_BYTES)) continue
      this.ensureRegions(r + 1)
      for (let k = from; k < to; k++) this.sums[k] = seen[k - first]
      this.changed(r)
      if (offset <= regionStart && end >= regionEnd) {
        this.markCovered(r)
        this.sums.fill(ZERO_BLOCK_CRC, Math.ceil(regionEnd / BLOCK_BYTES), (r + 1) * REGION_BLOCKS)
      }
    }
  }

  /** Bytes of the volume whose checksums are trusted. */
  coveredBytes(): number {
    const size = this.host.size()
    if (this.broken) return 0
    let bytes = size
    const used = Math.min(regionsOf(size), this.regions)
    for (let r = 0; r < used; r++) if (this.uncovered[r]) bytes -= Math.min(REGION_BYTES, size - r * REGION_BYTES)
    return bytes
  }

  // ---- the write side ----

  /**
   * A client write is about to change [start, end): waits for in-flight writes overlapping its blocks, then marks
   * its regions in flux (written to the file, synced with fsync durability, when one was not already) before the
   * caller sends any byte. Every beginWrite is followed by endWrite.
   */
  beginWrite(start: number, end: number): WriteHold | Promise<WriteHold> {
    this.ensureRegions(regionsOf(end))
    // No promise when no earlier hold overlaps and its regions are already in flux in the file (a write's common case).
    const taking = this.take('write', start, end)
    return taking instanceof Promise ? taking.then((hold) => this.writeHeld(start, end, hold)) : this.writeHeld(start, end, taking)
  }

  /** A write's blocks held: its regions move on, and are in flux in the file before it goes on (I/O only when one is not yet). */
  private writeHeld(start: number, end: number, hold: Hold): WriteHold | Promise<WriteHold> {
    const held: WriteHold = { start, end, sizeBefore: this.host.size(), hold }
    const first = Math.floor(start / REGION_BYTES)
    const last = regionsOf(end)
    const now = performance.now()
    for (let r = first; r < last; r++) {
      this.epoch[r]++
      this.writtenAt[r] = now
    }
    if (this.broken || this.inFlux(first, last)) return held
    return this.intend(first, last).then(
      () => held,
      (err) => {
        this.fail(err)
        return held
      },
    )
  }

  /** A write refused before any byte of it went out: its blocks are released, their checksums as they were. */
  cancelWrite(held: WriteHold): void {
    held.hold.release()
  }

  /**
   * Before a write with partial edge blocks sends a byte (its blocks held): each edge block's old bytes from a replica
   * whose copy verifies, so the block's new checksum is of them with the write laid over (landed), never of a copy
   * with rot outside the write. A block no copy of verifies is left to the read-back after the write.
   */
  captureEdges(held: WriteHold, read: OldBlockReader): Promise<void> | undefined {
    if (this.broken || this.closed) return undefined
    const { start, end, sizeBefore } = held
    const edges = edgeBlocks(start, end).filter((k) => needsOld(k, start, end, sizeBefore))
    // Block-aligned, or every edge past the volume's end: nothing to read (and no promise).
    return edges.length === 0 ? undefined : this.captureEdgeBlocks(held, edges, read)
  }

  private async captureEdgeBlocks(held: WriteHold, edges: number[], read: OldBlockReader): Promise<void> {
    const { sizeBefore } = held
    for (const k of edges) {
      const blockStart = k * BLOCK_BYTES
      const block = Buffer.alloc(BLOCK_BYTES)
      const expected = k >> 8 < this.regions && !this.uncovered[k >> 8] ? this.sumOf(k) : undefined
      const { from, refused } = await read(block.subarray(0, Math.min(BLOCK_BYTES, sizeBefore - blockStart)), blockStart, (bytes) => expected === undefined || paddedChecksum(bytes) === expected)
      if (from === null) continue
      ;(held.bases ??= new Map()).set(k, block)
      if (refused.length > 0) (held.rotten ??= new Map()).set(k, { replicas: refused, from })
    }
  }

  /**
   * The write landed: checksums of its full blocks from `chunk` (the bytes written), of its partial edge blocks from
   * their verified old bytes with the write laid over (captureEdges), else from the block as a replica that took the
   * write now holds it (`readBack`); replicas whose old copy had rot get the block's right bytes (`repair`); then its
   * blocks are released. With no replica that took it (`readBack` null) its regions are uncovered until coverage
   * reads them from the truth.
   */
  endWrite(held: WriteHold, chunk: Buffer, readBack: ReadBack | null, repair?: EdgeRepair): Promise<void> | undefined {
    let landing: Promise<void> | undefined
    try {
      if (this.broken || this.closed) landing = undefined
      else if (!readBack) this.uncover(held.start, held.end)
      else {
        landing = this.landed(held, chunk, readBack)
        if (repair && held.rotten) landing = landing ? landing.then(() => this.repairRotten(held, repair)) : this.repairRotten(held, repair)
      }
    } catch (err) {
      this.writeDone(held)
      throw err
    }
    // A promise only when an edge block is read back or repaired.
    if (!landing) return this.writeDone(held)
    return landing.finally(() => this.writeDone(held))
  }

  private async repairRotten(held: WriteHold, repair: EdgeRepair): Promise<void> {
    const limit = Math.max(held.sizeBefore, held.end)
    for (const [k, { replicas, from }] of held.rotten!) await repair(replicas, held.bases!.get(k)!.subarray(0, Math.min(BLOCK_BYTES, limit - k * BLOCK_BYTES)), k * BLOCK_BYTES, from)
  }

  /** A write's blocks released, stamped for the reads that overlapped it; its precomputed sums' array back to the pool. */
  private writeDone(held: WriteHold): undefined {
    this.stampRange(held.start, held.end)
    held.hold.release()
    if (held.full?.length === POOLED_SUMS && this.pooledSums.length < POOL_SIZE) this.pooledSums.push(held.full)
    held.full = undefined
    return undefined
  }

  /**
   * Computes the checksums of the full blocks of a write's `chunk` while its bytes are on their way to the replicas
   * (they are still in the CPU's cache, and the main thread would only wait); endWrite sets them once it has landed.
   */
  precompute(held: WriteHold, chunk: Buffer): void {
    const fullFirst = Math.ceil(held.start / BLOCK_BYTES)
    const fullEnd = Math.floor(held.end / BLOCK_BYTES)
    if (fullEnd <= fullFirst) return
    const blocks = fullEnd - fullFirst
    // Arrays of a body chunk's size are reused (a new typed array per chunk is an allocation outside the heap).
    held.full = blocks <= POOLED_SUMS ? (this.pooledSums.pop() ?? new Uint32Array(POOLED_SUMS)) : new Uint32Array(blocks)
    const from = fullFirst * BLOCK_BYTES - held.start
    const to = fullEnd * BLOCK_BYTES - held.start
    blockChecksums(from === 0 && to === chunk.length ? chunk : chunk.subarray(from, to), BLOCK_BYTES, held.full, 0)
  }

  /** Sets a landed write's checksums; a promise only when an edge block must be read back from the replica. */
  private landed(held: WriteHold, chunk: Buffer, readBack: ReadBack): Promise<void> | undefined {
    const { start, end, sizeBefore, full, bases } = held
    this.ensureRegions(regionsOf(end))
    const fullFirst = Math.ceil(start / BLOCK_BYTES)
    const fullEnd = Math.floor(end / BLOCK_BYTES)
    if (full) for (let i = 0; i < fullEnd - fullFirst; i++) this.sums[fullFirst + i] = full[i]
    else if (fullEnd > fullFirst) blockChecksums(chunk.subarray(fullFirst * BLOCK_BYTES - start, fullEnd * BLOCK_BYTES - start), BLOCK_BYTES, this.sums, fullFirst)
    // Edge blocks whose verified old bytes were captured: those bytes with the write laid over them.
    for (const [k, block] of bases ?? []) {
      const from = Math.max(start, k * BLOCK_BYTES)
      chunk.copy(block, from - k * BLOCK_BYTES, from - start, Math.min(end, (k + 1) * BLOCK_BYTES) - start)
      this.sums[k] = checksum(block)
    }
    const edges = edgeBlocks(start, end).filter((k) => !bases?.has(k))
    const reads = edges.filter((k) => needsOld(k, start, end, sizeBefore))
    if (reads.length === 0) {
      // Edge blocks past the size it found: the write's bytes and zeros.
      for (const k of edges) this.sums[k] = checksum(blockOfWrite(k, chunk, start, end))
      this.changedRegions(start, end)
      return undefined
    }
    return this.landedReading(held, chunk, readBack, edges, reads)
  }

  private async landedReading({ start, end, sizeBefore }: WriteHold, chunk: Buffer, readBack: ReadBack, edges: number[], reads: number[]): Promise<void> {
    // Bytes of an edge block outside the write are zeros past the size it found (no other write holds the block).
    const limit = Math.max(sizeBefore, end)
    const needsRead = (k: number) => needsOld(k, start, end, sizeBefore)
    // Two edge blocks side by side (a small unaligned write) are read back in one read.
    const spanFirst = reads.length > 0 ? reads[0] : 0
    const spanBlocks = reads.length === 0 ? 0 : reads.at(-1)! - spanFirst + 1
    let span: Buffer | null = null
    if (spanBlocks > 0 && spanBlocks <= 2) {
      const bytes = Buffer.alloc(spanBlocks * BLOCK_BYTES)
      try {
        const n = await readBack(bytes.subarray(0, Math.min(bytes.length, limit - spanFirst * BLOCK_BYTES)), spanFirst * BLOCK_BYTES)
        bytes.fill(0, n)
        span = bytes
      } catch {
        // Not known what the blocks hold: coverage reads them from the truth.
        this.uncover(spanFirst * BLOCK_BYTES, (spanFirst + spanBlocks) * BLOCK_BYTES)
      }
    }
    for (const k of edges) {
      const blockStart = k * BLOCK_BYTES
      let block: Buffer
      if (!needsRead(k)) block = blockOfWrite(k, chunk, start, end)
      else if (spanBlocks <= 2) {
        if (!span) continue
        block = span.subarray((k - spanFirst) * BLOCK_BYTES, (k - spanFirst + 1) * BLOCK_BYTES)
      } else {
        block = Buffer.alloc(BLOCK_BYTES)
        try {
          block.fill(0, await readBack(block.subarray(0, Math.min(BLOCK_BYTES, limit - blockStart)), blockStart))
        } catch {
          this.uncover(blockStart, blockStart + BLOCK_BYTES)
          continue
        }
      }
      this.sums[k] = checksum(block)
    }
    this.changedRegions(start, end)
  }

  private changedRegions(start: number, end: number): void {
    for (let r = Math.floor(start / REGION_BYTES); r < regionsOf(end); r++) this.changed(r)
  }

  /**
   * Before the volume shrinks from `oldSize` to `newSize`: the blocks it cuts are held (the flusher leaves their
   * regions alone) and in flux first. Every beginShrink is followed by endShrink.
   */
  async beginShrink(newSize: number, oldSize: number): Promise<WriteHold> {
    const first = Math.floor(newSize / REGION_BYTES)
    this.ensureRegions(regionsOf(oldSize))
    const hold = await this.take('write', newSize, oldSize)
    for (let r = first; r < regionsOf(oldSize); r++) this.epoch[r]++
    if (!this.broken && !this.closed) await this.intend(first, regionsOf(oldSize)).catch((err) => this.fail(err))
    return { start: newSize, end: oldSize, sizeBefore: oldSize, hold }
  }

  /**
   * The volume shrank to `newSize` (the files too): blocks past it are zeros; its last block is its verified old bytes
   * cut and padded (captureEdges), else read back padded; replicas whose old copy had rot get the right bytes (`repair`).
   */
  async endShrink(held: WriteHold, readBack: ReadBack | null, repair?: EdgeRepair): Promise<void> {
    const { start: newSize, end: oldSize } = held
    try {
      if (this.broken || this.closed) return
      const lastBlock = Math.floor(newSize / BLOCK_BYTES)
      this.sums.fill(ZERO_BLOCK_CRC, Math.ceil(newSize / BLOCK_BYTES), Math.min(Math.ceil(oldSize / BLOCK_BYTES), this.sums.length))
      const base = held.bases?.get(lastBlock)
      if (newSize % BLOCK_BYTES !== 0 && base) {
        base.fill(0, newSize - lastBlock * BLOCK_BYTES)
        this.sums[lastBlock] = checksum(base)
        const rotten = held.rotten?.get(lastBlock)
        if (repair && rotten) await repair(rotten.replicas, base.subarray(0, newSize - lastBlock * BLOCK_BYTES), lastBlock * BLOCK_BYTES, rotten.from)
      } else if (newSize % BLOCK_BYTES !== 0) {
        const block = Buffer.alloc(BLOCK_BYTES)
        try {
          if (!readBack) throw new Error('no replica to read from')
          const n = await readBack(block.subarray(0, newSize - lastBlock * BLOCK_BYTES), lastBlock * BLOCK_BYTES)
          block.fill(0, n)
          this.sums[lastBlock] = checksum(block)
        } catch {
          this.uncover(lastBlock * BLOCK_BYTES, newSize)
        }
      }
      for (let r = Math.floor(newSize / REGION_BYTES); r < Math.min(regionsOf(oldSize), this.regions); r++) {
        this.changed(r)
        // Wholly past the size: zeros, trusted.
        if (r * REGION_BYTES >= newSize) this.markCovered(r)
      }
    } finally {
      this.stampRange(newSize, oldSize)
      held.hold.release()
    }
  }

  /**
   * Before a whole replace installs new content (before the record that rolls it forward at a crash): every block
   * is held and every region of the old and new content in flux. Every beginReplace is followed by replaced().
   */
  async beginReplace(newSize: number): Promise<WriteHold> {
    const oldSize = this.host.size()
    const end = Math.max(regionsOf(newSize), regionsOf(oldSize))
    this.ensureRegions(end)
    const hold = await this.take('write', 0, Number.MAX_SAFE_INTEGER)
    for (let r = 0; r < end; r++) this.epoch[r]++
    if (!this.broken && !this.closed) await this.intend(0, end).catch((err) => this.fail(err))
    return { start: 0, end: Math.max(newSize, oldSize), sizeBefore: oldSize, hold }
  }

  /** The new content (`newSize` bytes) is installed: `sums` computed while it was staged (null: not known, so all uncovered). */
  replaced(held: WriteHold, sums: Uint32Array | null, newSize: number): void {
    try {
      if (this.broken || this.closed) return
      const end = Math.max(regionsOf(newSize), regionsOf(held.end))
      this.ensureRegions(end)
      this.sums.fill(ZERO_BLOCK_CRC, 0, end * REGION_BLOCKS)
      if (sums) this.sums.set(sums.subarray(0, Math.ceil(newSize / BLOCK_BYTES)))
      for (let r = 0; r < end; r++) {
        this.changed(r)
        if (sums || r * REGION_BYTES >= newSize) this.markCovered(r)
        else this.markUncovered(r)
      }
      this.wakeCoverage()
    } finally {
      this.stampRange(0, Number.MAX_SAFE_INTEGER)
      held.hold.release()
    }
  }

  /** Nothing is known of [start, end) any more (the operator named another truth, a write no replica took): uncovered. */
  uncover(start: number, end: number): void {
    for (let r = Math.floor(start / REGION_BYTES); r < regionsOf(end); r++) {
      this.ensureRegions(r + 1)
      // Still in flux (a write holds it), or set so now: the flusher never clears an uncovered region.
      if (!getBit(this.flux, r) && r < this.capacityRegions) this.setFlux(r)
      this.markUncovered(r)
      this.changed(r)
    }
    this.stampRange(start, end)
    this.wakeCoverage()
  }

  /** Uncovers everything and makes that durable (the operator named another replica the truth). */
  async uncoverAll(): Promise<void> {
    if (this.broken || this.closed) return
    this.uncover(0, this.host.size())
    await this.writeBitmap().catch((err) => this.fail(err))
  }

  // ---- coverage ----

  /** Starts checksumming uncovered regions in the background, from the volume's truth. */
  startCoverage(): void {
    this.coverage ??= this.coverLoop().finally(() => (this.coverage = undefined))
  }

  private wakeCoverage(): void {
    const wake = this.coverWake
    this.coverWake = undefined
    wake?.()
  }

  private sleep(ms: number | null): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === null ? undefined : setTimeout(() => this.wakeCoverage(), ms)
      this.coverWake = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }

  private nextUncovered(): number {
    const used = Math.min(regionsOf(this.host.size()), this.regions)
    for (let i = 0; i < used; i++) {
      const r = (this.coverCursor + i) % used
      if (this.uncovered[r]) return (this.coverCursor = r)
    }
    return -1
  }

  private async coverLoop(): Promise<void> {
    const buffer = Buffer.allocUnsafe(REGION_BYTES)
    let tries = 0
    let last = -1
    while (!this.closed && !this.broken) {
      const r = this.nextUncovered()
      if (r < 0) {
        // Regions past the size are zeros: nothing to read.
        for (let q = regionsOf(this.host.size()); q < this.regions; q++) if (this.uncovered[q]) this.markCovered(q)
        await this.sleep(null)
        continue
      }
      tries = r === last ? tries + 1 : 0
      last = r
      await this.host.quiet(COVER_YIELD_MS)
      if (this.closed) break
      const attempt = async () => {
        const start = r * REGION_BYTES
        const end = Math.min(start + REGION_BYTES, this.host.size())
        if (end <= start) return true
        const ticket = this.beginRead(start, end)
        const n = await this.host.readTruth(buffer.subarray(0, end - start), start).catch(() => null)
        // No truth now, or one shorter than the volume (it is being changed): later.
        if (n === null || n < end - start) return false
        this.cover(ticket, start, buffer.subarray(0, end - start))
        return true
      }
      const read = tries < COVER_TRIES ? await attempt() : await this.exclusive(r * REGION_BYTES, (r + 1) * REGION_BYTES, attempt)
      if (!read) await this.sleep(COVER_RETRY_MS)
    }
  }

  // ---- persistence ----

  /**
   * Flushes: writes the checksums of changed regions, then clears the in-flux bit of every covered region no write
   * touched since (and none holds), then writes the bitmap. Runs every second and at close.
   */
  flush(): Promise<void> {
    this.flushing ??= this.flushNow(false).finally(() => (this.flushing = undefined))
    return this.flushing
  }

  /** `all`: at close, every region no write holds is cleared, however recently written. */
  private async flushNow(all: boolean): Promise<void> {
    if (this.broken || !this.fd || (this.dirty.size === 0 && this.fluxed.size === 0)) return
    try {
      const epochs = new Map<number, number>()
      const quietFrom = performance.now() - (this.host.quietMs ?? QUIET_MS)
      for (const r of this.fluxed) if (!this.uncovered[r] && (all || this.writtenAt[r] <= quietFrom)) epochs.set(r, this.epoch[r])
      const regions = [...this.dirty].sort((a, b) => a - b)
      this.dirty.clear()
      if (regions.some((r) => r >= this.capacityRegions)) await this.serial(() => this.rewrite(this.grownCapacity(regions.at(-1)! + 1)))
      // Copied now: the bytes written are the checksums as of this snapshot.
      const writes: Array<{ at: number; bytes: Buffer }> = []
      for (let i = 0; i < regions.length; ) {
        let j = i + 1
        while (j < regions.length && regions[j] === regions[j - 1] + 1) j++
        const from = regions[i] * REGION_BLOCKS
        const to = (regions[j - 1] + 1) * REGION_BLOCKS
        writes.push({ at: from * 4, bytes: Buffer.from(this.sums.slice(from, to).buffer) })
        i = j
      }
      if (writes.length > 0) {
        await this.serial(async () => {
          const base = arrayAt(this.capacityRegions)
          for (const w of writes) await this.fd!.write(w.bytes, 0, w.bytes.length, base + w.at)
          if (this.host.fsync()) await this.fd!.datasync()
        })
      }
      let cleared = false
      for (const [r, seen] of epochs) {
        if (this.epoch[r] !== seen || this.uncovered[r] || this.dirty.has(r) || this.held(r)) continue
        this.clearFlux(r)
        cleared = true
      }
      if (cleared) await this.writeBitmap()
    } catch (err) {
      this.fail(err)
    }
  }

  /** Flushes everything, marks the file closed cleanly and closes it; stops coverage. */
  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.timer)
    this.wakeCoverage()
    await this.coverage
    await this.flushing
    await this.flushNow(true)
    await this.io
    if (this.fd && !this.broken) {
      const clean = this.fluxed.size === 0 ? CLOSED_CLEANLY : 0
      await this.fd
        .write(encodeHeader({ flags: clean, capacityRegions: this.capacityRegions, uuid: this.host.uuid }), 0, HEADER_BYTES, 0)
        .then(() => this.fd!.datasync())
        .catch((err) => this.fail(err))
    }
    await this.fd?.close().catch(() => {})
    this.fd = undefined
  }

  /** Closes and deletes the file (checksums switched off). */
  async remove(): Promise<void> {
    await this.close()
    await fs.rm(this.host.path, { force: true })
  }

  /** Whether regions [first, end) are in flux in the file now, so writes there need no I/O first. */
  private async intend(first: number, end: number): Promise<void> {
    if (this.broken) return
    let need = false
    for (let r = first; r < end; r++) {
      if (r < this.capacityRegions && getBit(this.flux, r) && getBit(this.durable, r)) continue
      need = true
      if (r < this.capacityRegions) this.setFlux(r)
    }
    if (!need) return
    if (end > this.capacityRegions) {
      await this.serial(async () => {
        if (end > this.capacityRegions) await this.rewrite(this.grownCapacity(end))
      })
      for (let r = first; r < end; r++) if (!getBit(this.flux, r)) this.setFlux(r)
    }
    await this.writeBitmap()
  }

  /** Writes the bitmap as it is when the write starts; callers that set a bit before then share it. */
  private writeBitmap(): Promise<void> {
    if (this.bitmapQueued) return this.bitmapQueued
    const queued = this.serial(async () => {
      this.bitmapQueued = undefined
      await this.writeBitmapNow()
    })
    this.bitmapQueued = queued
    return queued
  }

  private async writeBitmapNow(): Promise<void> {
    const pages = [...this.dirtyPages]
    this.dirtyPages.clear()
    const copies = pages.map((p) => ({ p, bytes: Buffer.from(this.flux.subarray(p * BITMAP_PAGE, (p + 1) * BITMAP_PAGE)) }))
    for (const { p, bytes } of copies) await this.fd!.write(bytes, 0, bytes.length, HEADER_BYTES + p * BITMAP_PAGE)
    if (this.host.fsync()) await this.fd!.datasync()
    for (const { p, bytes } of copies) bytes.copy(this.durable, p * BITMAP_PAGE)
  }

  /** Writes the whole file anew (atomically) at `capacity` regions: at open, and when the volume outgrows it. */
  private async rewrite(capacity: number): Promise<void> {
    this.ensureRegions(capacity)
    const flux = Buffer.alloc(bitmapBytes(capacity))
    this.flux.copy(flux)
    const old = this.capacityRegions
    this.flux = flux
    this.durable = Buffer.alloc(flux.length)
    this.capacityRegions = capacity
    // Regions gained are in flux when uncovered (the old file could not say they were).
    for (let r = old; r < capacity; r++) if (this.uncovered[r]) this.setFlux(r)
    await this.fd?.close().catch(() => {})
    this.fd = undefined
    // One snapshot of bits and checksums: what changes while it is written is written again after.
    const bits = Buffer.from(this.flux)
    this.dirtyPages.clear()
    const header = encodeHeader({ flags: 0, capacityRegions: capacity, uuid: this.host.uuid })
    const contents = Buffer.concat([header, bits, Buffer.from(this.sums.buffer, this.sums.byteOffset, capacity * REGION_BLOCKS * 4)])
    await writeFileAtomic(this.host.path, contents)
    this.fd = await fs.open(this.host.path, 'r+')
    bits.copy(this.durable)
  }

  private grownCapacity(regions: number): number {
    let capacity = Math.max(this.capacityRegions, MIN_CAPACITY_REGIONS)
    while (capacity < regions) capacity *= 2
    return capacity
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.io.then(work)
    this.io = next.catch(() => {})
    return next
  }

  /** The file cannot be kept right: nothing is trusted from here on, and the next start recomputes it all. */
  private fail(err: unknown): void {
    if (this.broken) return
    this.broken = true
    clearInterval(this.timer)
    this.host.log.warn({ path: this.host.path, error: (err as Error)?.message ?? String(err) }, 'block checksums could not be written: reads go unverified until the next start')
    void this.serial(async () => {
      await this.fd?.close().catch(() => {})
      this.fd = undefined
      await fs.rm(this.host.path, { force: true })
    }).catch(() => {})
  }

  // ---- bookkeeping ----

  private sumOf(block: number): number {
    return block < this.sums.length ? this.sums[block] : ZERO_BLOCK_CRC
  }

  /** Waits for earlier holds overlapping [start, end)'s blocks (first come, first served), then holds them. */
  private take(kind: Hold['kind'], start: number, end: number): Hold | Promise<Hold> {
    const first = Math.floor(start / BLOCK_BYTES)
    const last = Math.max(Math.ceil(end / BLOCK_BYTES), first + 1)
    let earlier: Array<Promise<void>> | undefined
    for (const h of this.holds) if (h.first < last && first < h.end) (earlier ??= []).push(h.done)
    const hold = new BlockHold(kind, first, last, this.holds)
    this.holds.push(hold)
    // Granted at once when nothing overlaps it (no promise).
    if (!earlier) {
      hold.granted = true
      return hold
    }
    return Promise.all(earlier).then(() => {
      hold.granted = true
      return hold
    })
  }

  /** Whether regions [first, end) are all in flux in the file already (a write there needs no I/O first). */
  private inFlux(first: number, end: number): boolean {
    if (end > this.capacityRegions) return false
    for (let r = first; r < end; r++) if (!getBit(this.flux, r) || !getBit(this.durable, r)) return false
    return true
  }

  private held(region: number): boolean {
    const first = region * REGION_BLOCKS
    const end = first + REGION_BLOCKS
    return this.holds.some((h) => h.first < end && first < h.end)
  }

  private stampRange(start: number, end: number): void {
    const stamp = ++this.seq
    this.recentFirst[stamp % RECENT] = Math.floor(start / BLOCK_BYTES)
    this.recentEnd[stamp % RECENT] = Math.ceil(Math.max(end, start + 1) / BLOCK_BYTES)
    const last = Math.min(regionsOf(Math.max(end, start + 1)), this.regions)
    for (let r = Math.floor(start / REGION_BYTES); r < last; r++) this.stamp[r] = stamp
  }

  private changed(region: number): void {
    this.epoch[region]++
    this.dirty.add(region)
  }

  private markUncovered(region: number): void {
    this.ensureRegions(region + 1)
    if (this.uncovered[region]) return
    this.uncovered[region] = 1
    this.uncoveredCount++
  }

  private markCovered(region: number): void {
    if (!this.uncovered[region]) return
    this.uncovered[region] = 0
    this.uncoveredCount--
    this.epoch[region]++
  }

  private setFlux(region: number): void {
    this.flux[region >> 3] |= 1 << (region & 7)
    this.fluxed.add(region)
    this.dirtyPages.add(Math.floor(region / 8 / BITMAP_PAGE))
  }

  private clearFlux(region: number): void {
    this.flux[region >> 3] &= ~(1 << (region & 7))
    this.fluxed.delete(region)
    this.dirtyPages.add(Math.floor(region / 8 / BITMAP_PAGE))
  }

  /** Checksums past `size` are the zero block's; regions wholly past it are covered. */
  private zeroFrom(size: number): void {
    const from = Math.ceil(size / BLOCK_BYTES)
    for (let k = from; k < this.sums.length; k++) {
      if (this.sums[k] === ZERO_BLOCK_CRC) continue
      this.sums[k] = ZERO_BLOCK_CRC
      this.dirty.add(k >> 8)
    }
    for (let r = regionsOf(size); r < this.regions; r++) this.markCovered(r)
  }

  /** Memory for at least `regions` regions (doubling). */
  private ensureRegions(regions: number): void {
    if (regions <= this.regions) return
    let next = this.regions
    while (next < regions) next *= 2
    const grow = <A extends Uint8Array | Uint32Array | Float64Array>(old: A, make: (n: number) => A, per: number) => {
      const a = make(next * per)
      a.set(old)
      return a
    }
    const sums = new Uint32Array(next * REGION_BLOCKS).fill(ZERO_BLOCK_CRC)
    sums.set(this.sums)
    this.sums = sums
    this.uncovered = grow(this.uncovered, (n) => new Uint8Array(n), 1)
    this.epoch = grow(this.epoch, (n) => new Uint32Array(n), 1)
    this.stamp = grow(this.stamp, (n) => new Float64Array(n), 1)
    this.writtenAt = grow(this.writtenAt, (n) => new Float64Array(n), 1)
    this.regions = next
  }

  /** For tests and status: the checksum held for block `k`, and whether its region is in flux in the file. */
  inspect(k: number): { sum: number; flux: boolean; durable: boolean; covered: boolean } {
    const r = k >> 8
    return { sum: this.sumOf(k), flux: r < this.capacityRegions && getBit(this.flux, r) === 1, durable: r < this.capacityRegions && getBit(this.durable, r) === 1, covered: !this.uncovered[r] }
  }

  /** Whether coverage has nothing left to do. */
  get fullyCovered(): boolean {
    return !this.broken && this.coveredBytes() === this.host.size()
  }
}

/**
 * The part of `data` (read at `offset`) whose blocks can be judged: a short last block only when it ends at the
 * volume's size now (one read before the volume grew is not the zero-padded block the store holds).
 */
/** The partial edge blocks of a write of [start, end): one, two or none. */
function edgeBlocks(start: number, end: number): number[] {
  const first = start % BLOCK_BYTES ? Math.floor(start / BLOCK_BYTES) : -1
  const last = end % BLOCK_BYTES ? Math.floor(end / BLOCK_BYTES) : -1
  return first === last ? (first >= 0 ? [first] : []) : [first, last].filter((k) => k >= 0)
}

/** Whether edge block `k` of a write of [start, end) keeps bytes the write does not change (bytes the volume had). */
function needsOld(k: number, start: number, end: number, sizeBefore: number): boolean {
  return (k * BLOCK_BYTES < start && k * BLOCK_BYTES < sizeBefore) || (end < (k + 1) * BLOCK_BYTES && end < sizeBefore)
}

/** Edge block `k` of a write of [start, end) when it keeps no old bytes: the write's bytes, zeros around them. */
function blockOfWrite(k: number, chunk: Buffer, start: number, end: number): Buffer {
  const block = Buffer.alloc(BLOCK_BYTES)
  const from = Math.max(start, k * BLOCK_BYTES)
  chunk.copy(block, from - k * BLOCK_BYTES, from - start, Math.min(end, (k + 1) * BLOCK_BYTES) - start)
  return block
}

function judgeable(data: Buffer, offset: number, size: number): Buffer {
  const tail = data.length % BLOCK_BYTES
  return tail === 0 || offset + data.length === size ? data : data.subarray(0, data.length - tail)
}

let scratchSums = new Uint32Array(256)
/** A reused array for checksums of a read being judged (no allocation per read). */
function scratch(blocks: number): Uint32Array {
  if (scratchSums.length < blocks) scratchSums = new Uint32Array(blocks)
  return scratchSums
}

/** Checksums of a content streamed in order (a whole replace while it is staged). */
export class ContentChecksums {
  private sums = new Uint32Array(1024)
  private count = 0
  private readonly carry = Buffer.alloc(BLOCK_BYTES)
  private carried = 0

  add(chunk: Buffer): void {
    let at = 0
    if (this.carried > 0) {
      const n = Math.min(BLOCK_BYTES - this.carried, chunk.length)
      chunk.copy(this.carry, this.carried, 0, n)
      this.carried += n
      at = n
      if (this.carried < BLOCK_BYTES) return
      this.push(1)
      this.sums[this.count++] = checksum(this.carry)
      this.carried = 0
    }
    const full = Math.floor((chunk.length - at) / BLOCK_BYTES)
    if (full > 0) {
      this.push(full)
      blockChecksums(chunk.subarray(at, at + full * BLOCK_BYTES), BLOCK_BYTES, this.sums, this.count)
      this.count += full
      at += full * BLOCK_BYTES
    }
    if (at < chunk.length) {
      chunk.copy(this.carry, 0, at)
      this.carried = chunk.length - at
    }
  }

  /** The checksums of every block, the last zero-padded. */
  finish(): Uint32Array {
    if (this.carried > 0) {
      this.push(1)
      this.carry.fill(0, this.carried)
      this.sums[this.count++] = checksum(this.carry)
      this.carried = 0
    }
    return this.sums.subarray(0, this.count)
  }

  private push(n: number): void {
    if (this.count + n <= this.sums.length) return
    let size = this.sums.length
    while (size < this.count + n) size *= 2
    const sums = new Uint32Array(size)
    sums.set(this.sums.subarray(0, this.count))
    this.sums = sums
  }
}

/** A new random UUID (for tests that make stores of their own). */
export const newVolumeUuid = (): string => randomUUID()
