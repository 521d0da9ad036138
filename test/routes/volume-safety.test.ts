// Trust I, "nothing destroyed silently", against the app: a replica is not removed, a volume not deleted, a
// file not overwritten while that would lose acknowledged bytes, unless the request says so (force=true,
// overwrite=true, "source"); and a DELETE never removes the journals of a volume created again under its name.
import t from 'tap'
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { Writable } from 'node:stream'
import { assertProblem, closeOnce, createVolume, exists, getData, json, makeApp, putData, waitInSync } from '../helpers/app.js'
import { pattern } from '../helpers/pattern.js'

const KiB = 1024
const MiB = 1024 * KiB

/** Writes `bytes` at offset 0 as a ranged write (Content-Range), so the volume's other bytes stay. */
function writeAt(app: Parameters<typeof putData>[0], name: string, bytes: Buffer, headers: Record<string, string> = {}) {
  return putData(app, name, bytes, { 'content-range': `bytes 0-${bytes.length - 1}/*`, ...headers })
}

/** The app's log lines (pino JSON), for the warnings a forced request must leave. */
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

const warnings = (lines: Array<Record<string, any>>, pattern: RegExp) => lines.filter((l) => l.level === 40 && pattern.test(l.msg))

async function status(app: Awaited<ReturnType<typeof makeApp>>['app'], name: string): Promise<any> {
  return json(await app.inject({ method: 'GET', url: `/volumes/${name}` }))
}

async function writeFileAt(dataDir: string, path: string, bytes: Buffer): Promise<void> {
  await mkdir(dirname(join(dataDir, path)), { recursive: true })
  await writeFile(join(dataDir, path), bytes)
}

// ------------------------------------------------------------------ removing a replica

t.test('DELETE /volumes/{name}/replicas/{id}: the only replica holding 1 MiB the async one still lacks is kept (409), nothing is lost across a restart; force=true removes it, logged at warn', async (t) => {
  const log = logLines()
  const first = await makeApp(t, { LOG_LEVEL: 'warn' }, { logStream: log.stream })
  const { app } = first
  // The reproduction: 64 KiB/s leaves the async replica a quarter of a minute behind a 1 MiB write.
  await createVolume(t, app, 'v', [
    { id: 'fast', path: 'fast/v.bin' },
    { id: 'slow', path: 'slow/v.bin', mode: 'async', maxBytesPerSecond: 64 * KiB },
  ])
  const data = pattern(MiB, 1)
  t.equal((await writeAt(app, 'v', data)).statusCode, 202, 'the write is acknowledged with the async replica behind')
  t.match((await status(app, 'v')).replicas[1], { id: 'slow', state: 'behind' }, 'slow lacks the write')

  const refused = await app.inject({ method: 'DELETE', url: '/volumes/v/replicas/fast' })
  const problem = assertProblem(t, refused, 409, 'removing the only replica holding every acknowledged byte')
  t.match(problem.detail, /no reading replica holding every acknowledged byte/, 'the detail says why')
  t.match(problem.detail, /slow is behind and lacks \d+ bytes/, 'it names the replica that lacks bytes')
  t.match(problem.detail, /wait until slow is in-sync/, 'it says to wait for in-sync')
  t.match(problem.detail, /\?force=true/, 'or to force it')
  t.same((await status(app, 'v')).replicas.map((r: any) => r.id), ['fast', 'slow'], 'both replicas are still there')
  t.ok((await getData(app, 'v')).rawPayload.equals(data), 'reads still serve the write')
  const config = JSON.parse(await readFile(join(first.dataDir, '.filemirror/volumes/v.json'), 'utf8'))
  t.same(config.replicas.map((r: any) => r.id), ['fast', 'slow'], 'the persisted configuration still has both')

  assertProblem(t, await app.inject({ method: 'DELETE', url: '/volumes/v/replicas/fast?force=maybe' }), 400, 'force must be true or false')
  assertProblem(t, await app.inject({ method: 'DELETE', url: '/volumes/v/replicas/fast?bogus=1' }), 400, 'an unknown query parameter')

  // A restart (write-behind not drained: SHUTDOWN_GRACE_MS=0) loses nothing: fast is still the truth.
  await closeOnce(app)
  const second = await makeApp(t, { DATA_DIR: first.dataDir, LOG_LEVEL: 'warn' }, { logStream: log.stream })
  const reopened = await status(second.app, 'v')
  t.equal(reopened.size, data.length, 'after a restart the volume still has its 1 MiB')
  t.ok((await getData(second.app, 'v')).rawPayload.equals(data), 'and serves it')
  t.match(reopened.replicas[1], { id: 'slow', state: 'resyncing' }, 'slow resumes its backlog from the journal')

  // Removing the lagging replica itself loses nothing: fast holds everything.
  const forced = await second.app.inject({ method: 'DELETE', url: '/volumes/v/replicas/fast?force=true' })
  t.equal(forced.statusCode, 204, 'force=true removes it anyway')
  t.same((await status(second.app, 'v')).replicas.map((r: any) => r.id), ['slow'], 'only slow is left')
  const warned = warnings(log.lines, /removed with force=true/)
  t.equal(warned.length, 1, 'the forced removal is logged at warn')
  t.match(warned[0], { volume: 'v', replica: 'fast', replicas: /slow is resyncing and lacks \d+ bytes/ }, 'naming the volume, the replica and what the others lack')
})

