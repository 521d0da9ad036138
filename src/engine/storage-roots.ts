import { constants, promises as fs } from 'node:fs'
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path'
import { EngineError } from './errors.js'

/** Why a replica path was refused. */
export class PathRefusedError extends EngineError {
  constructor(message: string) {
    super('invalid', message)
  }
}

/** DATA_DIR or a storage root is unusable at start; the message names it. */
export class StorageRootError extends Error {}

const codeOf = (err: unknown) => (err as NodeJS.ErrnoException).code ?? 'error'

/**
 * Checks the directories before the service starts. DATA_DIR is created when missing (a fresh clone
 * starts) and must be a writable directory: it holds the volume definitions and the journals. Every
 * other storage root must already exist: a root is a disk or a mount, and creating a missing one would
 * put replicas on whatever filesystem lies beneath (an unmounted mount point, the root disk).
 */
export async function prepareStorage(dataDir: string, roots: string[]): Promise<void> {
  try {
    await fs.mkdir(dataDir, { recursive: true })
  } catch (err) {
    if (await fs.stat(dataDir).then((st) => !st.isDirectory(), () => false)) throw new StorageRootError(`DATA_DIR ${dataDir} is not a directory`)
    // A recursive mkdir under a read-only mount reports ENOENT: name the directory that refuses instead.
    let ancestor = dirname(dataDir)
    while (dirname(ancestor) !== ancestor && !(await fs.stat(ancestor).then(() => true, () => false))) ancestor = dirname(ancestor)
    const refused = await fs.access(ancestor, constants.W_OK).then(() => undefined, (e: unknown) => codeOf(e))
    if (refused) throw new StorageRootError(`DATA_DIR ${dataDir} is not writable: it does not exist and cannot be created, as ${ancestor} is not writable (${refused})`)
    throw new StorageRootError(`DATA_DIR ${dataDir} cannot be created (${codeOf(err)})`)
  }
  const stat = await fs.stat(dataDir)
  if (!stat.isDirectory()) throw new StorageRootError(`DATA_DIR ${dataDir} is not a directory`)
  // The service's own directory inside it, when it is there already, must be writable too.
  for (const dir of [dataDir, join(dataDir, '.filemirror')]) {
    try {
      await fs.access(dir, constants.W_OK | constants.X_OK)
    } catch (err) {
      const code = codeOf(err)
      if (code === 'ENOENT' && dir !== dataDir) continue
      throw new StorageRootError(
        `DATA_DIR ${dataDir} is not writable (${code}${dir === dataDir ? '' : ` on ${dir}`}): it holds the volume definitions and journals; mount it read-write or give the service's user write access`,
      )
    }
  }
  const problems: string[] = []
  for (const root of roots) {
    if (root === dataDir) continue
    try {
      if (!(await fs.stat(root)).isDirectory()) problems.push(`${root} is not a directory`)
    } catch (err) {
      problems.push(codeOf(err) === 'ENOENT' ? `${root} does not exist` : `${root} cannot be used (${codeOf(err)})`)
    }
  }
  if (problems.length > 0) {
    throw new StorageRootError(`STORAGE_ROOTS: ${problems.join('; ')} (storage roots are never created by the service: create or mount ${problems.length === 1 ? 'it' : 'them'} first)`)
  }
}

/** Resolves the longest existing ancestor through symlinks, keeping the missing tail as written. */
async function realpathOfNearest(path: string): Promise<string> {
  const missing: string[] = []
  let at = path
  for (;;) {
    try {
      const real = await fs.realpath(at)
      return missing.length ? resolve(real, ...missing.reverse()) : real
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      // A dangling symlink would be followed when the file is created: refuse it, wherever it points.
      if (await fs.lstat(at).then((s) => s.isSymbolicLink(), () => false)) throw new PathRefusedError('path goes through a dangling symlink')
      const parent = dirname(at)
      if (parent === at) return path
      missing.push(at.slice(parent.length + (parent.endsWith(sep) ? 0 : 1)))
      at = parent
    }
  }
}

function isInside(root: string, path: string): boolean {
  const rel = relative(root, path)
  return rel === '' ? false : !rel.startsWith('..') && !isAbsolute(rel)
}

/** The index of the innermost root holding `path` (a root inside another is the one it lies on), or -1. */
function innermost(roots: Array<string | undefined>, path: string): number {
  let at = -1
  roots.forEach((root, i) => {
    if (root !== undefined && isInside(root, path) && (at < 0 || root.length > roots[at]!.length)) at = i
  })
  return at
}

/**
 * Resolves a replica path: relative ones against the data directory, symlinks followed, and the
 * result must lie strictly inside one of the storage roots.
 */
