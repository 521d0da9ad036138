import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { mkdir, open, rename, rm, stat, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { join } from 'node:path'
import { pumpBody, type Body, type BodyCheck } from './body-stages.js'
import { BLOCK_BYTES, BlockChecksums, type ChecksumHost, type WriteHold } from './block-checksums.js'
import { blockHashImplementation } from './block-hash.js'
import { slabs } from './buffer-pool.js'
import { EngineError } from './errors.js'
import { FileMirror } from './file-mirror.js'
import type { OperationList } from './operation-list.js'
import { EndOfFileError } from './operation.js'
import type { GroupRegistry } from './group-registry.js'
import { Journal, readJournal, WHOLE_FILE } from './journal.js'
import { RangeSet } from './range-set.js'
import { Replica, toIoError, type ResolvedReplicaSpec } from './replica.js'
import type { BlockSums, ReplicaFile, ReplicaFileOpener } from './replica-file.js'
import type { IoError, ReplicaSpec, VolumeSpec } from './spec.js'
import { backendStatus, type VolumeStatus } from './status.js'
import { DEFAULT_RETRY_POLICY, type RemoteRetryPolicy } from './remote.js'
import { ReadSession } from './read-session.js'
import type { LastScrub } from './scrub.js'
import { readVerified, verifyCopy, type ChecksumMismatch, type ReplicaRead } from './verified-read.js'
import { StagedReplace, stagingPath, type ReplaceHost, type StagingRecord } from './staged-replace.js'
import { syncDirectory } from './journal.js'
import { VolumeHealth, type FileIdentity } from './volume-health.js'
import { OperationGroup, type ReplicaOperationEvent } from './operation-group.js'
import { WriteBehind } from './write-behind.js'
import { WriteFailedError, WriteSession, type WriteHost, type WriteOptions } from './write-session.js'

export interface VolumeLimits {
  /** Writes in flight before new ones are refused. */
  maxInflightWrites: number
  /** Bytes held in memory for async replicas (only without a sync replica) before new writes are refused. */
  maxQueuedBytes: number
}

export const DEFAULT_LIMITS: VolumeLimits = { maxInflightWrites: 256, maxQueuedBytes: 64 << 20 }

/** A resync that has nothing to copy from. */
export class NoSourceError extends EngineError {
  constructor(message: string) {
    super('conflict', message)
  }
}

/** A data request refused because the volume is at a limit or closing; the client should retry shortly. */
export class VolumeBusyError extends EngineError {
  constructor(message: string) {
    super('busy', message)
  }
}

/** How a body is taken: its idle timeout, the largest volume, and how to stop its source on a stall. */
export interface BodyLimits {
  idleTimeoutMs: number
  maxVolumeBytes: number
  /** Ends the body's source when it stalls (by default the body's own destroy()). */
  stopBody?: (error: Error) => void
  /**
   * Checks the body (a digest): a body that fails it changes nothing. A whole replace checks it before it
   * installs; a partial write holds the body in a spool file until it checks out, then writes it.
   */
  check?: BodyCheck
}

/** Body chunks are gathered up to this many bytes per write: one write of 1 MiB costs far less than sixteen of 64 KiB. */
const GATHER_BYTES = 256 << 10

export interface VolumeDeps {
  limits?: VolumeLimits
  journalDir: string
  groups: GroupRegistry
  openFile: ReplicaFileOpener
  log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void }
  /** How remote replicas failing with retryable errors are retried (DEFAULT_RETRY_POLICY when absent). */
  remoteRetry?: RemoteRetryPolicy
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
  /** A block failed its checksum on a replica (a read or a scrub found it): repaired from `from`, or no copy verified. */
  checksumMismatch: [{ volume: string } & ChecksumMismatch]
}

/** No replica could serve a read. */
export class ReadFailedError extends EngineError {
  constructor(
    readonly replica: string,
    readonly error: IoError | null,
  ) {
    super('read-failed', error ? `read failed on replica ${replica}: ${error.code} ${error.message}` : 'no healthy replica holds the requested bytes', { code: error?.code ?? 'EIO' })
  }
}

/** The file at `path` as the system sees it now, or null when there is none. */
async function identityOf(path: string): Promise<FileIdentity | null> {
  // A remote replica (a URL, an S3 store) has no device and inode: files changed behind the server are local ones.
  if (!path.startsWith('/')) return null
  const seen = await stat(path).catch(() => null)
  return seen && { dev: seen.dev, ino: seen.ino, size: seen.size }
}

/** How a replica's file changed behind the server since its identity was recorded, or null when it did not. */
function changedBehindServer(recorded: FileIdentity | null, seen: FileIdentity | null): string | null {
  if (!recorded) return null
  if (!seen) return 'its file is missing (deleted or moved behind the server)'
  if (seen.dev !== recorded.dev || seen.ino !== recorded.ino) return 'its file was replaced by another one (a different inode) behind the server'
  if (seen.size < recorded.size) return `its file shrank from ${recorded.size} to ${seen.size} bytes behind the server`
  return null
}

/** An Error with an errno-style code, as replicas record them. */
function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code })
}

function lastError(tried: Set<Replica>): IoError | null {
  return [...tried].at(-1)?.error ?? null
}

/** How long past the grace period a close gives replies it has cut to go. */
const READER_CUT_MS = 1_000

/** Longest a resync waits for client writes to pause before copying its next chunk anyway. */
const RESYNC_YIELD_MS = 50

/** Async writes queued per replica when the volume has no sync replica to copy from. */
const BUFFERED_QUEUE = 64

