/**
 * Test helpers for the engine: an instrumented replica file, a volume harness over real temp files,
 * and bounded waits. No assertion lives here; every wait has a generous deadline so a bug fails a
 * test instead of hanging the run.
 */
import { EventEmitter } from 'node:events'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { GroupRegistry } from '../../src/engine/group-registry.js'
import { LocalFile, type ReplicaFile } from '../../src/engine/replica-file.js'
import type { ResolvedReplicaSpec } from '../../src/engine/replica.js'
import { volumeSpecSchema } from '../../src/engine/spec.js'
import type { OperationGroup } from '../../src/engine/operation-group.js'
import { Volume, type VolumeDeps } from '../../src/engine/volume.js'
import type { WriteOptions } from '../../src/engine/write-session.js'
import { eventually } from './eventually.js'

/** Generous deadline for anything that should happen "soon". */
export const SOON_MS = 10_000

/** Rejects with a clear message if `promise` does not settle within `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Lets the event loop run `n` full turns (I/O included); only used to show something has NOT happened. */
export async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve))
}

/** A gate: calls that reach it wait until the test opens it. */
class Gate {
  private armed = 0
  private readonly waiting: Array<() => void> = []
  private readonly arrived: Array<() => void> = []

  /** The next `n` calls will wait. */
  arm(n = 1): void {
    this.armed += n
  }

  get held(): number {
    return this.waiting.length
  }

  /** Resolves once a call is waiting at the gate. */
  whenHeld(): Promise<void> {
    if (this.waiting.length > 0) return Promise.resolve()
    return new Promise((resolve) => this.arrived.push(resolve))
  }

  async pass(): Promise<void> {
    if (this.armed === 0) return
    this.armed--
    await new Promise<void>((resolve) => {
      this.waiting.push(resolve)
      for (const a of this.arrived.splice(0)) a()
    })
  }

  /** Lets every waiting call through and disarms the gate. */
  open(): void {
    this.armed = 0
    for (const w of this.waiting.splice(0)) w()
  }
}

/** Orders events across every HookFile: which came last. */
let sequence = 0

export interface WriteRecord {
  offset: number
  length: number
  at: number
}

/**
 * A real LocalFile with counters, gates and injectable failures. `changes` emits 'change' after
 * every call so tests can wait on events instead of polling.
 */
export class HookFile implements ReplicaFile {
  readonly writeGate = new Gate()
  readonly sizeGate = new Gate()
  readonly changes = new EventEmitter()
  readonly writes: WriteRecord[] = []
  reads = 0
  syncs = 0
  truncates: number[] = []
  /** Sequence numbers of the last completed write and size() call. */
  lastWriteSeq = 0
  lastSizeSeq = 0
  /** When set, every read fails with it. */
  readError: NodeJS.ErrnoException | null = null
  /** When set, every write fails with it. */
  writeError: NodeJS.ErrnoException | null = null
  /** Called (synchronously) when a write has been handed to this file, before it is held or applied. */
  onWrite: ((offset: number, length: number) => void) | undefined

  constructor(readonly inner: LocalFile) {}

  get path(): string {
    return this.inner.path
  }

  get bytesWritten(): number {
    return this.writes.reduce((n, w) => n + w.length, 0)
  }

  private changed(): void {
    this.changes.emit('change')
  }

  /**
   * Resolves once `predicate` holds, re-checked after every call on this file, one event-loop turn
   * later (so the caller of that call has run on with its result).
   */
  until(predicate: () => boolean, ms = SOON_MS, what = 'a file condition'): Promise<void> {
    if (predicate()) return Promise.resolve()
    let listener: (() => void) | undefined
    return within(
      new Promise<void>((resolve) => {
        listener = () =>
          setImmediate(() => {
            if (!listener || !predicate()) return
            this.changes.off('change', listener)
            listener = undefined
            resolve()
          })
        this.changes.on('change', listener)
      }),
      ms,
      what,
    ).finally(() => {
      if (listener) this.changes.off('change', listener)
      listener = undefined
    })
  }

