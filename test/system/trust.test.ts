// Items of a reliability review, each against a real server process (dist/src/server.js: npm run build first),
// restarted with SIGTERM and with kill -9: what a restart, a full disk, a file damaged behind the server or a
// damaged journal may do to acknowledged writes. Full disks are small tmpfs mounted here (needs root; each test
// skips with the reason where mounting is not allowed).
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { readJournal } from '../../src/engine/journal.js'
import { eventually } from '../helpers/eventually.js'
import { scratch } from '../helpers/scratch.js'
import { serverBuilt, startServer, whenReady, type ServerProcess } from '../helpers/server-process.js'

const skip = !serverBuilt && 'run npm run build first'
const KiB = 1 << 10

type IoErr = { code: string; message: string } | null
type ReplicaStatus = { id: string; state: string; dirtyBytes: number; error: IoErr }
type VolumeStatus = { name: string; state: string; size: number; error: IoErr; replicas: ReplicaStatus[] }
type GroupView = { id: string; status: string; operations: Array<{ replica: string; status: string; bytes: number; error: IoErr }>; mismatches?: unknown[] }
type Stop = 'SIGTERM' | 'SIGKILL'

/** A server process that a test restarts; killed (and waited for) when the test ends, before its disks are unmounted. */
interface Served {
  proc: ServerProcess
  env: Record<string, string>
}

async function serve(t: Test, env: Record<string, string>): Promise<Served> {
  const served: Served = { proc: await startServer(env), env }
  t.teardown(async () => {
    const child = served.proc.child
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await served.proc.exited
  })
  await whenReady(served.proc)
  return served
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)))]).finally(() =>
    clearTimeout(timer),
  )
}

async function stop(served: Served, how: Stop): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  served.proc.child.kill(how)
  return within(served.proc.exited, 30_000, `the server to exit on ${how}`)
}

async function restart(served: Served, how: Stop): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const exit = await stop(served, how)
  served.proc = await startServer(served.env)
  await whenReady(served.proc)
  return exit
}

async function request(served: Served, method: string, path: string, body?: unknown): Promise<{ status: number; type: string; body: any }> {
  const res = await fetch(served.proc.url + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  })
  const text = await res.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {
    // not JSON
  }
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: parsed }
}

async function status(served: Served, name: string): Promise<VolumeStatus> {
  const res = await request(served, 'GET', `/volumes/${name}`)
  if (res.status !== 200) throw new Error(`GET /volumes/${name}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body as VolumeStatus
}

async function replica(served: Served, name: string, id: string): Promise<ReplicaStatus> {
  return (await status(served, name)).replicas.find((r) => r.id === id)!
}

/** Writes `body` at `offset` (Content-Range bytes a-b/*); `wait` asks for a reply once every replica is done. */
async function write(served: Served, name: string, offset: number, body: Buffer<ArrayBuffer>, wait?: number): Promise<{ status: number; type: string; body: any }> {
  const headers: Record<string, string> = { 'content-range': `bytes ${offset}-${offset + body.length - 1}/*` }
  if (wait !== undefined) headers.prefer = `wait=${wait}`
  const res = await fetch(`${served.proc.url}/volumes/${name}/data`, { method: 'PUT', headers, body, signal: AbortSignal.timeout(30_000) })
  const text = await res.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {
    // not JSON
  }
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: parsed }
}

/** Reads [start, end) (or the whole volume); a reply cut short is a status of -1. */
async function read(served: Served, name: string, start?: number, end?: number): Promise<{ status: number; type: string; bytes: Buffer }> {
  const headers: Record<string, string> = start === undefined ? {} : { range: `bytes=${start}-${end! - 1}` }
  try {
    const res = await fetch(`${served.proc.url}/volumes/${name}/data`, { headers, signal: AbortSignal.timeout(30_000) })
    return { status: res.status, type: res.headers.get('content-type') ?? '', bytes: Buffer.from(await res.arrayBuffer()) }
  } catch (err) {
    return { status: -1, type: '', bytes: Buffer.from(String(err)) }
  }
}

async function settledGroup(served: Served, id: string): Promise<GroupView> {
  const group = await eventually(
    async () => {
      const res = await request(served, 'GET', `/operations/${id}?wait=5000`)
      const group = res.body as GroupView
      return group.operations.every((op) => op.status === 'done' || op.status === 'failed') ? group : undefined
    },
    `group ${id} to settle`,
    30_000,
  )
  return group!
}

/** The warning lines (pino level 40) the server printed, parsed. */
function warnings(served: Served): Array<Record<string, any>> {
  return served.proc
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, any>
      } catch {
        return {}
      }
    })
    .filter((line) => line.level === 40)
}

