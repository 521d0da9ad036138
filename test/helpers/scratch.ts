import { mkdtemp, realpath, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A fresh directory under the OS temp dir, removed (with retries, as late writes may still land) when the test ends. */
export async function scratch(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await realpath(await mkdtemp(join(tmpdir(), 'filemirror-test-')))
  t.teardown(() => rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }))
  return dir
}