  async read(buffer: Buffer, offset: number): Promise<number> {
    this.reads++
    if (this.readError) {
      this.changed()
      throw this.readError
    }
    const n = await this.inner.read(buffer, offset)
    this.changed()
    return n
  }

  /** As read(), through the inner file's checksumming read when it has one (the native addon). */
  get readSummed(): ReplicaFile['readSummed'] {
    const inner = this.inner.readSummed
    if (!inner) return undefined
    return async (buffer, offset, sums) => {
      this.reads++
      if (this.readError) {
        this.changed()
        throw this.readError
      }
      const n = await inner(buffer, offset, sums)
      this.changed()
      return n
    }
  }

  async write(buffer: Buffer, offset: number): Promise<number> {
    this.onWrite?.(offset, buffer.length)
    await this.writeGate.pass()
    if (this.writeError) {
      this.changed()
      throw this.writeError
    }
    const n = await this.inner.write(buffer, offset)
    this.writes.push({ offset, length: n, at: performance.now() })
    this.lastWriteSeq = ++sequence
    this.changed()
    return n
  }

  async size(): Promise<number> {
    await this.sizeGate.pass()
    const size = await this.inner.size()
    this.lastSizeSeq = ++sequence
    // Emitted before the caller resumes: listeners must not assume the caller has seen the size yet.
    this.changed()
    return size
  }

  /** A copier that checked this file's size after its last write has caught up (or is about to sleep). */
  get sizedSinceLastWrite(): boolean {
    return this.lastSizeSeq > this.lastWriteSeq
  }

  async truncate(size: number): Promise<void> {
    await this.inner.truncate(size)
    this.truncates.push(size)
    this.changed()
  }

  async sync(): Promise<void> {
    await this.inner.sync()
    this.syncs++
    this.changed()
  }

  close(): Promise<void> {
    return this.inner.close()
  }
}

export interface LogEntry {
  level: 'warn' | 'info'
  obj: object
  msg: string
}

export function memoryLog(): VolumeDeps['log'] & { entries: LogEntry[] } {
  const entries: LogEntry[] = []
  return {
    entries,
    warn: (obj, msg) => void entries.push({ level: 'warn', obj, msg }),
    info: (obj, msg) => void entries.push({ level: 'info', obj, msg }),
  }
}

export interface ReplicaInput {
  id: string
  mode?: 'sync' | 'async'
  read?: boolean
  write?: boolean
  maxBytesPerSecond?: number | null
}

/** Everything that outlives one open of a volume: its directory, its files on disk, its groups. */
export class Harness {
  readonly groups = new GroupRegistry({ retentionMs: 60_000, maxGroups: 1000, maxReadGroups: 1000 })
  readonly log = memoryLog()
  /** The HookFile of the latest open, by replica id. */
  files = new Map<string, HookFile>()
  readonly journalDir: string
  private readonly open: Volume[] = []

  constructor(
    readonly dir: string,
    readonly name = 'vol',
  ) {
    this.journalDir = join(dir, 'journals')
  }

  path(id: string): string {
    return join(this.dir, 'replicas', `${id}.img`)
  }

  journalPath(id: string): string {
    return join(this.journalDir, this.name, `${id}.journal`)
  }

  file(id: string): HookFile {
    const f = this.files.get(id)
    if (!f) throw new Error(`no file for replica ${id}`)
    return f
  }

