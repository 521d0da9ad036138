import { execFileSync } from 'node:child_process'
import type { Test } from 'tap'

/** Mounts (`mount ...args target`), unmounted when the test ends; false, with a printed reason, where mounting is not allowed. */
export function tryMount(t: Test, target: string, ...args: string[]): boolean {
  try {
    execFileSync('mount', [...args, target], { stdio: 'pipe' })
  } catch (err) {
    t.comment(`skipped: cannot mount here (${(err as Error).message.split('\n')[0]})`)
    return false
  }
  t.teardown(() => unmount(target))
  return true
}

/** Unmounts (lazily), whether or not it is still mounted. */
export function unmount(target: string): void {
  try {
    execFileSync('umount', ['-l', target], { stdio: 'pipe' })
  } catch {
    // already unmounted
  }
}
