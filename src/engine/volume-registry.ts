import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { EngineError } from './errors.js'
import type { GroupRegistry } from './group-registry.js'
import { writeFileAtomic } from './journal.js'
import type { Replica, ResolvedReplicaSpec } from './replica.js'
import type { ReplicaFile, ReplicaFileOpener } from './replica-file.js'
import { backendKey, backendName, isRemoteSpec, volumeSpecSchema, type IoError, type ReplicaSpec, type VolumeSpec } from './spec.js'
import { backendStatus, type VolumeStatus } from './status.js'
import type { HttpFileOptions } from './backends/http-file.js'
import type { S3FileOptions } from './backends/s3-file.js'
import { checkRemoteAllowed, DEFAULT_RETRY_POLICY, isRetryable, openRemote, remoteSize, type RemoteRetryPolicy } from './remote.js'
import { PathRefusedError, resolveReplicaPath, StorageRootMissingError, StorageRoots } from './storage-roots.js'
import { stripResolved, Volume, type VolumeDeps } from './volume.js'
import { holdsTheTruth, lacking, updateVolume } from './volume-update.js'

export interface VolumeRegistryOptions {
  dataDir: string
  storageRoots: string[]
  groups: GroupRegistry
  openFile: ReplicaFileOpener
  log: VolumeDeps['log']
  limits?: VolumeDeps['limits']
  /** Told of every volume as it is opened or created. */
  onVolume?: (volume: Volume) => void
  /** Origins remote replicas may be on (REMOTE_ALLOW); `aws` for S3 without an endpoint. None when absent. */
  remoteAllow?: readonly string[]
  /** How remote replicas failing with retryable errors are retried (REMOTE_FAIL_AFTER_MS). */
  remoteRetry?: Partial<RemoteRetryPolicy>
  /** Where a remote replica's tokenEnv is read when it is opened: process.env when absent. */
  env?: Record<string, string | undefined>
  /** Options for every remote backend (timeouts; credentials in tests). */
  remote?: { http?: Partial<HttpFileOptions>; s3?: Partial<S3FileOptions> }
}

/** A request that conflicts with the volumes as they are. */
export class VolumeConflictError extends EngineError {
  constructor(message: string) {
    super('conflict', message)
  }
}

/** Where the service keeps its own files inside DATA_DIR; replicas may not live there. */
export const METADATA_DIR = '.filemirror'

export type PutResult = { created: boolean; volume: Volume }

export interface PutOptions {
  /** Apply a role change even when it leaves no reading replica holding every acknowledged byte (logged at warn). */
  force?: boolean
}

/** What a deleted volume's replicas lacked when it was forgotten (all zero unless forced). */
export interface DeleteResult {
  name: string
  /** Bytes lacking, summed over the replicas. */
  dirtyBytes: number
  /** Bytes each replica lacked, by id. */
  dirty: Record<string, number>
}

/** A volume that still owes write-behind: a plain DELETE refuses it, dropping nothing. */
export class DirtyVolumeError extends EngineError {
  constructor(
    message: string,
    readonly dirty: Record<string, number>,
    readonly dirtyBytes: number,
  ) {
    super('conflict', message)
  }
}

/** Longest an update waits for the writes in flight to end before it changes a mode or a write role. */
const UPDATE_QUIET_MS = 10_000

/**
 * A persisted volume that could not be opened (its journal directory full or read-only, its configuration
 * unreadable, a replica path refused): kept so that it is listed with its error, refuses data requests,
 * holds readiness back, and can be opened again (a PUT of the same configuration) or deleted.
 */
export class FailedVolume {
  constructor(
    readonly name: string,
    /** Its configuration, when it could be read. */
    readonly spec: VolumeSpec | undefined,
    readonly error: IoError,
    /** Its replicas' resolved paths, when they could be resolved: no other volume may take them meanwhile. */
    readonly paths: string[],
  ) {}

  status(): VolumeStatus {
    return {
      name: this.name,
      state: 'failed',
      error: this.error,
      size: 0,
      etag: '',
      durability: this.spec?.durability ?? 'os',
      replicas: (this.spec?.replicas ?? []).map((r) => ({
        id: r.id,
        ...backendStatus(r),
        read: r.read,
        write: r.write,
        mode: r.mode,
        label: r.label ?? null,
        maxBytesPerSecond: r.maxBytesPerSecond,
        state: 'failed' as const,
        dirtyBytes: 0,
        cachedPercent: 0,
        error: this.error,
        nextRetryAt: null,
        unreachableSince: null,
      })),
    }
  }
}

