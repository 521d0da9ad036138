import t from 'tap'
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { volumeStatusSchema } from '../../src/engine/status.js'
import { openLocalFile } from '../../src/engine/replica-file.js'
import {
  assertProblem,
  closeOnce,
  createVolume,
  exists,
  getData,
  json,
  makeApp,
  putData,
  tree,
  waitInSync,
} from '../helpers/app.js'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'

const TWO = [
  { id: 'fast', path: 'fast/v.bin' },
  { id: 'slow', path: 'slow/v.bin', mode: 'async' },
]

t.test('PUT /volumes/{name}: 201 with the volume, 200 when repeated, 409 for another configuration', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const first = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas: TWO } })
  t.equal(first.statusCode, 201, 'created')
  t.equal(first.headers.location, '/volumes/v', 'Location names the volume')
  t.match(String(first.headers['content-type']), /^application\/json/)
  const created = json(first)
  t.equal(created.name, 'v')
  t.equal(created.size, 0)
  t.same(created.replicas.map((r: any) => [r.id, r.path, r.mode]), [['fast', 'fast/v.bin', 'sync'], ['slow', 'slow/v.bin', 'async']])

  const again = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas: TWO } })
  t.equal(again.statusCode, 200, 'the same configuration again is idempotent: 200')
  t.same(json(again).replicas, created.replicas, 'the same volume comes back')

  const withDefaults = await app.inject({
    method: 'PUT',
    url: '/volumes/v',
    payload: { durability: 'os', replicas: TWO.map((r) => ({ read: true, write: true, mode: 'sync', label: null, maxBytesPerSecond: null, ...r })) },
  })
  t.equal(withDefaults.statusCode, 200, 'spelling out the defaults is the same configuration')

  const before = await tree(dataDir)
  const other = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas: [{ id: 'fast', path: 'elsewhere.bin' }] } })
  const problem = assertProblem(t, other, 409, 'another configuration')
  t.match(problem.detail, /v/, 'the detail names the volume')
  t.same(await tree(dataDir), before, 'a conflict creates nothing on disk')
  t.same(json(await app.inject({ method: 'GET', url: '/volumes/v' })).replicas.map((r: any) => r.id), ['fast', 'slow'], 'the volume is unchanged')

  const samePath = await app.inject({ method: 'PUT', url: '/volumes/w', payload: { replicas: [{ id: 'x', path: 'fast/v.bin' }] } })
  assertProblem(t, samePath, 409, 'a path already used by another volume')
  t.equal((await app.inject({ method: 'GET', url: '/volumes/w' })).statusCode, 404, 'that volume was not created')
})

t.test('PUT /volumes/{name}: two identical PUTs at once create one volume', async (t) => {
  const { app } = await makeApp(t)
  const replies = await Promise.all([0, 1, 2].map(() => app.inject({ method: 'PUT', url: '/volumes/race', payload: { replicas: TWO } })))
  t.same(replies.map((r) => r.statusCode).sort(), [200, 200, 201], 'one 201, the others 200')
  t.equal(json(await app.inject({ method: 'GET', url: '/volumes' })).volumes.length, 1)
})

t.test('PUT /volumes/{name}: defaults are applied', async (t) => {
  const { app } = await makeApp(t)
  const v = await createVolume(t, app, 'd', [{ id: 'only', path: 'd.bin' }])
  t.equal(v.durability, 'os', 'durability defaults to os')
  const [r] = v.replicas
  t.equal(r.read, true, 'read defaults to true')
  t.equal(r.write, true, 'write defaults to true')
  t.equal(r.mode, 'sync', 'mode defaults to sync')
  t.equal(r.label, null, 'label defaults to null')
  t.equal(r.maxBytesPerSecond, null, 'maxBytesPerSecond defaults to null (unthrottled)')

  const custom = await createVolume(t, app, 'c', [
    { id: 'a', path: 'c-a.bin', label: { tier: 'ssd', n: 1 } },
    { id: 'b', path: 'c-b.bin', read: false, mode: 'async', maxBytesPerSecond: 1_000_000 },
  ], { durability: 'fsync' })
  t.equal(custom.durability, 'fsync')
  t.same(custom.replicas[0].label, { tier: 'ssd', n: 1 }, 'a label is any JSON, kept as given')
  t.same([custom.replicas[1].read, custom.replicas[1].mode, custom.replicas[1].maxBytesPerSecond], [false, 'async', 1_000_000])
})