/** Mounts a tmpfs of `size` on `target`, unmounted when the test ends; false (with the reason printed) where it cannot be. */
function mountTmpfs(t: Test, target: string, size: string): boolean {
  mkdirSync(target, { recursive: true })
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', target], { stdio: 'pipe' })
  } catch (err) {
    t.comment(`skipped: cannot mount a tmpfs here (${(err as Error).message.split('\n')[0]})`)
    return false
  }
  t.teardown(() => {
    if (mounted(target)) execFileSync('umount', ['-l', target], { stdio: 'pipe' })
  })
  return true
}

function mounted(target: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[1] === target)
}

/** Fills the filesystem of `dir` with `dir/filler` until it is full (ENOSPC). */
function fill(dir: string): void {
  const fd = openSync(join(dir, 'filler'), 'w')
  const chunk = Buffer.alloc(4 * KiB, 0xee)
  try {
    for (;;) writeSync(fd, chunk)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    closeSync(fd)
  }
}

/** The files the process has open now (readlink of /proc/<pid>/fd/*). */
function openFiles(pid: number): string[] {
  const dir = `/proc/${pid}/fd`
  const out: string[] = []
  for (const fd of readdirSync(dir)) {
    try {
      out.push(readlinkSync(join(dir, fd)))
    } catch {
      // closed meanwhile
    }
  }
  return out
}

const same = (a: Buffer, b: Buffer) => a.length === b.length && a.equals(b)

// ---------------------------------------------------------------------------------------------------------------
// 1. An acknowledged write is never lost: a on a full disk fails, b takes the write; after a restart the volume
//    keeps it, b is never cut back, a is resynced from b.
// ---------------------------------------------------------------------------------------------------------------
for (const how of ['SIGTERM', 'SIGKILL'] as const) {
  t.test(`1. a write acknowledged by b alone (a hit ENOSPC) survives a restart (${how}); a is resynced from b`, { skip }, async (t) => {
    const dataDir = await scratch(t)
    const disk = join(dataDir, 'disk')
    if (!mountTmpfs(t, disk, '1m')) return
    const served = await serve(t, { DATA_DIR: dataDir, STORAGE_ROOTS: `${dataDir},${disk}` })
    const aPath = join(disk, 'a.img')
    const bPath = join(dataDir, 'b.img')
    const created = await request(served, 'PUT', '/volumes/v', { replicas: [{ id: 'a', path: aPath }, { id: 'b', path: 'b.img' }] })
    t.equal(created.status, 201, 'volume created')

    const first = randomBytes(64 * KiB)
    t.equal((await write(served, 'v', 0, first)).status, 200, 'the first write is on both')
    fill(disk)
    const second = randomBytes(64 * KiB)
    const put = await write(served, 'v', 64 * KiB, second)
    t.equal(put.status, 200, `the write past a's full disk is acknowledged (${put.status})`)
    const group = put.body as GroupView
    t.equal(group.status, 'failed', 'its group failed')
    t.match(group.operations.find((op) => op.replica === 'a'), { status: 'failed', error: { code: 'ENOSPC' } }, 'a failed with ENOSPC')
    t.match(group.operations.find((op) => op.replica === 'b'), { status: 'done', bytes: 64 * KiB }, 'b took it')
    const health = JSON.parse(readFileSync(join(dataDir, '.filemirror/journals/v/health.json'), 'utf8'))
    t.match(health.replicas.a, { failed: { code: 'ENOSPC' } }, "a's failure is in the volume's health record before the reply")
    const degraded = await status(served, 'v')
    t.match(degraded, { state: 'degraded', size: 128 * KiB }, 'the volume is degraded, 128 KiB')
    t.match(degraded.replicas.find((r) => r.id === 'a'), { state: 'failed', error: { code: 'ENOSPC' } }, 'a is failed')
    const expected = Buffer.concat([first, second])
    const before = await read(served, 'v', 0, 128 * KiB)
    t.equal(before.status, 206)
    t.ok(same(before.bytes, expected), 'reads return the acknowledged bytes')

    rmSync(join(disk, 'filler'))
    const exit = await restart(served, how)
    t.comment(`stopped: ${JSON.stringify(exit)}`)
    const after = await status(served, 'v')
    t.comment(`after the restart: ${JSON.stringify(after)}`)
    t.equal(after.size, 128 * KiB, 'the volume keeps its size')
    t.not(after.state, 'read-only', 'not read-only: b is known good')
    t.equal(after.replicas.find((r) => r.id === 'b')!.state, 'in-sync', 'b is in-sync (the truth)')
    // a's resync (64 KiB, unthrottled) may be over before the first status: its state is not checked here, its bytes are below.
    t.not(after.replicas.find((r) => r.id === 'a')!.state, 'failed', 'a is not failed after the restart (its disk has room again)')
    t.ok(statSync(bPath).size >= 128 * KiB, `b's file is not cut back (${statSync(bPath).size} bytes)`)
    const reread = await read(served, 'v', 0, 128 * KiB)
    t.equal(reread.status, 206)
    t.ok(same(reread.bytes, expected), 'reads return the acknowledged bytes after the restart')

    await eventually(async () => (await status(served, 'v')).replicas.every((r) => r.state === 'in-sync'), 'a and b to be in-sync', 20_000).catch(
      async (err) => t.fail(`${(err as Error).message}: ${JSON.stringify(await status(served, 'v'))}`),
    )
    t.ok(same(readFileSync(bPath), expected), "b's file is what was acknowledged")
    t.ok(same(readFileSync(aPath), expected), "a's file was resynced from b: byte-identical")
    t.equal((await stop(served, 'SIGTERM')).code, 0)
  })
}

