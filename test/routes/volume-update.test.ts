// Trust II, "live updates", against the app: PUT /volumes/{name} on an existing volume applies durability,
// labels, rates, modes and roles in place (200, persisted); what cannot be applied in place is a 409 saying how.
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import { openLocalFile, type ReplicaFile, type ReplicaFileOpener } from '../../src/engine/replica-file.js'
import { assertProblem, closeOnce, createVolume, getData, json, makeApp, putData, waitInSync, type ReplicaInput } from '../helpers/app.js'
import { pattern } from '../helpers/pattern.js'

const KiB = 1024
const MiB = 1024 * KiB

/** Writes `bytes` at offset 0 as a ranged write (Content-Range), so the volume's other bytes stay. */
function writeAt(app: Parameters<typeof putData>[0], name: string, bytes: Buffer, headers: Record<string, string> = {}) {
  return putData(app, name, bytes, { 'content-range': `bytes 0-${bytes.length - 1}/*`, ...headers })
}

type App = Awaited<ReturnType<typeof makeApp>>['app']

async function status(app: App, name: string): Promise<any> {
  return json(await app.inject({ method: 'GET', url: `/volumes/${name}` }))
}

function put(app: App, name: string, body: unknown, query = '') {
  return app.inject({ method: 'PUT', url: `/volumes/${name}${query}`, payload: body as object })
}

function logLines(): { stream: Writable; lines: Array<Record<string, any>> } {
  const lines: Array<Record<string, any>> = []
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line.trim()) lines.push(JSON.parse(line))
      done()
    },
  })
  return { stream, lines }
}

t.test('PUT /volumes/{name} applies durability, labels and maxBytesPerSecond in place: 200 with the status, persisted across a restart', async (t) => {
  const first = await makeApp(t)
  const replicas: ReplicaInput[] = [
    { id: 'fast', path: 'fast/v.bin' },
    { id: 'slow', path: 'slow/v.bin', mode: 'async', maxBytesPerSecond: 1_000_000 },
  ]
  await createVolume(t, first.app, 'v', replicas)
  const data = pattern(100 * KiB, 1)
  t.equal((await writeAt(first.app, 'v', data, { prefer: 'wait=10' })).statusCode, 200)

  const next = {
    durability: 'fsync',
    replicas: [
      { id: 'fast', path: 'fast/v.bin', label: { tier: 'nvme' } },
      { id: 'slow', path: 'slow/v.bin', mode: 'async', maxBytesPerSecond: 2_000_000, label: 'archive' },
    ],
  }
  const res = await put(first.app, 'v', next)
  t.equal(res.statusCode, 200, 'an update is a 200')
  t.equal(res.headers.location, '/volumes/v', 'with Location')
  const updated = json(res)
  t.equal(updated.durability, 'fsync', 'durability changed')
  t.same(updated.replicas.map((r: any) => [r.id, r.label, r.maxBytesPerSecond]), [['fast', { tier: 'nvme' }, null], ['slow', 'archive', 2_000_000]], 'labels and rate changed')
  t.equal(updated.size, data.length, 'the data is untouched')
  t.same(json(await put(first.app, 'v', next)).replicas, updated.replicas, 'the same update again changes nothing (200)')
  const config = JSON.parse(await readFile(join(first.dataDir, '.filemirror/volumes/v.json'), 'utf8'))
  t.match(config, { durability: 'fsync', replicas: [{ id: 'fast', label: { tier: 'nvme' } }, { id: 'slow', label: 'archive', maxBytesPerSecond: 2_000_000 }] }, 'the new configuration is persisted')

  await closeOnce(first.app)
  const second = await makeApp(t, { DATA_DIR: first.dataDir })
  const reopened = await status(second.app, 'v')
  t.equal(reopened.durability, 'fsync', 'after a restart: durability')
  t.same(reopened.replicas.map((r: any) => [r.id, r.label, r.maxBytesPerSecond]), [['fast', { tier: 'nvme' }, null], ['slow', 'archive', 2_000_000]], 'after a restart: labels and rate')
  t.ok((await getData(second.app, 'v')).rawPayload.equals(data), 'and the bytes')
})