t.test('PUT /volumes/{name}: names at the edges', async (t) => {
  const { app } = await makeApp(t)
  for (const name of ['a', 'A-b_c.d', '0', '_x', '-y', 'x'.repeat(100)]) {
    const res = await app.inject({ method: 'PUT', url: `/volumes/${name}`, payload: { replicas: [{ id: 'r', path: `n/${name}.bin` }] } })
    t.equal(res.statusCode, 201, `${name.length > 20 ? `${name.length} characters` : name} is a valid name`)
  }
  const long = await createVolume(t, app, 'ids', [{ id: 'i'.repeat(128), path: 'ids.bin' }])
  t.equal(long.replicas[0].id.length, 128, 'a replica id of 128 characters is valid')
})

// Fastify's router refuses URL parameters over 100 characters (maxParamLength) with its own 414 JSON,
// before any route runs: volume names of 101-128 characters, valid by the schema, cannot be used.

t.test('PUT /volumes/{name}: a name of 128 characters is valid', async (t0) => {
  const t = t0
  const { app } = await makeApp(t)
  const name = 'x'.repeat(128)
  const res = await app.inject({ method: 'PUT', url: `/volumes/${name}`, payload: { replicas: [{ id: 'r', path: 'long.bin' }] } })
  t.equal(res.statusCode, 201, 'created')
  t.equal((await app.inject({ method: 'GET', url: `/volumes/${name}` })).statusCode, 200, 'and found')
})

t.test('PUT /volumes/{name}: a name of 129 characters is a 400 problem', async (t0) => {
  const t = t0
  const { app, dataDir } = await makeApp(t)
  const before = await tree(dataDir)
  const res = await app.inject({ method: 'PUT', url: `/volumes/${'n'.repeat(129)}`, payload: { replicas: [{ id: 'r', path: 'r.bin' }] } })
  const body = assertProblem(t, res, 400, 'name of 129 characters')
  t.match(body.detail, /name/)
  t.same(await tree(dataDir), before, 'nothing created')
})