// ---------------------------------------------------------------------------------------------------------------
// 3. A damaged sync file never wipes the good copy.
// ---------------------------------------------------------------------------------------------------------------
const SIZE3 = 512 * KiB

/** A volume fast (sync) + slow (async, read: false) holding SIZE3 random bytes, both in sync. */
async function fastSlow(t: Test, extra: Record<string, string> = {}) {
  const dataDir = await scratch(t)
  const served = await serve(t, { DATA_DIR: dataDir, ...extra })
  const created = await request(served, 'PUT', '/volumes/v', {
    replicas: [
      { id: 'fast', path: 'fast.img' },
      { id: 'slow', path: 'slow/slow.img', mode: 'async', read: false },
    ],
  })
  t.equal(created.status, 201, 'volume created')
  const data = randomBytes(SIZE3)
  t.equal((await write(served, 'v', 0, data, 10)).status, 200, 'written to both')
  await eventually(async () => (await status(served, 'v')).replicas.every((r) => r.state === 'in-sync'), 'both in-sync', 10_000)
  // In-sync is reported before the clean record reaches slow's journal: a kill -9 in between leaves slow "lacking" bytes.
  await eventually(async () => {
    const journal = await readJournal(join(dataDir, '.filemirror/journals/v/slow.journal'))
    return journal.kind === 'ok' && journal.dirty.isEmpty
  }, "slow's journal to record it all clean", 10_000)
  return { dataDir, served, data, fastPath: join(dataDir, 'fast.img'), slowPath: join(dataDir, 'slow/slow.img') }
}

