import type { Operation } from './operation.js'
import type { Replica } from './replica.js'
import { toIoError } from './replica.js'
import type { IoError } from './schemas.js'
import type { ReplicaOperation, TrackedGroup } from './tracked-group.js'
import type { Volume } from './volume.js'

/** Intents of a write of unknown length grow in steps this big, so a long stream costs few journal records. */
const INTENT_STEP = 64 << 20

export interface WriteOptions {
  offset: number
  /** Bytes the body declares, when known: the journal records them up front. */
  length: number | null
  /** The volume's size once the write is done: a number (a declared complete length), 'end' (a whole replace), or null (keep or grow). */
  resizeTo: number | 'end' | null
}

/** A write that no reading replica took: the bytes are nowhere a read could find them. */
export class WriteFailedError extends Error {
  constructor(
    readonly group: TrackedGroup,
    readonly errors: IoError[],
  ) {
    super(`no reading replica took the write: ${errors.map((e) => `${e.code} ${e.message}`).join('; ')}`)
  }
}

/**
 * One write streamed into a volume, chunk by chunk. Sync replicas take each chunk directly; every
 * other writing replica has the range journaled first and is then fed by write-behind. Nothing of
 * the body is kept once its chunk is on the sync replicas.
 */
export class WriteSession {
  readonly group: TrackedGroup
  position: number
  private readonly direct: Replica[] = []
  private readonly behind: Replica[] = []
  /** No sync replica: chunks are queued in memory for each replica's lane (bounded by the mirror's queue). */
  private buffered = false
  private readonly bufferedOps: Array<Promise<void>> = []
  private readonly intents = new Map<Replica, number>()
  private intentEnd: number
  private readonly ops = new Map<Replica, ReplicaOperation>()
  private ended = false
  private endResolve!: () => void
  readonly whenEnded = new Promise<void>((resolve) => (this.endResolve = resolve))

  constructor(
    private readonly volume: Volume,
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
    if (!writers.some((r) => r.spec.read && !r.failed)) {
      // Refuse up front: an acknowledged write must be somewhere a read can find it.
      const errors = writers.map((r) => r.error).filter((e) => e !== null)
      this.abort(errors[0] ?? { code: 'EIO', message: 'no reading replica takes writes' })
      throw new WriteFailedError(this.group, errors)
    }
    this.buffered = this.volume.buffered
    for (const r of writers) {
      // A sync replica still resyncing takes writes through write-behind, so a copy in flight can never overwrite them.
      if (!this.buffered && !r.isAsync && r.inSync) this.direct.push(r)
      else this.behind.push(r)
      if (!r.failed) this.ops.set(r, this.group.add(r.id, r.spec.mode))
    }
    try {
      await Promise.all(
        // From the volume's end when the write starts past it: the zeros in between are new content too.
        writers.filter((r) => this.buffered || r !== source).map(async (r) => this.intents.set(r, await r.intend(Math.min(this.options.offset, this.volume.size), this.intentEnd))),
      )
    } catch (err) {
      this.abort(toIoError(err))
      throw err
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
    // A write past the end grows the volume with zeros before it: replicas fed by write-behind must get those too.
    if (start > this.volume.size && !this.buffered) for (const r of this.behind) r.markPending(this.volume.size, start)
    if (this.buffered) await this.queueBuffered(chunk, start)
    else await this.writeDirect(chunk, start, end)
    for (const r of this.behind) {
      // Buffered writes reach healthy replicas through their lanes; one still being filled is copied again after, as a copy may have raced it.
      if (this.buffered && !r.failed && r.inSync) continue
      r.markPending(start, end)
      this.volume.copier(r)?.wake()
    }
    this.position = end
    if (end > this.volume.size) this.volume.size = end
    this.volume.bump()
  }

  private async writeDirect(chunk: Buffer, start: number, end: number): Promise<void> {
    const live = this.direct.filter((r) => !r.failed)
    for (const r of this.direct) if (r.failed) r.markPending(start, end)
    for (const r of live) this.group.start(this.ops.get(r)!)
    const result = await this.volume.mirror.writeAt(chunk, start, this.group, live.map((r) => r.file!))
    const errors: IoError[] = []
    result.operations.forEach((op, i) => {
      const r = live[i]
      const agg = this.ops.get(r)!
      if (op.error) {
        this.volume.replicaFailed(r, op.error)
        r.markPending(start, end)
        this.group.finish(agg, agg.bytes + op.bytes, r.error)
        errors.push(r.error!)
      } else agg.bytes += op.bytes
    })
    if (!live.some((r, i) => r.spec.read && !result.operations[i].error)) {
      this.abort(errors[0] ?? { code: 'EIO', message: 'no reading replica is healthy' })
      throw new WriteFailedError(this.group, errors)
    }
  }

  /** Queues the chunk in every live replica's lane; resolves once queued, waiting while a lane's bounded queue is full. */
  private async queueBuffered(chunk: Buffer, start: number): Promise<void> {
    const live = this.behind.filter((r) => !r.failed)
    for (const r of live) this.group.start(this.ops.get(r)!)
    this.volume.bufferedBytes += chunk.length * live.length
    const queued = this.volume.mirror.writeAt(chunk, start, this.group, live.map((r) => r.file!))
    this.bufferedOps.push(
      queued.then((g) =>
        Promise.all(
          g.operations.map((op: Operation<TrackedGroup, Replica>, i) =>
            op.whenDone.then(() => {
              this.volume.bufferedBytes -= chunk.length
              const r = live[i]
              const agg = this.ops.get(r)!
              if (op.error) {
                this.volume.replicaFailed(r, op.error)
                r.markPending(start, start + chunk.length)
                this.group.finish(agg, agg.bytes + op.bytes, r.error)
              } else agg.bytes += op.bytes
            }),
          ),
        ).then(() => undefined),
      ),
    )
    await queued
  }

  /** Ends the write: resize, sync if asked, settle the journal, and let the group follow the replicas. */
  async finish(): Promise<TrackedGroup> {
    const { resizeTo } = this.options
    const newSize = resizeTo === 'end' ? this.position : resizeTo
    // Buffered writes land first, so a resize never races a queued write.
    if (this.buffered) await Promise.all(this.bufferedOps)
    if (newSize !== null && newSize !== this.volume.size) await this.resize(newSize)
    if (this.volume.spec.durability === 'fsync') {
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
    for (const r of this.behind) {
      const op = this.ops.get(r)
      if (!op || this.buffered) {
        if (op) this.group.finish(op, op.bytes, r.error)
        continue
      }
      this.group.start(op)
      void r.whenHolds(this.options.offset, this.position).then((error) => this.group.finish(op, error ? 0 : length, error))
    }
    this.end()
    return this.group
  }

  /** Grows or shrinks every healthy replica that takes writes directly (or every one, when buffered); the rest follow through write-behind. */
  private async resize(size: number): Promise<void> {
    const old = this.volume.size
    this.volume.size = size
    for (const r of this.volume.replicas) r.truncate(size)
    // The bytes between the two ends changed (zeros when growing): replicas fed by write-behind copy them too.
    if (!this.buffered) for (const r of this.behind) r.markPending(Math.min(old, size), Math.max(old, size))
    const now = (this.buffered ? this.behind : this.direct).filter((r) => !r.failed)
    await Promise.all(now.map((r) => r.file!.truncate(size).catch((err) => this.volume.replicaFailed(r, err))))
    this.volume.bump()
    this.volume.wakeCopiers()
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
