import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { FileMirror } from './file-mirror.js'
import { EndOfFileError } from './operation.js'
import type { GroupRegistry } from './group-registry.js'
import { Journal, readJournal, WHOLE_FILE } from './journal.js'
import { RangeSet } from './range-set.js'
import { Replica, toIoError, type ResolvedReplicaSpec } from './replica.js'
import type { ReplicaFile, ReplicaFileOpener } from './replica-file.js'
import type { IoError, ReplicaSpec, VolumeSpec, VolumeStatus } from './schemas.js'
import { TrackedGroup, type ReplicaOperationEvent } from './tracked-group.js'
import { WriteBehind } from './write-behind.js'
import { WriteSession, type WriteOptions } from './write-session.js'

export interface VolumeLimits {
  /** Writes in flight before new ones are refused. */
  maxInflightWrites: number
  /** Bytes held in memory for async replicas (only without a sync replica) before new writes are refused. */
  maxQueuedBytes: number
}

export const DEFAULT_LIMITS: VolumeLimits = { maxInflightWrites: 256, maxQueuedBytes: 64 << 20 }

/** A resync that has nothing to copy from. */
export class NoSourceError extends Error {}

/** A write refused because the volume is at a limit; the client should retry shortly. */
export class VolumeBusyError extends Error {}

export interface VolumeDeps {
  limits?: VolumeLimits
  journalDir: string
  groups: GroupRegistry
  openFile: ReplicaFileOpener
  log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void }
}

export interface VolumeEvents {
  /** A replica's share of a group started or finished. */
  operation: [ReplicaOperationEvent]
  /** A replica's state changed (in-sync, behind, resyncing, failed). */
  replicaState: [{ volume: string; replica: string; state: string; error: IoError | null }]
  /** No write is in flight and no replica has anything to copy. */
  idle: [{ volume: string }]
  /** Write-behind copied `bytes` onto a replica (for metrics). */
  copied: [{ volume: string; replica: string; bytes: number }]
}

/** No replica could serve a read. */
export class ReadFailedError extends Error {
  constructor(
    readonly replica: string,
    readonly error: IoError | null,
  ) {
    super(error ? `read failed on replica ${replica}: ${error.code} ${error.message}` : 'no healthy replica holds the requested bytes')
  }
}

function lastError(tried: Set<Replica>): IoError | null {
  return [...tried].at(-1)?.error ?? null
}

/** Longest a close waits for replies still streaming from the volume. */
const READER_GRACE_MS = 30_000

/** Longest a resync waits for client writes to pause before copying its next chunk anyway. */
const RESYNC_YIELD_MS = 50

/** Async writes queued per replica when the volume has no sync replica to copy from. */
const BUFFERED_QUEUE = 64

/** A named, long-lived mirror of several replica files. */
export class Volume extends EventEmitter<VolumeEvents> {
  readonly replicas: Replica[] = []
  readonly mirror = new FileMirror<TrackedGroup, Replica>({ queueSize: BUFFERED_QUEUE, fixedBuffer: true })
  private readonly copiers = new Map<Replica, WriteBehind>()
  private readonly instance = randomBytes(6).toString('hex')
  private generation = 0
  size = 0
  /** Writes in flight, for a close that waits for them. */
  private readonly sessions = new Set<WriteSession>()
  private quietWaiters: Array<() => void> = []
  /** Bytes of buffered writes (no sync replica) still waiting in replicas' lanes. */
  bufferedBytes = 0
  /** The last whole replace started: the next one waits for it. */
  private lastReplace: Promise<void> | undefined
  /** Replica additions and resyncs under way. */
  private readonly changes = new Set<Promise<unknown>>()
  /** Replies still reading, and who waits for them to end. */
  private readers = 0
  private readerWaiters: Array<() => void> = []
  private closing = false

  private constructor(
    readonly name: string,
    public spec: VolumeSpec,
    readonly deps: VolumeDeps,
  ) {
    super()
  }