/** A request on a volume that could not be opened: unavailable until it opens (or is deleted). */
export class VolumeFailedError extends EngineError {
  constructor(readonly volume: FailedVolume) {
    super('busy', `volume ${volume.name} could not be opened: ${volume.error.message}`, { code: volume.error.code })
  }
}

/** Paths never leave the service in a volume's error. */
const withoutPaths = (message: string) => message.replace(/'?\/[^\s,']*'?/g, '<path>')

/** Why a persisted volume could not be opened, in words a client may see: a code and a message without paths. */
function openFailure(err: unknown, journalDir: string): IoError {
  const e = err as NodeJS.ErrnoException
  if (err instanceof SyntaxError) return { code: 'EBADCONFIG', message: 'its configuration file is not valid JSON' }
  if (e?.name === 'ZodError') return { code: 'EBADCONFIG', message: 'its configuration file does not hold a valid configuration' }
  if (err instanceof StorageRootMissingError) return { code: 'ENOROOT', message: 'a storage root of its replicas is missing' }
  if (err instanceof PathRefusedError) return { code: 'EPATH', message: `a replica path is refused: ${withoutPaths(e.message)}` }
  if (err instanceof VolumeConflictError) return { code: 'ECONFLICT', message: withoutPaths(e.message) }
  const code = typeof e?.code === 'string' ? e.code : 'EIO'
  const what = /^[A-Z0-9_]+: ([^,]+)/.exec(e?.message ?? '')?.[1] ?? withoutPaths(String(e?.message ?? err))
  // Opening writes only the journals (replica files that fail to open fail alone): a full or read-only disk is theirs.
  if (code === 'ENOSPC' || code === 'EDQUOT') return { code, message: `journal directory full (${code})` }
  if (code === 'EROFS') return { code, message: `journal directory read-only (${code})` }
  const inJournals = typeof e?.path === 'string' && (e.path === journalDir || e.path.startsWith(journalDir + '/'))
  return { code, message: `${inJournals ? 'journal: ' : ''}${what} (${code})` }
}

/** The named volumes: each long-lived, its configuration persisted and reopened at start. */
export class VolumeRegistry {
  private readonly volumes = new Map<string, Volume>()
  /** Persisted volumes that could not be opened, and the retries under way. */
  private readonly failed = new Map<string, FailedVolume>()
  private readonly retrying = new Map<string, Promise<PutResult>>()
  private readonly roots: StorageRoots
  /** Replica paths claimed by creations and additions still under way, so two can never take one file. */
  private readonly claimed = new Set<string>()
  /** Per name, the end of the last configuration change queued (see serial). */
  private readonly queues = new Map<string, Promise<void>>()
  private readonly configDir: string
  private readonly journalDir: string
  /** Remote replicas by their resolved key (URL, S3 store and prefix): how each is opened. */
  private readonly remotes = new Map<string, ReplicaSpec>()
  /** Remote replicas being created (a new volume, a replica added): a missing mod_dav file is created, an S3 prefix of another volume taken. */
  private readonly freshRemotes = new Set<string>()

  constructor(private readonly options: VolumeRegistryOptions) {
    this.configDir = join(options.dataDir, METADATA_DIR, 'volumes')
    this.journalDir = join(options.dataDir, METADATA_DIR, 'journals')
    this.roots = new StorageRoots(options.storageRoots)
  }

  private deps(): VolumeDeps {
    return {
      journalDir: this.journalDir,
      groups: this.options.groups,
      openFile: this.openReplicaFile,
      log: this.options.log,
      limits: this.options.limits,
      remoteRetry: { ...DEFAULT_RETRY_POLICY, ...this.options.remoteRetry },
    }
  }