/** A named, long-lived mirror of several replica files. */
export class Volume extends EventEmitter<VolumeEvents> implements WriteHost, ReplaceHost {
  readonly replicas: Replica[] = []
  readonly mirror = new FileMirror<OperationGroup, Replica>({ queueSize: BUFFERED_QUEUE, fixedBuffer: true })
  private readonly writeBehinds = new Map<Replica, WriteBehind>()
  private readonly instance = randomBytes(6).toString('hex')
  private generation = 0
  private currentSize = 0
  /** Writes in flight, for a close that waits for them. */
  private readonly sessions = new Set<{ readonly whenEnded: Promise<void> }>()
  /** A whole replace installing its content: new writes wait for it. */
  private installing: Promise<void> | undefined
  /** The replicas a whole replace installed at a crash: every other one copies the content whole. */
  private replacedAtCrash: string[] | undefined
  /** Its files being swapped: new reads wait for it, so no read sees the old size over the new content. */
  private swapping: Promise<void> | undefined
  private quietWaiters: Array<() => void> = []
  /** Bytes of buffered writes (no sync replica) still waiting in replicas' lanes. */
  private heldBytes = 0
  /** The last whole replace started: the next one waits for it. */
  private lastReplace: Promise<void> | undefined
  /** Replica additions and resyncs under way. */
  private readonly changes = new Set<Promise<unknown>>()
  /** Reads still streaming, and who waits for them to end. */
  private readonly reading = new Set<ReadSession>()
  private readerWaiters: Array<() => void> = []
  private closing = false
  /** Counts shrinks: a read that overlapped one may legitimately come back short. */
  private shrinks = 0
  /** Its record across restarts (identities, failures, generation). */
  private health!: VolumeHealth
  /** Why the volume takes no writes: no replica is known to hold every acknowledged write. */
  private readOnly: IoError | null = null
  /** Chunk writes under way, each until every replica that takes it in the request path has it. */
  private chunkWrites = 0
  /** A resize under way: new chunk writes wait for it, and it waits for those under way. */
  private resizing: Promise<void> | undefined
  private chunksDrained: (() => void) | undefined
  /** Block checksums at rest (null with checksums off). */
  private store: BlockChecksums | null = null
  /** A whole replace installing: every block held and in flux, from its committing record until its checksums are in. */
  private replaceHold: { store: BlockChecksums; held: WriteHold } | undefined

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
  static async open(name: string, spec: VolumeSpec, resolved: ResolvedReplicaSpec[], deps: VolumeDeps, fresh: boolean, truth?: string): Promise<Volume> {
    const volume = new Volume(name, spec, deps)
    const log = deps.log
    // A new volume starts a new record (a name may be reused; its old journals are then foreign).
    const health = fresh ? await VolumeHealth.create(volume.healthPath) : await VolumeHealth.load(volume.healthPath)
    volume.health = health
    // Journals were written at the record's generation: an older or foreign one means a full resync.
    const known = !fresh && !health.fresh
    if (known) health.record.size = (await health.markedSize()) ?? health.record.size
    await volume.recoverStaging(resolved)
    for (const r of resolved) {
      const replica: Replica = new Replica(r, null, undefined as unknown as Journal)
      const entry = health.replica(r.id)
      const changed = known ? changedBehindServer(entry.file, await identityOf(r.resolvedPath)) : null
      if (changed) {
        // Never opened (so never recreated) and never a source: the operator decides what the file is.
        replica.fail(codedError('ECHANGED', `replica ${r.id}: ${changed}; resync it (POST …/resync?full=true) once the file is right`))
        log.warn({ volume: name, replica: r.id, reason: changed }, 'replica file changed behind the server: failed')
      } else {
        try {
          replica.file = await deps.openFile(r.resolvedPath, volume.openOptions(r.id))
        } catch (err) {
          replica.fail(err)
          log.warn({ volume: name, replica: r.id, error: replica.error }, 'replica could not be opened: failed')
        }
      }
      if (!fresh) {
        const expected = known ? { volume: health.uuid, replica: entry.uuid, generation: health.generation } : undefined
        const found = await readJournal(volume.journalPath(r.id), expected)
        if (found.kind === 'corrupt') log.warn({ volume: name, replica: r.id, reason: found.reason }, 'journal corrupt: full resync')
        if (found.kind === 'ok') replica.pending.addAll(found.dirty)
        else replica.pending.add(0, WHOLE_FILE)
      }
      volume.replicas.push(replica)
    }
    if (known) {
      for (const r of volume.replicas) {
        if (r.failed || !r.pending.isEmpty) continue
        const fileSize = await r.file!.size()
        if (fileSize >= health.record.size) continue
        // It holds every acknowledged write by its journal, yet is shorter than the volume was: cut back behind the server.
        const why = `its file is ${fileSize} bytes, shorter than the volume's recorded ${health.record.size}: cut back behind the server`
        r.fail(codedError('ECHANGED', `replica ${r.id}: ${why}; resync it (POST …/resync?full=true) once the file is right`))
        deps.log.warn({ volume: name, replica: r.id, reason: why }, 'replica file changed behind the server: failed')
        await r.file!.close().catch(() => {})
        r.file = null
      }
    }
    const installedAtCrash = volume.replacedAtCrash
    if (installedAtCrash) for (const r of volume.replicas) if (!installedAtCrash.includes(r.id)) r.pending.add(0, WHOLE_FILE)
    const anchor = await volume.chooseAnchor(fresh, truth)
    volume.currentSize = anchor ? await anchor.file!.size() : await volume.largestFile()
    for (const replica of volume.replicas) {
      // A new volume's other replicas may hold anything; a file shorter than the volume lost its tail (or was replaced).
      if (fresh && replica !== anchor) replica.pending.add(0, volume.size)
      const fileSize = replica.file ? await replica.file.size() : volume.size
      if (fileSize < volume.size) replica.pending.add(fileSize === 0 ? 0 : fileSize, volume.size)
      replica.pending.truncate(volume.size)
      replica.resyncing = !replica.pending.isEmpty
    }
    // The record moves to a new generation before the journals are written at it.
    const generation = health.advance()
    if (anchor || fresh) health.record.size = volume.size
    for (const replica of volume.replicas) if (replica.file) health.replica(replica.id).file = await identityOf(replica.spec.resolvedPath)
    await health.save()
    await health.markSize(health.record.size, spec.durability === 'fsync')
    // After journal recovery, before write-behind starts: what is in flux (all, over existing files) is checksummed again from the truth.
    if (spec.checksums) volume.store = await BlockChecksums.open(volume.checksumHost(), fresh)
    else await rm(volume.checksumsPath, { force: true })
    try {
      for (const replica of volume.replicas) {
        // The journal is written with the full dirty set before anything can be acknowledged.
        const identity = { volume: health.uuid, replica: health.replica(replica.id).uuid, generation }
        replica.journal = await Journal.create(volume.journalPath(replica.id), replica.pending, { fsync: spec.durability === 'fsync' }, () => replica.dirty(), identity)
        volume.attach(replica)
      }
    } catch (err) {
      // A volume that does not open leaves no flusher behind to write over the next opening's file.
      await volume.store?.close().catch(() => {})
      throw err
    }
    volume.store?.startCoverage()
    return volume
  }

