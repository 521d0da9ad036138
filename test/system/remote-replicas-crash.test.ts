// Replicas on other machines across crashes and outages, against the compiled server in a child process:
// kill -9 while a remote replica is far behind, restart, converge (each backend: a second filemirror,
// Apache mod_dav, s3rver); a remote down when the server starts is behind and catches up once it answers;
// a sync HTTP replica whose remote stops is behind (writes acknowledged by the local replica) and comes back.
import t, { type Test } from 'tap'
import { apacheMissing } from '../helpers/apache.js'
import { eventually } from '../helpers/eventually.js'
import { pattern } from '../helpers/pattern.js'
import { apacheBackend, filemirrorBackend, s3Backend, type Backend } from '../helpers/remote-backends.js'
import { S3RVER_CREDENTIALS } from '../helpers/s3rver.js'
import { scratch } from '../helpers/scratch.js'
import { serverBuilt, startServer, whenReady, type ServerProcess } from '../helpers/server-process.js'

const KiB = 1024
const notBuilt = !serverBuilt && 'run npm run build first'

function env(backend: Backend, dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATA_DIR: dataDir,
    REMOTE_ALLOW: backend.allow,
    SHUTDOWN_GRACE_MS: '0',
    LOG_LEVEL: 'info',
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
    ...backend.env,
    ...extra,
  }
}

async function request(server: ServerProcess, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; json: () => any }> {
  const init: RequestInit = { method, headers }
  if (Buffer.isBuffer(body)) init.body = new Uint8Array(body)
  else if (body !== undefined) {
    init.body = JSON.stringify(body)
    init.headers = { 'content-type': 'application/json', ...headers }
  }
  const res = await fetch(`${server.url}${path}`, init)
  const bytes = Buffer.from(await res.arrayBuffer())
  return { status: res.status, body: bytes, json: () => JSON.parse(bytes.toString('utf8')) }
}

async function write(server: ServerProcess, name: string, offset: number, data: Buffer): Promise<void> {
  const res = await request(server, 'PUT', `/volumes/${name}/data`, data, { 'content-range': `bytes ${offset}-${offset + data.length - 1}/*` })
  if (res.status !== 200 && res.status !== 202) throw new Error(`PUT ${offset}: ${res.status} ${res.body.toString().slice(0, 300)}`)
}

const replicaOf = async (server: ServerProcess, name: string, id: string): Promise<any> => (await request(server, 'GET', `/volumes/${name}`)).json().replicas.find((r: any) => r.id === id)

async function started(t: Test, environment: Record<string, string>): Promise<ServerProcess> {
  const server = await startServer(environment)
  t.teardown(() => server.child.kill('SIGKILL'))
  await whenReady(server)
  return server
}

async function killed(server: ServerProcess): Promise<void> {
  server.child.kill('SIGKILL')
  await server.exited
}

const BACKENDS: Array<{ kind: string; make: (t: Test) => Promise<Backend>; skip?: string | false }> = [
  { kind: 'a second filemirror', make: filemirrorBackend },
  { kind: 'Apache mod_dav', make: apacheBackend, skip: apacheMissing() },
  { kind: 's3rver', make: s3Backend },
]

for (const { kind, make, skip } of BACKENDS) {
  t.test(`kill -9 while the remote replica is far behind, restart, converge (${kind})`, { skip: notBuilt || skip }, async (t) => {
    const backend = await make(t)
    const dataDir = await scratch(t)
    let server = await started(t, env(backend, dataDir))
    const spec = { ...(await backend.replica(t, 'crash')), maxBytesPerSecond: 512 * KiB }
    const created = await request(server, 'PUT', '/volumes/crash', { replicas: [{ id: 'fast', path: 'fast/crash.img' }, spec] })
    t.equal(created.status, 201, `created (${created.body.toString().slice(0, 300)})`)
    const expected = pattern(3 << 20, 41)
    await write(server, 'crash', 0, expected)
    for (let i = 0; i < 8; i++) {
      const patch = pattern(7 * KiB + i, 50 + i)
      const at = (i * 389 * KiB) % (expected.length - patch.length)
      await write(server, 'crash', at, patch)
      patch.copy(expected, at)
    }
    const behind = await replicaOf(server, 'crash', 'dr')
    t.ok(behind.dirtyBytes > 1 << 20, `far behind: ${behind.dirtyBytes} bytes`)
    await killed(server)

    server = await started(t, env(backend, dataDir))
    const after = await replicaOf(server, 'crash', 'dr')
    t.not(after.state, 'failed', `after the crash it is ${after.state}, not failed (${JSON.stringify(after.error)})`)
    t.ok(after.dirtyBytes > 0, `it still lacks ${after.dirtyBytes} bytes`)
    await eventually(async () => {
      const r = await replicaOf(server, 'crash', 'dr')
      return r.state === 'in-sync' && r.dirtyBytes === 0
    }, 'the remote to converge', 60_000, 100)
    const volume = await request(server, 'GET', '/volumes/crash/data')
    t.ok(volume.body.equals(expected), 'the volume holds every acknowledged write')
    const remote = (await eventually(async () => {
      const bytes = await backend.content('crash')
      return bytes.length === expected.length ? bytes : undefined
    }, 'the remote at the volume size', 20_000, 100))!
    t.ok(remote.equals(expected), 'the remote holds them byte for byte')
  })
}