for (const first of ['GET', 'scrub'] as const) {
  t.test(`3a. the fast file truncated behind the running server, then a ${first} first: no zeros served, fast fails (ESHRUNK), scrub never copies zeros onto slow`, { skip }, async (t) => {
    const { served, data, fastPath, slowPath } = await fastSlow(t)
    truncateSync(fastPath, 128 * KiB)

    const checkGet = async (what: string) => {
      const got = await read(served, 'v')
      if (got.status === 200) t.ok(same(got.bytes, data), `${what}: 200 with the right bytes (served from slow)`)
      else t.ok(got.status >= 500 && got.type.startsWith('application/problem+json'), `${what}: a problem (${got.status} ${got.type} ${got.bytes.toString().slice(0, 200)})`)
      const ranged = await read(served, 'v', 256 * KiB, 320 * KiB)
      if (ranged.status === 206) t.ok(same(ranged.bytes, data.subarray(256 * KiB, 320 * KiB)), `${what}: a range past the cut is 206 with the right bytes`)
      else t.ok(ranged.status >= 500, `${what}: a range past the cut is a problem (${ranged.status})`)
    }
    const checkScrub = async (what: string) => {
      const started = await request(served, 'POST', '/volumes/v/scrub?repair=true')
      t.equal(started.status, 202, `${what}: scrub started`)
      const group = await settledGroup(served, (started.body as GroupView).id)
      t.comment(`${what}: scrub group ${JSON.stringify(group)}`)
      // Write-behind (were it asked to repair) copies at once, unthrottled: give it a moment.
      await new Promise((resolve) => setTimeout(resolve, 300))
      t.ok(same(readFileSync(slowPath), data), `${what}: slow's file is intact (no zeros copied onto it)`)
    }

    if (first === 'GET') await checkGet('first GET')
    else await checkScrub('first scrub')
    const fast = await replica(served, 'v', 'fast')
    t.match(fast, { state: 'failed', error: { code: 'ESHRUNK' } }, `fast is failed, ESHRUNK (${JSON.stringify(fast)})`)
    t.equal((await replica(served, 'v', 'slow')).state, 'in-sync', 'slow stays in-sync')
    if (first === 'GET') await checkScrub('scrub after')
    else await checkGet('GET after')
    await checkGet('GET again')
    t.ok(same(readFileSync(slowPath), data), "slow's file is intact")

    const resync = await request(served, 'POST', '/volumes/v/replicas/fast/resync?full=true')
    t.equal(resync.status, 202, `fast resync accepted (${JSON.stringify(resync.body)})`)
    await eventually(async () => (await replica(served, 'v', 'fast')).state === 'in-sync', 'fast to be in-sync', 15_000)
    t.ok(same(readFileSync(fastPath), data), 'fast is byte-identical again')
    t.ok(same(readFileSync(slowPath), data), 'slow still intact')
    t.equal((await stop(served, 'SIGTERM')).code, 0)
  })
}

const damages = {
  truncate: (path: string) => truncateSync(path, 128 * KiB),
  delete: (path: string) => rmSync(path),
  swap: (path: string) => {
    writeFileSync(path + '.new', randomBytes(statSync(path).size))
    renameSync(path + '.new', path)
  },
}