  /** The volume's block checksums: null when it keeps none (checksums: false). */
  get checksums(): BlockChecksums | null {
    return this.store
  }

  /** Where the block checksums live, beside the journals. */
  get checksumsPath(): string {
    return join(this.deps.journalDir, this.name, 'checksums')
  }

  private checksumHost(): ChecksumHost {
    return {
      path: this.checksumsPath,
      uuid: this.health.uuid,
      fsync: () => this.fsync,
      size: () => this.size,
      // The truth: a replica holding every acknowledged byte (never one that lacks some).
      readTruth: async (buffer, offset) => {
        const source = this.source()
        return source?.file ? source.file.read(buffer, offset) : null
      },
      quiet: (ms) => this.quietOrAfter(ms),
      log: this.deps.log,
    }
  }

  /**
   * Switches block checksums on (every byte uncovered, checksummed in the background) or off (the file deleted).
   * Writes that began before the switch never count on the new store: coverage starts once they have ended.
   */
  async setChecksums(enabled: boolean): Promise<void> {
    if (enabled === (this.store !== null)) return
    const old = this.store
    if (old) {
      this.store = null
      await this.writesNowInFlight()
      await old.remove()
      return
    }
    const store = await BlockChecksums.open(this.checksumHost(), true)
    this.store = store
    await this.writesNowInFlight()
    store.startCoverage()
  }

  /**
   * The replica that holds the truth at open: the named one, else one with nothing dirty (the first sync reading
   * one first). Without one, an async-only volume takes its least dirty replica (buffered writes reach every
   * in-sync async replica before they are acknowledged), and any other volume opens read-only, saying why.
   */
  private async chooseAnchor(fresh: boolean, truth: string | undefined): Promise<Replica | undefined> {
    const log = this.deps.log
    const healthy = this.replicas.filter((r) => !r.failed)
    const named = truth === undefined ? undefined : healthy.find((r) => r.id === truth)
    const clean = healthy.filter((r) => r.pending.isEmpty)
    let anchor =
      named ??
      clean.find((r) => r.spec.read && !r.isAsync) ??
      clean.find((r) => r.spec.read) ??
      clean.find((r) => r.spec.write) ??
      (fresh ? (healthy.find((r) => r.spec.read) ?? healthy[0]) : undefined)
    if (!anchor && healthy.length > 0 && this.replicas.every((r) => r.isAsync)) {
      anchor = healthy.reduce((a, b) => (b.pending.bytes < a.pending.bytes ? b : a))
      log.warn({ volume: this.name, replica: anchor.id }, 'async-only volume with no clean replica: taking its least dirty one as the truth')
    }
    if (anchor) {
      if (!anchor.pending.isEmpty) log.warn({ volume: this.name, replica: anchor.id }, 'taking this replica as the truth; what the others hold is resynced from it')
      anchor.pending.clear()
      return anchor
    }
    const why = this.replicas.map((r) => `${r.id}: ${r.error ? r.error.message : `lacks ${r.pending.bytes >= WHOLE_FILE ? 'everything (no valid journal)' : `${r.pending.bytes} bytes`}`}`).join('; ')
    this.readOnly = {
      code: 'ENOTRUTH',
      message: `no replica is known to hold every acknowledged write (${why}); name the truth with PUT /volumes/${this.name} {"source": "<replica id>"}`,
    }
    log.warn({ volume: this.name, error: this.readOnly }, 'volume opened read-only: no replica is known good')
    return undefined
  }

  /** The largest replica file, for a volume with no known truth: reads may still fetch what each holds. */
  private async largestFile(): Promise<number> {
    let size = 0
    for (const r of this.replicas) if (r.file) size = Math.max(size, await r.file.size().catch(() => 0))
    return size
  }

  /**
   * The operator names the truth: `replicaId` becomes the source as it is, every other replica is resynced whole
   * from it, and a read-only volume takes writes again. Logged at warn.
   */
  async declareSource(replicaId: string): Promise<void> {
    const source = this.replica(replicaId)
    if (!source) throw new EngineError('not-found', `volume ${this.name} has no replica ${replicaId}`)
    if (source.failed) throw new EngineError('conflict', `replica ${replicaId} is failed (${source.error?.message ?? 'no file'}): resync it first, or name another`)
    await this.writesNowInFlight()
    this.deps.log.warn({ volume: this.name, replica: replicaId }, 'the operator named this replica the truth: the others are resynced from it')
    this.currentSize = await source.file!.size()
    source.pending.clear()
    source.resyncing = false
    for (const r of this.replicas) {
      if (r === source) continue
      await r.journal.markDirty(0, Math.max(this.size, 1))
      r.pending.add(0, Math.max(this.size, 1))
      r.pending.truncate(this.size)
      r.resyncing = true
    }
    this.health.replica(replicaId).failed = null
    await this.health.save()
    // Its bytes may differ from what the checksums say: all of it is checksummed again from it.
    await this.store?.uncoverAll()
    this.readOnly = null
    this.noteWrite(0, Number.MAX_SAFE_INTEGER)
    this.bump()
    this.wakeWriteBehind()
    for (const r of this.replicas) this.emit('replicaState', { volume: this.name, replica: r.id, state: r.state, error: r.error })
  }

  /**
   * A whole replace cut short by a crash: one still writing its staging files left the old content (the staging
   * files go); one installing them rolls forward (the rest are installed; the others were marked wholly dirty first).
   */
  private async recoverStaging(resolved: ResolvedReplicaSpec[]): Promise<void> {
    const staging = this.health.record.staging
    if (!staging) return
    for (const r of resolved) {
      if (!staging.replicas.includes(r.id)) continue
      const staged = stagingPath(r.resolvedPath)
      if (staging.phase === 'committing') {
        // Installed before the crash or now: the file at its path is the staged one either way.
        await rename(staged, r.resolvedPath).catch(() => {})
        this.health.replica(r.id).file = await identityOf(r.resolvedPath)
      } else await unlink(staged).catch(() => {})
    }
    if (staging.phase === 'committing') this.replacedAtCrash = staging.replicas
    this.deps.log.warn({ volume: this.name, phase: staging.phase, replicas: staging.replicas }, staging.phase === 'committing' ? 'a whole replace was installing at the crash: rolled forward' : 'a whole replace was cut short by the crash: the old content stays')
    this.health.record.staging = null
    await this.health.save()
  }

