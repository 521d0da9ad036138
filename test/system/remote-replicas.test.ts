// Replicas on other machines, as a user runs them: a volume with a local replica and a remote one, against
// real servers started here: a second filemirror (in-process, on a real socket, behind a bearer token),
// Apache httpd with mod_dav, and s3rver (an S3 test double in a child process). Writes converge byte for byte;
// a remote that stops mid-stream leaves its replica behind (with its error and next retry) and it catches up
// when the remote is back; restore from a remote (source); wrong credentials, REMOTE_ALLOW, a remote that
// shrank behind the server. The kill -9 cases are in remote-replicas-crash.test.ts.
import { readFile, truncate } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { assertProblem, closeOnce, json, makeApp, type MadeApp } from '../helpers/app.js'
import { eventually } from '../helpers/eventually.js'
import { pattern } from '../helpers/pattern.js'
import { apacheMissing } from '../helpers/apache.js'
import { filemirrorBackend, apacheBackend, s3Backend, type Backend } from '../helpers/remote-backends.js'

const KiB = 1024

/** The service holding the volume, in-process, allowed to reach the backend. */
async function holder(t: Test, backend: Backend, env: Record<string, string> = {}, options: { dataDir?: string; wrongCredentials?: boolean; tokens?: Record<string, string> } = {}): Promise<MadeApp> {
  return makeApp(
    t,
    { REMOTE_ALLOW: backend.allow, ...(options.dataDir ? { DATA_DIR: options.dataDir } : {}), ...env },
    { remote: options.wrongCredentials ? backend.wrongRemoteOptions : backend.remoteOptions, env: options.tokens ?? backend.env },
  )
}

async function put(app: FastifyInstance, name: string, offset: number, data: Buffer, complete: number | '*' = '*') {
  const res = await app.inject({
    method: 'PUT',
    url: `/volumes/${name}/data`,
    headers: { 'content-type': 'application/octet-stream', 'content-range': `bytes ${offset}-${offset + data.length - 1}/${complete}` },
    payload: data,
  })
  if (res.statusCode !== 200 && res.statusCode !== 202) throw new Error(`PUT ${name} ${offset}+${data.length}: ${res.statusCode} ${res.body.slice(0, 300)}`)
  return res
}

async function status(app: FastifyInstance, name: string): Promise<any> {
  return json(await app.inject({ method: 'GET', url: `/volumes/${name}` }))
}

const replicaOf = async (app: FastifyInstance, name: string, id: string): Promise<any> => (await status(app, name)).replicas.find((r: any) => r.id === id)

async function content(app: FastifyInstance, name: string): Promise<Buffer> {
  const res = await app.inject({ method: 'GET', url: `/volumes/${name}/data` })
  if (res.statusCode !== 200) throw new Error(`GET ${name}: ${res.statusCode} ${res.body.slice(0, 300)}`)
  return res.rawPayload
}

const inSync = (app: FastifyInstance, name: string, id: string, timeoutMs = 60_000) =>
  eventually(async () => {
    const r = await replicaOf(app, name, id)
    return r?.state === 'in-sync' && r.dirtyBytes === 0 ? r : undefined
  }, `${name}/${id} in-sync`, timeoutMs, 50)

const BACKENDS: Array<{ kind: string; make: (t: Test) => Promise<Backend>; skip?: string }> = [
  { kind: 'a second filemirror', make: filemirrorBackend },
  { kind: 'Apache mod_dav', make: apacheBackend, skip: apacheMissing() },
  { kind: 's3rver', make: s3Backend },
]

function eachBackend(title: string, body: (t: Test, backend: Backend) => Promise<void>, kinds?: string[]): void {
  for (const { kind, make, skip } of BACKENDS.filter((b) => !kinds || kinds.includes(b.kind))) {
    t.test(`${title} (${kind})`, skip ? { skip } : {}, async (t) => body(t, await make(t)))
  }
}

// ------------------------------------------------------------------ convergence