t.test('DELETE /volumes/{name}/replicas/{id}: allowed once another reading replica is in-sync, and always for a replica that lags', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [
    { id: 'fast', path: 'fast/v.bin' },
    { id: 'slow', path: 'slow/v.bin', mode: 'async', maxBytesPerSecond: 64 * KiB },
    { id: 'copy', path: 'copy/v.bin', mode: 'async' },
  ])
  const data = pattern(MiB, 2)
  t.equal((await writeAt(app, 'v', data)).statusCode, 202)
  t.equal((await app.inject({ method: 'DELETE', url: '/volumes/v/replicas/slow' })).statusCode, 204, 'removing the replica that lags: fast still holds everything')
  await waitInSync(app, 'v')
  t.equal((await app.inject({ method: 'DELETE', url: '/volumes/v/replicas/fast' })).statusCode, 204, 'removing fast once copy (async, in-sync) holds everything')
  t.ok((await getData(app, 'v')).rawPayload.equals(data), 'copy serves the bytes')
  assertProblem(t, await app.inject({ method: 'DELETE', url: '/volumes/v/replicas/copy' }), 409, 'the last replica is still refused')
})

// ------------------------------------------------------------------ deleting a volume

t.test('DELETE /volumes/{name}: waits up to the grace for write-behind, then 409 naming the dirty replicas with nothing dropped; force=true forgets it, 200 naming what they lacked', async (t) => {
  const log = logLines()
  const first = await makeApp(t, { SHUTDOWN_GRACE_MS: '300', LOG_LEVEL: 'warn' }, { logStream: log.stream })
  const { app, dataDir } = first
  await createVolume(t, app, 'v', [
    { id: 'fast', path: 'fast/v.bin' },
    { id: 'slow', path: 'slow/v.bin', mode: 'async', maxBytesPerSecond: 64 * KiB },
  ])
  const data = pattern(MiB, 3)
  t.equal((await writeAt(app, 'v', data)).statusCode, 202)

  const started = performance.now()
  const refused = await app.inject({ method: 'DELETE', url: '/volumes/v' })
  const waited = performance.now() - started
  const problem = assertProblem(t, refused, 409, 'a plain DELETE while slow still lacks bytes')
  t.ok(waited >= 250, `it waited for the grace first (${Math.round(waited)} ms of 300)`)
  t.match(problem.detail, /slow lacks \d+ bytes \(behind\)/, 'the detail names the dirty replica and its bytes')
  t.match(problem.detail, /nothing was deleted/, 'and says nothing was dropped')
  t.match(problem.detail, /force=true/, 'and how to force it')
  t.equal(problem.dirty.fast, 0, 'the problem lists fast: nothing dirty')
  t.ok(problem.dirty.slow > 0, `and slow's dirty bytes (${problem.dirty.slow})`)
  t.equal(problem.dirtyBytes, problem.dirty.slow, 'and their sum')

  t.equal((await app.inject({ method: 'GET', url: '/volumes/v' })).statusCode, 200, 'the volume is still open')
  t.ok(await exists(join(dataDir, '.filemirror/volumes/v.json')), 'still configured')
  t.ok(await exists(join(dataDir, '.filemirror/journals/v/slow.journal')), "slow's journal is kept")
  t.equal((await putData(app, 'v', data.subarray(0, 100), { 'content-range': 'bytes 0-99/*' })).statusCode, 202, 'and still takes writes')

  const forced = await app.inject({ method: 'DELETE', url: '/volumes/v?force=true' })
  t.equal(forced.statusCode, 200, 'force=true forgets it: 200')
  t.match(String(forced.headers['content-type']), /^application\/json/)
  const body = json(forced)
  t.equal(body.name, 'v')
  t.equal(body.dirty.fast, 0, 'the reply says fast lacked nothing')
  t.ok(body.dirty.slow > 0, `and what slow lacked (${body.dirty.slow} bytes)`)
  t.equal(body.dirtyBytes, body.dirty.slow, 'and the sum')
  assertProblem(t, await app.inject({ method: 'GET', url: '/volumes/v' }), 404, 'the volume is gone')
  t.notOk(await exists(join(dataDir, '.filemirror/volumes/v.json')), 'its configuration is removed')
  t.notOk(await exists(join(dataDir, '.filemirror/journals/v')), 'and its journals')
  t.ok((await readFile(join(dataDir, 'fast/v.bin'))).subarray(100).equals(data.subarray(100)), 'the replica files are kept')
  const warned = warnings(log.lines, /deleted with force=true/)
  t.equal(warned.length, 1, 'the forced delete is logged at warn')
  t.match(warned[0], { volume: 'v', dirty: { slow: body.dirty.slow }, dirtyBytes: body.dirtyBytes })

  assertProblem(t, await app.inject({ method: 'DELETE', url: '/volumes/v?force=true' }), 404, 'DELETE again')
  await createVolume(t, app, 'w', [{ id: 'a', path: 'w/a.bin' }])
  assertProblem(t, await app.inject({ method: 'DELETE', url: '/volumes/w?force=yes' }), 400, 'force must be true or false')
  const clean = await app.inject({ method: 'DELETE', url: '/volumes/w?force=true' })
  t.equal(clean.statusCode, 200, 'force=true on a clean volume is a 200 too')
  t.same(json(clean), { name: 'w', dirtyBytes: 0, dirty: { a: 0 } }, 'saying nothing was lacking')
})