  /** Where the volume's record lives, beside its journals. */
  get healthPath(): string {
    return join(this.deps.journalDir, this.name, 'health.json')
  }

  /** How a replica's file is opened: with the volume's and the replica's UUIDs (a remote replica is stamped with them). */
  openOptions(replicaId: string): { identity: { volume: string; replica: string } } {
    return { identity: { volume: this.health.uuid, replica: this.health.replica(replicaId).uuid } }
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
    const writeBehind = new WriteBehind(replica, {
      source: (target) => this.source(target),
      size: () => this.size,
      fsync: this.spec.durability === 'fsync',
      sourceFailed: (source, err) => this.replicaFailed(source, err),
      readSource: (source, target, chunk, start) => this.readSource(source, target, chunk, start),
      retry: this.deps.remoteRetry ?? DEFAULT_RETRY_POLICY,
      reconnect: (target) => this.resync(target, false),
      targetFailed: (target, err) => this.replicaFailed(target, err),
      retryChanged: (target) => {
        if (target.retry) this.deps.log.warn({ volume: this.name, replica: target.id, error: target.retry.error, nextRetryAt: new Date(target.retry.nextAtWall).toISOString() }, 'remote replica unreachable: retrying')
        this.emit('replicaState', { volume: this.name, replica: target.id, state: target.state, error: target.error ?? target.retry?.error ?? null })
      },
      onCopy: (target, start, end) => {
        this.emit('copied', { volume: this.name, replica: target.id, bytes: end - start })
        this.noteInSync(target)
        this.emitIdleIfQuiet()
      },
      idle: () => this.quietOrAfter(RESYNC_YIELD_MS),
    })
    this.writeBehinds.set(replica, writeBehind)
    if (startAfter) void startAfter.then(() => !this.closing && this.writeBehinds.get(replica) === writeBehind && writeBehind.start())
    else writeBehind.start()
  }

  /** The volume's size: what a read of the whole content returns. */
  get size(): number {
    return this.currentSize
  }

  /** The volume's size as the next start will expect it (the record and its mark move together). */
  private recordSize(size: number): Promise<void> {
    this.health.record.size = size
    return this.health.markSize(size, this.fsync)
  }

  /** A write reached `end`: the volume grows to it, marked before the write is acknowledged (a file cut back behind the server below it is found at the next start). */
  grow(end: number): Promise<void> | undefined {
    if (end <= this.currentSize) return undefined
    this.currentSize = end
    if (end <= this.health.record.size) return undefined
    return this.recordSize(end)
  }


  /** The volume's new size after a resizing write. */
  resizeTo(size: number): void {
    if (size < this.currentSize) this.shrinks++
    this.currentSize = size
  }

  /** A chunk write may start: at once (undefined), or once the resize under way has ended. */
  enterChunk(): Promise<void> | undefined {
    if (!this.resizing) {
      this.chunkWrites++
      return undefined
    }
    return this.resizing.then(() => this.enterChunk())
  }

  leaveChunk(): void {
    if (--this.chunkWrites > 0 || !this.chunksDrained) return
    const drained = this.chunksDrained
    this.chunksDrained = undefined
    drained()
  }

  /**
   * Runs a resize alone, after every chunk write under way and before any new one: a truncate racing a
   * write past the new end would leave the files shorter than the size the volume reports.
   */
  async exclusive(work: () => Promise<void>): Promise<void> {
    while (this.resizing) await this.resizing
    let done!: () => void
    this.resizing = new Promise((resolve) => (done = resolve))
    try {
      if (this.chunkWrites > 0) await new Promise<void>((resolve) => (this.chunksDrained = resolve))
      await work()
    } finally {
      this.resizing = undefined
      done()
    }
  }

  /** Buffered bytes taken (positive) or landed (negative) in replicas' lanes. */
  holdBuffered(bytes: number): void {
    this.heldBytes += bytes
  }

  /** Bytes of buffered writes still waiting in replicas' lanes. */
  get bufferedBytes(): number {
    return this.heldBytes
  }

  get fsync(): boolean {
    return this.spec.durability === 'fsync'
  }

  writeAt(chunk: Buffer, offset: number, group: OperationGroup, replicas: Replica[]): Promise<OperationList<OperationGroup, Replica>> {
    return this.mirror.writeAt(chunk, offset, group, replicas.map((r) => r.file!))
  }

  get etag(): string {
    return `"${this.instance}-${this.generation.toString(36)}"`
  }

  /** Marks a change of content: every write moves the ETag. */
  bump(): void {
    this.generation++
  }