eachBackend('mirrored writes converge byte for byte on the remote', async (t, backend) => {
  const { app } = await holder(t, backend)
  const spec = await backend.replica(t, 'v1')
  const res = await app.inject({ method: 'PUT', url: '/volumes/v1', payload: { replicas: [{ id: 'fast', path: 'fast/v1.img' }, spec] } })
  t.equal(res.statusCode, 201, `created (${res.body.slice(0, 300)})`)
  const created = json(res)
  const dr = created.replicas.find((r: any) => r.id === 'dr')
  t.equal(dr.mode, 'async', 'a remote replica is async by default')
  t.match(dr, backend.statusMatch, 'the status shows the backend')
  t.equal(dr.path, null)
  t.notMatch(res.body, /remote-token-/, 'never a token in the status')

  // A whole write, a patch, growth past a chunk boundary, a write past the end (zeros between), a shrink.
  let expected = pattern(300 * KiB, 1)
  await app.inject({ method: 'PUT', url: '/volumes/v1/data', headers: { 'content-type': 'application/octet-stream' }, payload: expected })
  const patch = pattern(10 * KiB + 3, 2)
  await put(app, 'v1', 100 * KiB - 1, patch)
  patch.copy(expected, 100 * KiB - 1)
  const tail = pattern(50 * KiB, 3)
  await put(app, 'v1', 650 * KiB, tail)
  expected = Buffer.concat([expected, Buffer.alloc(350 * KiB), tail])
  await put(app, 'v1', 0, pattern(5, 4), 600 * KiB + 17)
  expected = Buffer.concat([pattern(5, 4), expected.subarray(5, 600 * KiB + 17)])
  t.ok((await content(app, 'v1')).equals(expected), 'the volume reads as written')
  await inSync(app, 'v1', 'dr')
  // In-sync holds every byte of the volume; the remote's size follows once write-behind has nothing left to copy.
  const remote = (await eventually(async () => {
    const bytes = await backend.content('v1')
    return bytes.length === expected.length ? bytes : undefined
  }, 'the remote cut to the volume size', 20_000, 50))!
  t.equal(remote.length, expected.length, `the remote holds ${expected.length} bytes`)
  t.ok(remote.equals(expected), 'the remote holds the volume byte for byte')
  const read = await app.inject({ method: 'GET', url: '/volumes/v1/data?replica=dr', headers: { range: 'bytes=99000-120000' } })
  t.equal(read.statusCode, 206)
  t.ok(read.rawPayload.equals(expected.subarray(99000, 120001)), 'a read of the remote replica itself gives the same bytes')
})

// ------------------------------------------------------------------ the remote stops and comes back

eachBackend('a remote that stops mid-stream is behind with its error while down, and catches up when back', async (t, backend) => {
  const { app } = await holder(t, backend)
  const spec = { ...(await backend.replica(t, 'v2')), maxBytesPerSecond: 256 * KiB }
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/v2', payload: { replicas: [{ id: 'fast', path: 'fast/v2.img' }, spec] } })).statusCode, 201)
  const expected = pattern(768 * KiB, 5)
  await put(app, 'v2', 0, expected)
  // Mid-stream: some of it copied, not all.
  await eventually(async () => {
    const r = await replicaOf(app, 'v2', 'dr')
    return r.dirtyBytes > 0 && r.dirtyBytes < expected.length - 64 * KiB
  }, 'write-behind under way', 20_000, 20)
  const events: Array<{ replica: string; state: string; error: { code: string } | null }> = []
  app.volumes.get('v2')!.on('replicaState', (e) => events.push(e))
  await backend.stop()
  // Writes go on while it is down: acknowledged by the local replica, journaled for the remote.
  const more = pattern(40 * KiB, 6)
  await put(app, 'v2', 500 * KiB, more)
  more.copy(expected, 500 * KiB)
  const down = await eventually(async () => {
    const r = await replicaOf(app, 'v2', 'dr')
    return r.error !== null && r.nextRetryAt !== null ? r : undefined
  }, 'the remote replica to notice', 30_000, 50)
  t.equal(down.state, 'behind', 'behind, not failed')
  t.match(down.error, { code: 'EREMOTE_UNAVAILABLE' }, `its last error: ${down.error.message}`)
  t.ok(Date.parse(down.nextRetryAt) > Date.now() - 1000, `its next retry: ${down.nextRetryAt}`)
  t.ok(down.unreachableSince, 'since when')
  t.ok(down.dirtyBytes > 0, `its lag: ${down.dirtyBytes} bytes`)
  t.equal((await status(app, 'v2')).state, 'ok', 'the volume serves on (a remote down is no disk failure)')
  t.ok((await content(app, 'v2')).equals(expected), 'reads are served meanwhile')
  await new Promise((r) => setTimeout(r, 1500))
  t.equal((await replicaOf(app, 'v2', 'dr')).state, 'behind', 'still behind, retrying')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  const unreachable = /filemirror_replica_remote_unreachable_seconds\{volume="v2",replica="dr"\} ([\d.]+)/.exec(metrics)
  t.ok(unreachable && Number(unreachable[1]) > 1, `the metrics show it unreachable for ${unreachable?.[1]} s`)
  t.match(metrics, /filemirror_replica_dirty_bytes\{volume="v2",replica="dr"\} [1-9]/, 'and its lag')
  await backend.start()
  const back = await inSync(app, 'v2', 'dr', 90_000)
  t.equal(back.error, null, 'the error is gone')
  t.equal(back.nextRetryAt, null)
  t.ok((await backend.content('v2')).equals(expected), 'no acknowledged write lost: the remote holds the volume byte for byte')
  const retrying = events.findIndex((e) => e.replica === 'dr' && e.state === 'behind' && e.error?.code === 'EREMOTE_UNAVAILABLE')
  t.ok(retrying >= 0, 'the event stream told of the retry (replicaState behind, with the error)')
  t.ok(events.slice(retrying + 1).some((e) => e.replica === 'dr' && e.error === null), 'and of its end')
})