  /**
   * Opens a volume over its replica files. A new volume marks every replica but the first
   * reading one wholly dirty (their bytes may differ); an existing one takes its journals.
   */
  static async open(name: string, spec: VolumeSpec, resolved: ResolvedReplicaSpec[], deps: VolumeDeps, fresh: boolean): Promise<Volume> {
    const volume = new Volume(name, spec, deps)
    for (const r of resolved) {
      const replica: Replica = new Replica(r, null, undefined as unknown as Journal)
      try {
        replica.file = await deps.openFile(r.resolvedPath)
      } catch (err) {
        replica.fail(err)
      }
      const found = fresh ? ({ kind: 'missing' } as const) : await readJournal(volume.journalPath(r.id))
      if (found.kind === 'corrupt') deps.log.warn({ volume: name, replica: r.id, reason: found.reason }, 'journal corrupt: full resync')
      if (found.kind === 'ok') replica.pending.addAll(found.dirty)
      else if (!fresh) replica.pending.add(0, WHOLE_FILE)
      volume.replicas.push(replica)
    }
    // The anchor holds the truth: the first healthy sync reading replica with nothing dirty, else the first reading one.
    const anchor =
      volume.replicas.find((r) => r.spec.read && !r.isAsync && r.inSync) ??
      volume.replicas.find((r) => r.spec.read && !r.failed) ??
      volume.replicas.find((r) => !r.failed)
    if (anchor && !anchor.pending.isEmpty) {
      deps.log.warn({ volume: name, replica: anchor.id }, 'no clean replica: taking this one as the truth')
      anchor.pending.clear()
    }
    volume.size = anchor ? await anchor.file!.size() : 0
    for (const replica of volume.replicas) {
      // A new volume's other replicas may hold anything; a file shorter than the volume lost its tail (or was replaced).
      if (fresh && replica !== anchor) replica.pending.add(0, volume.size)
      const fileSize = replica.file ? await replica.file.size() : volume.size
      if (fileSize < volume.size) replica.pending.add(fileSize === 0 ? 0 : fileSize, volume.size)
      replica.pending.truncate(volume.size)
      replica.resyncing = !replica.pending.isEmpty
      // The journal is written with the full dirty set before anything can be acknowledged.
      replica.journal = await Journal.create(volume.journalPath(replica.id), replica.pending, { fsync: spec.durability === 'fsync' }, () => replica.dirty())
      volume.attach(replica)
    }
    return volume
  }

  journalPath(replicaId: string): string {
    return join(this.deps.journalDir, this.name, `${replicaId}.journal`)
  }

  private attachFile(replica: Replica): void {
    const file = replica.file
    if (!file) return
    if (replica.spec.read) this.mirror.addReadingFile(file)
    if (replica.spec.write) this.mirror.addWritingFile(file)
    this.mirror.setFileAsync(file, replica.isAsync)
    this.mirror.setFileUserData(file, replica)
  }

  private detachFile(file: ReplicaFile): void {
    this.mirror.removeReadingFile(file)
    this.mirror.removeWritingFile(file)
  }

  /** Puts a replica in the mirror's sets and starts its write-behind (after `startAfter`, when given). */
  private attach(replica: Replica, startAfter?: Promise<unknown>): void {
    this.attachFile(replica)
    const copier = new WriteBehind(replica, {
      source: (target) => this.source(target),
      size: () => this.size,
      fsync: this.spec.durability === 'fsync',
      sourceFailed: (source, err) => this.replicaFailed(source, err),
      onCopy: (target, start, end) => {
        this.emit('copied', { volume: this.name, replica: target.id, bytes: end - start })
        this.emitIdleIfQuiet()
      },
      idle: () => this.quietOrAfter(RESYNC_YIELD_MS),
    })
    this.copiers.set(replica, copier)
    if (startAfter) void startAfter.then(() => !this.closing && this.copiers.get(replica) === copier && copier.start())
    else copier.start()
  }

  get etag(): string {
    return `"${this.instance}-${this.generation.toString(36)}"`
  }

  /** Marks a change of content: every write moves the ETag. */
  bump(): void {
    this.generation++
  }

  /** A volume with no sync replica to write through: writes are buffered for the async ones. */
  get buffered(): boolean {
    return !this.replicas.some((r) => r.spec.write && !r.isAsync)
  }