t.test('lifting maxBytesPerSecond takes effect at once: a pause taken at 16 KiB/s ends, and 1 MiB is copied in moments rather than a minute', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const replicas: ReplicaInput[] = [
    { id: 'fast', path: 'fast/v.bin' },
    { id: 'slow', path: 'slow/v.bin', mode: 'async', maxBytesPerSecond: 16 * KiB },
  ]
  await createVolume(t, app, 'v', replicas)
  const data = pattern(MiB, 2)
  t.equal((await writeAt(app, 'v', data)).statusCode, 202)
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.ok((await status(app, 'v')).replicas[1].dirtyBytes > 0, 'slow is behind, paused by its throttle')
  const res = await put(app, 'v', { replicas: [replicas[0], { ...replicas[1], maxBytesPerSecond: null }] })
  t.equal(res.statusCode, 200)
  t.equal(json(res).replicas[1].maxBytesPerSecond, null, 'unthrottled')
  const started = performance.now()
  await waitInSync(app, 'v', 5_000)
  t.ok(performance.now() - started < 5_000, `in sync ${Math.round(performance.now() - started)} ms after the update (at 16 KiB/s it would take a minute)`)
  t.ok((await readFile(join(dataDir, 'slow/v.bin'))).equals(data), 'slow holds the bytes')
})

t.test('durability in place: from fsync on, sync replicas and write-behind fdatasync; back to os, they stop', async (t) => {
  const syncs = new Map<string, number>()
  const openFile: ReplicaFileOpener = async (...args: Parameters<ReplicaFileOpener>) => {
    const file = await openLocalFile(...args)
    const name = basename(file.path)
    const counted: ReplicaFile = {
      path: file.path,
      read: (buffer, offset) => file.read(buffer, offset),
      write: (buffer, offset) => file.write(buffer, offset),
      size: () => file.size(),
      truncate: (size) => file.truncate(size),
      sync: () => (syncs.set(name, (syncs.get(name) ?? 0) + 1), file.sync()),
      close: () => file.close(),
    }
    return counted
  }
  const { app } = await makeApp(t, {}, { openFile })
  const replicas: ReplicaInput[] = [
    { id: 'fast', path: 'fast.bin' },
    { id: 'slow', path: 'slow.bin', mode: 'async' },
  ]
  await createVolume(t, app, 'v', replicas)
  const count = () => ({ fast: syncs.get('fast.bin') ?? 0, slow: syncs.get('slow.bin') ?? 0 })
  t.equal((await writeAt(app, 'v', pattern(64 * KiB, 3), { prefer: 'wait=10' })).statusCode, 200)
  t.same(count(), { fast: 0, slow: 0 }, 'durability os: no fdatasync')

  t.equal((await put(app, 'v', { durability: 'fsync', replicas })).statusCode, 200)
  t.equal((await writeAt(app, 'v', pattern(64 * KiB, 4), { prefer: 'wait=10' })).statusCode, 200)
  const afterFsync = count()
  t.ok(afterFsync.fast > 0, `fsync: the sync replica is synced before the reply (${afterFsync.fast})`)
  t.ok(afterFsync.slow > 0, `fsync: write-behind syncs each copy (${afterFsync.slow})`)

  t.equal((await put(app, 'v', { durability: 'os', replicas })).statusCode, 200)
  t.equal((await writeAt(app, 'v', pattern(64 * KiB, 5), { prefer: 'wait=10' })).statusCode, 200)
  t.same(count(), afterFsync, 'back to os: no more fdatasync')
})