export async function resolveReplicaPath(path: string, dataDir: string, roots: string[]): Promise<string> {
  if (path.includes('\0')) throw new PathRefusedError('path must not contain NUL bytes')
  if (path.split(/[\\/]/).includes('..')) throw new PathRefusedError('path must not contain ".." segments')
  const absolute = resolve(dataDir, path)
  const real = await realpathOfNearest(absolute)
  const realRoots = await Promise.all(roots.map((r) => realpathOfNearest(resolve(r))))
  const at = innermost(realRoots, real)
  if (at < 0) {
    throw new PathRefusedError(`path ${path} is outside the storage roots (${roots.map((r) => resolve(r)).join(', ')})`)
  }
  // A root is a disk or a mount: one that is gone (unmounted, removed) is never recreated under it.
  const root = await fs.stat(realRoots[at]).catch(() => undefined)
  if (!root?.isDirectory()) throw new PathRefusedError(`path ${path} is in the storage root ${resolve(roots[at])}, which does not exist now (is it mounted?)`)
  await checkFileShape(real, path)
  return real
}

/** A replica must be a regular file (or not exist yet) under directories: refuse anything else before creating a thing. */
async function checkFileShape(real: string, path: string): Promise<void> {
  const stat = await fs.stat(real).catch(() => undefined)
  if (stat && !stat.isFile()) throw new PathRefusedError(`path ${path} exists and is not a regular file`)
  if (stat) return
  for (let dir = dirname(real); ; dir = dirname(dir)) {
    const parent = await fs.stat(dir).catch(() => undefined)
    if (parent) {
      if (!parent.isDirectory()) throw new PathRefusedError(`path ${path} lies under something that is not a directory`)
      return
    }
    if (dirname(dir) === dir) return
  }
}

/**
 * A replica's storage root is not there, or no longer the filesystem it was: the replica is not opened and
 * nothing is created in its place (a removed directory or an unmounted disk is never recreated on the disk beneath).
 */
export class StorageRootMissingError extends Error {
  readonly code = 'ENOROOT'
  constructor(
    readonly root: string,
    reason: string,
  ) {
    super(`storage root ${root} missing: ${reason}`)
    this.name = 'StorageRootMissingError'
  }
}

const statOrUndefined = (path: string) => fs.stat(path).catch(() => undefined)

/** Creates the directories from `root` (exclusive) down to `dir`, one level at a time: never `root` itself nor anything above it. */
export async function mkdirBelowRoot(root: string, dir: string): Promise<void> {
  const rel = relative(root, dir)
  if (rel.startsWith('..') || isAbsolute(rel)) throw Object.assign(new Error(`${dir} is not inside the storage root ${root}`), { code: 'EINVAL' })
  const top = await statOrUndefined(root)
  if (!top?.isDirectory()) throw new StorageRootMissingError(root, top ? 'it is not a directory' : 'it does not exist (removed, or its disk unmounted)')
  if (rel === '' || (await statOrUndefined(dir))?.isDirectory()) return
  let at = root
  for (const part of rel.split(sep)) {
    at = join(at, part)
    try {
      await fs.mkdir(at)
    } catch (err) {
      if (codeOf(err) === 'EEXIST') continue
      // A level vanished under us: say so when it is the root.
      if (codeOf(err) === 'ENOENT' && !(await statOrUndefined(root))) throw new StorageRootMissingError(root, 'it went away while its directories were being created')
      throw err
    }
  }
}

/**
 * The storage roots as the running service knows them: each one's real path and the filesystem (st_dev) it was
 * on when first seen, at start (a root missing then is taken when it first appears).
 */
export class StorageRoots {
  private real: Array<string | undefined> | undefined
  private readonly devices = new Map<string, number>()

  constructor(private readonly roots: string[]) {}

  private async realRoots(): Promise<Array<string | undefined>> {
    this.real ??= await Promise.all(this.roots.map((r) => realpathOfNearest(resolve(r)).catch(() => undefined)))
    return this.real
  }

  /** At start: each root's real path and device. */
  async recordDevices(): Promise<void> {
    this.real = undefined
    for (const root of await this.realRoots()) if (root) await this.check(root).catch(() => {})
  }

  /** The root a resolved replica path lies in (the innermost that holds it, as resolution chose), if any. */
  async rootOf(real: string): Promise<string | undefined> {
    const roots = await this.realRoots()
    return roots[innermost(roots, real)]
  }

  /**
   * Refuses a root that is missing, is not a directory, or sits now on its parent directory's filesystem though it
   * was on another one at start: its disk was unmounted and only the mount point is left. A root that is on a new
   * filesystem of its own (a replaced disk mounted there) is taken, and that filesystem recorded.
   */
  async check(root: string): Promise<void> {
    const st = await statOrUndefined(root)
    if (!st) throw new StorageRootMissingError(root, 'it does not exist (removed, or its disk unmounted)')
    if (!st.isDirectory()) throw new StorageRootMissingError(root, 'it is not a directory')
    const seen = this.devices.get(root)
    if (seen === st.dev) return
    if (seen !== undefined && (await statOrUndefined(dirname(root)))?.dev === st.dev) {
      throw new StorageRootMissingError(root, `its filesystem changed since start (device ${seen}, now ${st.dev}, its parent directory's): its disk is unmounted and only the mount point is left`)
    }
    this.devices.set(root, st.dev)
  }
}
