import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import type { GroupRegistry } from './group-registry.js'
import { writeFileAtomic } from './journal.js'
import type { ResolvedReplicaSpec } from './replica.js'
import type { ReplicaFileOpener } from './replica-file.js'
import { volumeSpecSchema, type ReplicaSpec, type VolumeSpec } from './schemas.js'
import { PathRefusedError, resolveReplicaPath } from './storage-roots.js'
import { stripResolved, Volume, type VolumeDeps } from './volume.js'

export interface VolumeRegistryOptions {
  dataDir: string
  storageRoots: string[]
  groups: GroupRegistry
  openFile: ReplicaFileOpener
  log: VolumeDeps['log']
  limits?: VolumeDeps['limits']
  /** Told of every volume as it is opened or created. */
  onVolume?: (volume: Volume) => void
}

/** A request that conflicts with the volumes as they are. */
export class VolumeConflictError extends Error {}

/** Where the service keeps its own files inside DATA_DIR; replicas may not live there. */
export const METADATA_DIR = '.filemirror'

export type PutResult = { created: boolean; volume: Volume }

/** The named volumes: each long-lived, its configuration persisted and reopened at start. */
export class VolumeRegistry {
  private readonly volumes = new Map<string, Volume>()
  /** Names being created, so two concurrent PUTs cannot both create one. */
  private readonly creating = new Map<string, Promise<PutResult>>()
  /** Replica paths claimed by creations and additions still under way, so two can never take one file. */
  private readonly claimed = new Set<string>()
  private readonly configDir: string
  private readonly journalDir: string

  constructor(private readonly options: VolumeRegistryOptions) {
    this.configDir = join(options.dataDir, METADATA_DIR, 'volumes')
    this.journalDir = join(options.dataDir, METADATA_DIR, 'journals')
  }

  private deps(): VolumeDeps {
    return { journalDir: this.journalDir, groups: this.options.groups, openFile: this.options.openFile, log: this.options.log, limits: this.options.limits }
  }

  get(name: string): Volume | undefined {
    return this.volumes.get(name)
  }