  /**
   * A volume with no in-sync sync replica to write through (none configured, or the only ones still
   * being filled): writes go through the lanes of the in-sync async replicas, acknowledged once they hold them.
   */
  get buffered(): boolean {
    return !this.replicas.some((r) => r.spec.write && !r.isAsync && r.inSync)
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
        if (this.buffered && !r.lacks(0, Number.MAX_SAFE_INTEGER) && (!quietAsync || (quietAsync.isRemote && !r.isRemote))) quietAsync = r
        continue
      }
      if (r.spec.read) return r
      fallback ??= r
    }
    return fallback ?? quietAsync
  }

  /**
   * The replica a read of [start, end) goes to: the named one; else the first reading replica holding those
   * bytes; else, as a last resort, any replica holding them (read: false ones too). A lagging replica is never read.
   */
  readTarget(start: number, end: number, replicaId?: string): Replica | undefined {
    if (replicaId !== undefined) return this.replicas.find((r) => r.id === replicaId)
    let lastResort: Replica | undefined
    let laneFed: Replica | undefined
    for (const r of this.replicas) {
      // A replica that takes no writes holds none of them.
      if (r.failed || !r.spec.write) continue
      if (!r.lacks(start, end)) {
        if (r.spec.read) return r
        lastResort ??= r
      } else if (this.buffered && !r.isRemote && r.pending.isEmpty && r.copying.isEmpty && (!laneFed || (r.spec.read && !laneFed.spec.read))) {
        // Buffered writes still in flight: its own lane holds them, and orders this read after them.
        laneFed = r
      }
    }
    return lastResort ?? this.source() ?? laneFed
  }

  /** Whether `replica` holds every acknowledged byte now: healthy, nothing dirty, nothing in flight it lacks. */
  holdsEverything(replica: Replica): boolean {
    return replica.inSync && !replica.lacks(0, Number.MAX_SAFE_INTEGER)
  }

  replica(id: string): Replica | undefined {
    return this.replicas.find((r) => r.id === id)
  }

  writeBehind(replica: Replica): WriteBehind | undefined {
    return this.writeBehinds.get(replica)
  }

  newGroup(kind: OperationGroup['kind'], offset: number): OperationGroup {
    const group = new OperationGroup(this.name, kind, offset, (event) => this.emit('operation', event))
    this.deps.groups.add(group)
    return group
  }

  /**
   * Streams `body` into the volume as one write: limits and the idle timeout are checked as it comes, chunks are
   * gathered into larger writes. Resolves with its group once the sync replicas hold every byte; on any failure
   * the write is aborted (what was written stays, nothing is acknowledged) and the error is thrown.
   */
  async write(options: WriteOptions, body: Body, limits: BodyLimits): Promise<OperationGroup> {
    const limit = options.length === null ? null : options.offset + options.length
    const size = typeof options.resizeTo === 'number' ? options.resizeTo : 0
    if ((limit ?? 0) > limits.maxVolumeBytes || size > limits.maxVolumeBytes) throw new EngineError('too-large', `writes may not reach past ${limits.maxVolumeBytes} bytes`)
    if (options.resizeTo === 'end' && options.offset === 0) return this.replace(options.length, body, limits)
    if (limits.check) return this.writeChecked(options, body, limits, limits.check)
    const session = await this.beginWrite(options)
    try {
      const stages = { idleMs: limits.idleTimeoutMs, stop: limits.stopBody, start: options.offset, limit, maxEnd: limits.maxVolumeBytes, gatherBytes: GATHER_BYTES, pool: slabs, keep: session.keepsChunks }
      await pumpBody(body, stages, (chunk) => session.write(chunk))
      if (limit !== null && session.position !== limit) {
        throw new EngineError('invalid', `the body ended after ${session.position - options.offset} of the ${options.length} bytes it declares`)
      }
    } catch (err) {
      session.abort({ code: 'ABORTED', message: err instanceof Error && !(err instanceof WriteFailedError) ? err.message : 'write failed' })
      throw err
    }
    return session.finish()
  }

  /** A partial write whose body must check out first: spooled beside the journals, checked, then written from the spool. */
  private async writeChecked(options: WriteOptions, body: Body, limits: BodyLimits, check: BodyCheck): Promise<OperationGroup> {
    const path = join(this.deps.journalDir, '..', 'spool', `${this.name}.${randomBytes(8).toString('hex')}.body`)
    await mkdir(dirname(path), { recursive: true })
    const handle = await open(path, 'w+', 0o600)
    try {
      let length = 0
      const limit = options.length === null ? null : options.offset + options.length
      const stages = { idleMs: limits.idleTimeoutMs, stop: limits.stopBody, start: options.offset, limit, maxEnd: limits.maxVolumeBytes, gatherBytes: GATHER_BYTES, pool: slabs, keep: false, check }
      await pumpBody(body, stages, async (chunk) => {
        await handle.write(chunk, 0, chunk.length, length)
        length += chunk.length
      }).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOSPC' || err.code === 'EDQUOT') throw new EngineError('insufficient-storage', `no room to hold the body while it is checked (${err.code})`)
        throw err
      })
      if (limit !== null && options.offset + length !== limit) throw new EngineError('invalid', `the body ended after ${length} of the ${options.length} bytes it declares`)
      const mismatch = check.verify()
      if (mismatch) throw mismatch
      return await this.write({ ...options, length }, handle.createReadStream({ start: 0, autoClose: false }), { ...limits, check: undefined })
    } finally {
      await handle.close().catch(() => {})
      await unlink(path).catch(() => {})
    }
  }

  /** Starts a read of `length` bytes from `offset` (for its group); the caller ends it. Throws while closing. */
  openRead(offset: number, length: number, replicaId?: string): ReadSession {
    if (this.closing) throw new VolumeBusyError(`volume ${this.name} is closing`)
    const group = this.newGroup('read', offset)
    group.length = length
    const session: ReadSession = new ReadSession(this, group, replicaId, () => this.readEnded(session))
    this.reading.add(session)
    return session
  }

  private readEnded(session: ReadSession): void {
    if (!this.reading.delete(session) || this.reading.size > 0) return
    const waiters = this.readerWaiters
    this.readerWaiters = []
    for (const resolve of waiters) resolve()
  }

  /** Ends every reply still streaming from the volume at once (a stop past its grace period). */
  cutReaders(): void {
    for (const session of this.reading) session.cut()
  }

  /** Bytes [start, end) are about to change: a streamed read that has yet to send any of them is torn (cut short). */
  noteWrite(start: number, end: number): void {
    for (const session of this.reading) session.noteWrite(start, end)
  }

  /** Starts a write; the caller streams chunks into it and finishes it. Throws while closing. */
  async beginWrite(options: WriteOptions): Promise<WriteSession> {
    while (this.installing) await this.installing
    this.admitWrite()
    // Whole replaces run one at a time, so the content is always one of them, never a mix (RFC 9110 §9.3.4).
    const previousReplace = options.resizeTo === 'end' ? this.lastReplace : undefined
    this.bump()
    const session = new WriteSession(this, options)
    if (options.resizeTo === 'end') this.lastReplace = session.whenEnded
    this.track(session)
    await previousReplace
    await session.begin()
    return session
  }

  /** Refuses a write the volume cannot take now: closing, read-only, or at a limit. */
  private admitWrite(): void {
    if (this.closing) throw new VolumeBusyError(`volume ${this.name} is closing`)
    if (this.readOnly) throw new EngineError('conflict', `volume ${this.name} is read-only: ${this.readOnly.message}`)
    const limits = this.deps.limits ?? DEFAULT_LIMITS
    if (this.sessions.size >= limits.maxInflightWrites) throw new VolumeBusyError(`volume ${this.name} has ${this.sessions.size} writes in flight`)
    if (this.bufferedBytes >= limits.maxQueuedBytes) throw new VolumeBusyError(`volume ${this.name} holds ${this.bufferedBytes} bytes for its async replicas`)
  }

  /** Keeps a write in the set a close and quiet periods wait for. */
  private track(session: { readonly whenEnded: Promise<void> }): void {
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
  }

  /** A whole replace, staged and installed atomically (see StagedReplace). */
  private async replace(length: number | null, body: Body, limits: BodyLimits): Promise<OperationGroup> {
    while (this.installing) await this.installing
    this.admitWrite()
    const previousReplace = this.lastReplace
    const replace = new StagedReplace(this, length)
    this.lastReplace = replace.whenEnded
    await previousReplace
    // Tracked once it runs: an install waits for the writes tracked, and the next replace waits for this one.
    this.track(replace)
    return replace.run(body, limits)
  }

  openStaging(replica: Replica): Promise<ReplicaFile> {
    return this.deps.openFile(stagingPath(replica.spec.resolvedPath))
  }

  async recordStaging(record: StagingRecord | null): Promise<void> {
    // In flux before the record that rolls the install forward at a crash: the next start checksums it all again.
    if (record?.phase === 'committing' && this.store && !this.replaceHold) this.replaceHold = { store: this.store, held: await this.store.beginReplace(record.size ?? 0) }
    if (record === null) this.endReplace(null, this.size)
    if (record?.size !== undefined && record.size < this.health.record.size) await this.recordSize(record.size)
    this.health.record.staging = record && { phase: record.phase, replicas: record.replicas }
    await this.health.save()
  }

  async alone(work: () => Promise<void>, self: { whenEnded: Promise<void> }): Promise<void> {
    while (this.installing) await this.installing
    let done!: () => void
    this.installing = new Promise((resolve) => (done = resolve))
    try {
      await Promise.all([...this.sessions].filter((s) => s !== self).map((s) => s.whenEnded))
      await this.exclusive(work)
    } finally {
      this.installing = undefined
      done()
    }
  }

  async install(staged: Map<Replica, ReplicaFile>, size: number, sums: Uint32Array | null = null): Promise<Replica[]> {
    let done!: () => void
    this.swapping = new Promise((resolve) => (done = resolve))
    const installed: Replica[] = []
    try {
      // Streamed replies cut short; reads that overlapped the swap may come back short without a replica being blamed.
      this.noteWrite(0, Number.MAX_SAFE_INTEGER)
      this.shrinks++
      for (const [replica, file] of staged) {
        try {
          await this.installOne(replica, file)
          installed.push(replica)
        } catch (err) {
          // It keeps its old content: failed, and copied whole once resynced.
          this.replicaFailed(replica, err)
        }
      }
      const others = this.replicas.filter((r) => r.spec.write && !installed.includes(r))
      await Promise.all(others.map((r) => r.journal.markDirty(0, Math.max(size, this.size, 1))))
      this.currentSize = size
      for (const r of this.replicas) {
        r.truncate(size)
        if (others.includes(r)) r.markPending(0, size)
      }
      await this.recordSize(size)
      // Before any read sees the new content: the checksums computed while it was staged.
      this.endReplace(installed.length > 0 ? sums : null, size)
      this.bump()
      for (const r of others) this.emit('replicaState', { volume: this.name, replica: r.id, state: r.state, error: r.error })
    } finally {
      this.swapping = undefined
      done()
    }
    this.wakeWriteBehind()
    return installed
  }

  /** The checksums of a whole replace are in (null: not known, all uncovered); its hold ends. */
  private endReplace(sums: Uint32Array | null, size: number): void {
    const pending = this.replaceHold
    this.replaceHold = undefined
    pending?.store.replaced(pending.held, sums, size)
  }

  /** Renames the staged file over the replica's and swaps the descriptor the replica's lane uses. */
  private async installOne(replica: Replica, staged: ReplicaFile): Promise<void> {
    await staged.close()
    await rename(stagingPath(replica.spec.resolvedPath), replica.spec.resolvedPath)
    if (this.fsync) await syncDirectory(dirname(replica.spec.resolvedPath))
    const old = replica.file
    replica.file = await this.deps.openFile(replica.spec.resolvedPath, this.openOptions(replica.id))
    if (old) {
      this.detachFile(old)
      await this.mirror.fileDrained(old)
      await old.close().catch(() => {})
    }
    this.attachFile(replica)
    this.health.replica(replica.id).file = await identityOf(replica.spec.resolvedPath)
  }


  /**
   * Reads into `buffer` from `offset` for `group`: from the named replica, else from a reading replica
   * holding the bytes, failing over to the next one when a read errs. Returns the bytes read.
   */
  async readInto(buffer: Buffer, offset: number, group: OperationGroup, replicaId?: string): Promise<number> {
    if (this.swapping) await this.swapping
    // Every block read is verified against its checksum when the volume keeps them (verified-read.ts).
    const sums = this.checksums
    if (sums) return readVerified(this, sums, buffer, offset, group, replicaId)
    return (await this.readFrom(buffer, offset, group, replicaId, true)).bytes
  }

  /** The last scrub: when, the bytes it checked and what it found (GET /volumes/{name} shows it). */
  lastScrub: LastScrub | null = null

  /** A block failed its checksum: a warn line naming volume, replica and offset, and an event (metrics count it). */
  noteMismatch(mismatch: ChecksumMismatch): void {
    const what = mismatch.repaired ? `repaired from ${mismatch.from}` : mismatch.from ? `a good copy is on ${mismatch.from}` : 'no replica holds a copy that verifies'
    this.deps.log.warn({ volume: this.name, ...mismatch }, `block checksum mismatch: ${what}`)
    this.emit('checksumMismatch', { volume: this.name, ...mismatch })
  }

  /** What write-behind copies from `source`: verified and healed when the volume keeps block checksums (verified-read.ts). */
  private async readSource(source: Replica, target: Replica, chunk: Buffer, start: number): Promise<number> {
    const sums = this.checksums
    const ticket = sums?.beginRead(start, start + chunk.length)
    const n = await source.file!.read(chunk, start)
    if (sums && n > 0) await verifyCopy(this, sums, ticket, source, target, chunk, start, n)
    return n
  }

  /**
   * Reads unverified, as readInto does without checksums; `count` adds the bytes to the replica's operation; `sums`:
   * the blocks read are checksummed where they are read when the replica's file can (`summed` in the result).
   */
  async readFrom(buffer: Buffer, offset: number, group: OperationGroup, replicaId: string | undefined, count = false, sums?: BlockSums): Promise<ReplicaRead> {
    const tried = new Set<Replica>()
    for (;;) {
      const target = this.readTarget(offset, offset + buffer.length, replicaId)
      if (!target || tried.has(target) || !target.file) throw new ReadFailedError(replicaId ?? 'any', lastError(tried))
      tried.add(target)
      const op = group.find(target.id) ?? group.add(target.id, target.spec.mode)
      group.start(op)
      const shrinks = this.shrinks
      const [read] = (await this.mirror.readAt(buffer, offset, group, [target.file], sums)).operations
      // An async replica's read is only queued by readAt: wait for it to run.
      await read.whenDone
      // A replica that holds these bytes and reads short of the volume's end lost its tail behind the server.
      const damaged =
        read.error instanceof EndOfFileError && replicaId === undefined && shrinks === this.shrinks && offset + read.bytes < Math.min(this.size, offset + buffer.length)
      if (!read.error || (read.error instanceof EndOfFileError && !damaged)) {
        if (count) op.bytes += read.bytes
        return { replica: target, bytes: read.bytes, summed: read.summed }
      }
      const error = damaged ? codedError('ESHRUNK', `replica ${target.id}'s file is shorter than the volume: changed behind the server`) : read.error
      this.replicaFailed(target, error)
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
    this.wakeWriteBehind()
    void this.closeFailedFile(replica)
  }

  /**
   * Records that `replicas` missed acknowledged bytes [start, end): in their journals and in the volume's record,
   * before the write they missed is acknowledged, so no restart can take them for the truth.
   */
  async recordMissed(replicas: Replica[], start: number, end: number): Promise<void> {
    let recorded = false
    for (const r of replicas) {
      const entry = this.health.replica(r.id)
      if (r.error && !entry.failed) recorded = Boolean((entry.failed = r.error))
    }
    await Promise.all([...replicas.map((r) => r.journal.markDirty(start, end - start)), recorded ? this.health.save() : undefined])
  }

  /** A failed replica lets go of its file at once (once operations on it have drained), so its disk can be unmounted. */
  private async closeFailedFile(replica: Replica): Promise<void> {
    const file = replica.file
    if (!file) return
    this.detachFile(file)
    await this.mirror.fileDrained(file)
    await this.writeBehinds.get(replica)?.idle()
    // A resync may have reopened it meanwhile.
    if (replica.file === file && replica.error) {
      replica.file = null
      await file.close().catch(() => {})
    }
  }

  /** A replica reached in-sync: a failure it had recorded is over. */
  private noteInSync(replica: Replica): void {
    const entry = this.health.replica(replica.id)
    if (!entry.failed || !replica.inSync) return
    entry.failed = null
    this.health.save().catch((err) => this.deps.log.warn({ volume: this.name, error: toIoError(err) }, 'health record could not be saved'))
  }

  /** Before the volume shrinks: the record's sizes follow, so the smaller files are not taken for damage at the next start. */
  async recordShrink(size: number): Promise<void> {
    let changed = size < this.health.record.size
    if (changed) await this.recordSize(size)
    for (const r of this.replicas) {
      const file = this.health.replica(r.id).file
      if (file && file.size > size) {
        file.size = size
        changed = true
      }
    }
    if (changed) await this.health.save()
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
    if (this.closing) throw new EngineError('conflict', `volume ${this.name} is closing`)
    // A file changed behind the server may hold anything: it is copied whole.
    full ||= replica.error?.code === 'ECHANGED' || replica.error?.code === 'ESHRUNK'
    if (full && this.size > 0 && !this.source(replica)) throw new NoSourceError(`no other in-sync replica of volume ${this.name} to copy ${replica.id} from`)
    if (replica.failed) {
      await this.reopen(replica).catch((err) => {
        throw Object.assign(new EngineError('conflict', `replica ${replica.id} could not be reopened: ${(err as NodeJS.ErrnoException).code ?? 'EIO'}`), { cause: err })
      })
    }
    const fileSize = await replica.file!.size()
    // A whole copy when asked, or when the file came back shorter (a new, empty disk); else only its tracked dirty ranges.
    if ((full || fileSize < this.size) && this.size > 0) {
      // A remote that answers again shorter than the volume (it went down while the volume grew) lacks its tail.
      const from = !full && replica.isRemote ? fileSize : 0
      await replica.journal.markDirty(from, this.size - from)
      replica.pending.add(from, this.size)
    }
    replica.resyncing = !replica.pending.isEmpty
    this.noteInSync(replica)
    this.deps.log.info({ volume: this.name, replica: replica.id, bytes: replica.pending.bytes }, 'replica resyncing')
    this.emit('replicaState', { volume: this.name, replica: replica.id, state: replica.state, error: null })
    this.wakeWriteBehind()
  }

  /** Swaps a failed replica's file for a freshly opened one, once operations on the old one have drained. */
  private async reopen(replica: Replica): Promise<void> {
    const file = await this.deps.openFile(replica.spec.resolvedPath, this.openOptions(replica.id))
    const old = replica.file
    if (old) {
      this.detachFile(old)
      await this.mirror.fileDrained(old)
      await this.writeBehinds.get(replica)?.idle()
      await old.close().catch(() => {})
    }
    replica.file = file
    replica.error = null
    replica.retry = null
    // The operator may have put another file (a new disk) in its place: that is the file from now on.
    this.health.replica(replica.id).file = await identityOf(replica.spec.resolvedPath)
    await this.health.save()
    this.attachFile(replica)
  }

  /** Adds a replica to the live volume: it takes new writes at once and is filled by a whole resync. */
  addReplica(spec: ResolvedReplicaSpec): Promise<Replica> {
    return this.tracked(this.addReplicaNow(spec))
  }

  private async addReplicaNow(spec: ResolvedReplicaSpec): Promise<Replica> {
    if (this.closing) throw new EngineError('conflict', `volume ${this.name} is closing`)
    const file = await this.deps.openFile(spec.resolvedPath, this.openOptions(spec.id))
    const whole = RangeSet.of([0, WHOLE_FILE])
    const replica: Replica = new Replica(spec, file, undefined as unknown as Journal)
    const entry = this.health.replica(spec.id)
    entry.failed = null
    entry.file = await identityOf(spec.resolvedPath)
    await this.health.save()
    const identity = { volume: this.health.uuid, replica: entry.uuid, generation: this.health.generation }
    replica.journal = await Journal.create(this.journalPath(spec.id), whole, { fsync: this.spec.durability === 'fsync' }, () => replica.dirty(), identity)
    if (this.closing) {
      await replica.journal.close()
      await file.close()
      throw new EngineError('conflict', `volume ${this.name} is closing`)
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
    await this.writeBehinds.get(replica)?.stop()
    this.writeBehinds.delete(replica)
    if (replica.file) {
      this.detachFile(replica.file)
      await replica.file.close().catch(() => {})
    }
    await replica.journal.close().catch(() => {})
    await rm(this.journalPath(replica.id), { force: true })
    this.health.forget(replica.id)
    await this.health.save()
    this.wakeWriteBehind()
  }

  /** Wakes every replica's write-behind to look again at its work, its size and its source. */
  wakeWriteBehind(): void {
    for (const writeBehind of this.writeBehinds.values()) writeBehind.wake(true)
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
      state: this.readOnly ? 'read-only' : this.replicas.some((r) => r.state === 'failed') ? 'degraded' : 'ok',
      error: this.readOnly,
      size: this.size,
      etag: this.etag,
      durability: this.spec.durability,
      replicas: this.replicas.map((r) => ({
        id: r.id,
        ...backendStatus(r.spec),
        read: r.spec.read,
        write: r.spec.write,
        mode: r.spec.mode,
        label: r.spec.label ?? null,
        maxBytesPerSecond: r.spec.maxBytesPerSecond,
        state: r.state,
        dirtyBytes: r.dirtyBytes,
        cachedPercent: r.file ? Math.round(this.mirror.cachedPercent(r.file, this.size) * 100) / 100 : 0,
        error: r.error ?? r.retry?.error ?? null,
        nextRetryAt: r.retry && r.retry.nextAtWall > 0 ? new Date(r.retry.nextAtWall).toISOString() : null,
        unreachableSince: r.retry ? new Date(r.retry.sinceWall).toISOString() : null,
      })),
      checksums: this.checksumStatus(),
    }
  }

  private checksumStatus(): VolumeStatus['checksums'] {
    const covered = this.store ? this.store.coveredBytes() : 0
    return {
      enabled: this.store !== null,
      algorithm: 'crc32c',
      implementation: blockHashImplementation,
      blockBytes: BLOCK_BYTES,
      coveredBytes: covered,
      coveredPercent: this.store ? (this.size === 0 ? 100 : Math.floor((covered / this.size) * 10000) / 100) : 0,
      lastScrub: this.lastScrub && { at: this.lastScrub.at, bytes: this.lastScrub.bytes, mismatches: this.lastScrub.mismatches.map(({ replica, offset, length, repaired }) => ({ replica, offset, length, repaired })) },
    }
  }

  /** Resolves once no read is in progress, or after `ms`. */
  private readersDone(ms: number): Promise<void> {
    if (this.reading.size === 0) return Promise.resolve()
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

  /**
   * Stops taking requests, lets replies still streaming and write-behind run for `graceMs` (then cuts the
   * replies, whatever their clients do), waits for writes in flight, and stops write-behind with what is left
   * kept in the journals for the next start.
   */
  async close(graceMs: number): Promise<void> {
    this.closing = true
    const deadline = Date.now() + graceMs
    await Promise.allSettled([...this.changes])
    await this.readersDone(graceMs)
    // A client that stopped reading never holds a close past the grace period.
    this.cutReaders()
    await this.readersDone(READER_CUT_MS)
    await Promise.all([...this.sessions].map((s) => s.whenEnded))
    // Coverage stops, the checksums are flushed and the file marked closed cleanly.
    await this.store?.close().catch((err) => this.deps.log.warn({ volume: this.name, error: toIoError(err) }, 'block checksums could not be closed'))
    await this.settled(Math.max(0, deadline - Date.now()))
    await Promise.all([...this.writeBehinds.values()].map((c) => c.stop()))
    await this.mirror.close(false)
    if (!this.readOnly) await this.recordSize(this.size).catch(() => {})
    // A clean point: every file as it is now is what the next start expects to find.
    for (const r of this.replicas) if (r.file && !r.error) this.health.replica(r.id).file = await identityOf(r.spec.resolvedPath)
    await this.health.save().catch((err) => this.deps.log.warn({ volume: this.name, error: toIoError(err) }, 'health record could not be saved'))
    for (const r of this.replicas) {
      await r.journal.close().catch((err) => this.deps.log.warn({ volume: this.name, replica: r.id, error: toIoError(err) }, 'journal close failed'))
      await r.file?.close().catch(() => {})
    }
    await this.health.saved()
    this.health.closeMark()
  }

  /**
   * Replaces a replica's write-behind with one built from the configuration as it is now (its maxBytesPerSecond,
   * the volume's durability), once the copy in progress has landed: a pause taken at the old rate ends with it.
   * What it owes stays pending. Does nothing while the volume closes.
   */
  async renewWriteBehind(replica: Replica): Promise<void> {
    const old = this.writeBehinds.get(replica)
    if (!old || this.closing) return
    await old.stop()
    if (!this.closing && this.writeBehinds.get(replica) === old && this.replicas.includes(replica)) this.attach(replica)
  }
}

/** The configuration form of a replica, without its resolved path. */
export function stripResolved({ resolvedPath: _, ...spec }: ResolvedReplicaSpec): ReplicaSpec {
  return spec
}