// After a kill -9 too: the record must know the file's size as acknowledged writes left it, not as it was at the
// last open (a truncated sync file taken as the truth shrinks the volume, and write-behind then cuts slow to match).
for (const how of ['SIGTERM', 'SIGKILL'] as const) {
  for (const [damage, apply] of Object.entries(damages)) {
    t.test(`3b. the fast file ${damage === 'swap' ? 'swapped' : damage + 'd'} while the server is stopped (${how}): fast is failed (ECHANGED), never the truth; slow intact; full resync brings it back`, { skip }, async (t) => {
      const { dataDir, served, data, fastPath, slowPath } = await fastSlow(t)
      await stop(served, how)
      t.comment(`health record at the stop: ${JSON.stringify(JSON.parse(readFileSync(join(dataDir, '.filemirror/journals/v/health.json'), 'utf8')).replicas)}`)
      apply(fastPath)
      served.proc = await startServer(served.env)
      await whenReady(served.proc)

      const after = await status(served, 'v')
      t.comment(`after the start: ${JSON.stringify(after)}`)
      const fast = after.replicas.find((r) => r.id === 'fast')!
      t.match(fast, { state: 'failed', error: { code: 'ECHANGED' } }, 'fast is failed, ECHANGED')
      t.ok(fast.error && fast.error.message.length > 0, `with a clear error: ${fast.error?.message}`)
      t.equal(after.size, SIZE3, 'the volume keeps its size (fast was not taken as the truth)')
      t.ok(['degraded', 'read-only'].includes(after.state), `the volume is degraded or read-only (${after.state}${after.error ? `: ${after.error.message}` : ''})`)
      t.ok(
        warnings(served).some((w) => w.replica === 'fast' && /changed behind the server/.test(String(w.msg))),
        'a warning says the file changed behind the server',
      )
      t.ok(same(readFileSync(slowPath), data), `slow's file is unchanged (${statSync(slowPath).size} bytes of ${SIZE3})`)
      if (damage === 'delete') t.notOk(existsSync(fastPath), 'the deleted fast file is not recreated at start')

      const got = await read(served, 'v')
      if (got.status === 200) t.ok(same(got.bytes, data), 'reads return the right bytes (from slow)')
      else t.ok(got.status >= 500 || got.status === 409, `reads are refused with a problem (${got.status} ${got.bytes.toString().slice(0, 200)})`)
      t.comment(`GET after the start: ${got.status}`)
      if (damage === 'delete') t.notOk(existsSync(fastPath), 'the deleted fast file is not recreated by a read')
      t.ok(same(readFileSync(slowPath), data), "slow's file is still unchanged")

      const resync = await request(served, 'POST', '/volumes/v/replicas/fast/resync?full=true')
      t.equal(resync.status, 202, `fast resync accepted (${resync.status} ${JSON.stringify(resync.body)})`)
      await eventually(async () => (await replica(served, 'v', 'fast')).state === 'in-sync', 'fast to be in-sync', 15_000).catch(async (err) =>
        t.fail(`${(err as Error).message}: ${JSON.stringify(await status(served, 'v'))}`),
      )
      t.ok(existsSync(fastPath) && same(readFileSync(fastPath), data), 'fast is byte-identical again')
      t.ok(same(readFileSync(slowPath), data), 'slow still intact')
      t.equal((await status(served, 'v')).state, 'ok', 'the volume is ok again')
      t.equal((await stop(served, 'SIGTERM')).code, 0)
    })
  }
}

// ---------------------------------------------------------------------------------------------------------------
// 7. Outages clear themselves: the only sync replica hits ENOSPC; after space is freed, a resync brings it back.
// ---------------------------------------------------------------------------------------------------------------
t.test('7. the only sync replica hits ENOSPC: that write is refused, reads go on; freed and resynced, writes succeed again', { skip }, async (t) => {
  const dataDir = await scratch(t)
  const disk = join(dataDir, 'disk')
  if (!mountTmpfs(t, disk, '1m')) return
  const served = await serve(t, { DATA_DIR: dataDir, STORAGE_ROOTS: `${dataDir},${disk}` })
  const fastPath = join(disk, 'fast.img')
  const slowPath = join(dataDir, 'slow.img')
  const created = await request(served, 'PUT', '/volumes/v', {
    replicas: [
      { id: 'fast', path: fastPath },
      { id: 'slow', path: 'slow.img', mode: 'async', read: false },
    ],
  })
  t.equal(created.status, 201)
  const first = randomBytes(64 * KiB)
  t.equal((await write(served, 'v', 0, first, 10)).status, 200, 'the first write is on both')

  fill(disk)
  const refused = await write(served, 'v', 64 * KiB, randomBytes(64 * KiB))
  t.ok(refused.status >= 500 && refused.status < 600, `the write fast cannot take is refused (${refused.status})`)
  t.match(refused.type, /^application\/problem\+json/, 'as a problem')
  t.comment(`refused: ${JSON.stringify(refused.body)}`)
  t.match(await replica(served, 'v', 'fast'), { state: 'failed', error: { code: 'ENOSPC' } }, 'fast is failed, ENOSPC')
  t.comment(`status: ${JSON.stringify(await status(served, 'v'))}`)
  const reading = await read(served, 'v', 0, 64 * KiB)
  t.equal(reading.status, 206, 'reads still work (from slow)')
  t.ok(same(reading.bytes, first), 'with the right bytes')

  rmSync(join(disk, 'filler'))
  const resync = await request(served, 'POST', '/volumes/v/replicas/fast/resync')
  t.equal(resync.status, 202, `fast resync accepted (${resync.status} ${JSON.stringify(resync.body)})`)
  await eventually(async () => (await replica(served, 'v', 'fast')).state === 'in-sync', 'fast to be in-sync', 15_000).catch(async (err) =>
    t.fail(`${(err as Error).message}: ${JSON.stringify(await status(served, 'v'))}`),
  )
  const second = randomBytes(64 * KiB)
  const again = await write(served, 'v', 64 * KiB, second, 10)
  t.ok(again.status === 200 || again.status === 202, `writes succeed again (${again.status} ${again.status >= 300 ? JSON.stringify(again.body) : ''})`)
  const third = randomBytes(16 * KiB)
  const more = await write(served, 'v', 8 * KiB, third, 10)
  t.ok(more.status === 200 || more.status === 202, `and go on succeeding (${more.status})`)
  const expected = Buffer.concat([first, second])
  third.copy(expected, 8 * KiB)
  const back = await read(served, 'v', 0, 128 * KiB)
  t.equal(back.status, 206)
  t.ok(same(back.bytes, expected), 'reads return the new bytes')
  await eventually(async () => (await status(served, 'v')).replicas.every((r) => r.state === 'in-sync'), 'both in-sync', 15_000).catch(async (err) =>
    t.fail(`${(err as Error).message}: ${JSON.stringify(await status(served, 'v'))}`),
  )
  t.equal((await status(served, 'v')).state, 'ok', 'the volume is ok again')
  t.ok(same(readFileSync(fastPath).subarray(0, 128 * KiB), expected), 'fast holds them')
  t.ok(same(readFileSync(slowPath), expected), 'slow holds them')
  t.equal((await stop(served, 'SIGTERM')).code, 0)
})

