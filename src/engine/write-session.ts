import type { BlockChecksums, EdgeRepair, OldBlockReader, ReadBack, WriteHold } from './block-checksums.js'
import { EngineError } from './errors.js'
import type { Operation } from './operation.js'
import type { OperationList } from './operation-list.js'
import type { Replica } from './replica.js'
import { toIoError } from './replica.js'
import type { IoError } from './spec.js'
import { ChecksumMismatchError, overwriteBlock, type ChecksumMismatch } from './verified-read.js'
import type { ReplicaOperation, OperationGroup } from './operation-group.js'

/** Intents of a write of unknown length grow in steps this big, so a long stream costs few journal records. */
const INTENT_STEP = 64 << 20

export interface WriteOptions {
  offset: number
  /** Bytes the body declares, when known: the journal records them up front. */
  length: number | null
  /** The volume's size once the write is done: a number (a declared complete length), 'end' (a whole replace), or null (keep or grow). */
  resizeTo: number | 'end' | null
}

/** What a write session needs of its volume; it changes the volume only through these. */
export interface WriteHost {
  readonly name: string
  readonly replicas: readonly Replica[]
  readonly size: number
  /** No in-sync sync replica: writes go through the lanes of the in-sync async ones. */
  readonly buffered: boolean
  readonly fsync: boolean
  /** The volume's block checksums, kept right by every chunk and resize (null with checksums off). */
  readonly checksums: BlockChecksums | null
  source(): Replica | undefined
  writeBehind(replica: Replica): { wake(): void } | undefined
  newGroup(kind: 'write', offset: number): OperationGroup
  writeAt(chunk: Buffer, offset: number, group: OperationGroup, replicas: Replica[]): Promise<OperationList<OperationGroup, Replica>>
  replicaFailed(replica: Replica, err: unknown): void
  /** A block failed its checksum on a replica: an event, a warn line, a metric. */
  noteMismatch(mismatch: ChecksumMismatch): void
  /** Journals (and records) that `replicas` missed acknowledged bytes [start, end); resolves once it is durable. */
  recordMissed(replicas: Replica[], start: number, end: number): Promise<void>
  /** Records the smaller size before the files shrink. */
  recordShrink(size: number): Promise<void>
  /** The volume grew to `end`; a promise when the new size must be marked before the write is acknowledged. */
  grow(end: number): Promise<void> | undefined
  resizeTo(size: number): void
  /** Bytes [start, end) are about to change (streamed reads that have yet to send them are cut short). */
  noteWrite(start: number, end: number): void
  /** Chunk writes and resizes exclude each other (see Volume.exclusive). */
  enterChunk(): Promise<void> | undefined
  leaveChunk(): void
  exclusive(work: () => Promise<void>): Promise<void>
  holdBuffered(bytes: number): void
  bump(): void
  wakeWriteBehind(): void
}

/** A write that no replica a read could use took: the bytes are nowhere a read could find them. */
export class WriteFailedError extends EngineError {
  constructor(
    readonly group: OperationGroup,
    readonly errors: IoError[],
  ) {
    super('write-failed', `no replica took the write: ${errors.map((e) => e.code).join(', ') || 'EIO'}`, { groupId: group.id })
  }
}

/**
 * One write streamed into a volume, chunk by chunk. Its plan is made once, at begin(): in-sync sync
 * replicas take each chunk directly; without any, the in-sync async replicas take it through their
 * lanes (buffered) and the write is acknowledged once they hold it; every other writing replica has the
 * range journaled first and is then fed by write-behind from a replica that holds it.
 */