t.test('PUT /volumes/{name}: a bad request is a 400 problem and creates nothing on disk', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const outside = await scratch(t, 'filemirror-outside-')
  await mkdir(join(dataDir, 'inside'))
  await symlink(outside, join(dataDir, 'escape'))
  const ok = { id: 'r', path: 'r.bin' }
  const cases: Array<{ what: string; url?: string; body: unknown; detail?: RegExp }> = [
    { what: 'name starting with a dot', url: '/volumes/.x', body: { replicas: [ok] }, detail: /name/ },
    { what: 'name with a slash', url: '/volumes/a%2Fb', body: { replicas: [ok] }, detail: /name/ },
    { what: 'empty name', url: '/volumes/', body: { replicas: [ok] }, detail: /name/ },
    { what: 'name with a space', url: '/volumes/a%20b', body: { replicas: [ok] }, detail: /name/ },
    { what: 'no body', body: undefined, detail: /replicas/ },
    { what: 'no replicas', body: { replicas: [] }, detail: /replicas/ },
    { what: 'replicas not an array', body: { replicas: 'r.bin' }, detail: /replicas/ },
    { what: 'seventeen replicas', body: { replicas: Array.from({ length: 17 }, (_, i) => ({ id: `r${i}`, path: `r${i}.bin` })) }, detail: /replicas/ },
    { what: 'replica id starting with a dot', body: { replicas: [{ id: '.x', path: 'r.bin' }] }, detail: /replicas\.0\.id/ },
    { what: 'replica id of 129 characters', body: { replicas: [{ id: 'i'.repeat(129), path: 'r.bin' }] }, detail: /replicas\.0\.id/ },
    { what: 'replica id with a slash', body: { replicas: [{ id: 'a/b', path: 'r.bin' }] }, detail: /replicas\.0\.id/ },
    { what: 'empty replica id', body: { replicas: [{ id: '', path: 'r.bin' }] }, detail: /replicas\.0\.id/ },
    { what: 'missing replica id', body: { replicas: [{ path: 'r.bin' }] }, detail: /replicas\.0\.id/ },
    { what: 'duplicate ids', body: { replicas: [ok, { id: 'r', path: 'other.bin' }] }, detail: /duplicate replica id/ },
    { what: 'duplicate paths', body: { replicas: [ok, { id: 's', path: 'r.bin' }] }, detail: /duplicate replica path/ },
    { what: 'two paths naming one file', body: { replicas: [ok, { id: 's', path: './r.bin' }] } },
    { what: 'no reading replica', body: { replicas: [{ ...ok, read: false }, { id: 's', path: 's.bin', read: false }] }, detail: /read/ },
    { what: 'no writing replica', body: { replicas: [{ ...ok, write: false }] }, detail: /write/ },
    { what: 'unknown top-level field', body: { replicas: [ok], size: 10 }, detail: /size|unrecognized/i },
    { what: 'unknown replica field', body: { replicas: [{ ...ok, speed: 'fast' }] }, detail: /speed|unrecognized/i },
    { what: 'read is not a boolean', body: { replicas: [{ ...ok, read: 'yes' }] }, detail: /replicas\.0\.read/ },
    { what: 'unknown mode', body: { replicas: [{ ...ok, mode: 'lazy' }] }, detail: /replicas\.0\.mode/ },
    { what: 'unknown durability', body: { replicas: [ok], durability: 'never' }, detail: /durability/ },
    { what: 'maxBytesPerSecond zero', body: { replicas: [{ ...ok, maxBytesPerSecond: 0 }] }, detail: /maxBytesPerSecond/ },
    { what: 'maxBytesPerSecond fractional', body: { replicas: [{ ...ok, maxBytesPerSecond: 1.5 }] }, detail: /maxBytesPerSecond/ },
    { what: 'maxBytesPerSecond a string', body: { replicas: [{ ...ok, maxBytesPerSecond: '10MB' }] }, detail: /maxBytesPerSecond/ },
    { what: 'path not a string', body: { replicas: [{ id: 'r', path: 7 }] }, detail: /replicas\.0\.path/ },
    { what: 'empty path', body: { replicas: [{ id: 'r', path: '' }] }, detail: /replicas\.0\.path/ },
    { what: 'path with a NUL byte', body: { replicas: [{ id: 'r', path: 'a\u0000b' }] }, detail: /NUL/ },
    { what: 'path ../x', body: { replicas: [{ id: 'r', path: '../x.bin' }] }, detail: /\.\./ },
    { what: 'path inside/../../x', body: { replicas: [{ id: 'r', path: 'inside/../../x.bin' }] } },
    { what: 'absolute path elsewhere', body: { replicas: [{ id: 'r', path: join(outside, 'x.bin') }] }, detail: /outside/ },
    { what: 'path through a symlink pointing outside', body: { replicas: [{ id: 'r', path: 'escape/x.bin' }] }, detail: /outside/ },
    { what: 'a good replica with one escaping', body: { replicas: [ok, { id: 's', path: 'escape/deeper/s.bin' }] }, detail: /outside/ },
    { what: 'the data directory itself', body: { replicas: [{ id: 'r', path: '.' }] } },
    { what: "inside the service's own directory", body: { replicas: [{ id: 'r', path: '.filemirror/volumes/x.json' }] } },
  ]
  const before = await tree(dataDir)
  for (const c of cases) {
    const res = await app.inject({ method: 'PUT', url: c.url ?? '/volumes/bad', payload: c.body as any, headers: c.body === undefined ? {} : { 'content-type': 'application/json' } })
    const body = assertProblem(t, res, 400, c.what)
    if (c.detail) t.match(body.detail, c.detail, `${c.what}: the detail says what is wrong`)
    t.same(await tree(dataDir), before, `${c.what}: nothing created under DATA_DIR`)
  }
  t.same(await tree(outside), [], 'nothing created outside the storage root')
  t.same(json(await app.inject({ method: 'GET', url: '/volumes' })).volumes, [], 'no volume was created')
  t.same(await tree(join(dataDir, '.filemirror/volumes')), [], 'no configuration file was written')

  const text = await app.inject({ method: 'PUT', url: '/volumes/bad', headers: { 'content-type': 'application/json' }, payload: '{"replicas": [' })
  assertProblem(t, text, 400, 'malformed JSON')
  const notJson = await app.inject({ method: 'PUT', url: '/volumes/bad', headers: { 'content-type': 'text/plain' }, payload: 'replicas=r.bin' })
  t.ok(notJson.statusCode === 415 || notJson.statusCode === 400, 'a body that is not JSON is refused')
  assertProblem(t, notJson, notJson.statusCode, 'a body that is not JSON')
  t.same(await tree(dataDir), before, 'still nothing on disk')
})