  /**
   * Every replica file is opened inside its storage root, and only while that root is there and on the
   * filesystem it was on at start: a removed root or an unmounted disk fails the replica (ENOROOT), never recreated.
   */
  private readonly openReplicaFile: ReplicaFileOpener = async (path, options) => {
    const remote = this.remotes.get(path)
    if (remote) {
      // REMOTE_ALLOW may have lost its origin since it was configured: the replica fails alone (EREMOTE_REFUSED).
      checkRemoteAllowed(remote, this.options.remoteAllow ?? [])
      // On another machine: no storage root, no file identity; its token is read from the environment now.
      return openRemote(remote, { ...this.remoteContext(), identity: options?.identity, fresh: this.freshRemotes.has(path) })
    }
    try {
      const root = await this.roots.rootOf(path)
      if (root === undefined) throw new StorageRootMissingError('(none)', `no storage root holds ${path} now`)
      await this.roots.check(root)
      return await this.options.openFile(path, { root })
    } catch (err) {
      if (err instanceof StorageRootMissingError) this.options.log.warn({ path, root: err.root, error: err.message }, 'replica not opened: its storage root is missing, and nothing is created in its place')
      throw err
    }
  }

  private remoteContext(): { env: Record<string, string | undefined>; http?: Partial<HttpFileOptions>; s3?: Partial<S3FileOptions> } {
    return { env: this.options.env ?? process.env, http: this.options.remote?.http, s3: this.options.remote?.s3 }
  }

  /** How many bytes a replica's storage holds now (0 when there is none): its file, or its remote. */
  private async storedBytes(r: ResolvedReplicaSpec): Promise<number> {
    if (!isRemoteSpec(r)) return sizeOf(r.resolvedPath)
    try {
      return await remoteSize(r, this.remoteContext())
    } catch (err) {
      throw remoteRefusal(r, err)
    }
  }

  /** Runs `work` with these remote replicas marked new (created or taken over when opened). */
  private async asFresh<T>(resolved: ResolvedReplicaSpec[], work: () => Promise<T>): Promise<T> {
    const keys = resolved.filter((r) => isRemoteSpec(r)).map((r) => r.resolvedPath)
    for (const k of keys) this.freshRemotes.add(k)
    try {
      return await work()
    } finally {
      for (const k of keys) this.freshRemotes.delete(k)
    }
  }

  /** The open volume of that name; throws VolumeFailedError when it is a persisted volume that could not be opened. */
  get(name: string): Volume | undefined {
    const failed = this.failed.get(name)
    if (failed) throw new VolumeFailedError(failed)
    return this.volumes.get(name)
  }