export class WriteSession {
  readonly group: OperationGroup
  position: number
  private readonly direct: Replica[] = []
  /** Buffered: the in-sync async replicas whose lanes take every chunk. */
  private readonly laned: Replica[] = []
  private readonly behind: Replica[] = []
  /** No in-sync sync replica: chunks are queued in memory for each laned replica (bounded by the mirror's queue). */
  private buffered = false
  private readonly bufferedOps: Array<Promise<void>> = []
  /** Laned replicas that failed a chunk: once every one has, nothing holds the write. */
  private readonly lanedFailed = new Set<Replica>()
  private readonly intents = new Map<Replica, number>()
  private intentEnd: number
  private readonly ops = new Map<Replica, ReplicaOperation>()
  private ended = false
  private endResolve!: () => void
  readonly whenEnded = new Promise<void>((resolve) => (this.endResolve = resolve))

  constructor(
    private readonly volume: WriteHost,
    readonly options: WriteOptions,
  ) {
    this.position = options.offset
    this.intentEnd = options.offset + (options.length ?? INTENT_STEP)
    this.group = volume.newGroup('write', options.offset)
  }

  /** Whether a chunk's buffer stays in use after write() resolves (queued in replicas' lanes): callers must not reuse it. */
  get keepsChunks(): boolean {
    return this.buffered
  }

  /** Plans who takes the bytes and journals the intent; the first chunk may follow once this resolves. */
  async begin(): Promise<void> {
    const source = this.volume.source()
    const writers = this.volume.replicas.filter((r) => r.spec.write)
    this.buffered = this.volume.buffered
    for (const r of writers) {
      // A replica still being filled takes writes through write-behind, so a copy in flight can never overwrite them.
      // A remote async replica is always fed by write-behind (an S3 store takes whole chunks only), never through a lane.
      if (r.inSync && (this.buffered ? r.isAsync && !r.isRemote : !r.isAsync)) (this.buffered ? this.laned : this.direct).push(r)
      else this.behind.push(r)
      if (!r.failed) this.ops.set(r, this.group.add(r.id, r.spec.mode))
    }
    if (this.direct.length === 0 && this.laned.length === 0) {
      // Refuse up front: an acknowledged write must be on a replica a read can use.
      const errors = writers.map((r) => r.error).filter((e) => e !== null)
      this.abort(errors[0] ?? { code: 'EIO', message: 'no in-sync replica takes writes' })
      const restoring = writers.filter((r) => r.isRemote && r.inSync)
      if (restoring.length > 0) {
        // Only remote replicas hold the content (a restore under way): writes wait for a local replica to be in-sync.
        const filling = writers.filter((r) => !r.isRemote && !r.failed).map((r) => `${r.id} lacks ${r.dirtyBytes} bytes`)
        throw new EngineError(
          'busy',
          `only remote replicas (${restoring.map((r) => r.id).join(', ')}) hold the volume's content, and they take no writes in the request path: retry once a local replica is in-sync${filling.length > 0 ? ` (${filling.join(', ')})` : ''}`,
        )
      }
      throw new WriteFailedError(this.group, errors)
    }
    try {
      await Promise.all(
        // From the volume's end when the write starts past it: the zeros in between are new content too.
        writers.filter((r) => this.buffered || r !== source).map(async (r) => this.intents.set(r, await r.intend(Math.min(this.options.offset, this.volume.size), this.intentEnd))),
      )
    } catch (err) {
      this.abort(toIoError(err))
      // Nothing was written: a full journal disk is the client's 507, any other journal failure a 503.
      const code = (err as NodeJS.ErrnoException)?.code
      if (code === 'ENOSPC' || code === 'EDQUOT') throw new EngineError('insufficient-storage', `the write cannot be journaled: journal directory full (${code})`, { code })
      throw new EngineError('busy', `the write cannot be journaled (${typeof code === 'string' ? code : 'EIO'})`, { code: typeof code === 'string' ? code : 'EIO' })
    }
  }