t.test('PUT /volumes/{name}: a dangling symlink inside the root must not let a replica escape it', async (t0) => {
  const t = t0
  const { app, dataDir } = await makeApp(t)
  const outside = await scratch(t, 'filemirror-outside-')
  await symlink(join(outside, 'target.bin'), join(dataDir, 'link.bin'))
  const res = await app.inject({ method: 'PUT', url: '/volumes/dangle', payload: { replicas: [{ id: 'r', path: 'link.bin' }] } })
  assertProblem(t, res, 400, 'a path through a dangling symlink to outside')
  t.same(await tree(outside), [], 'no file created outside the storage root')
})

t.test('PUT /volumes/{name}: missing directories and files are created; an existing file keeps its bytes', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const v = await createVolume(t, app, 'fresh', [{ id: 'a', path: 'deep/er/a.bin' }, { id: 'b', path: 'x/b.bin' }])
  t.equal(v.size, 0)
  t.ok(await exists(join(dataDir, 'deep/er/a.bin')), 'the first replica file and its directories exist')
  t.ok(await exists(join(dataDir, 'x/b.bin')), 'the second replica file exists')
  t.equal((await readFile(join(dataDir, 'deep/er/a.bin'))).length, 0, 'empty')

  const bytes = pattern(300_000, 3)
  await writeFile(join(dataDir, 'existing.bin'), bytes)
  const over = await createVolume(t, app, 'over', [{ id: 'a', path: 'existing.bin' }, { id: 'b', path: 'copies/b.bin' }, { id: 'c', path: 'copies/c.bin', mode: 'async' }])
  t.equal(over.size, bytes.length, "the volume's size is the existing file's size")
  const got = await getData(app, 'over')
  t.equal(got.statusCode, 200)
  t.ok(got.rawPayload.equals(bytes), 'a read returns the existing bytes')
  t.ok((await readFile(join(dataDir, 'existing.bin'))).equals(bytes), 'the existing file is untouched')
  await waitInSync(app, 'over')
  t.ok((await readFile(join(dataDir, 'copies/b.bin'))).equals(bytes), 'a new sync replica is brought up to date from it')
  t.ok((await readFile(join(dataDir, 'copies/c.bin'))).equals(bytes), 'a new async replica too')
})

