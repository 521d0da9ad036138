import { unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { pumpBody, type Body, type BodyCheck } from './body-stages.js'
import { ContentChecksums } from './block-checksums.js'
import { slabs } from './buffer-pool.js'
import { EngineError } from './errors.js'
import type { OperationGroup, ReplicaOperation } from './operation-group.js'
import type { Replica } from './replica.js'
import { toIoError } from './replica.js'
import type { ReplicaFile } from './replica-file.js'
import type { IoError } from './spec.js'
import { WriteFailedError } from './write-session.js'

/** Body chunks are gathered up to this many bytes per staging write. */
const GATHER_BYTES = 256 << 10

/** Where a replica's new content is staged: beside it, so the rename that installs it is atomic. */
export function stagingPath(replicaPath: string): string {
  return join(dirname(replicaPath), `.${basename(replicaPath)}.filemirror-replace`)
}

export interface StagingRecord {
  phase: 'writing' | 'committing'
  replicas: string[]
  /** The new content's size, recorded before it is installed (a shorter file after it is no damage). */
  size?: number
}

/** What a staged replace needs of its volume. */
export interface ReplaceHost {
  readonly replicas: readonly Replica[]
  readonly buffered: boolean
  readonly fsync: boolean
  /** Whether the volume keeps block checksums: then they are computed from the new content as it is staged. */
  readonly checksums: object | null
  newGroup(kind: 'write', offset: number): OperationGroup
  openStaging(replica: Replica): Promise<ReplicaFile>
  /** Records (before it takes effect) which replicas' staging files a crash must clean up or roll forward. */
  recordStaging(record: StagingRecord | null): Promise<void>
  /** Runs `work` with no other write in flight and none starting. */
  alone(work: () => Promise<void>, self: { whenEnded: Promise<void> }): Promise<void>
  /**
   * Puts each staged file in place of its replica's own, as one step for readers: the content is now the staged
   * one, `size` bytes long, and the replicas that did not stage it copy it whole; `sums` are its block checksums
   * (null when not computed). Returns the replicas installed.
   */
  install(staged: Map<Replica, ReplicaFile>, size: number, sums: Uint32Array | null): Promise<Replica[]>
  replicaFailed(replica: Replica, err: unknown): void
}

export interface ReplaceLimits {
  idleTimeoutMs: number
  maxVolumeBytes: number
  stopBody?: (error: Error) => void
  check?: BodyCheck
}

/**
 * A whole replace, atomic: the new content is written to a staging file beside each replica that takes writes
 * in the request path; then, with no other write in flight, each staging file is renamed over its replica. Until
 * then readers see the old content; a crash or an aborted body leaves it untouched (the staging files are
 * removed); a crash while installing rolls forward at the next start. The other replicas copy the new content
 * through write-behind. It costs the new content's size in free space beside each of those replicas.
 */
export class StagedReplace {
  readonly group: OperationGroup
  private staged: Replica[] = []
  private readonly files = new Map<Replica, ReplicaFile>()
  private readonly ops = new Map<Replica, ReplicaOperation>()
  private position = 0
  /** Block checksums of the content staged so far (when the volume keeps them). */
  private readonly sums: ContentChecksums | null
  private endResolve!: () => void
  readonly whenEnded = new Promise<void>((resolve) => (this.endResolve = resolve))

  constructor(
    private readonly host: ReplaceHost,
    private readonly length: number | null,
  ) {
    this.group = host.newGroup('write', 0)
    this.sums = host.checksums ? new ContentChecksums() : null
  }

  /** Streams the body into the staging files and installs them; resolves with the group once the staged replicas hold it. */
  async run(body: Body, limits: ReplaceLimits): Promise<OperationGroup> {
    // Decided once, when it starts: who stages the new content, and who copies it afterwards.
    const writers = this.host.replicas.filter((r) => r.spec.write)
    // A remote replica has no staging file beside it: it copies the new content whole once it is installed.
    this.staged = writers.filter((r) => r.inSync && !r.isRemote && (this.host.buffered ? r.isAsync : !r.isAsync))
    for (const r of writers) if (!r.failed) this.ops.set(r, this.group.add(r.id, r.spec.mode))
    try {
      if (this.staged.length === 0) throw new WriteFailedError(this.group, this.host.replicas.map((r) => r.error).filter((e) => e !== null))
      await this.host.recordStaging({ phase: 'writing', replicas: this.staged.map((r) => r.id) })
      await Promise.all(
        this.staged.map(async (r) => {
          try {
            const file = await this.host.openStaging(r)
            this.files.set(r, file)
            await file.truncate(0)
            this.group.start(this.ops.get(r)!)
          } catch (err) {
            await this.drop(r, err)
          }
        }),
      )
      this.checkSomeStage()
      const stages = { idleMs: limits.idleTimeoutMs, stop: limits.stopBody, start: 0, limit: this.length, maxEnd: limits.maxVolumeBytes, gatherBytes: GATHER_BYTES, pool: slabs, keep: false, check: limits.check }
      await pumpBody(body, stages, (chunk) => this.stage(chunk))
      if (this.length !== null && this.position !== this.length) {
        throw new EngineError('invalid', `the body ended after ${this.position} of the ${this.length} bytes it declares`)
      }
      // A body that fails its check is never installed: the content stays as it was.
      const mismatch = limits.check?.verify()
      if (mismatch) throw mismatch
      await this.host.alone(() => this.commit(), this)
    } catch (err) {
      await this.abandon(err)
      throw err
    }
    this.end()
    return this.group
  }

  /** Writes a chunk to every staging file; a replica that cannot stage drops out (it copies the content whole afterwards). */
  private async stage(chunk: Buffer): Promise<void> {
    const at = this.position
    await Promise.all(
      [...this.files].map(async ([r, file]) => {
        try {
          await file.write(chunk, at)
        } catch (err) {
          await this.drop(r, err)
        }
      }),
    )
    this.checkSomeStage()
    this.sums?.add(chunk)
    this.position += chunk.length
    for (const r of this.files.keys()) this.ops.get(r)!.bytes += chunk.length
  }

  private readonly stagingErrors: IoError[] = []

  /**
   * A replica that cannot stage the content drops out: for lack of room beside it, it stays as it is and is fed
   * whole once the content is installed elsewhere; on any other error its disk is failing, and so is it.
   */
  private async drop(r: Replica, err: unknown): Promise<void> {
    const error = toIoError(err)
    this.stagingErrors.push(error)
    const file = this.files.get(r)
    this.files.delete(r)
    await file?.close().catch(() => {})
    await unlink(stagingPath(r.spec.resolvedPath)).catch(() => {})
    if (error.code === 'ENOSPC' || error.code === 'EDQUOT') return
    this.host.replicaFailed(r, err)
    const op = this.ops.get(r)
    if (op) this.group.finish(op, op.bytes, r.error)
  }

  /** No replica can stage: refused, 507 when it is for lack of room. */
  private checkSomeStage(): void {
    if (this.files.size > 0) return
    const codes = this.stagingErrors.map((e) => e.code)
    if (codes.length > 0 && codes.every((c) => c === 'ENOSPC' || c === 'EDQUOT')) {
      throw new EngineError('insufficient-storage', `no replica has room to stage the new content (a whole replace needs its size free beside each replica): ${codes.join(', ')}`)
    }
    throw new WriteFailedError(this.group, this.stagingErrors)
  }

  private async commit(): Promise<void> {
    if (this.host.fsync) await Promise.all([...this.files.values()].map((f) => f.sync()))
    // From here a crash rolls forward: the staged files are installed and the others copy the content whole.
    await this.host.recordStaging({ phase: 'committing', replicas: [...this.files.keys()].map((r) => r.id), size: this.position })
    const installed = await this.host.install(new Map(this.files), this.position, this.sums?.finish() ?? null)
    this.files.clear()
    await this.host.recordStaging(null)
    this.group.length = this.position
    for (const r of installed) this.group.finish(this.ops.get(r)!, this.position, null)
    for (const [r, op] of this.ops) {
      if (installed.includes(r) || op.status === 'failed' || op.status === 'done') continue
      this.group.start(op)
      void r.whenHolds(0, this.position).then((error) => this.group.finish(op, error ? 0 : this.position, error))
    }
  }

  /** Nothing of the body is kept: the group failed (first: the refusal is known at once), staging files removed, the content as it was. */
  private async abandon(err: unknown): Promise<void> {
    this.group.length = this.position
    const error: IoError = err instanceof WriteFailedError ? { code: 'EIO', message: 'write failed' } : { code: 'ABORTED', message: toIoError(err).message }
    this.group.failOpen(error)
    for (const [r, file] of this.files) {
      await file.close().catch(() => {})
      await unlink(stagingPath(r.spec.resolvedPath)).catch(() => {})
    }
    this.files.clear()
    await this.host.recordStaging(null).catch(() => {})
    this.end()
  }

  private end(): void {
    this.endResolve()
  }
}