  /** Writes `chunk` at the current position; resolves once every sync replica holds it. */
  async write(chunk: Buffer): Promise<void> {
    const start = this.position
    const end = start + chunk.length
    if (chunk.length === 0) return
    if (end > this.intentEnd) {
      this.intentEnd = Math.max(end, this.intentEnd + INTENT_STEP)
      await Promise.all([...this.intents].map(([r, id]) => r.extendIntent(id, this.intentEnd)))
    }
    for (const [r, id] of this.intents) r.reachIntent(id, end)
    const entering = this.volume.enterChunk()
    if (entering) await entering
    // Its blocks held and their regions in flux before any byte goes out; its checksums set once it has landed.
    const sums = this.volume.checksums
    let held: WriteHold | undefined
    try {
      if (sums) {
        // Awaited only when they return a promise (a write waiting for another, an edge block to read): no turn lost otherwise.
        const taking = sums.beginWrite(start, end)
        held = taking instanceof Promise ? await taking : taking
        // Edge blocks' old bytes, verified, before any byte goes out: their new checksums never bless rot beside the write.
        const capturing = sums.captureEdges(held, this.readOld)
        if (capturing) await capturing
      }
    } catch (err) {
      if (held) sums!.cancelWrite(held)
      this.volume.leaveChunk()
      throw err
    }
    const settle = (from: Replica | undefined) => (held ? sums!.endWrite(held, chunk, from ? readBackFrom(from) : null, this.repairEdge) : undefined)
    // A write past the end changes the zeros before it too.
    this.volume.noteWrite(Math.min(start, this.volume.size), end)
    // Held until the bookkeeping below is done and, buffered, until its lanes have written it too.
    let holds = this.buffered ? 2 : 1
    const release = this.buffered ? () => void (--holds === 0 && this.volume.leaveChunk()) : undefined
    try {
      // A write past the end grows the volume with zeros before it: replicas fed by write-behind must get those too.
      if (start > this.volume.size) for (const r of this.behind) r.markPending(this.volume.size, start)
      if (release) {
        if (held) sums!.precompute(held, chunk)
        await this.queueBuffered(chunk, start, release, settle)
      }
      else {
        let from: Replica | undefined
        try {
          const writing = this.writeDirect(chunk, start, end)
          // While the bytes are being written: their checksums, from the bytes still in cache.
          if (held) sums!.precompute(held, chunk)
          from = await writing
        } finally {
          const settling = settle(from)
          if (settling) await settling
        }
      }
      for (const r of this.behind) {
        r.markPending(start, end)
        this.volume.writeBehind(r)?.wake()
      }
      this.position = end
      const marking = this.volume.grow(end)
      this.volume.bump()
      if (marking) await marking
    } finally {
      if (release) release()
      else this.volume.leaveChunk()
    }
  }

  /** An edge block's old bytes from the first replica holding them whose copy is good, local ones first. */
  private readonly readOld: OldBlockReader = async (buffer, offset, good) => {
    const end = offset + buffer.length
    const refused: string[] = []
    const holders = this.volume.replicas.filter((r) => r.file && !r.failed && r.spec.write && !r.lacksAcknowledged(offset, end))
    for (const r of [...holders.filter((h) => !h.isRemote), ...holders.filter((h) => h.isRemote)]) {
      const n = await r.file!.read(buffer, offset).catch(() => -1)
      if (n !== buffer.length) continue
      if (good(buffer)) return { from: r.id, refused }
      refused.push(r.id)
    }
    if (refused.length === 0) return { from: null, refused }
    // Every copy has rot beside the write: its checksum cannot be kept right, so the write is refused, nothing sent.
    for (const id of refused) this.volume.noteMismatch({ replica: id, offset, length: buffer.length, repaired: false, from: null })
    throw new ChecksumMismatchError(this.volume.name, offset, buffer.length, refused)
  }

  /** Writes an edge block's right bytes over the replicas whose old copy had rot (the block still held). */
  private readonly repairEdge: EdgeRepair = async (ids, block, offset, from) => {
    for (const id of ids) {
      const r = this.volume.replicas.find((x) => x.id === id)
      if (!r || r.failed) continue
      const repaired = await overwriteBlock(this.volume, r, block, offset)
      this.volume.noteMismatch({ replica: id, offset, length: block.length, repaired, from })
    }
  }