t.test('GET /volumes and GET /volumes/{name}: the status shape', async (t) => {
  const { app, dataDir } = await makeApp(t)
  t.same(json(await app.inject({ method: 'GET', url: '/volumes' })), { volumes: [] }, 'empty at first')
  await createVolume(t, app, 'zeta', [{ id: 'z', path: 'z.bin' }])
  await createVolume(t, app, 'alpha', [{ id: 'a', path: 'a.bin', label: 'ssd' }, { id: 'b', path: 'b.bin', read: false, mode: 'async' }])
  const list = json(await app.inject({ method: 'GET', url: '/volumes' }))
  t.same(list.volumes.map((v: any) => v.name), ['alpha', 'zeta'], 'every volume, sorted by name')

  const res = await app.inject({ method: 'GET', url: '/volumes/alpha' })
  t.equal(res.statusCode, 200)
  const status = json(res)
  t.ok(volumeStatusSchema.safeParse(status).success, 'matches the documented status schema')
  t.same(Object.keys(status).sort(), ['checksums', 'durability', 'error', 'etag', 'name', 'replicas', 'size', 'state'])
  t.equal(status.state, 'ok')
  t.match(status.etag, /^"[^"]+"$/, 'the etag is a quoted strong entity tag')
  t.same(Object.keys(status.replicas[0]).sort(), ['cachedPercent', 'dirtyBytes', 'error', 'id', 'label', 'maxBytesPerSecond', 'mode', 'nextRetryAt', 'path', 'read', 's3', 'state', 'unreachableSince', 'url', 'write'])
  t.match(status.replicas[0], { url: null, s3: null, nextRetryAt: null, unreachableSince: null }, 'a local replica: no remote, no retry')
  for (const r of status.replicas) {
    t.equal(r.state, 'in-sync', `${r.id} is in-sync`)
    t.equal(r.dirtyBytes, 0, `${r.id} has nothing dirty`)
    t.equal(r.error, null)
  }
  t.equal(status.replicas[0].label, 'ssd')
  t.same(list.volumes[0], status, 'the list shows the same status')

  // cachedPercent follows reads: a write makes bytes uncached, a read caches what it read (whole 4 KiB blocks, verified).
  t.equal((await putData(app, 'alpha', pattern(16384))).statusCode < 300, true)
  await waitInSync(app, 'alpha')
  t.equal(json(await app.inject({ method: 'GET', url: '/volumes/alpha' })).replicas[0].cachedPercent, 0, 'nothing cached right after a write')
  await app.inject({ method: 'GET', url: '/volumes/alpha/data', headers: { range: 'bytes=0-4095' } })
  t.equal(json(await app.inject({ method: 'GET', url: '/volumes/alpha' })).replicas[0].cachedPercent, 25, 'a quarter read: 25% cached')
  await app.inject({ method: 'GET', url: '/volumes/alpha/data' })
  const after = json(await app.inject({ method: 'GET', url: '/volumes/alpha' }))
  t.equal(after.replicas[0].cachedPercent, 100, 'all read: 100% cached')
  t.equal(after.size, 16384)

  assertProblem(t, await app.inject({ method: 'GET', url: '/volumes/nope' }), 404, 'unknown volume')
  assertProblem(t, await app.inject({ method: 'GET', url: '/volumes/.hidden' }), 404, 'a name that cannot exist')
  t.ok(await exists(join(dataDir, 'a.bin')))
})

t.test('DELETE /volumes/{name}: 204, replica files kept, then 404', async (t) => {
  const { app, dataDir } = await makeApp(t)
  await createVolume(t, app, 'gone', [{ id: 'a', path: 'g/a.bin' }, { id: 'b', path: 'g/b.bin', mode: 'async' }])
  const bytes = pattern(5000, 1)
  t.equal((await putData(app, 'gone', bytes, { prefer: 'wait=10' })).statusCode, 200)
  t.ok(await exists(join(dataDir, '.filemirror/volumes/gone.json')), 'the configuration is persisted')

  const del = await app.inject({ method: 'DELETE', url: '/volumes/gone' })
  t.equal(del.statusCode, 204)
  t.equal(del.body, '', 'no body')
  t.ok((await readFile(join(dataDir, 'g/a.bin'))).equals(bytes), 'replica a is kept with its bytes')
  t.ok((await readFile(join(dataDir, 'g/b.bin'))).equals(bytes), 'replica b is kept with its bytes')
  t.notOk(await exists(join(dataDir, '.filemirror/volumes/gone.json')), 'the configuration is removed')
  assertProblem(t, await app.inject({ method: 'GET', url: '/volumes/gone' }), 404, 'GET after DELETE')
  assertProblem(t, await app.inject({ method: 'GET', url: '/volumes/gone/data' }), 404, 'GET data after DELETE')
  assertProblem(t, await app.inject({ method: 'DELETE', url: '/volumes/gone' }), 404, 'DELETE again')
  t.same(json(await app.inject({ method: 'GET', url: '/volumes' })).volumes, [])

  const again = await createVolume(t, app, 'gone', [{ id: 'a', path: 'g/a.bin' }])
  t.equal(again.size, bytes.length, 'the kept file can be taken up again by a new volume')
})