  /**
   * Opens the volume. `before(id, file)` runs on each HookFile as soon as it is opened, before the
   * volume can touch it: the place to arm gates for work the volume starts inside open().
   */
  async openVolume(
    replicas: ReplicaInput[],
    options: { fresh: boolean; durability?: 'os' | 'fsync'; before?: (id: string, file: HookFile) => void },
  ): Promise<Volume> {
    const spec = volumeSpecSchema.parse({
      durability: options.durability ?? 'os',
      replicas: replicas.map((r) => ({ path: `replicas/${r.id}.img`, ...r })),
    })
    const resolved: ResolvedReplicaSpec[] = spec.replicas.map((r) => ({ ...r, resolvedPath: this.path(r.id) }))
    const files = new Map<string, HookFile>()
    const ids = new Map(resolved.map((r) => [r.resolvedPath, r.id]))
    const deps: VolumeDeps = {
      journalDir: this.journalDir,
      groups: this.groups,
      log: this.log,
      openFile: async (path) => {
        const file = new HookFile(await LocalFile.open(path))
        const id = ids.get(path)!
        files.set(id, file)
        options.before?.(id, file)
        return file
      },
    }
    const volume = await Volume.open(this.name, spec, resolved, deps, options.fresh)
    this.files = files
    this.open.push(volume)
    return volume
  }

  /** Writes bytes straight to a replica's file, before a volume is opened over it. */
  async seed(id: string, data: Buffer): Promise<void> {
    await fs.mkdir(join(this.dir, 'replicas'), { recursive: true })
    await fs.writeFile(this.path(id), data)
  }

  readFile(id: string): Promise<Buffer> {
    return fs.readFile(this.path(id))
  }

  /** Closes every volume this harness opened that is still open (teardown). */
  async closeAll(): Promise<void> {
    for (const v of this.open.splice(0)) await v.close(0).catch(() => {})
  }

  /** Marks a volume closed by the test itself, so teardown skips it. */
  forget(volume: Volume): void {
    const i = this.open.indexOf(volume)
    if (i >= 0) this.open.splice(i, 1)
  }
}

/** One whole write session: begin, stream `chunks`, finish. */
export async function writeVolume(
  volume: Volume,
  offset: number,
  data: Buffer,
  options: { chunk?: number; resizeTo?: WriteOptions['resizeTo']; length?: number | null } = {},
): Promise<OperationGroup> {
  const session = await volume.beginWrite({ offset, length: options.length === undefined ? data.length : options.length, resizeTo: options.resizeTo ?? null })
  const chunk = options.chunk ?? data.length
  for (let at = 0; at < data.length; at += chunk) await session.write(data.subarray(at, Math.min(data.length, at + chunk)))
  return session.finish()
}

/** Reads [offset, offset+length) through the volume as a client read would. */
export async function readVolume(volume: Volume, offset: number, length: number, replica?: string): Promise<{ bytes: Buffer; n: number }> {
  const group = volume.newGroup('read', offset)
  const bytes = Buffer.alloc(length)
  const n = await volume.readInto(bytes, offset, group, replica)
  return { bytes, n }
}

/**
 * Waits until the volume has nothing left to copy and every healthy replica is in-sync with a file
 * exactly the volume's size on disk (write-behind cuts a longer file only after its last copy),
 * then returns each replica's bytes by id.
 */
export async function settledFiles(h: Harness, volume: Volume, ms = SOON_MS): Promise<Map<string, Buffer>> {
  await converge(volume, ms)
  await eventually(
    async () => {
      for (const r of volume.replicas) {
        if (r.failed) continue
        if (r.state !== 'in-sync' || r.resyncing) return false
        if ((await fs.stat(h.path(r.id))).size !== volume.size) return false
      }
      return true
    },
    'every replica file to match the volume size',
    ms,
  )
  const out = new Map<string, Buffer>()
  for (const r of volume.replicas) out.set(r.id, await h.readFile(r.id))
  return out
}

/** Resolves once the volume has nothing left to copy; rejects after `ms`. */
export async function converge(volume: Volume, ms = SOON_MS): Promise<void> {
  if (!(await volume.settled(ms))) throw new Error(`volume ${volume.name} did not settle within ${ms} ms`)
}