  /** Writes the chunk to the direct replicas; returns one that took it (its bytes are what the volume now holds). */
  private async writeDirect(chunk: Buffer, start: number, end: number): Promise<Replica> {
    const live = this.direct.length === 1 && !this.direct[0].failed ? this.direct : this.direct.filter((r) => !r.failed)
    const missed = live.length === this.direct.length ? [] : this.direct.filter((r) => r.failed)
    for (const r of live) this.group.start(this.ops.get(r)!)
    const result = await this.volume.writeAt(chunk, start, this.group, live)
    const errors: IoError[] = []
    for (const op of result.operations) {
      // Each operation names its replica: the file's user data in the volume's FileMirror.
      const r = op.fileUserData!
      const agg = this.ops.get(r)!
      if (op.error) {
        this.volume.replicaFailed(r, op.error)
        this.group.finish(agg, agg.bytes + op.bytes, r.error)
        errors.push(r.error!)
        missed.push(r)
      } else agg.bytes += op.bytes
    }
    // Reads fail over to any replica that holds the bytes (read: false ones last): one that took them is enough.
    if (!result.operations.some((op) => !op.error)) {
      // Refused: the failed replicas still hold every acknowledged byte; the others copy what they end up holding.
      for (const r of this.behind) r.markPending(start, end)
      this.abort(errors[0] ?? { code: 'EIO', message: 'no replica is healthy' })
      throw new WriteFailedError(this.group, errors)
    }
    // A local replica when one took it: edge blocks are read back from it.
    const took = (result.operations.find((op) => !op.error && !op.fileUserData!.isRemote) ?? result.operations.find((op) => !op.error)!).fileUserData!
    if (missed.length === 0) return took
    // Acknowledged without them: what they missed is on record before the reply, so no restart takes them for the truth.
    for (const r of missed) r.markPending(start, end)
    await this.volume.recordMissed(missed, start, end)
    return took
  }

  /** Queues the chunk in every live laned replica's lane; resolves once queued, waiting while a lane's bounded queue is full. */
  private async queueBuffered(chunk: Buffer, start: number, landed: () => void, settle: (from: Replica | undefined) => Promise<void> | undefined): Promise<void> {
    const live = this.laned.filter((r) => !r.failed)
    const took: Replica[] = []
    for (const r of this.laned) if (r.failed) r.markPending(start, start + chunk.length)
    for (const r of live) this.group.start(this.ops.get(r)!)
    this.volume.holdBuffered(chunk.length * live.length)
    const queued = this.volume.writeAt(chunk, start, this.group, live)
    this.bufferedOps.push(
      queued.then((g) =>
        Promise.all(
          g.operations.map((op: Operation<OperationGroup, Replica>) =>
            op.whenDone.then(() => {
              this.volume.holdBuffered(-chunk.length)
              const r = op.fileUserData!
              const agg = this.ops.get(r)!
              if (!op.error) {
                took.push(r)
                return void (agg.bytes += op.bytes)
              }
              this.volume.replicaFailed(r, op.error)
              r.markPending(start, start + chunk.length)
              this.group.finish(agg, agg.bytes + op.bytes, r.error)
              this.lanedFailed.add(r)
              // On record before the write is acknowledged (finish waits for these).
              return this.volume.recordMissed([r], start, start + chunk.length)
            }),
          ),
        ).then(() => undefined),
      )
        // Its checksums from what the lanes wrote, before the write is acknowledged (finish waits for these).
        .finally(() => settle(took[0]))
        .finally(landed),
    )
    await queued
  }