t.test('configurations persist: a new app on the same DATA_DIR opens the volume again', async (t) => {
  const first = await makeApp(t)
  const replicas = [
    { id: 'a', path: 'p/a.bin', label: { rack: 2 } },
    { id: 'b', path: 'p/b.bin', mode: 'async' as const, maxBytesPerSecond: 50_000_000 },
  ]
  const created = await createVolume(t, first.app, 'kept', replicas, { durability: 'fsync' })
  const bytes = pattern(70_000, 9)
  t.equal((await putData(first.app, 'kept', bytes, { prefer: 'wait=10' })).statusCode, 200)
  await closeOnce(first.app)

  const second = await makeApp(t, { DATA_DIR: first.dataDir })
  const ready = await second.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 200)
  t.equal(json(ready).volumes, 1, 'readyz counts the reopened volume')
  const status = json(await second.app.inject({ method: 'GET', url: '/volumes/kept' }))
  t.equal(status.durability, 'fsync')
  t.same(
    status.replicas.map((r: any) => ({ id: r.id, path: r.path, mode: r.mode, label: r.label, maxBytesPerSecond: r.maxBytesPerSecond })),
    created.replicas.map((r: any) => ({ id: r.id, path: r.path, mode: r.mode, label: r.label, maxBytesPerSecond: r.maxBytesPerSecond })),
    'the same configuration',
  )
  t.equal(status.size, bytes.length, 'the same size')
  t.ok((await getData(second.app, 'kept')).rawPayload.equals(bytes), 'the same bytes')
  const same = await second.app.inject({ method: 'PUT', url: '/volumes/kept', payload: { replicas, durability: 'fsync' } })
  t.equal(same.statusCode, 200, 'PUT of the same configuration after a restart is still 200')
})

t.test('health: /healthz always, /readyz once the volumes are open', async (t) => {
  const seed = await makeApp(t)
  await createVolume(t, seed.app, 'slowopen', [{ id: 'a', path: 'a.bin' }])
  await closeOnce(seed.app)

  // Reopen with a backend whose open waits for the test: the app is up but not ready.
  let release!: () => void
  const gate = new Promise<void>((resolve) => (release = resolve))
  const app = await buildApp({
    config: loadConfig({ DATA_DIR: seed.dataDir, LOG_LEVEL: 'silent', SHUTDOWN_GRACE_MS: '0' }),
    openFile: async (path) => {
      await gate
      return openLocalFile(path)
    },
  })
  t.teardown(async () => {
    release()
    await closeOnce(app)
  })
  const health = await app.inject({ method: 'GET', url: '/healthz' })
  t.equal(health.statusCode, 200, '/healthz answers while volumes open')
  t.same(json(health), { status: 'ok' })
  const notReady = await app.inject({ method: 'GET', url: '/readyz' })
  assertProblem(t, notReady, 503, '/readyz before the volumes are open')
  t.ok(notReady.headers['retry-after'], 'with Retry-After')
  assertProblem(t, await app.inject({ method: 'GET', url: '/volumes/slowopen' }), 503, 'a volume still opening is 503, not 404')
  assertProblem(t, await app.inject({ method: 'PUT', url: '/volumes/other', payload: { replicas: [{ id: 'a', path: 'o.bin' }] } }), 503, 'no volume is created before the others are open')
  release()
  await app.volumesOpen
  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 200, '/readyz 200 after open')
  t.same(json(ready), { status: 'ready', volumes: 1 })
  t.equal((await app.inject({ method: 'GET', url: '/volumes/slowopen' })).statusCode, 200)
})