t.test('mode in place: async → sync makes writes wait for the replica, sync → async hands it to write-behind', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const fast = { id: 'fast', path: 'fast/v.bin' }
  const slow = { id: 'slow', path: 'slow/v.bin', mode: 'async' as const, maxBytesPerSecond: 64 * KiB }
  await createVolume(t, app, 'v', [fast, slow])
  const first = pattern(512 * KiB, 6)
  const async = json(await writeAt(app, 'v', first))
  t.match(async.operations.find((o: any) => o.replica === 'slow'), { mode: 'async', status: 'started' }, 'async: slow is written behind')

  // A sync replica still behind takes writes through write-behind until it is in sync: lift the rate first.
  const synced = await put(app, 'v', { replicas: [fast, { ...slow, mode: 'sync', maxBytesPerSecond: null }] })
  t.equal(synced.statusCode, 200)
  t.equal(json(synced).replicas[1].mode, 'sync')
  await waitInSync(app, 'v')
  const second = pattern(256 * KiB, 7)
  const direct = await writeAt(app, 'v', second)
  t.equal(direct.statusCode, 200, 'sync: the write is done on both replicas by its reply')
  t.match(json(direct).operations.find((o: any) => o.replica === 'slow'), { mode: 'sync', status: 'done', bytes: second.length })
  t.ok((await readFile(join(dataDir, 'slow/v.bin'))).subarray(0, second.length).equals(second), 'slow holds it')

  t.equal((await put(app, 'v', { replicas: [fast, slow] })).statusCode, 200, 'and back to async at 64 KiB/s')
  const third = json(await writeAt(app, 'v', pattern(512 * KiB, 8)))
  t.match(third.operations.find((o: any) => o.replica === 'slow'), { mode: 'async', status: 'started' }, 'async again')
})

t.test('a mode change waits for the writes in flight (a write plans its replicas when it begins)', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const replicas: ReplicaInput[] = [
    { id: 'a', path: 'a.bin' },
    { id: 'b', path: 'b.bin', mode: 'async' },
  ]
  await createVolume(t, app, 'v', replicas)
  const body = new PassThrough()
  const data = pattern(3 * 64 * KiB, 9)
  const headers = { 'content-type': 'application/octet-stream', 'content-length': String(data.length), 'content-range': `bytes 0-${data.length - 1}/*` }
  const writing = app.inject({ method: 'PUT', url: '/volumes/v/data', headers, payload: body })
  body.write(data.subarray(0, 64 * KiB))
  await new Promise((resolve) => setTimeout(resolve, 100))
  let updated = false
  const updating = put(app, 'v', { replicas: [replicas[0], { ...replicas[1], mode: 'sync' }] }).then((res) => ((updated = true), res))
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.notOk(updated, 'the update waits while a write is in flight')
  body.end(data.subarray(64 * KiB))
  const [written, update] = await Promise.all([writing, updating])
  t.ok(written.statusCode === 200 || written.statusCode === 202, `the write completes (${written.statusCode})`)
  t.equal(update.statusCode, 200, 'then the update applies')
  t.equal(json(update).replicas[1].mode, 'sync')
  await waitInSync(app, 'v')
  t.ok((await readFile(join(dataDir, 'b.bin'))).equals(data), 'b holds the write made across the change')
})

t.test('roles in place: a change leaving no reading replica holding every acknowledged byte is a 409 unless force=true (logged at warn)', async (t) => {
  const log = logLines()
  const { app } = await makeApp(t, { LOG_LEVEL: 'warn' }, { logStream: log.stream })
  const fast = { id: 'fast', path: 'fast/v.bin' }
  const slow = { id: 'slow', path: 'slow/v.bin', mode: 'async' as const, maxBytesPerSecond: 64 * KiB }
  await createVolume(t, app, 'v', [fast, slow])
  const data = pattern(MiB, 10)
  t.equal((await writeAt(app, 'v', data)).statusCode, 202)

  for (const [what, change] of [
    ['read: false', { ...fast, read: false }],
    ['write: false', { ...fast, write: false }],
  ] as const) {
    const refused = await put(app, 'v', { replicas: [change, slow] })
    const problem = assertProblem(t, refused, 409, `fast ${what} while slow lacks bytes`)
    t.match(problem.detail, /no reading replica holding every acknowledged byte/, `${what}: the detail says why`)
    t.match(problem.detail, /slow is behind and lacks \d+ bytes/, `${what}: it names what slow lacks`)
    t.match(problem.detail, /force=true/, `${what}: and how to force it`)
  }
  t.same((await status(app, 'v')).replicas.map((r: any) => [r.id, r.read, r.write]), [['fast', true, true], ['slow', true, true]], 'nothing changed')
  assertProblem(t, await put(app, 'v', { replicas: [fast, slow] }, '?force=perhaps'), 400, 'force must be true or false')

  const forced = await put(app, 'v', { replicas: [{ ...fast, read: false }, slow] }, '?force=true')
  t.equal(forced.statusCode, 200, 'force=true applies it')
  t.same(json(forced).replicas.map((r: any) => [r.id, r.read]), [['fast', false], ['slow', true]])
  t.equal(log.lines.filter((l) => l.level === 40 && /roles changed with force/.test(l.msg)).length, 1, 'logged at warn')

  // A role change that keeps a reading replica holding everything needs no force.
  t.equal((await put(app, 'v', { replicas: [fast, { ...slow, read: false }] })).statusCode, 200, 'slow read: false while fast reads again and holds everything')
})

