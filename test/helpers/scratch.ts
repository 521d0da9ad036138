import { mkdtemp, realpath, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * A fresh, empty directory under the OS temp dir (symlinks resolved), removed when the test ends
 * (with retries, as late writes may still land). tap runs teardowns last-in first-out, so whatever a
 * test opens in the directory after this call is closed before the directory is removed.
 */
export async function scratch(t: { teardown(fn: () => unknown): void }, prefix = 'filemirror-test-'): Promise<string> {
  const dir = await realpath(await mkdtemp(join(tmpdir(), prefix)))
  t.teardown(() => rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }))
  return dir
}
