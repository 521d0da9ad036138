import { promises as fs } from 'node:fs'
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path'

/** Why a replica path was refused. */
export class PathRefusedError extends Error {}

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
  if (!realRoots.some((root) => isInside(root, real))) {
    throw new PathRefusedError(`path ${path} is outside the storage roots`)
  }
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