  /** The open volumes (those that could not be opened are in failedVolumes()). */
  list(): Volume[] {
    return [...this.volumes.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  /** The volume of that name, open or failed to open. */
  record(name: string): Volume | FailedVolume | undefined {
    return this.volumes.get(name) ?? this.failed.get(name)
  }

  /** Persisted volumes that could not be opened, by name. */
  failedVolumes(): FailedVolume[] {
    return [...this.failed.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  /** Every volume's status, those that could not be opened included, by name. */
  statuses(): VolumeStatus[] {
    return [...this.volumes.values(), ...this.failed.values()].sort((a, b) => a.name.localeCompare(b.name)).map((v) => v.status())
  }

  /** Opens every persisted volume; one that fails to open is logged and kept as a FailedVolume. */
  async openAll(): Promise<void> {
    await this.roots.recordDevices()
    await fs.mkdir(this.configDir, { recursive: true })
    for (const file of (await fs.readdir(this.configDir)).filter((f) => f.endsWith('.json')).sort()) {
      await this.openPersisted(file.slice(0, -'.json'.length))
    }
  }

  /** Opens a persisted volume (its configuration read from disk unless given); on failure it is kept as a FailedVolume. */
  private async openPersisted(name: string, known?: VolumeSpec): Promise<Volume | FailedVolume> {
    let spec = known
    let paths: string[] = this.failed.get(name)?.paths ?? []
    try {
      spec ??= volumeSpecSchema.parse(JSON.parse(await fs.readFile(join(this.configDir, `${name}.json`), 'utf8')))
      const resolved = await this.resolve(spec, name)
      paths = resolved.map((r) => r.resolvedPath)
      const volume = await this.withClaims(resolved, () => Volume.open(name, spec!, resolved, this.deps(), false))
      this.failed.delete(name)
      this.volumes.set(name, volume)
      this.options.onVolume?.(volume)
      return volume
    } catch (err) {
      const record = new FailedVolume(name, spec, openFailure(err, this.journalDir), paths)
      this.failed.set(name, record)
      this.options.log.warn({ volume: name, code: record.error.code, error: (err as Error).message }, 'volume could not be opened')
      return record
    }
  }

  /** A PUT on a volume that could not be opened: its own configuration opens it again (at most one try at a time); another conflicts. */
  private retryFailed(name: string, spec: VolumeSpec): Promise<PutResult> {
    const record = this.failed.get(name)!
    if (!record.spec || !isDeepStrictEqual(record.spec, spec)) {
      return Promise.reject(new VolumeConflictError(`volume ${name} could not be opened (${record.error.code}) and has another configuration: delete it first, or give its own configuration to open it again`))
    }
    let retry = this.retrying.get(name)
    if (!retry) {
      retry = this.openPersisted(name, spec)
        .then((opened) => {
          if (opened instanceof FailedVolume) throw new VolumeFailedError(opened)
          return { created: false, volume: opened }
        })
        .finally(() => this.retrying.delete(name))
      this.retrying.set(name, retry)
    }
    return retry
  }

  /** Resolves every replica path inside the storage roots and outside the service's own files. */
  async resolve(spec: VolumeSpec, opening?: string): Promise<ResolvedReplicaSpec[]> {
    const resolved: ResolvedReplicaSpec[] = []
    for (const r of spec.replicas) {
      const one = await this.resolveOne(r, resolved, opening)
      resolved.push(one)
    }
    return resolved
  }

  /** Resolves one replica's path; it may not be the service's own files, a sibling's file, or another volume's. */
  private async resolveOne(r: ReplicaSpec, siblings: ResolvedReplicaSpec[], opening?: string): Promise<ResolvedReplicaSpec> {
    let path: string
    const what = r.path !== undefined ? `path ${r.path}` : r.url !== undefined ? `url ${r.url}` : `S3 prefix ${backendName(r)}`
    if (isRemoteSpec(r)) {
      // Only where the operator allows (REMOTE_ALLOW): a configuration never makes the service call any host it likes.
      // A persisted volume opens anyway, that replica failed (see openReplicaFile).
      if (opening === undefined) checkRemoteAllowed(r, this.options.remoteAllow ?? [])
      path = backendKey(r)
      if (siblings.some((x) => x.resolvedPath === path)) throw new PathRefusedError(`two replicas are the same remote ${backendName(r)}`)
    } else {
      const metadata = await resolveReplicaPath(METADATA_DIR, this.options.dataDir, [this.options.dataDir]).catch(() => join(this.options.dataDir, METADATA_DIR))
      path = await resolveReplicaPath(r.path!, this.options.dataDir, this.options.storageRoots)
      if (path === metadata || path.startsWith(metadata + '/')) throw new PathRefusedError(`path ${r.path} is inside the service's own directory`)
      if (siblings.some((x) => x.resolvedPath === path)) throw new PathRefusedError(`two replicas resolve to the same file ${path}`)
    }
    for (const v of this.volumes.values()) {
      if (v.replicas.some((x) => x.spec.resolvedPath === path)) throw new VolumeConflictError(`${what} is already a replica of volume ${v.name}`)
    }
    for (const f of this.failed.values()) {
      if (f.name !== opening && f.paths.includes(path)) throw new VolumeConflictError(`${what} is a replica of volume ${f.name}, which could not be opened`)
    }
    if (this.claimed.has(path)) throw new VolumeConflictError(`${what} is being taken by another request`)
    if (isRemoteSpec(r)) this.remotes.set(path, r)
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

  /**
   * Runs `work` once every configuration change of `name` queued before it has ended: creations, updates,
   * additions, removals and deletions of one name never interleave (a DELETE still under way can never remove
   * the journals of a volume created again under its name, nor a replica's removal those of its re-addition).
   */
  private serial<T>(name: string, work: () => Promise<T>): Promise<T> {
    const run = (this.queues.get(name) ?? Promise.resolve()).then(work)
    const done = run.then(
      () => undefined,
      () => undefined,
    )
    this.queues.set(name, done)
    void done.then(() => this.queues.get(name) === done && this.queues.delete(name))
    return run
  }

  /** The volume a request found is still the one under its name (it was not deleted while the request waited). */
  private stillOpen(volume: Volume): void {
    if (this.volumes.get(volume.name) !== volume) throw new EngineError('not-found', `no volume named ${volume.name}`)
  }

  /**
   * Adds a replica to a live volume and persists it; an identical one is reported, another under the id conflicts.
   * A file that holds bytes other than the volume's is refused unless `overwrite` (the volume's content wins).
   */
  addReplica(volume: Volume, spec: ReplicaSpec, options: { overwrite?: boolean } = {}): Promise<{ created: boolean }> {
    return this.serial(volume.name, async () => {
      this.stillOpen(volume)
      const existing = volume.replica(spec.id)
      if (existing) {
        if (isDeepStrictEqual(stripResolved(existing.spec), spec)) return { created: false }
        throw new VolumeConflictError(`replica ${spec.id} exists with another configuration`)
      }
      const resolved = await this.resolveOne(spec, [])
      await this.withClaims([resolved], async () => {
        if (volume.replica(spec.id)) throw new VolumeConflictError(`replica ${spec.id} is being added by another request`)
        await this.checkAddition(volume, resolved, options.overwrite ?? false)
        await this.asFresh([resolved], () => volume.addReplica(resolved)).catch((err: unknown) => {
          throw isRemoteSpec(resolved) ? remoteRefusal(resolved, err) : err
        })
        await this.persist(volume)
      })
      return { created: true }
    })
  }

  /** A replica may be added over a file that is empty, missing or holds the volume's bytes already; else only with `overwrite`. */
  private async checkAddition(volume: Volume, r: ResolvedReplicaSpec, overwrite: boolean): Promise<void> {
    const size = await this.storedBytes(r)
    if (size === 0) return
    if (isRemoteSpec(r) && !overwrite) {
      throw new VolumeConflictError(
        `the remote ${backendName(r)} holds ${size} bytes: adding it as replica ${r.id} of volume ${volume.name} would overwrite them; add it with PUT /volumes/${volume.name}/replicas/${r.id}?overwrite=true to replace them with the volume's content, or give another`,
      )
    }
    if (overwrite) {
      this.options.log.warn({ volume: volume.name, replica: r.id, bytes: size }, "replica added with overwrite=true: its file's bytes are replaced by the volume's")
      return
    }
    const name = volume.name
    const how = `add it with PUT /volumes/${name}/replicas/${r.id}?overwrite=true to replace them with the volume's content, or give another file`
    if (volume.size === 0) {
      throw new VolumeConflictError(
        `the file ${r.path} holds ${size} bytes and volume ${name} is empty: adding it as replica ${r.id} would empty it; to keep its bytes, create a volume over it (PUT /volumes/{name}), or ${how}`,
      )
    }
    const source = volume.source()
    if (!source?.file) throw new VolumeConflictError(`the file ${r.path} holds ${size} bytes and no replica of volume ${name} holds every acknowledged byte to compare them with: retry once one is in-sync, or ${how}`)
    if (size !== volume.size || !(await holdsVolumeBytes(source.file, volume.size, r.resolvedPath))) {
      throw new VolumeConflictError(`the file ${r.path} holds ${size} bytes that are not the ${volume.size} bytes of volume ${name}: ${how}`)
    }
  }

  /**
   * Removes a replica and persists; refused when the volume would have no reading or no writing replica left, or
   * when no remaining reading replica would hold every acknowledged byte (unless `force`, logged at warn).
   */
  removeReplica(volume: Volume, id: string, options: { force?: boolean } = {}): Promise<boolean> {
    return this.serial(volume.name, async () => {
      this.stillOpen(volume)
      const replica = volume.replica(id)
      if (!replica) return false
      const rest = volume.replicas.filter((r) => r !== replica)
      if (!rest.some((r) => r.spec.read)) throw new VolumeConflictError(`removing ${id} would leave volume ${volume.name} without a reading replica`)
      if (!rest.some((r) => r.spec.write)) throw new VolumeConflictError(`removing ${id} would leave volume ${volume.name} without a writing replica`)
      if (!rest.some((r) => r.spec.read && holdsTheTruth(volume, r))) {
        const state = rest.map((r) => lacking(volume, r)).join(', ')
        if (!options.force) {
          const readers = rest.filter((r) => r.spec.read && r.spec.write).map((r) => r.id)
          throw new VolumeConflictError(
            `removing ${id} would leave volume ${volume.name} with no reading replica holding every acknowledged byte (${state}): ` +
              `${readers.length > 0 ? `wait until ${readers.join(' or ')} is in-sync (GET /volumes/${volume.name}), or ` : ''}remove it anyway with ?force=true`,
          )
        }
        this.options.log.warn({ volume: volume.name, replica: id, replicas: state }, 'replica removed with force=true: no remaining reading replica holds every acknowledged byte')
      }
      await volume.removeReplica(replica)
      await this.persist(volume)
      return true
    })
  }

  /**
   * Creates a volume (`created`), or applies another configuration to the existing one in place (see
   * updateVolume); the same configuration changes nothing. `source` names the replica whose file holds the
   * truth: when the volume is created over files that differ, or when it is read-only (no replica known to hold
   * every acknowledged write). It is never persisted; on any other existing volume it is ignored (so a retried
   * creation answers as the first did).
   */
  put(name: string, spec: VolumeSpec, options: PutOptions = {}): Promise<PutResult> {
    const { source, ...config } = spec
    return this.serial(name, async () => {
      if (this.failed.has(name)) return this.retryFailed(name, config)
      const existing = this.volumes.get(name)
      if (!existing) return this.create(name, config, source)
      if (source !== undefined && existing.status().state === 'read-only') await existing.declareSource(source)
      const changed = await updateVolume(existing, config, { force: options.force ?? false, quietTimeoutMs: UPDATE_QUIET_MS, log: this.options.log })
      // A remote's tokenEnv may change in place: it is read at its next opening.
      for (const r of existing.replicas) if (isRemoteSpec(r.spec)) this.remotes.set(r.spec.resolvedPath, stripResolved(r.spec))
      if (changed) await this.persist(existing)
      return { created: false, volume: existing }
    })
  }

  private async create(name: string, spec: VolumeSpec, source: string | undefined): Promise<PutResult> {
    const resolved = await this.resolve(spec)
    return this.withClaims(resolved, async () => {
      const truth = await this.truthOf(name, resolved, source)
      const volume = await this.asFresh(resolved, () => Volume.open(name, spec, resolved, this.deps(), true, truth))
      const broken = volume.replicas.find((r) => r.failed)
      if (broken) {
        await volume.close(0)
        if (broken.isRemote) throw remoteRefusal(broken.spec, broken.retry ? Object.assign(new Error(broken.error?.message), { retryable: true, code: broken.error?.code }) : broken.error)
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

  /**
   * The replica whose file holds the truth of a volume created over existing files: the one `source` names; else
   * the only file that holds data, or the first of several that hold the very same bytes (a sync reading one first);
   * undefined when none holds any. Files holding different bytes conflict, naming them: nothing is overwritten
   * unless the request says which one wins.
   */
  private async truthOf(name: string, resolved: ResolvedReplicaSpec[], source: string | undefined): Promise<string | undefined> {
    const holding: Array<{ r: ResolvedReplicaSpec; size: number }> = []
    for (const r of resolved) {
      const size = await this.storedBytes(r)
      if (size > 0) holding.push({ r, size })
    }
    const list = (files: typeof holding) => files.map(({ r, size }) => `${r.id} (${backendName(r)}, ${size} bytes)`).join(', ')
    if (source !== undefined) {
      const named = resolved.find((r) => r.id === source)!
      if (!named.write) throw new EngineError('invalid', `source ${source} has write: false: a replica that takes no writes cannot hold the volume's truth`)
      const overwritten = holding.filter((f) => f.r.id !== source)
      if (overwritten.length > 0) this.options.log.warn({ volume: name, source, overwritten: overwritten.map((f) => f.r.id) }, `volume created with source ${source}: the other replica files are overwritten from it`)
      return source
    }
    if (holding.length === 0) return undefined
    const sizes = new Set(holding.map((f) => f.size))
    // A remote is never compared byte for byte here: beside other replicas holding data, "source" says which one wins.
    const remoteHolds = holding.some((f) => isRemoteSpec(f.r))
    if (holding.length > 1 && (remoteHolds || sizes.size > 1 || !(await sameBytes(holding.map((f) => f.r.resolvedPath), holding[0].size)))) {
      throw new VolumeConflictError(
        `the replica files of volume ${name} hold different data: ${list(holding)}; name the replica that holds the truth with "source": "<replica id>" in the body (the others are overwritten from it), or empty the others`,
      )
    }
    const writers = holding.filter((f) => f.r.write)
    if (writers.length === 0) {
      throw new VolumeConflictError(
        `only ${list(holding)} of volume ${name} holds data, and a replica that takes no writes (write: false) cannot hold the truth: give it write: true, or name another replica with "source" (its file is then overwritten)`,
      )
    }
    return (writers.find((f) => f.r.read && f.r.mode === 'sync') ?? writers.find((f) => f.r.read) ?? writers[0]).r.id
  }

  /** Writes a volume's configuration atomically. */
  async persist(volume: Volume): Promise<void> {
    await writeFileAtomic(join(this.configDir, `${volume.name}.json`), JSON.stringify(volume.spec, null, 2) + '\n')
  }

  /**
   * Forgets a volume (its configuration, journals and groups; its replica files are kept) once write-behind owes
   * nothing: waits up to `graceMs` for it, then refuses with a DirtyVolumeError naming what each replica lacks,
   * dropping nothing (the volume stays open and configured). With `force`, forgets it at once whatever its replicas
   * lack (logged at warn) and says what that was. Null when there is no such volume.
   */
  delete(name: string, graceMs: number, options: { force?: boolean } = {}): Promise<DeleteResult | null> {
    return this.serial(name, async () => {
      await this.retrying.get(name)?.catch(() => {})
      if (this.failed.has(name)) return (await this.forgetFailed(name)) ? { name, dirtyBytes: 0, dirty: {} } : null
      const volume = this.volumes.get(name)
      if (!volume) return null
      if (!options.force) {
        await volume.settled(graceMs)
        const owed = owedBy(volume)
        if (owed.dirtyBytes > 0 || volume.writesInFlight > 0) {
          const lack = volume.replicas.filter((r) => r.dirtyBytes > 0).map((r) => `${r.id} lacks ${r.dirtyBytes} bytes (${r.state})`)
          const what = lack.length > 0 ? lack.join(', ') : 'writes are in flight'
          throw new DirtyVolumeError(
            `volume ${name} still owes write-behind after ${graceMs} ms: ${what}; nothing was deleted. Retry once every replica is in-sync (GET /volumes/${name})` +
              `${volume.replicas.some((r) => r.failed && r.dirtyBytes > 0) ? ', resync the failed ones (POST /volumes/' + name + '/replicas/{id}/resync)' : ''}` +
              `, or forget the volume anyway with DELETE /volumes/${name}?force=true (what they lack is then never copied)`,
            owed.dirty,
            owed.dirtyBytes,
          )
        }
      }
      // Nothing awaits between the check and close(), which refuses new writes at once.
      this.volumes.delete(name)
      const closed = volume.close(0)
      try {
        await fs.rm(join(this.configDir, `${name}.json`), { force: true })
      } finally {
        await closed
      }
      const owed = owedBy(volume)
      if (owed.dirtyBytes > 0) this.options.log.warn({ volume: name, dirty: owed.dirty, dirtyBytes: owed.dirtyBytes }, `volume deleted with force=true: ${owed.dirtyBytes} bytes its replicas lacked are never copied`)
      await fs.rm(join(this.journalDir, name), { recursive: true, force: true })
      this.options.groups.forgetVolume(name)
      return { name, ...owed }
    })
  }

  /** Forgets a volume that could not be opened: its configuration, then its journals (its replica files are kept). */
  private async forgetFailed(name: string): Promise<boolean> {
    try {
      await fs.rm(join(this.configDir, `${name}.json`), { force: true })
    } catch (err) {
      throw new EngineError('busy', `volume ${name} cannot be forgotten: its configuration cannot be removed (${(err as NodeJS.ErrnoException).code ?? 'EIO'})`)
    }
    this.failed.delete(name)
    await fs.rm(join(this.journalDir, name), { recursive: true, force: true }).catch((err) => {
      this.options.log.warn({ volume: name, error: (err as Error).message }, 'journals of a forgotten volume could not be removed')
    })
    this.options.groups.forgetVolume(name)
    return true
  }

  /** Closes every volume: writes in flight finish, write-behind runs up to `graceMs`, journals persist. */
  async closeAll(graceMs: number): Promise<void> {
    await Promise.all([...this.volumes.values()].map((v) => v.close(graceMs)))
    this.volumes.clear()
  }
}

/** What each replica of a volume lacks now, and the sum. */
function owedBy(volume: Volume): { dirty: Record<string, number>; dirtyBytes: number } {
  const dirty = Object.fromEntries(volume.replicas.map((r: Replica) => [r.id, r.dirtyBytes]))
  return { dirty, dirtyBytes: Object.values(dirty).reduce((a, b) => a + b, 0) }
}

/** A file's size; 0 when there is no file. */
async function sizeOf(path: string): Promise<number> {
  try {
    return (await fs.stat(path)).size
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
    throw err
  }
}

/** Files are compared this many bytes at a time: memory stays bounded however big they are. */
const COMPARE_CHUNK = 1 << 20

/** Fills `buffer` from `position` of `handle`; returns the bytes read, fewer only at the end of the file. */
async function readFully(handle: fs.FileHandle, buffer: Buffer, position: number): Promise<number> {
  let done = 0
  while (done < buffer.length) {
    const { bytesRead } = await handle.read(buffer, done, buffer.length - done, position + done)
    if (bytesRead === 0) break
    done += bytesRead
  }
  return done
}

/** Whether the files at `paths` hold the very same first `size` bytes, read chunk by chunk. */
async function sameBytes(paths: string[], size: number): Promise<boolean> {
  const handles: fs.FileHandle[] = []
  try {
    for (const path of paths) handles.push(await fs.open(path, 'r'))
    const buffers = handles.map(() => Buffer.allocUnsafe(Math.min(COMPARE_CHUNK, size)))
    for (let at = 0; at < size; at += COMPARE_CHUNK) {
      const length = Math.min(COMPARE_CHUNK, size - at)
      const chunks = buffers.map((b) => b.subarray(0, length))
      const read = await Promise.all(handles.map((h, i) => readFully(h, chunks[i], at)))
      // A file shorter than its size said changed meanwhile: not the same.
      if (read.some((n) => n !== length) || chunks.some((c) => !c.equals(chunks[0]))) return false
    }
    return true
  } finally {
    await Promise.all(handles.map((h) => h.close().catch(() => {})))
  }
}

/** Whether the file at `path` holds the volume's `size` bytes as `source` has them (zeros past its end), chunk by chunk. */
async function holdsVolumeBytes(source: ReplicaFile, size: number, path: string): Promise<boolean> {
  const handle = await fs.open(path, 'r')
  try {
    const expected = Buffer.allocUnsafe(Math.min(COMPARE_CHUNK, size))
    const found = Buffer.allocUnsafe(expected.length)
    for (let at = 0; at < size; at += COMPARE_CHUNK) {
      const length = Math.min(COMPARE_CHUNK, size - at)
      const want = expected.subarray(0, length)
      const got = found.subarray(0, length)
      const [fromSource, fromFile] = await Promise.all([source.read(want, at), readFully(handle, got, at)])
      want.fill(0, fromSource)
      if (fromFile !== length || !want.equals(got)) return false
    }
    return true
  } finally {
    await handle.close().catch(() => {})
  }
}

/**
 * Why a remote replica cannot be taken, as the client hears it: unreachable for now is a 503 (retry), refused
 * (credentials, no such volume or bucket, another volume's prefix) a 400 naming the backend's error.
 */
function remoteRefusal(r: ReplicaSpec, err: unknown): EngineError {
  if (err instanceof EngineError) return err
  const e = err as { code?: unknown; message?: unknown } | null
  const code = typeof e?.code === 'string' ? e.code : 'EIO'
  const message = `replica ${r.id} (${backendName(r)}) cannot be opened: ${code}: ${typeof e?.message === 'string' ? e.message : String(err)}`
  return isRetryable(err) ? new EngineError('busy', `${message}; retry once it answers`, { code }) : new EngineError('invalid', message, { code })
}