t.test('a remote down when the server starts is behind with its error, and catches up once it answers (s3rver)', { skip: notBuilt }, async (t) => {
  const backend = await s3Backend(t)
  const dataDir = await scratch(t)
  let server = await started(t, env(backend, dataDir))
  const spec = await backend.replica(t, 'down')
  t.equal((await request(server, 'PUT', '/volumes/down', { replicas: [{ id: 'fast', path: 'fast/down.img' }, spec] })).status, 201)
  const expected = pattern(300 * KiB, 42)
  await write(server, 'down', 0, expected)
  await eventually(async () => (await replicaOf(server, 'down', 'dr')).state === 'in-sync', 'in-sync', 30_000, 50)
  await killed(server)
  await backend.stop()
  server = await started(t, env(backend, dataDir))
  const dr = await eventually(async () => {
    const r = await replicaOf(server, 'down', 'dr')
    return r.nextRetryAt ? r : undefined
  }, 'a retry scheduled', 20_000, 50)
  t.equal(dr.state, 'behind', 'behind (retrying), not failed')
  t.match(dr.error, { code: 'EREMOTE_UNAVAILABLE' }, dr.error?.message)
  // Writes meanwhile are acknowledged by the local replica and journaled for the remote.
  const patch = pattern(20 * KiB, 43)
  await write(server, 'down', 280 * KiB, patch)
  patch.copy(expected, 280 * KiB)
  const grown = pattern(100 * KiB, 44)
  await write(server, 'down', 300 * KiB, grown)
  const all = Buffer.concat([expected, grown])
  await backend.start()
  await eventually(async () => {
    const r = await replicaOf(server, 'down', 'dr')
    return r.state === 'in-sync' && r.dirtyBytes === 0 && r.error === null
  }, 'the remote to catch up', 60_000, 100)
  t.ok((await backend.content('down')).equals(all), 'the remote holds every acknowledged write')
  t.match(server.output(), /remote replica unreachable: retrying/, 'the retries are logged')
})

t.test('a sync HTTP replica whose remote stops: writes acknowledged by the local replica, the remote behind, then back', { skip: notBuilt }, async (t) => {
  const backend = await filemirrorBackend(t)
  const dataDir = await scratch(t)
  const server = await started(t, env(backend, dataDir))
  const spec = { ...(await backend.replica(t, 'sync')), mode: 'sync' }
  const created = await request(server, 'PUT', '/volumes/sync', { replicas: [{ id: 'fast', path: 'fast/sync.img' }, spec] })
  t.equal(created.status, 201)
  t.equal(created.json().replicas[1].mode, 'sync')
  const expected = pattern(200 * KiB, 45)
  const res = await request(server, 'PUT', '/volumes/sync/data', expected, { 'content-range': `bytes 0-${expected.length - 1}/*`, prefer: 'wait=5' })
  t.equal(res.status, 200, 'both replicas took it in the request path')
  t.ok((await backend.content('sync')).equals(expected), 'the remote held it before the reply')
  await backend.stop()
  const patch = pattern(30 * KiB, 46)
  await write(server, 'sync', 50 * KiB, patch)
  patch.copy(expected, 50 * KiB)
  const dr = await eventually(async () => {
    const r = await replicaOf(server, 'sync', 'dr')
    return r.nextRetryAt ? r : undefined
  }, 'the remote replica to retry', 20_000, 50)
  t.equal(dr.state, 'behind')
  t.ok(dr.dirtyBytes >= patch.length, `it lacks what it missed (${dr.dirtyBytes} bytes)`)
  t.ok((await request(server, 'GET', '/volumes/sync/data')).body.equals(expected), 'reads are served by the local replica')
  await backend.start()
  await eventually(async () => {
    const r = await replicaOf(server, 'sync', 'dr')
    return r.state === 'in-sync' && r.error === null
  }, 'the remote to come back', 60_000, 100)
  t.ok((await backend.content('sync')).equals(expected), 'the remote holds every acknowledged write')
  const again = await request(server, 'PUT', '/volumes/sync/data', pattern(10, 47), { 'content-range': 'bytes 0-9/*', prefer: 'wait=5' })
  t.equal(again.status, 200, 'written in the request path again')
})