  /** A healthy sync replica holding every acknowledged byte, preferring reading ones. */
  source(exclude?: Replica): Replica | undefined {
    let fallback: Replica | undefined
    let quietAsync: Replica | undefined
    for (const r of this.replicas) {
      // A replica that takes no writes holds none of them: it is never a source.
      if (r === exclude || !r.spec.write || !r.inSync || !r.file) continue
      if (r.isAsync) {
        // Without a sync replica, an async one that lacks nothing (no write queued for it) holds every acknowledged byte.
        if (this.buffered && !r.lacks(0, Number.MAX_SAFE_INTEGER)) quietAsync ??= r
        continue
      }
      if (r.spec.read) return r
      fallback ??= r
    }
    return fallback ?? quietAsync
  }

  /** The replica a read of [start, end) goes to: the named one, else the first reading replica holding those bytes. */
  readTarget(start: number, end: number, replicaId?: string): Replica | undefined {
    if (replicaId !== undefined) return this.replicas.find((r) => r.id === replicaId)
    const holder = this.replicas.find((r) => r.spec.read && r.spec.write && !r.failed && !r.lacks(start, end))
    if (holder) return holder
    // Without any sync replica, reads queue behind buffered writes in the reading replica's own lane; otherwise a lagging replica is never read.
    return this.source() ?? (this.buffered ? this.replicas.find((r) => r.spec.read && !r.failed) : undefined)
  }

  replica(id: string): Replica | undefined {
    return this.replicas.find((r) => r.id === id)
  }

  copier(replica: Replica): WriteBehind | undefined {
    return this.copiers.get(replica)
  }

  newGroup(kind: TrackedGroup['kind'], offset: number): TrackedGroup {
    const group = new TrackedGroup(this.name, kind, offset, (event) => this.emit('operation', event))
    this.deps.groups.add(group)
    return group
  }

  /** Starts a write; the caller streams chunks into it and finishes it. Throws while closing. */
  async beginWrite(options: WriteOptions): Promise<WriteSession> {
    if (this.closing) throw new VolumeBusyError(`volume ${this.name} is closing`)
    const limits = this.deps.limits ?? DEFAULT_LIMITS
    if (this.sessions.size >= limits.maxInflightWrites) throw new VolumeBusyError(`volume ${this.name} has ${this.sessions.size} writes in flight`)
    if (this.bufferedBytes >= limits.maxQueuedBytes) throw new VolumeBusyError(`volume ${this.name} holds ${this.bufferedBytes} bytes for its async replicas`)
    // Whole replaces run one at a time, so the content is always one of them, never a mix (RFC 9110 §9.3.4).
    const previousReplace = options.resizeTo === 'end' ? this.lastReplace : undefined
    this.bump()
    const session = new WriteSession(this, options)
    if (options.resizeTo === 'end') this.lastReplace = session.whenEnded
    this.sessions.add(session)
    session.whenEnded.then(() => {
      this.sessions.delete(session)
      if (this.sessions.size === 0) {
        const waiters = this.quietWaiters
        this.quietWaiters = []
        for (const resolve of waiters) resolve()
      }
      this.emitIdleIfQuiet()
    })
    await previousReplace
    await session.begin()
    return session
  }

  /**
   * Reads into `buffer` from `offset` for `group`: from the named replica, else from a reading replica
   * holding the bytes, failing over to the next one when a read errs. Returns the bytes read.
   */
  async readInto(buffer: Buffer, offset: number, group: TrackedGroup, replicaId?: string): Promise<number> {
    const tried = new Set<Replica>()
    for (;;) {
      const target = this.readTarget(offset, offset + buffer.length, replicaId)
      if (!target || tried.has(target) || !target.file) throw new ReadFailedError(replicaId ?? 'any', lastError(tried))
      tried.add(target)
      const op = group.find(target.id) ?? group.add(target.id, target.spec.mode)
      group.start(op)
      const [read] = (await this.mirror.readAt(buffer, offset, group, [target.file])).operations
      // An async replica's read is only queued by readAt: wait for it to run.
      await read.whenDone
      if (!read.error || read.error instanceof EndOfFileError) {
        op.bytes += read.bytes
        return read.bytes
      }
      this.replicaFailed(target, read.error)
      group.finish(op, op.bytes, target.error)
      if (replicaId !== undefined) throw new ReadFailedError(replicaId, target.error)
    }
  }