  list(): Volume[] {
    return [...this.volumes.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  /** Opens every persisted volume; one that fails to open is logged and skipped. */
  async openAll(): Promise<void> {
    await fs.mkdir(this.configDir, { recursive: true })
    for (const file of (await fs.readdir(this.configDir)).filter((f) => f.endsWith('.json')).sort()) {
      const name = file.slice(0, -'.json'.length)
      try {
        const spec = volumeSpecSchema.parse(JSON.parse(await fs.readFile(join(this.configDir, file), 'utf8')))
        const volume = await Volume.open(name, spec, await this.resolve(spec), this.deps(), false)
        this.volumes.set(name, volume)
        this.options.onVolume?.(volume)
      } catch (err) {
        this.options.log.warn({ volume: name, error: (err as Error).message }, 'volume could not be opened')
      }
    }
  }

  /** Resolves every replica path inside the storage roots and outside the service's own files. */
  async resolve(spec: VolumeSpec): Promise<ResolvedReplicaSpec[]> {
    const resolved: ResolvedReplicaSpec[] = []
    for (const r of spec.replicas) {
      const one = await this.resolveOne(r, resolved)
      resolved.push(one)
    }
    return resolved
  }

  /** Resolves one replica's path; it may not be the service's own files, a sibling's file, or another volume's. */
  private async resolveOne(r: ReplicaSpec, siblings: ResolvedReplicaSpec[]): Promise<ResolvedReplicaSpec> {
    const metadata = await resolveReplicaPath(METADATA_DIR, this.options.dataDir, [this.options.dataDir]).catch(() => join(this.options.dataDir, METADATA_DIR))
    const path = await resolveReplicaPath(r.path, this.options.dataDir, this.options.storageRoots)
    if (path === metadata || path.startsWith(metadata + '/')) throw new PathRefusedError(`path ${r.path} is inside the service's own directory`)
    if (siblings.some((x) => x.resolvedPath === path)) throw new PathRefusedError(`two replicas resolve to the same file ${path}`)
    for (const v of this.volumes.values()) {
      if (v.replicas.some((x) => x.spec.resolvedPath === path)) throw new VolumeConflictError(`path ${r.path} is already a replica of volume ${v.name}`)
    }
    if (this.claimed.has(path)) throw new VolumeConflictError(`path ${r.path} is being taken by another request`)
    return { ...r, resolvedPath: path }
  }

  /** Runs `work` with the paths claimed (checked and claimed in one step, so no await separates them). */
  private async withClaims<T>(resolved: ResolvedReplicaSpec[], work: () => Promise<T>): Promise<T> {
    const paths = resolved.map((r) => r.resolvedPath)
    const taken = paths.find((p) => this.claimed.has(p))
    if (taken) throw new VolumeConflictError(`path ${taken} is being taken by another request`)
    for (const p of paths) this.claimed.add(p)
    try {
      return await work()
    } finally {
      for (const p of paths) this.claimed.delete(p)
    }
  }

  /** Adds a replica to a live volume and persists it; an identical one is reported, another under the id conflicts. */
  async addReplica(volume: Volume, spec: ReplicaSpec): Promise<{ created: boolean }> {
    const existing = volume.replica(spec.id)
    if (existing) {
      if (isDeepStrictEqual(stripResolved(existing.spec), spec)) return { created: false }
      throw new VolumeConflictError(`replica ${spec.id} exists with another configuration`)
    }
    const resolved = await this.resolveOne(spec, [])
    await this.withClaims([resolved], async () => {
      if (volume.replica(spec.id)) throw new VolumeConflictError(`replica ${spec.id} is being added by another request`)
      await volume.addReplica(resolved)
      await this.persist(volume)
    })
    return { created: true }
  }

  /** Removes a replica and persists; refused when the volume would have no reading or no writing replica left. */
  async removeReplica(volume: Volume, id: string): Promise<boolean> {
    const replica = volume.replica(id)
    if (!replica) return false
    const rest = volume.replicas.filter((r) => r !== replica)
    if (!rest.some((r) => r.spec.read)) throw new VolumeConflictError(`removing ${id} would leave volume ${volume.name} without a reading replica`)
    if (!rest.some((r) => r.spec.write)) throw new VolumeConflictError(`removing ${id} would leave volume ${volume.name} without a writing replica`)
    await volume.removeReplica(replica)
    await this.persist(volume)
    return true
  }

  /** Creates a volume, or reports that an identical one exists; another configuration under the name conflicts. */
  put(name: string, spec: VolumeSpec): Promise<PutResult> {
    const existing = this.volumes.get(name)
    if (existing) {
      if (!isDeepStrictEqual(existing.spec, spec)) return Promise.reject(new VolumeConflictError(`volume ${name} exists with another configuration`))
      return Promise.resolve({ created: false, volume: existing })
    }
    const pending = this.creating.get(name)
    if (pending) {
      return pending.then(({ volume }) => {
        if (!isDeepStrictEqual(volume.spec, spec)) throw new VolumeConflictError(`volume ${name} exists with another configuration`)
        return { created: false, volume }
      })
    }
    const creation = this.create(name, spec).finally(() => this.creating.delete(name))
    this.creating.set(name, creation)
    return creation
  }

  private async create(name: string, spec: VolumeSpec): Promise<PutResult> {
    const resolved = await this.resolve(spec)
    return this.withClaims(resolved, async () => {
      const volume = await Volume.open(name, spec, resolved, this.deps(), true)
      const broken = volume.replicas.find((r) => r.failed)
      if (broken) {
        await volume.close(0)
        throw new PathRefusedError(`replica ${broken.id} cannot be opened: ${broken.error?.code ?? 'EIO'}`)
      }
      try {
        await this.persist(volume)
      } catch (err) {
        await volume.close(0)
        throw err
      }
      this.volumes.set(name, volume)
      this.options.onVolume?.(volume)
      return { created: true, volume }
    })
  }

  /** Writes a volume's configuration atomically. */
  async persist(volume: Volume): Promise<void> {
    await writeFileAtomic(join(this.configDir, `${volume.name}.json`), JSON.stringify(volume.spec, null, 2) + '\n')
  }

  /** Removes a volume once its pending work is done; its replica files are kept. */
  async delete(name: string, graceMs: number): Promise<boolean> {
    const volume = this.volumes.get(name)
    if (!volume) return false
    this.volumes.delete(name)
    await fs.rm(join(this.configDir, `${name}.json`), { force: true })
    await volume.close(graceMs)
    await fs.rm(join(this.journalDir, name), { recursive: true, force: true })
    this.options.groups.forgetVolume(name)
    return true
  }

  /** Closes every volume: writes in flight finish, write-behind runs up to `graceMs`, journals persist. */
  async closeAll(graceMs: number): Promise<void> {
    await Promise.all([...this.volumes.values()].map((v) => v.close(graceMs)))
    this.volumes.clear()
  }
}