// ------------------------------------------------------------------ restore

eachBackend('restore: a new local replica beside the remote, with "source", becomes a copy of it; reads are right meanwhile', async (t, backend) => {
  const { app } = await holder(t, backend)
  const spec = await backend.replica(t, 'v3')
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/old', payload: { replicas: [{ id: 'fast', path: 'fast/old.img' }, spec] } })).statusCode, 201)
  const expected = pattern(520 * KiB + 11, 7)
  await put(app, 'old', 0, expected)
  await inSync(app, 'old', 'dr')
  // The machine is lost: the volume is forgotten here (its remote keeps the bytes).
  t.equal((await app.inject({ method: 'DELETE', url: '/volumes/old' })).statusCode, 204)

  const res = await app.inject({
    method: 'PUT',
    url: '/volumes/restored',
    payload: { source: 'dr', replicas: [{ id: 'local', path: 'fresh/restored.img', maxBytesPerSecond: 256 * KiB }, spec] },
  })
  t.equal(res.statusCode, 201, `created (${res.body.slice(0, 300)})`)
  const created = json(res)
  t.equal(created.size, expected.length, "the remote's size is the volume's")
  t.equal(created.replicas[0].state, 'resyncing', 'the local replica is being filled')
  // Reads are served from a replica holding the bytes: the remote for what is not restored yet.
  t.ok((await content(app, 'restored')).equals(expected), 'a whole read while restoring')
  const range = await app.inject({ method: 'GET', url: '/volumes/restored/data', headers: { range: 'bytes=400000-400999' } })
  t.ok(range.rawPayload.equals(expected.subarray(400000, 401000)), 'a ranged read while restoring')
  if ((await replicaOf(app, 'restored', 'local')).state !== 'in-sync') {
    const refused = await app.inject({ method: 'PUT', url: '/volumes/restored/data', headers: { 'content-range': 'bytes 0-0/*', 'content-type': 'application/octet-stream' }, payload: Buffer.from('x') })
    const problem = assertProblem(t, refused, 503, 'a write while only the remote holds the content')
    t.match(problem.detail, /only remote replicas \(dr\) hold the volume's content.*retry once a local replica is in-sync/)
  }
  await inSync(app, 'restored', 'local', 60_000)
  const { dataDir } = { dataDir: (app.config as { dataDir: string }).dataDir }
  t.ok((await readFile(join(dataDir, 'fresh/restored.img'))).equals(expected), 'the local file is a copy of the remote')
  // Now it takes writes, and they reach the remote too.
  const patch = pattern(3000, 8)
  await put(app, 'restored', 12345, patch)
  patch.copy(expected, 12345)
  await inSync(app, 'restored', 'dr')
  t.ok((await backend.content('v3')).equals(expected), 'writes after the restore reach the remote')
})

// ------------------------------------------------------------------ credentials

eachBackend('wrong credentials at open: the remote replica is failed with a clear error; the volume serves on', async (t, backend) => {
  const first = await holder(t, backend)
  const spec = await backend.replica(t, 'v4')
  t.equal((await first.app.inject({ method: 'PUT', url: '/volumes/v4', payload: { replicas: [{ id: 'fast', path: 'fast/v4.img' }, spec] } })).statusCode, 201)
  const expected = pattern(100 * KiB, 9)
  await put(first.app, 'v4', 0, expected)
  await inSync(first.app, 'v4', 'dr')
  await closeOnce(first.app)
  // Started again with credentials the remote refuses.
  const again = await holder(t, backend, {}, { dataDir: first.dataDir, wrongCredentials: true, tokens: { FILEMIRROR_REMOTE_DR_TOKEN: 'remote-token-wrong-0000000000' } })
  const dr = await replicaOf(again.app, 'v4', 'dr')
  t.equal(dr.state, 'failed', 'failed: retrying cannot fix credentials')
  t.match(dr.error, { code: 'EACCES' }, `a clear error: ${dr.error?.message}`)
  t.match(dr.error.message, backend.accessDenied)
  t.equal(dr.nextRetryAt, null, 'no retry')
  t.equal((await status(again.app, 'v4')).state, 'degraded')
  t.ok((await content(again.app, 'v4')).equals(expected), 'the local replica serves')
}, ['a second filemirror', 's3rver'])

t.test('a tokenEnv variable that is not set fails the replica naming it', async (t) => {
  const backend = await filemirrorBackend(t)
  const { app } = await holder(t, backend, {}, { tokens: {} })
  const spec = await backend.replica(t, 'v5')
  const res = await app.inject({ method: 'PUT', url: '/volumes/v5', payload: { replicas: [{ id: 'fast', path: 'fast/v5.img' }, spec] } })
  const problem = assertProblem(t, res, 400, 'refused at creation')
  t.match(problem.detail, /EACCES: .*FILEMIRROR_REMOTE_DR_TOKEN .*is not set/)
})

// ------------------------------------------------------------------ REMOTE_ALLOW

t.test('REMOTE_ALLOW: remote replicas are refused unless their origin is listed; tokenEnv is checked', async (t) => {
  const none = await makeApp(t)
  const local = { id: 'fast', path: 'fast/x.img' }
  const cases: Array<[string, FastifyInstance, unknown, RegExp]> = [
    ['empty REMOTE_ALLOW: any url', none.app, { id: 'dr', url: 'http://127.0.0.1:9/volumes/x/data' }, /remote replicas are refused: REMOTE_ALLOW is empty; to allow url origin http:\/\/127.0.0.1:9, start the service with REMOTE_ALLOW=http:\/\/127.0.0.1:9/],
    ['empty REMOTE_ALLOW: any S3 endpoint', none.app, { id: 's3', s3: { bucket: 'b-1', endpoint: 'http://169.254.169.254' } }, /REMOTE_ALLOW is empty/],
  ]
  const some = await makeApp(t, { REMOTE_ALLOW: 'http://127.0.0.1:8081' })
  cases.push(
    ['another port', some.app, { id: 'dr', url: 'http://127.0.0.1:8082/volumes/x/data' }, /url origin http:\/\/127.0.0.1:8082 is not in REMOTE_ALLOW \(http:\/\/127.0.0.1:8081\)/],
    ['another scheme', some.app, { id: 'dr', url: 'https://127.0.0.1:8081/volumes/x/data' }, /not in REMOTE_ALLOW/],
    ['AWS without the aws entry', some.app, { id: 's3', s3: { bucket: 'b-1' } }, /AWS S3 \(an s3 replica without endpoint\) is not in REMOTE_ALLOW.*add aws/],
    ['a tokenEnv outside FILEMIRROR_REMOTE_', some.app, { id: 'dr', url: 'http://127.0.0.1:8081/x', tokenEnv: 'AUTH_TOKEN' }, /tokenEnv: must name an environment variable starting with FILEMIRROR_REMOTE_/],
    ['a url and a path', some.app, { id: 'dr', url: 'http://127.0.0.1:8081/x', path: 'x.img' }, /exactly one of path .*, url .* or s3/],
    ['credentials in the url', some.app, { id: 'dr', url: 'http://u:p@127.0.0.1:8081/x' }, /must not hold credentials/],
    ['a sync S3 replica', some.app, { id: 's3', s3: { bucket: 'b-1', endpoint: 'http://127.0.0.1:8081' }, mode: 'sync' }, /S3 replica is async only: .*chunk-granular/],
  )
  for (const [what, app, replica, detail] of cases) {
    const res = await app.inject({ method: 'PUT', url: '/volumes/x', payload: { replicas: [local, replica] } })
    const problem = assertProblem(t, res, 400, what)
    t.match(problem.detail, detail, `${what}: ${problem.detail}`)
  }
  // Adding one to a live volume is refused the same way.
  t.equal((await none.app.inject({ method: 'PUT', url: '/volumes/live', payload: { replicas: [local] } })).statusCode, 201)
  const added = await none.app.inject({ method: 'PUT', url: '/volumes/live/replicas/dr', payload: { url: 'http://127.0.0.1:9/x' } })
  t.match(assertProblem(t, added, 400, 'an added remote').detail, /REMOTE_ALLOW/)
  t.equal((await none.app.inject({ method: 'GET', url: '/volumes/x' })).statusCode, 404, 'nothing was created')
})

t.test('REMOTE_ALLOW losing the origin of a configured remote: the volume opens, that replica failed saying why', async (t) => {
  const backend = await filemirrorBackend(t)
  const first = await holder(t, backend)
  const spec = await backend.replica(t, 'v8')
  t.equal((await first.app.inject({ method: 'PUT', url: '/volumes/v8', payload: { replicas: [{ id: 'fast', path: 'fast/v8.img' }, spec] } })).statusCode, 201)
  const expected = pattern(10 * KiB, 12)
  await put(first.app, 'v8', 0, expected)
  await inSync(first.app, 'v8', 'dr')
  await closeOnce(first.app)
  const again = await makeApp(t, { DATA_DIR: first.dataDir }, { env: backend.env })
  const volume = await status(again.app, 'v8')
  t.equal(volume.state, 'degraded', 'open, degraded')
  const dr = volume.replicas.find((r: any) => r.id === 'dr')
  t.equal(dr.state, 'failed')
  t.match(dr.error, { code: 'EREMOTE_REFUSED', message: /REMOTE_ALLOW is empty/ })
  t.ok((await content(again.app, 'v8')).equals(expected), 'the local replica serves')
  const resync = await again.app.inject({ method: 'POST', url: '/volumes/v8/replicas/dr/resync' })
  t.match(assertProblem(t, resync, 409, 'a resync while it is not allowed').detail, /could not be reopened: EREMOTE_REFUSED/)
})

// ------------------------------------------------------------------ a remote that shrank behind the server

t.test('a remote smaller than the volume at open is failed as a file that shrank; a full resync repairs it', { skip: apacheMissing() }, async (t) => {
  const backend = await apacheBackend(t)
  const first = await holder(t, backend)
  const spec = await backend.replica(t, 'v6')
  t.equal((await first.app.inject({ method: 'PUT', url: '/volumes/v6', payload: { replicas: [{ id: 'fast', path: 'fast/v6.img' }, spec] } })).statusCode, 201)
  const expected = pattern(256 * KiB, 10)
  await put(first.app, 'v6', 0, expected)
  await inSync(first.app, 'v6', 'dr')
  await closeOnce(first.app)
  await truncate(backend.localPath!('v6'), 100 * KiB)
  const again = await holder(t, backend, {}, { dataDir: first.dataDir })
  const dr = await replicaOf(again.app, 'v6', 'dr')
  t.equal(dr.state, 'failed')
  t.match(dr.error, { code: 'ECHANGED', message: /102400 bytes, shorter than the volume's recorded 262144: cut back behind the server/ })
  t.ok((await content(again.app, 'v6')).equals(expected), 'reads are served by the local replica')
  t.equal((await again.app.inject({ method: 'POST', url: '/volumes/v6/replicas/dr/resync?full=true' })).statusCode, 202)
  await inSync(again.app, 'v6', 'dr')
  t.ok((await backend.content('v6')).equals(expected), 'copied whole again')
})

// ------------------------------------------------------------------ unreachable for too long

t.test('a remote unreachable for longer than REMOTE_FAIL_AFTER_MS is failed, saying so; a resync brings it back', async (t) => {
  const backend = await s3Backend(t)
  const { app } = await holder(t, backend, { REMOTE_FAIL_AFTER_MS: '3000' })
  const spec = await backend.replica(t, 'v7')
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/v7', payload: { replicas: [{ id: 'fast', path: 'fast/v7.img' }, spec] } })).statusCode, 201)
  await backend.stop()
  const expected = pattern(70 * KiB, 11)
  await put(app, 'v7', 0, expected)
  const behind = await eventually(async () => {
    const r = await replicaOf(app, 'v7', 'dr')
    return r.state === 'behind' && r.error ? r : undefined
  }, 'behind, retrying', 20_000, 50)
  t.match(behind.error, { code: 'EREMOTE_UNAVAILABLE' })
  const failed = await eventually(async () => {
    const r = await replicaOf(app, 'v7', 'dr')
    return r.state === 'failed' ? r : undefined
  }, 'failed after 3 s', 30_000, 100)
  t.match(failed.error, { code: 'EREMOTE_UNAVAILABLE', message: /remote unreachable for 3 s \(since .*REMOTE_FAIL_AFTER_MS\)/ })
  t.equal(failed.nextRetryAt, null)
  t.equal(failed.dirtyBytes, expected.length, 'what it lacks is kept')
  await backend.start()
  t.equal((await app.inject({ method: 'POST', url: '/volumes/v7/replicas/dr/resync' })).statusCode, 202)
  await inSync(app, 'v7', 'dr')
  t.ok((await backend.content('v7')).equals(expected))
})