t.test('DELETE /volumes/{name}: a replica catching up within the grace is waited for (204), and the files hold every byte', async (t) => {
  const { app, dataDir } = await makeApp(t, { SHUTDOWN_GRACE_MS: '20000' })
  await createVolume(t, app, 'v', [
    { id: 'fast', path: 'fast/v.bin' },
    { id: 'slow', path: 'slow/v.bin', mode: 'async', maxBytesPerSecond: 2 * MiB },
  ])
  const data = pattern(5 * MiB, 4)
  t.equal((await writeAt(app, 'v', data)).statusCode, 202)
  t.ok((await status(app, 'v')).replicas[1].dirtyBytes > 0, 'slow is behind when the DELETE comes')
  const started = performance.now()
  const res = await app.inject({ method: 'DELETE', url: '/volumes/v' })
  t.equal(res.statusCode, 204, `deleted once slow caught up (${Math.round(performance.now() - started)} ms)`)
  t.ok((await readFile(join(dataDir, 'slow/v.bin'))).equals(data), 'slow holds every byte')
  t.notOk(await exists(join(dataDir, '.filemirror/journals/v')), 'the journals are gone')
})

t.test('a DELETE never removes the journals of a volume created again under the same name meanwhile', async (t) => {
  const first = await makeApp(t, { SHUTDOWN_GRACE_MS: '20000' })
  const { app, dataDir } = first
  await createVolume(t, app, 'v', [
    { id: 'a', path: 'old/a.bin' },
    { id: 'b', path: 'old/b.bin', mode: 'async', maxBytesPerSecond: 4 * MiB },
  ])
  t.equal((await writeAt(app, 'v', pattern(8 * MiB, 5))).statusCode, 202)
  // The DELETE waits for b; the PUT of the same name comes while it does.
  const order: string[] = []
  const deleting = app.inject({ method: 'DELETE', url: '/volumes/v' }).then((res) => (order.push('delete'), res))
  await new Promise((resolve) => setTimeout(resolve, 50))
  const replicas = [
    { id: 'a', path: 'new/a.bin' },
    { id: 'c', path: 'new/c.bin', mode: 'async' as const },
  ]
  const creating = app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas } }).then((res) => (order.push('create'), res))
  const [deleted, created] = await Promise.all([deleting, creating])
  t.equal(deleted.statusCode, 204, 'the DELETE ends once write-behind is done')
  t.equal(created.statusCode, 201, 'the PUT creates the new volume')
  t.same(order, ['delete', 'create'], 'the creation waited for the deletion')
  t.same((json(created).replicas as any[]).map((r) => r.path), ['new/a.bin', 'new/c.bin'], 'the new volume is the new configuration')

  const journals = await readdir(join(dataDir, '.filemirror/journals/v'))
  t.ok(journals.includes('a.journal') && journals.includes('c.journal'), `the new volume's journals are there (${journals.join(', ')})`)
  const data = pattern(300 * KiB, 6)
  t.equal((await writeAt(app, 'v', data, { prefer: 'wait=10' })).statusCode, 200)

  await closeOnce(app)
  const second = await makeApp(t, { DATA_DIR: dataDir })
  const reopened = await status(second.app, 'v')
  t.equal(reopened.state, 'ok', 'after a restart the new volume opens ok')
  t.same(reopened.replicas.map((r: any) => [r.id, r.state]), [['a', 'in-sync'], ['c', 'in-sync']], 'its replicas in sync, as their journals say')
  t.ok((await getData(second.app, 'v')).rawPayload.equals(data), 'with its bytes')
})

