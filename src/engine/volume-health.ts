import { randomUUID } from 'node:crypto'
import fs_, { promises as fs } from 'node:fs'
import { z } from 'zod'
import { writeFileAtomic } from './journal.js'

/**
 * What a volume knows of its replicas across restarts, as md's superblock event counter and DRBD's
 * generation identifiers do: who they are, which file each was, and which ones failed and have not been
 * resynced since. Written atomically, and before the change it records takes effect.
 */
const fileIdentitySchema = z.object({ dev: z.number(), ino: z.number(), size: z.number().int().min(0) })
export type FileIdentity = z.infer<typeof fileIdentitySchema>

const replicaHealthSchema = z.object({
  uuid: z.uuid(),
  /** Set when the replica failed; cleared once a resync brought it back. Never a source meanwhile. */
  failed: z.object({ code: z.string(), message: z.string() }).nullable().default(null),
  /** The file at the last point its size was recorded: another device or inode, or a shorter file, was changed behind the server. */
  file: fileIdentitySchema.nullable().default(null),
})
export type ReplicaHealth = z.infer<typeof replicaHealthSchema>

const healthSchema = z.object({
  uuid: z.uuid(),
  /** Moves on every open and every change of a replica's standing; journals carry the generation they were written at. */
  generation: z.number().int().min(0),
  replicas: z.record(z.string(), replicaHealthSchema),
  /** The volume's size as last recorded: every shrink before it happens, growth soon after. A clean replica's file is never shorter. */
  size: z.number().int().min(0).default(0),
  /** A whole replace under way: at start, staging files of 'writing' are removed, those of 'committing' installed. */
  staging: z.object({ phase: z.enum(['writing', 'committing']), replicas: z.array(z.string()) }).nullable().default(null),
})
export type Health = z.infer<typeof healthSchema>

/** The size mark: 8 bytes of size and 8 of its complement, so a torn or foreign one reads as absent. */
const MARK_BYTES = 16

export class VolumeHealth {
  private saving: Promise<void> = Promise.resolve()
  private markFd: number | undefined

  private constructor(
    private readonly path: string,
    readonly record: Health,
    /** There was no record: a volume created before records were kept, or a new one. */
    readonly fresh: boolean,
  ) {}

  /** A new record, for a new volume: a new UUID, so journals of a volume that had the name before are foreign. */
  static async create(path: string): Promise<VolumeHealth> {
    return new VolumeHealth(path, { uuid: randomUUID(), generation: 0, replicas: {}, size: 0, staging: null }, true)
  }

  /** Loads the record, or starts one; an unreadable record throws (never silently replaced). */
  static async load(path: string): Promise<VolumeHealth> {
    const text = await fs.readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null
      throw err
    })
    if (text === null) return new VolumeHealth(path, { uuid: randomUUID(), generation: 0, replicas: {}, size: 0, staging: null }, true)
    return new VolumeHealth(path, healthSchema.parse(JSON.parse(text)), false)
  }

  get uuid(): string {
    return this.record.uuid
  }

  get generation(): number {
    return this.record.generation
  }

  /** The replica's entry, created (with a new UUID) when it has none. */
  replica(id: string): ReplicaHealth {
    return (this.record.replicas[id] ??= { uuid: randomUUID(), failed: null, file: null })
  }

  forget(id: string): void {
    delete this.record.replicas[id]
  }

  /** Moves the generation on (journals written from now on carry the new one). */
  advance(): number {
    return ++this.record.generation
  }

  /**
   * The volume's size as it grows, written in place (one positional write, no rename) before the write that grew it
   * is acknowledged: a record too costly to rewrite on every growing write. Synced only when `sync`.
   */
  async markSize(size: number, sync: boolean): Promise<void> {
    this.markFd ??= fs_.openSync(this.markPath, 'w+', 0o644)
    const mark = Buffer.alloc(MARK_BYTES)
    mark.writeBigUInt64LE(BigInt(size), 0)
    mark.writeBigUInt64LE(~BigInt(size) & 0xffffffffffffffffn, 8)
    const fd = this.markFd
    await new Promise<void>((resolve, reject) => fs_.write(fd, mark, 0, MARK_BYTES, 0, (err) => (err ? reject(err) : resolve())))
    if (sync) await new Promise<void>((resolve, reject) => fs_.fdatasync(fd, (err) => (err ? reject(err) : resolve())))
  }

  /** The size last marked, or undefined when there is no valid mark. */
  async markedSize(): Promise<number | undefined> {
    const bytes = await fs.readFile(this.markPath).catch(() => null)
    if (!bytes || bytes.length < MARK_BYTES) return undefined
    const size = bytes.readBigUInt64LE(0)
    return (~size & 0xffffffffffffffffn) === bytes.readBigUInt64LE(8) && size <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(size) : undefined
  }

  private get markPath(): string {
    return `${this.path}.size`
  }

  closeMark(): void {
    if (this.markFd !== undefined) fs_.closeSync(this.markFd)
    this.markFd = undefined
  }

  /** Resolves once every save asked for so far has ended. */
  saved(): Promise<void> {
    return this.saving
  }

  /** Writes the record atomically; saves are serialised, so the last one written is the last one asked for. */
  save(): Promise<void> {
    const data = JSON.stringify(this.record, null, 2) + '\n'
    const next = this.saving.then(() => writeFileAtomic(this.path, data))
    this.saving = next.catch(() => {})
    return next
  }
}