t.test('write: false → true in place: the replica missed every write meanwhile and is refilled whole', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const a = { id: 'a', path: 'a.bin' }
  const b = { id: 'b', path: 'b.bin', write: false, maxBytesPerSecond: 64 * KiB }
  await createVolume(t, app, 'v', [a, b])
  const data = pattern(700 * KiB, 11)
  t.equal((await writeAt(app, 'v', data)).statusCode, 200)
  t.equal((await readFile(join(dataDir, 'b.bin'))).length, 0, 'b takes no writes')
  const res = await put(app, 'v', { replicas: [a, { ...b, write: true }] })
  t.equal(res.statusCode, 200)
  t.match(json(res).replicas[1], { id: 'b', write: true, state: 'resyncing' }, 'b is refilled')
  t.ok(json(res).replicas[1].dirtyBytes > 0, 'b lacks what was written while it took no writes')
  t.equal((await put(app, 'v', { replicas: [a, { ...b, write: true, maxBytesPerSecond: null }] })).statusCode, 200, 'unthrottled, to be quick')
  await waitInSync(app, 'v')
  t.ok((await readFile(join(dataDir, 'b.bin'))).equals(data), 'b holds the bytes written while it took none')
  const more = pattern(10 * KiB, 12)
  t.equal((await putData(app, 'v', more, { 'content-range': `bytes 0-${more.length - 1}/*` })).statusCode, 200)
  t.ok((await readFile(join(dataDir, 'b.bin'))).subarray(0, more.length).equals(more), 'and takes new writes')
})

t.test('what cannot change in place is a 409 saying how, and changes nothing', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const a = { id: 'a', path: 'a.bin' }
  const b = { id: 'b', path: 'b.bin', mode: 'async' as const }
  await createVolume(t, app, 'v', [a, b])
  const before = await readFile(join(dataDir, '.filemirror/volumes/v.json'), 'utf8')
  const cases: Array<[string, unknown, RegExp[]]> = [
    ['a new path', { replicas: [a, { ...b, path: 'elsewhere.bin' }] }, [/path cannot change in place/, /DELETE \/volumes\/v\/replicas\/b/, /PUT \/volumes\/v\/replicas\/b/]],
    ['a new replica', { replicas: [a, b, { id: 'c', path: 'c.bin' }] }, [/add c with PUT \/volumes\/v\/replicas\/c/]],
    ['a replica left out', { replicas: [a] }, [/remove b with DELETE \/volumes\/v\/replicas\/b/]],
    ['another order', { replicas: [b, a] }, [/order/, /a, b/]],
  ]
  for (const [what, body, details] of cases) {
    const problem = assertProblem(t, await put(app, 'v', body), 409, what)
    for (const detail of details) t.match(problem.detail, detail, `${what}: ${detail}`)
  }
  t.same((await status(app, 'v')).replicas.map((r: any) => [r.id, r.path]), [['a', 'a.bin'], ['b', 'b.bin']], 'the volume is unchanged')
  t.equal(await readFile(join(dataDir, '.filemirror/volumes/v.json'), 'utf8'), before, 'and so is its configuration on disk')
})