// ------------------------------------------------------------------ creating over files that hold data

t.test('PUT /volumes/{name} over an async file holding 40 bytes and a new empty sync file: the bytes are the truth', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const bytes = Buffer.from('forty bytes of data that must survive!!\n')
  t.equal(bytes.length, 40)
  await writeFileAt(dataDir, 'slow/v.bin', bytes)
  const created = await createVolume(t, app, 'v', [
    { id: 'fast', path: 'fast/v.bin' },
    { id: 'slow', path: 'slow/v.bin', mode: 'async' },
  ])
  t.equal(created.size, 40, "the volume's size is the async file's")
  await waitInSync(app, 'v')
  t.ok((await readFile(join(dataDir, 'slow/v.bin'))).equals(bytes), 'the async file keeps its 40 bytes')
  t.ok((await readFile(join(dataDir, 'fast/v.bin'))).equals(bytes), 'the new sync file is filled from it')
  t.ok((await getData(app, 'v')).rawPayload.equals(bytes), 'reads serve them')
})

t.test('PUT /volumes/{name} over files holding different bytes: 409 naming them, nothing touched; "source" names the truth', async (t) => {
  const log = logLines()
  const { app, dataDir } = await makeApp(t, { LOG_LEVEL: 'warn' }, { logStream: log.stream })
  const a = pattern(3 * MiB + 17, 7)
  const b = pattern(200 * KiB, 8)
  await writeFileAt(dataDir, 'a.bin', a)
  await writeFileAt(dataDir, 'b.bin', b)
  const replicas = [
    { id: 'a', path: 'a.bin' },
    { id: 'b', path: 'b.bin' },
    { id: 'c', path: 'c.bin', mode: 'async' as const },
  ]
  const refused = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas } })
  const problem = assertProblem(t, refused, 409, 'two files holding different data')
  t.match(problem.detail, /a \(a\.bin, 3145745 bytes\)/, 'the detail names the first file and its size')
  t.match(problem.detail, /b \(b\.bin, 204800 bytes\)/, 'and the second')
  t.match(problem.detail, /"source"/, 'and says how to name the truth')
  t.ok((await readFile(join(dataDir, 'a.bin'))).equals(a), 'a is untouched')
  t.ok((await readFile(join(dataDir, 'b.bin'))).equals(b), 'b is untouched')
  t.notOk(await exists(join(dataDir, 'c.bin')), 'c is not created')
  t.notOk(await exists(join(dataDir, '.filemirror/volumes/v.json')), 'no configuration is written')

  assertProblem(t, await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas, source: 'nope' } }), 400, 'a source that names no replica')
  const readOnly = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas: [...replicas.slice(0, 2), { id: 'c', path: 'c.bin', write: false }], source: 'c' } })
  assertProblem(t, readOnly, 400, 'a source that takes no writes')

  const created = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas, source: 'b' } })
  t.equal(created.statusCode, 201, 'with "source": "b" the volume is created')
  t.equal(json(created).size, b.length, "b's size is the volume's")
  await waitInSync(app, 'v')
  for (const file of ['a.bin', 'b.bin', 'c.bin']) t.ok((await readFile(join(dataDir, file))).equals(b), `${file} holds b's bytes`)
  t.equal(warnings(log.lines, /created with source b/).length, 1, 'overwriting a file is logged at warn')
  const config = JSON.parse(await readFile(join(dataDir, '.filemirror/volumes/v.json'), 'utf8'))
  t.notOk('source' in config, 'source is not persisted')
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas, source: 'b' } })).statusCode, 200, 'the same PUT again (a retry) is a 200')
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas } })).statusCode, 200, 'and so is the configuration without source')
})

