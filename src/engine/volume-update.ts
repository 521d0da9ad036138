import { isDeepStrictEqual } from 'node:util'
import { EngineError } from './errors.js'
import { WHOLE_FILE } from './journal.js'
import type { Replica } from './replica.js'
import { backendName, type ReplicaSpec, type VolumeSpec } from './spec.js'
import { stripResolved, type Volume } from './volume.js'

export interface UpdateOptions {
  /** Apply a role change even when no reading replica would be left holding every acknowledged byte. */
  force: boolean
  /** Longest wait for the writes in flight to end before a mode or a write role changes. */
  quietTimeoutMs: number
  log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void }
}

/** What an update changes on one replica. */
interface ReplicaChange {
  replica: Replica
  next: ReplicaSpec
  /** `write` goes from false to true: it holds none of the writes made meanwhile and is filled whole. */
  startsWriting: boolean
  rateChanged: boolean
}

/** Why a replica is not a safe place for the acknowledged bytes, in a few words. */
export function lacking(volume: Volume, r: Replica): string {
  if (!r.spec.write) return `${r.id} takes no writes`
  if (r.failed) return `${r.id} is failed${r.dirtyBytes > 0 ? ` and lacks ${r.dirtyBytes} bytes` : ''}`
  return volume.holdsEverything(r) ? `${r.id} is in-sync` : `${r.id} is ${r.state} and lacks ${r.dirtyBytes} bytes`
}

/**
 * Whether `r` holds every acknowledged byte and would still be given every new one: it takes writes
 * (a replica that takes none holds none of them) and has nothing dirty or in flight that it lacks.
 */
export function holdsTheTruth(volume: Volume, r: Replica): boolean {
  return r.spec.write && volume.holdsEverything(r)
}

/**
 * Applies a new configuration to a live volume in place: `durability`, and per replica `label`,
 * `maxBytesPerSecond`, `mode`, `read` and `write`. Replicas keep their ids, paths and order; adding,
 * removing or moving one is refused (the replica routes do that). A role change that would leave no
 * reading replica holding every acknowledged byte is refused unless `force`. Everything is checked
 * before anything changes. Returns whether anything changed; the caller persists the configuration.
 */
