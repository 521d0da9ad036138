// filemirror wait against a real server: exit 0 when the operation group is done, 1 when it failed (an async
// replica on a full disk), 1 when unknown or still pending at --timeout; long-polls rather than spins.
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'
import { cliServer, createVolume, putData, runCli, skipUnbuilt } from './cli-process.js'

const MiB = 1 << 20

t.test('wait: exit 0 once a write group is done, after write-behind caught up', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'w', [
    { id: 'fast', path: 'w/fast.img' },
    { id: 'slow', path: 'w/slow.img', mode: 'async', read: false, maxBytesPerSecond: MiB },
  ])
  const opid = await putData(url, 'w', pattern(3 * MiB, 9))
  const pending = await (await fetch(`${url}/operations/${opid}`)).json()
  t.equal(pending.status, 'pending', 'the async replica is still copying')
  const run = await runCli(['wait', url, opid])
  t.equal(run.code, 0, run.stderr)
  t.match(run.result, { type: 'result', ok: true, command: 'wait', id: opid, status: 'done', group: { operations: [{ replica: 'fast', status: 'done' }, { replica: 'slow', status: 'done' }] } })
  t.ok(run.lines.filter((l) => l.type === 'progress').length <= 2, 'long-polls: a progress line per poll, not a spin')

  const location = await runCli(['wait', url, `/operations/${opid}`])
  t.equal(location.code, 0, 'the Location of a write is taken too')

  const done = await runCli(['wait', `${url}/`, opid, '--timeout', '1'])
  t.equal(done.code, 0, 'a settled group: at once')
})

t.test('wait: exit 1 for an unknown group and for one still pending at --timeout', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'p', [
    { id: 'fast', path: 'p/fast.img' },
    { id: 'slow', path: 'p/slow.img', mode: 'async', read: false, maxBytesPerSecond: 256 * 1024 },
  ])
  const unknown = await runCli(['wait', url, '00000000-0000-0000-0000-000000000000'])
  t.equal(unknown.code, 1)
  t.match(unknown.result, { ok: false, command: 'wait', status: 404 })
  t.match(unknown.stderr, /no operation group 00000000-0000-0000-0000-000000000000/)

  const opid = await putData(url, 'p', pattern(2 * MiB, 1))
  const started = Date.now()
  const late = await runCli(['wait', url, opid, '--timeout', '1'])
  t.equal(late.code, 1, 'still pending after --timeout: exit 1')
  t.match(late.result, { ok: false, status: 'pending', timedOut: true })
  t.ok(Date.now() - started < 10_000, 'within about the timeout')
})

/** Whether a tmpfs can be mounted here (root, and mounts allowed): tried once on a scratch directory. */
function canMount(): boolean {
  const dir = mkdtempSync(join(tmpdir(), 'filemirror-cli-mount-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'pipe' })
    execFileSync('umount', [dir], { stdio: 'pipe' })
    return true
  } catch {
    return false
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Mounts a tmpfs of `size` on `target`, unmounted when the test ends. */
function mountTmpfs(t: Test, target: string, size: string): void {
  mkdirSync(target, { recursive: true })
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', target], { stdio: 'pipe' })
  t.teardown(() => {
    if (readFileSync('/proc/self/mounts', 'utf8').includes(` ${target} `)) execFileSync('umount', ['-l', target], { stdio: 'pipe' })
  })
}

t.test('wait: exit 1 when the group failed (an async replica on a full disk)', { skip: skipUnbuilt || (canMount() ? false : 'cannot mount a tmpfs here (needs root)') }, async (t) => {
  const dir = await scratch(t, 'filemirror-cli-full-')
  const small = join(dir, 'small')
  mountTmpfs(t, small, '1m')
  const dataDir = join(dir, 'data')
  mkdirSync(dataDir)
  // The server is stopped (teardown, last in first out) before the tmpfs is unmounted.
  const { url } = await cliServer(t, { DATA_DIR: dataDir, STORAGE_ROOTS: `${dataDir},${small}` })
  await createVolume(url, 'f', [
    { id: 'fast', path: 'f/fast.img' },
    { id: 'small', path: join(small, 'small.img'), mode: 'async' },
  ])
  const opid = await putData(url, 'f', pattern(3 * MiB, 2))
  const run = await runCli(['wait', url, opid])
  t.equal(run.code, 1, 'a failed group: exit 1')
  t.match(run.result, { ok: false, status: 'failed', group: { operations: [{ replica: 'fast', status: 'done' }, { replica: 'small', status: 'failed', error: { code: 'ENOSPC' } }] } })
  t.match(run.stderr, /filemirror wait: operation .*: failed: fast done, small failed \(ENOSPC/, 'and says so on stderr')
})