t.test('PUT /volumes/{name} over files holding the very same bytes (compared chunk by chunk) takes them; one byte apart past the first MiB is a 409', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const bytes = pattern(2 * MiB + 12_345, 9)
  await writeFileAt(dataDir, 'same/a.bin', bytes)
  await writeFileAt(dataDir, 'same/b.bin', bytes)
  const v = await createVolume(t, app, 'same', [{ id: 'a', path: 'same/a.bin' }, { id: 'b', path: 'same/b.bin', mode: 'async' }, { id: 'c', path: 'same/c.bin' }])
  t.equal(v.size, bytes.length, 'identical files: created with their size')
  await waitInSync(app, 'same')
  t.ok((await readFile(join(dataDir, 'same/c.bin'))).equals(bytes), 'the empty one is filled')

  const other = Buffer.from(bytes)
  other[other.length - 3] ^= 1
  await writeFileAt(dataDir, 'apart/a.bin', bytes)
  await writeFileAt(dataDir, 'apart/b.bin', other)
  const refused = await app.inject({ method: 'PUT', url: '/volumes/apart', payload: { replicas: [{ id: 'a', path: 'apart/a.bin' }, { id: 'b', path: 'apart/b.bin' }] } })
  assertProblem(t, refused, 409, 'files of one size differing in one byte near the end')
  t.ok((await readFile(join(dataDir, 'apart/b.bin'))).equals(other), 'nothing is overwritten')

  await writeFileAt(dataDir, 'frozen/r.bin', bytes)
  const frozen = await app.inject({ method: 'PUT', url: '/volumes/frozen', payload: { replicas: [{ id: 'w', path: 'frozen/w.bin' }, { id: 'r', path: 'frozen/r.bin', write: false }] } })
  t.match(assertProblem(t, frozen, 409, 'the only data is on a replica that takes no writes').detail, /write: false/)
  t.ok((await readFile(join(dataDir, 'frozen/r.bin'))).equals(bytes), 'and it is kept')
})

// ------------------------------------------------------------------ adding a replica over a file