// ---------------------------------------------------------------------------------------------------------------
// 8. A failed replica lets go of its file: its disk can be unmounted.
// ---------------------------------------------------------------------------------------------------------------
t.test('8. a replica failed by ENOSPC closes its file within a couple of seconds; its tmpfs can then be unmounted', { skip }, async (t) => {
  const dataDir = await scratch(t)
  const disk = join(dataDir, 'disk')
  if (!mountTmpfs(t, disk, '1m')) return
  const served = await serve(t, { DATA_DIR: dataDir, STORAGE_ROOTS: `${dataDir},${disk}` })
  const aPath = join(disk, 'a.img')
  t.equal((await request(served, 'PUT', '/volumes/v', { replicas: [{ id: 'a', path: aPath }, { id: 'b', path: 'b.img' }] })).status, 201)
  const first = randomBytes(64 * KiB)
  t.equal((await write(served, 'v', 0, first)).status, 200)
  const pid = served.proc.child.pid!
  const onDisk = () => openFiles(pid).filter((f) => f === disk || f.startsWith(disk + '/'))
  t.ok(onDisk().includes(aPath), `the server has a's file open while it is healthy (${onDisk().join(', ')})`)

  fill(disk)
  const put = await write(served, 'v', 64 * KiB, randomBytes(64 * KiB))
  t.equal(put.status, 200, 'b took the write')
  t.match(await replica(served, 'v', 'a'), { state: 'failed', error: { code: 'ENOSPC' } }, 'a is failed')
  const closed = await eventually(() => onDisk().length === 0, "a's file to be closed", 3_000).catch(() => false)
  t.ok(closed, `no descriptor of the server points into a's disk (${onDisk().join(', ') || 'none'})`)
  let unmountError = ''
  try {
    execFileSync('umount', [disk], { stdio: 'pipe' })
  } catch (err) {
    unmountError = String((err as { stderr?: Buffer }).stderr ?? err).trim()
  }
  t.equal(unmountError, '', "umount of a's tmpfs succeeds")
  t.notOk(mounted(disk), 'it is unmounted')
  const reading = await read(served, 'v', 0, 64 * KiB)
  t.equal(reading.status, 206, 'reads go on from b')
  t.ok(same(reading.bytes, first))
  t.equal((await stop(served, 'SIGTERM')).code, 0)
})

// ---------------------------------------------------------------------------------------------------------------
// 9. A damaged journal is never taken as "nothing to copy".
// ---------------------------------------------------------------------------------------------------------------
const SIZE9 = 1 << 20
const RATE9 = 256 * KiB

const journalDamages = {
  'cut to its header': (path: string) => truncateSync(path, 80),
  'without its last record': (path: string) => truncateSync(path, statSync(path).size - 24),
  "replaced by another volume's": (path: string, other: string) => copyFileSync(other, path),
}