  /** A replica failed: it keeps its dirty ranges and waits for a resync; the volume is degraded. */
  replicaFailed(replica: Replica, err: unknown): void {
    if (replica.error) return
    replica.fail(err)
    this.deps.log.warn({ volume: this.name, replica: replica.id, error: replica.error }, 'replica failed')
    this.emit('replicaState', { volume: this.name, replica: replica.id, state: 'failed', error: replica.error })
    this.wakeCopiers()
  }

  /** Resolves once no write is in flight, or after `ms` at most. */
  quietOrAfter(ms: number): Promise<void> {
    if (this.sessions.size === 0) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.quietWaiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  /** Writes in flight right now; background work (scrub) yields to them. */
  get writesInFlight(): number {
    return this.sessions.size
  }

  /** Resolves once every write that is in flight now has ended. */
  private async writesNowInFlight(): Promise<void> {
    await Promise.all([...this.sessions].map((s) => s.whenEnded))
  }

  /**
   * Reopens a replica and copies what it lacks from an in-sync replica: its tracked dirty ranges,
   * or everything when asked or when its file is now shorter than the volume (a new, empty disk).
   */
  resync(replica: Replica, full: boolean): Promise<void> {
    return this.tracked(this.resyncNow(replica, full))
  }

  private async resyncNow(replica: Replica, full: boolean): Promise<void> {
    if (this.closing) throw new VolumeBusyError(`volume ${this.name} is closing`)
    if (full && this.size > 0 && !this.source(replica)) throw new NoSourceError(`no other in-sync replica of volume ${this.name} to copy ${replica.id} from`)
    if (replica.failed) await this.reopen(replica)
    const fileSize = await replica.file!.size()
    // A whole copy when asked, or when the file came back shorter (a new, empty disk); else only its tracked dirty ranges.
    if ((full || fileSize < this.size) && this.size > 0) {
      await replica.journal.markDirty(0, this.size)
      replica.pending.add(0, this.size)
    }
    replica.resyncing = !replica.pending.isEmpty
    this.deps.log.info({ volume: this.name, replica: replica.id, bytes: replica.pending.bytes }, 'replica resyncing')
    this.emit('replicaState', { volume: this.name, replica: replica.id, state: replica.state, error: null })
    this.wakeCopiers()
  }

  /** Swaps a failed replica's file for a freshly opened one, once operations on the old one have drained. */
  private async reopen(replica: Replica): Promise<void> {
    const file = await this.deps.openFile(replica.spec.resolvedPath)
    const old = replica.file
    if (old) {
      this.detachFile(old)
      await this.mirror.fileDrained(old)
      await this.copiers.get(replica)?.idle()
      await old.close().catch(() => {})
    }
    replica.file = file
    replica.error = null
    this.attachFile(replica)
  }

  /** Adds a replica to the live volume: it takes new writes at once and is filled by a whole resync. */
  addReplica(spec: ResolvedReplicaSpec): Promise<Replica> {
    return this.tracked(this.addReplicaNow(spec))
  }

  private async addReplicaNow(spec: ResolvedReplicaSpec): Promise<Replica> {
    if (this.closing) throw new VolumeBusyError(`volume ${this.name} is closing`)
    const file = await this.deps.openFile(spec.resolvedPath)
    const whole = RangeSet.of([0, WHOLE_FILE])
    const replica: Replica = new Replica(spec, file, undefined as unknown as Journal)
    replica.journal = await Journal.create(this.journalPath(spec.id), whole, { fsync: this.spec.durability === 'fsync' }, () => replica.dirty())
    if (this.closing) {
      await replica.journal.close()
      await file.close()
      throw new VolumeBusyError(`volume ${this.name} is closing`)
    }
    if (this.size > 0) replica.pending.add(0, this.size)
    replica.resyncing = true
    this.replicas.push(replica)
    this.spec = { ...this.spec, replicas: [...this.spec.replicas, stripResolved(spec)] }
    // Writes already in flight do not know this replica: copy only once they have landed on the source.
    const earlier = this.writesNowInFlight()
    this.attach(replica, earlier.then(() => replica.pending.add(0, this.size)))
    this.emit('replicaState', { volume: this.name, replica: replica.id, state: replica.state, error: null })
    return replica
  }

  /** Removes a replica once the writes in flight that may use it have ended; its file is kept. */
  async removeReplica(replica: Replica): Promise<void> {
    this.replicas.splice(this.replicas.indexOf(replica), 1)
    this.spec = { ...this.spec, replicas: this.spec.replicas.filter((r) => r.id !== replica.id) }
    await this.writesNowInFlight()
    await this.copiers.get(replica)?.stop()
    this.copiers.delete(replica)
    if (replica.file) {
      this.detachFile(replica.file)
      await replica.file.close().catch(() => {})
    }
    await replica.journal.close().catch(() => {})
    await rm(this.journalPath(replica.id), { force: true })
    this.wakeCopiers()
  }

  /** Wakes every replica's write-behind to look again at its work, its size and its source. */
  wakeCopiers(): void {
    for (const copier of this.copiers.values()) copier.wake(true)
  }

  private emitIdleIfQuiet(): void {
    if (this.sessions.size > 0) return
    for (const r of this.replicas) if (!r.failed && !r.inSync) return
    this.emit('idle', { volume: this.name })
  }

  /** Resolves once no replica has anything left to copy (failed ones excepted), or after `timeoutMs`. */
  async settled(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    const quiet = () => this.sessions.size === 0 && this.replicas.every((r) => r.failed || r.inSync)
    while (!quiet()) {
      if (Date.now() >= deadline) return false
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          this.off('idle', done)
          resolve()
        }
        const timer = setTimeout(done, Math.min(250, deadline - Date.now()))
        this.once('idle', done)
      })
    }
    return true
  }

  status(): VolumeStatus {
    return {
      name: this.name,
      state: this.replicas.some((r) => r.failed) ? 'degraded' : 'ok',
      size: this.size,
      etag: this.etag,
      durability: this.spec.durability,
      replicas: this.replicas.map((r) => ({
        id: r.id,
        path: r.spec.path,
        read: r.spec.read,
        write: r.spec.write,
        mode: r.spec.mode,
        label: r.spec.label ?? null,
        maxBytesPerSecond: r.spec.maxBytesPerSecond,
        state: r.state,
        dirtyBytes: r.dirtyBytes,
        cachedPercent: r.file ? Math.round(this.mirror.cachedPercent(r.file, this.size) * 100) / 100 : 0,
        error: r.error,
      })),
    }
  }

  /**
   * Stops taking writes, waits for those in flight, lets write-behind run for `graceMs`,
   * then stops it with what is left kept in the journals for the next start.
   */
  /** Registers a read in progress (a reply still streaming); call the returned function when it ends. */
  holdReader(): () => void {
    if (this.closing) throw new VolumeBusyError(`volume ${this.name} is closing`)
    this.readers++
    let released = false
    return () => {
      if (released) return
      released = true
      if (--this.readers === 0) {
        const waiters = this.readerWaiters
        this.readerWaiters = []
        for (const resolve of waiters) resolve()
      }
    }
  }

  /** Resolves once no read is in progress, or after `ms`. */
  private readersDone(ms: number): Promise<void> {
    if (this.readers === 0) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.readerWaiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  /** Keeps a change of replicas in the set close() waits for, so a volume never closes under one. */
  private tracked<T>(work: Promise<T>): Promise<T> {
    this.changes.add(work)
    const forget = () => this.changes.delete(work)
    work.then(forget, forget)
    return work
  }

  async close(graceMs: number): Promise<void> {
    this.closing = true
    await Promise.allSettled([...this.changes])
    // Replies still streaming finish first (bounded, for a client that stopped reading).
    await this.readersDone(Math.max(graceMs, READER_GRACE_MS))
    await Promise.all([...this.sessions].map((s) => s.whenEnded))
    await this.settled(graceMs)
    await Promise.all([...this.copiers.values()].map((c) => c.stop()))
    await this.mirror.close(false)
    for (const r of this.replicas) {
      await r.journal.close().catch((err) => this.deps.log.warn({ volume: this.name, replica: r.id, error: toIoError(err) }, 'journal close failed'))
      await r.file?.close().catch(() => {})
    }
  }
}

/** The configuration form of a replica, without its resolved path. */
export function stripResolved({ resolvedPath: _, ...spec }: ResolvedReplicaSpec): ReplicaSpec {
  return spec
}