t.test('PUT /volumes/{name}/replicas/{id} over a file: empty or the same bytes are taken; other bytes are a 409 unless overwrite=true', async (t) => {
  const log = logLines()
  const { app, dataDir } = await makeApp(t, { LOG_LEVEL: 'warn' }, { logStream: log.stream })
  await createVolume(t, app, 'v', [{ id: 'fast', path: 'v/fast.bin' }])
  const data = pattern(MiB + 999, 10)
  t.equal((await writeAt(app, 'v', data)).statusCode, 200)

  await writeFileAt(dataDir, 'v/same.bin', data)
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/v/replicas/same', payload: { path: 'v/same.bin' } })).statusCode, 201, 'a file holding the same bytes is taken')

  const other = pattern(4000, 11)
  await writeFileAt(dataDir, 'v/other.bin', other)
  const refused = await app.inject({ method: 'PUT', url: '/volumes/v/replicas/other', payload: { path: 'v/other.bin', mode: 'async' } })
  const problem = assertProblem(t, refused, 409, 'a file holding other bytes')
  t.match(problem.detail, /v\/other\.bin holds 4000 bytes/, 'the detail names the file')
  t.match(problem.detail, /overwrite=true/, 'and how to overwrite it')
  t.ok((await readFile(join(dataDir, 'v/other.bin'))).equals(other), 'the file is untouched')
  t.same((await status(app, 'v')).replicas.map((r: any) => r.id), ['fast', 'same'], 'no replica was added')
  assertProblem(t, await app.inject({ method: 'PUT', url: '/volumes/v/replicas/other?overwrite=1', payload: { path: 'v/other.bin' } }), 400, 'overwrite must be true or false')

  const added = await app.inject({ method: 'PUT', url: '/volumes/v/replicas/other?overwrite=true', payload: { path: 'v/other.bin', mode: 'async' } })
  t.equal(added.statusCode, 201, 'overwrite=true adds it')
  await waitInSync(app, 'v')
  t.ok((await readFile(join(dataDir, 'v/other.bin'))).equals(data), "the volume's content replaced the file's")
  t.match(warnings(log.lines, /overwrite=true/)[0], { volume: 'v', replica: 'other', bytes: 4000 }, 'logged at warn')

  await createVolume(t, app, 'empty', [{ id: 'a', path: 'e/a.bin' }])
  await writeFileAt(dataDir, 'e/kept.bin', other)
  const intoEmpty = await app.inject({ method: 'PUT', url: '/volumes/empty/replicas/kept', payload: { path: 'e/kept.bin' } })
  t.match(assertProblem(t, intoEmpty, 409, 'a file holding data added to an empty volume').detail, /volume empty is empty/)
  t.ok((await readFile(join(dataDir, 'e/kept.bin'))).equals(other), 'its bytes are kept')
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/empty/replicas/missing', payload: { path: 'e/missing.bin' } })).statusCode, 201, 'a missing file is created as before')
})

t.test('PUT /volumes/{name} with "source" on a read-only volume names the truth: it takes writes again and the others resync from it', async (t) => {
  const log = logLines()
  const first = await makeApp(t, { LOG_LEVEL: 'warn' }, { logStream: log.stream })
  const replicas = [
    { id: 'a', path: 'a.bin' },
    { id: 'b', path: 'b.bin', mode: 'async' as const, maxBytesPerSecond: 64 * KiB },
  ]
  await createVolume(t, first.app, 'v', replicas)
  const data = pattern(MiB, 12)
  t.equal((await writeAt(first.app, 'v', data)).statusCode, 202)
  await closeOnce(first.app)
  // a's journal is lost and b's says it is behind: no replica is known to hold every acknowledged write.
  await rm(join(first.dataDir, '.filemirror/journals/v/a.journal'))
  const second = await makeApp(t, { DATA_DIR: first.dataDir, LOG_LEVEL: 'warn' }, { logStream: log.stream })
  const app = second.app
  t.equal((await status(app, 'v')).state, 'read-only', 'the volume opens read-only')
  assertProblem(t, await writeAt(app, 'v', data), 409, 'a write to a read-only volume')

  const named = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas, source: 'a' } })
  t.equal(named.statusCode, 200, 'PUT with "source" answers 200')
  t.match(json(named), { state: 'ok', error: null, size: data.length }, 'the volume is ok again, with a as the truth')
  t.ok(warnings(log.lines, /named this replica the truth/).length >= 1, 'logged at warn')
  t.ok((await getData(app, 'v')).rawPayload.equals(data), "reads serve a's bytes")
  t.equal((await putData(app, 'v', data.subarray(0, 10), { 'content-range': 'bytes 0-9/*' })).statusCode, 202, 'and writes are taken')
})