for (const [damage, apply] of Object.entries(journalDamages)) {
  t.test(`9. the async replica's journal ${damage} after a clean stop: never in-sync while it differs, resynced whole, a warning names the journal`, { skip }, async (t) => {
    const dataDir = await scratch(t)
    const served = await serve(t, { DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: '0' })
    const fastPath = join(dataDir, 'v/fast.img')
    const slowPath = join(dataDir, 'v/slow.img')
    const replicas = (dir: string) => [
      { id: 'fast', path: `${dir}/fast.img` },
      { id: 'slow', path: `${dir}/slow.img`, mode: 'async', read: false, maxBytesPerSecond: RATE9 },
    ]
    t.equal((await request(served, 'PUT', '/volumes/v', { replicas: replicas('v') })).status, 201)
    // Another volume, its slow replica in-sync: its journal says "nothing dirty".
    t.equal((await request(served, 'PUT', '/volumes/w', { replicas: replicas('w') })).status, 201)
    t.equal((await write(served, 'w', 0, randomBytes(4 * KiB), 10)).status, 200, 'w written and in sync')

    // Old content everywhere, so that slow's file is full length: only the journal tells what it lacks.
    const old = randomBytes(SIZE9)
    t.equal((await write(served, 'v', 0, old, 15)).status, 200, 'the old content is on both')
    // New content over the first half: slow lacks only that half, and its journal says so.
    const fresh = randomBytes(SIZE9 / 2)
    const data = Buffer.concat([fresh, old.subarray(SIZE9 / 2)])
    t.equal((await write(served, 'v', 0, fresh)).status, 202, 'the new half is on fast, slow is behind')
    t.equal((await replica(served, 'v', 'slow')).dirtyBytes, SIZE9 / 2, 'slow lacks the new half')
    const exit = await stop(served, 'SIGTERM')
    t.equal(exit.code, 0, 'a clean stop')
    const stopped = /"dirty":\{[^]*?"v":\{[^}]*"slow":(\d+)/.exec(served.proc.output())
    const leftDirty = stopped ? Number(stopped[1]) : NaN
    t.equal(leftDirty, SIZE9 / 2, `the stop left slow's ${leftDirty} dirty bytes in its journal`)
    const journal = join(dataDir, '.filemirror/journals/v/slow.journal')
    const otherJournal = join(dataDir, '.filemirror/journals/w/slow.journal')
    t.ok(statSync(journal).size >= 80 + 24, `the journal holds records (${statSync(journal).size} bytes)`)
    t.notOk(same(readFileSync(slowPath), data), "slow's file differs from fast's")
    apply(journal, otherJournal)

    served.proc = await startServer(served.env)
    await whenReady(served.proc)
    const after = await replica(served, 'v', 'slow')
    t.comment(`after the start: ${JSON.stringify(after)}`)
    t.equal(after.state, 'resyncing', 'slow is resyncing, not in-sync')
    t.ok(after.dirtyBytes > leftDirty, `resynced whole: ${after.dirtyBytes} dirty bytes of ${SIZE9}, more than the ${leftDirty} the journal held`)
    const warned = warnings(served).filter((w) => w.volume === 'v' && w.replica === 'slow' && /journal/i.test(JSON.stringify(w)))
    t.ok(warned.length > 0, `a warning names slow's journal: ${JSON.stringify(warned)}`)
    t.comment(`warnings: ${JSON.stringify(warnings(served))}`)

    // Whenever slow says in-sync, it holds the new content.
    let lied = ''
    const converged = await eventually(
      async () => {
        const slow = await replica(served, 'v', 'slow')
        if (slow.state !== 'in-sync') return false
        if (!same(readFileSync(slowPath), data)) lied ||= `in-sync while its file differs (${JSON.stringify(slow)})`
        return true
      },
      'slow to be in-sync',
      30_000,
      20,
    ).catch((err) => (t.fail((err as Error).message), false))
    t.equal(lied, '', 'slow never reported in-sync while it differed')
    if (converged) t.ok(same(readFileSync(slowPath), data), 'slow is byte-identical to what was written')
    t.ok(same(readFileSync(fastPath), data), 'fast holds what was written')
    t.equal((await stop(served, 'SIGTERM')).code, 0)
  })
}