  /** Ends the write: resize, sync if asked, settle the journal, and let the group follow the replicas. */
  async finish(): Promise<OperationGroup> {
    const { resizeTo } = this.options
    const newSize = resizeTo === 'end' ? this.position : resizeTo
    // Buffered writes land first, so a resize never races a queued write.
    if (this.buffered) {
      await Promise.all(this.bufferedOps)
      if (this.laned.every((r) => this.lanedFailed.has(r) || r.failed)) {
        const errors = this.laned.map((r) => r.error).filter((e) => e !== null)
        this.abort(errors[0] ?? { code: 'EIO', message: 'no replica is healthy' })
        throw new WriteFailedError(this.group, errors)
      }
    }
    if (newSize !== null) await this.volume.exclusive(() => (newSize !== this.volume.size ? this.resize(newSize) : Promise.resolve()))
    if (this.volume.fsync) {
      await Promise.all(this.direct.filter((r) => !r.failed).map((r) => r.file!.sync().catch((err) => this.volume.replicaFailed(r, err))))
    }
    this.group.length = this.position - this.options.offset
    for (const r of this.direct) {
      const op = this.ops.get(r)
      if (op) this.group.finish(op, op.bytes, r.error)
    }
    if (this.buffered) await Promise.all(this.bufferedOps)
    this.endIntents()
    const length = this.group.length
    for (const r of this.laned) {
      const op = this.ops.get(r)
      if (op) this.group.finish(op, op.bytes, r.error)
    }
    for (const r of this.behind) {
      const op = this.ops.get(r)
      if (!op) continue
      this.group.start(op)
      void r.whenHolds(this.options.offset, this.position).then((error) => this.group.finish(op, error ? 0 : length, error))
    }
    this.end()
    return this.group
  }

  /** Grows or shrinks every healthy replica that takes writes directly (or every one, when buffered); the rest follow through write-behind. */
  private async resize(size: number): Promise<void> {
    const old = this.volume.size
    const now = (this.buffered ? this.laned : this.direct).filter((r) => !r.failed)
    const truncate = () => Promise.all(now.map((r) => r.file!.truncate(size).catch((err) => this.volume.replicaFailed(r, err))))
    // Growing, the files grow first and shrinking, the size shrinks first: a read never finds a file shorter than the size.
    this.volume.noteWrite(Math.min(old, size), Number.MAX_SAFE_INTEGER)
    const sums = this.volume.checksums
    let cut: WriteHold | undefined
    if (size > old) await truncate()
    else {
      await this.volume.recordShrink(size)
      // The regions cut are in flux before the files shrink; the last block's old bytes from a copy that verifies.
      cut = await sums?.beginShrink(size, old)
      // Every copy rotten: nothing better than the read-back after the cut exists (the size is already recorded).
      if (cut) await sums!.captureEdges(cut, (buffer, offset, good) => this.readOld(buffer, offset, good).catch(() => ({ from: null, refused: [] })))
    }
    try {
      this.volume.resizeTo(size)
      for (const r of this.volume.replicas) r.truncate(size)
      // The bytes between the two ends changed (zeros when growing): replicas fed by write-behind copy them too.
      for (const r of this.behind) r.markPending(Math.min(old, size), Math.max(old, size))
      if (size < old) await truncate()
    } finally {
      const from = now.find((r) => !r.failed)
      if (cut) await sums!.endShrink(cut, from ? readBackFrom(from) : null, this.repairEdge)
    }
    this.volume.bump()
    this.volume.wakeWriteBehind()
  }


  /** Ends a write that will not finish (a broken or refused body): what was written stays, nothing is acknowledged. */
  abort(error: IoError): void {
    if (this.ended) return
    this.group.length = this.position - this.options.offset
    this.group.failOpen(error)
    void Promise.all(this.bufferedOps).then(() => this.endIntents())
    this.end()
  }

  private endIntents(): void {
    for (const [r, id] of this.intents) r.endIntent(id)
    this.intents.clear()
  }

  private end(): void {
    this.ended = true
    this.endResolve()
  }
}

/** Reads a replica's bytes as its file holds them now (a write's edge blocks, a shrink's last block). */
function readBackFrom(replica: Replica): ReadBack {
  return (buffer, offset) => {
    if (!replica.file) return Promise.reject(new Error(`replica ${replica.id} has no file open`))
    return replica.file.read(buffer, offset)
  }
}