t.test('unknown routes are 404 problems; a known path with another method is 405 with Allow', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'x', [{ id: 'a', path: 'a.bin' }])
  const unknown = await app.inject({ method: 'GET', url: '/nowhere?q=1' })
  const body = assertProblem(t, unknown, 404, 'unknown route')
  t.match(body.detail, /\/nowhere/, 'the detail names the path')
  t.notMatch(body.detail, /q=1/, 'but not the query')
  assertProblem(t, await app.inject({ method: 'GET', url: '/volumes/x/data/extra' }), 404, 'an unknown sub-path')

  const cases: Array<[string, string, string[]]> = [
    ['PATCH', '/volumes/x', ['GET', 'PUT', 'DELETE']],
    ['POST', '/volumes/x', ['GET', 'PUT', 'DELETE']],
    ['DELETE', '/volumes', ['GET']],
    ['PATCH', '/volumes/x/data', ['GET', 'HEAD', 'PUT', 'POST']],
    ['DELETE', '/volumes/x/data', ['GET', 'HEAD', 'PUT', 'POST']],
    ['PUT', '/operations/123', ['GET']],
    ['POST', '/healthz', ['GET']],
  ]
  for (const [method, url, allowed] of cases) {
    const res = await app.inject({ method: method as 'PATCH', url })
    assertProblem(t, res, 405, `${method} ${url}`)
    const allow = String(res.headers.allow ?? '').split(/,\s*/)
    // At least these; the service may grow more methods, but never the one that was refused.
    t.ok(allowed.every((m) => allow.includes(m)), `${method} ${url}: Allow (${allow.join(', ')}) lists ${allowed.join(', ')}`)
    t.notOk(allow.includes(method), `${method} ${url}: Allow does not list ${method}`)
  }
})

t.test('a 5xx never carries a stack trace or a path', async (t) => {
  const faults = new FaultInjector()
  const { app, dataDir } = await makeApp(t, {}, { openFile: faults.opener })
  const clean = (what: string, raw: string) => {
    const { instance, type, ...members } = JSON.parse(raw)
    t.ok(typeof instance === 'string' && typeof type === 'string', `${what}: instance and type are set`)
    const body = JSON.stringify(members)
    t.notMatch(body, dataDir, `${what}: no DATA_DIR path`)
    t.notMatch(body, /(?<![\w:/.])\/[\w.-]+\//, `${what}: no absolute path at all`)
    t.notMatch(body, /\n\s*at |\bat [\w.<>]+ \(/, `${what}: no stack frame`)
    t.notMatch(body, /EIO: i\/o error/, `${what}: not the raw error message`)
  }

  // An unexpected error (the anchor replica cannot be sized while opening): masked as a 500.
  faults.set(join(dataDir, 'broken.bin'), { failSize: 'EIO' })
  const internal = await app.inject({ method: 'PUT', url: '/volumes/broken', payload: { replicas: [{ id: 'a', path: 'broken.bin' }] } })
  assertProblem(t, internal, 500, 'an internal error')
  clean('an internal error', internal.body)

  // A write no reading replica takes.
  await createVolume(t, app, 'w', [{ id: 'a', path: 'w-a.bin' }])
  faults.set(join(dataDir, 'w-a.bin'), { failWrites: 'EIO' })
  const write = await putData(app, 'w', pattern(100))
  const problem = assertProblem(t, write, 500, 'a failed write')
  clean('a failed write', write.body)
  t.ok(problem.operationId, 'the failed write names its operation group')
  t.equal(write.headers['operation-id'], problem.operationId)

  // A read the named replica cannot serve.
  await createVolume(t, app, 'r', [{ id: 'a', path: 'r-a.bin' }, { id: 'b', path: 'r-b.bin' }])
  t.equal((await putData(app, 'r', pattern(100))).statusCode, 200)
  faults.set(join(dataDir, 'r-b.bin'), { failReads: 'EIO' })
  const read = await getData(app, 'r', {}, '?replica=b')
  assertProblem(t, read, 500, 'a failed read')
  clean('a failed read', read.body)
  const failover = await getData(app, 'r')
  t.equal(failover.statusCode, 200, 'an unnamed read still succeeds from the healthy replica')
})