export async function updateVolume(volume: Volume, next: VolumeSpec, options: UpdateOptions): Promise<boolean> {
  const { source: _, ...wanted } = next
  const name = volume.name
  const current = volume.replicas
  const currentIds = current.map((r) => r.id)
  const nextIds = wanted.replicas.map((r) => r.id)
  const added = nextIds.filter((id) => !currentIds.includes(id))
  const removed = currentIds.filter((id) => !nextIds.includes(id))
  if (added.length > 0 || removed.length > 0) {
    const how = [
      ...added.map((id) => `add ${id} with PUT /volumes/${name}/replicas/${id}`),
      ...removed.map((id) => `remove ${id} with DELETE /volumes/${name}/replicas/${id}`),
    ]
    throw new EngineError('conflict', `volume ${name} exists with other replicas (${currentIds.join(', ')}): PUT /volumes/${name} does not add or remove replicas; ${how.join(', ')}`)
  }
  if (!isDeepStrictEqual(currentIds, nextIds)) {
    throw new EngineError('conflict', `volume ${name} lists its replicas as ${currentIds.join(', ')}: their order (which reads try first) cannot change in place; list them in that order`)
  }
  const changes: ReplicaChange[] = []
  for (const [i, replica] of current.entries()) {
    const spec = wanted.replicas[i]
    const was = replica.spec
    if (spec.path !== was.path || spec.url !== was.url || !isDeepStrictEqual(spec.s3, was.s3)) {
      const what = was.path !== undefined ? 'a path' : was.url !== undefined ? 'a url' : 'an S3 location'
      throw new EngineError(
        'conflict',
        `replica ${replica.id} of volume ${name} is at ${backendName(was)}: ${what} cannot change in place (nor a replica move between a file, a url and S3); remove the replica (DELETE /volumes/${name}/replicas/${replica.id}) and add it again with the new one (PUT /volumes/${name}/replicas/${replica.id})`,
      )
    }
    if (isDeepStrictEqual(stripResolved(replica.spec), spec)) continue
    changes.push({ replica, next: spec, startsWriting: spec.write && !replica.spec.write, rateChanged: spec.maxBytesPerSecond !== replica.spec.maxBytesPerSecond })
  }
  const durability = wanted.durability !== volume.spec.durability ? wanted.durability : undefined
  const checksums = wanted.checksums !== volume.spec.checksums ? wanted.checksums : undefined
  if (changes.length === 0 && durability === undefined && checksums === undefined) return false

  // Roles: some reading replica must still hold every acknowledged byte afterwards.
  const roles = changes.filter((c) => c.next.read !== c.replica.spec.read || c.next.write !== c.replica.spec.write)
  if (roles.length > 0) {
    const after = (r: Replica) => changes.find((c) => c.replica === r)?.next ?? r.spec
    const keeper = current.find((r) => after(r).read && after(r).write && holdsTheTruth(volume, r))
    if (!keeper) {
      const what = roles.map((c) => `${c.replica.id}: read ${c.replica.spec.read} → ${c.next.read}, write ${c.replica.spec.write} → ${c.next.write}`).join('; ')
      const state = current.map((r) => lacking(volume, r)).join(', ')
      if (!options.force) {
        throw new EngineError(
          'conflict',
          `changing the roles of volume ${name} (${what}) would leave no reading replica holding every acknowledged byte (${state}): wait until a replica that keeps read and write is in-sync (GET /volumes/${name}), or apply it anyway with ?force=true`,
        )
      }
      options.log.warn({ volume: name, roles: what, replicas: state }, 'roles changed with force: no reading replica holds every acknowledged byte')
    }
  }

  // A replica that starts taking writes lacks everything written while it did not: on record before it takes any.
  for (const c of changes) if (c.startsWriting) await c.replica.journal.markDirty(0, WHOLE_FILE)

  // A mode or write role changes only between writes: a write plans its replicas and their modes when it begins.
  const needsQuiet = changes.some((c) => c.next.mode !== c.replica.spec.mode || c.next.write !== c.replica.spec.write)
  if (needsQuiet) {
    const deadline = Date.now() + options.quietTimeoutMs
    while (volume.writesInFlight > 0) {
      const left = deadline - Date.now()
      if (left <= 0) throw new EngineError('busy', `volume ${name} had writes in flight for ${options.quietTimeoutMs} ms: a mode or write role changes only between writes; retry`)
      await volume.quietOrAfter(Math.min(left, 250))
    }
  }

  // From here to the end of the loop nothing awaits: no write can begin halfway through the change.
  volume.spec = { ...volume.spec, durability: wanted.durability, checksums: wanted.checksums, replicas: wanted.replicas }
  for (const { replica, next: spec, startsWriting } of changes) {
    const was = replica.spec
    replica.spec = { ...spec, resolvedPath: was.resolvedPath }
    const file = replica.file
    if (file) {
      if (spec.read && !was.read) volume.mirror.addReadingFile(file)
      if (!spec.read && was.read) volume.mirror.removeReadingFile(file)
      if (spec.write && !was.write) volume.mirror.addWritingFile(file)
      if (!spec.write && was.write) volume.mirror.removeWritingFile(file)
      if (spec.mode !== was.mode) volume.mirror.setFileAsync(file, spec.mode === 'async')
    }
    if (startsWriting && volume.size > 0) {
      replica.pending.add(0, volume.size)
      replica.resyncing = true
    }
  }
  if (durability !== undefined) for (const r of current) r.journal.setFsync(durability === 'fsync')
  // Off deletes the store; on starts it with nothing covered (checksummed in the background).
  if (checksums !== undefined) await volume.setChecksums(checksums)

  // Write-behind is rebuilt where its rate or the volume's durability changed (a pause at the old rate ends).
  const renew = current.filter((r) => durability !== undefined || changes.some((c) => c.replica === r && c.rateChanged))
  await Promise.all(renew.map((r) => volume.renewWriteBehind(r)))
  volume.wakeWriteBehind()
  for (const c of changes) if (c.startsWriting) volume.emit('replicaState', { volume: name, replica: c.replica.id, state: c.replica.state, error: c.replica.error })
  options.log.info({ volume: name, durability: volume.spec.durability, replicas: changes.map((c) => c.replica.id) }, 'volume configuration updated in place')
  return true
}
