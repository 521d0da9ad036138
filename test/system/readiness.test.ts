// Readiness and visibility against the real server process: a persisted volume that cannot be opened
// (its journals on a read-only mount, or on a full disk) is listed as failed with its error, refuses data
// requests with 503, holds /readyz at 503 until it opens (a PUT of its own configuration) or is deleted;
// a write whose journal append finds the disk full is refused with 507 naming the cause.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { eventually } from '../helpers/eventually.js'
import { scratch } from '../helpers/scratch.js'
import { logLines, serverBuilt, startServer, whenReady, type ServerProcess } from '../helpers/server-process.js'
import { tryMount, unmount } from '../helpers/mounts.js'

const skip = serverBuilt ? false : 'dist/src/server.js is missing: run npm run build'

const CONFIG = { replicas: [{ id: 'a', path: 'v/a.img' }, { id: 'b', path: 'v/b.img' }] }



/** Fills the filesystem holding `dir` with one file; returns its path. */
function fill(dir: string): string {
  const path = join(dir, 'filler')
  const fd = openSync(path, 'w')
  const chunk = Buffer.alloc(4096, 1)
  try {
    for (;;) writeSync(fd, chunk)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    closeSync(fd)
  }
  return path
}

async function start(t: Test, env: Record<string, string>): Promise<ServerProcess> {
  const server = await startServer({ SHUTDOWN_GRACE_MS: '2000', ...env })
  t.teardown(() => {
    if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL')
  })
  return server
}

/** Waits until the server has been through its persisted volumes (whether or not they opened). */
const opened = (server: ServerProcess) => eventually(() => logLines(server).some((l) => l.msg === 'volumes open'), 'the volumes to be opened')

async function stop(server: ServerProcess): Promise<void> {
  server.child.kill('SIGTERM')
  await server.exited
}

async function call(server: ServerProcess, path: string, init: RequestInit = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(server.url + path, init)
  const text = await res.text()
  let body: unknown = text
  try {
    body = JSON.parse(text)
  } catch {
    // not JSON
  }
  return { status: res.status, body, headers: res.headers }
}

const putJson = (body: unknown): RequestInit => ({ method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

/** Creates volume `name` with CONFIG-like replicas under `name/` and writes `data`, every replica done. */
async function volumeWith(t: Test, server: ServerProcess, name: string, data: Buffer<ArrayBuffer>): Promise<void> {
  const created = await call(server, `/volumes/${name}`, putJson({ replicas: [{ id: 'a', path: `${name}/a.img` }, { id: 'b', path: `${name}/b.img` }] }))
  t.equal(created.status, 201, `volume ${name} created`)
  const written = await call(server, `/volumes/${name}/data`, { method: 'PUT', body: data, headers: { prefer: 'wait=10' } })
  t.equal(written.status, 200, `${data.length} bytes written to ${name}, every replica done`)
}

t.test('journals on a read-only mount: the volume is listed failed, refuses data, holds /readyz; writable again, a PUT of its configuration opens it', { skip }, async (t) => {
  const dataDir = await scratch(t)
  const data = randomBytes(64 << 10)
  let server = await start(t, { DATA_DIR: dataDir })
  await whenReady(server)
  await volumeWith(t, server, 'v', data)
  await stop(server)

  const journals = join(dataDir, '.filemirror', 'journals')
  if (!tryMount(t, journals, '--bind', '-o', 'ro', journals)) return
  server = await start(t, { DATA_DIR: dataDir })
  await opened(server)

  const ready = await call(server, '/readyz')
  t.equal(ready.status, 503, '/readyz is 503')
  t.equal(ready.body.type, 'https://filemirror.dev/problems/not-ready')
  t.match(ready.body.detail, /^a volume could not be opened: v \(journal directory read-only \(EROFS\)\)$/, `it names the volume and why (${ready.body.detail})`)
  t.same(ready.body.failedVolumes, [{ name: 'v', error: { code: 'EROFS', message: 'journal directory read-only (EROFS)' } }], 'and lists them')

  const error = { code: 'EROFS', message: 'journal directory read-only (EROFS)' }
  const failedReplica = (id: string) => ({ id, path: `v/${id}.img`, url: null, s3: null, read: true, write: true, mode: 'sync', label: null, maxBytesPerSecond: null, state: 'failed', dirtyBytes: 0, cachedPercent: 0, error, nextRetryAt: null, unreachableSince: null })
  const expected = { name: 'v', state: 'failed', error, size: 0, etag: '', durability: 'os', replicas: [failedReplica('a'), failedReplica('b')] }
  const list = await call(server, '/volumes')
  t.equal(list.status, 200)
  t.same(list.body, { volumes: [expected] }, 'GET /volumes lists it as failed, with its error and its configuration')
  const one = await call(server, '/volumes/v')
  t.equal(one.status, 200)
  t.same(one.body, expected, 'GET /volumes/v says the same')
  t.notMatch(JSON.stringify([ready.body, list.body]), dataDir, 'no path is shown')
  t.equal((await call(server, '/volumes/v/operations')).status, 200, 'its operations can be listed (none)')

  for (const [what, path, init] of [
    ['GET data', '/volumes/v/data', {}],
    ['PUT data', '/volumes/v/data', { method: 'PUT', body: 'x' }],
    ['ranges', '/volumes/v/ranges', {}],
    ['resync', '/volumes/v/replicas/b/resync', { method: 'POST' }],
  ] as const) {
    const res = await call(server, path, init)
    t.equal(res.status, 503, `${what}: 503`)
    t.equal(res.body.detail, 'volume v could not be opened: journal directory read-only (EROFS)', `${what}: the detail names the error`)
  }
  const warned = logLines(server).find((l) => l.msg === 'volume could not be opened')
  t.match(warned, { level: 40, volume: 'v', code: 'EROFS' }, 'logged at warn')

  t.equal((await call(server, '/volumes/v', putJson({ replicas: [{ id: 'a', path: 'v/a.img' }] }))).status, 409, 'a PUT of another configuration conflicts')
  const stillRo = await call(server, '/volumes/v', putJson(CONFIG))
  t.equal(stillRo.status, 503, 'a PUT of its configuration while still read-only tries again, and says why it failed')
  t.match(stillRo.body.detail, /journal directory read-only/)

  unmount(journals)
  const reopened = await call(server, '/volumes/v', putJson(CONFIG))
  t.equal(reopened.status, 200, 'writable again, a PUT of its configuration opens it')
  t.match(reopened.body, { name: 'v', state: 'ok', error: null, size: data.length })
  t.match(await call(server, '/readyz'), { status: 200, body: { status: 'ready', volumes: 1 } }, '/readyz is 200')
  const read = await fetch(`${server.url}/volumes/v/data`)
  t.ok(Buffer.from(await read.arrayBuffer()).equals(data), 'its data is readable, as written')
  await stop(server)
})

t.test('a full journal directory: the volumes are failed with ENOSPC; DELETE forgets one; with room, a PUT of its configuration opens the other', { skip }, async (t) => {
  const dataDir = await scratch(t)
  const journals = join(dataDir, '.filemirror', 'journals')
  mkdirSync(journals, { recursive: true })
  if (!tryMount(t, journals, '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs')) return
  const data = randomBytes(32 << 10)
  let server = await start(t, { DATA_DIR: dataDir })
  await whenReady(server)
  await volumeWith(t, server, 'v', data)
  await volumeWith(t, server, 'w', data)
  await stop(server)
  const filler = fill(journals)

  server = await start(t, { DATA_DIR: dataDir })
  await opened(server)
  const ready = await call(server, '/readyz')
  t.equal(ready.status, 503, '/readyz is 503')
  t.equal(ready.body.detail, '2 volumes could not be opened: v (journal directory full (ENOSPC)); w (journal directory full (ENOSPC))', 'naming both')
  const list = await call(server, '/volumes')
  t.same(
    list.body.volumes.map((v: { name: string; state: string; error: unknown }) => [v.name, v.state, v.error]),
    [
      ['v', 'failed', { code: 'ENOSPC', message: 'journal directory full (ENOSPC)' }],
      ['w', 'failed', { code: 'ENOSPC', message: 'journal directory full (ENOSPC)' }],
    ],
    'both are listed failed, the journal directory full',
  )
  t.equal((await call(server, '/volumes/w/data')).status, 503, 'data on w: 503')

  t.equal((await call(server, '/volumes/w', { method: 'DELETE' })).status, 204, 'DELETE /volumes/w works on it')
  t.notOk(existsSync(join(dataDir, '.filemirror', 'volumes', 'w.json')), 'its configuration is forgotten')
  t.notOk(existsSync(join(journals, 'w')), 'and its journals')
  t.ok(existsSync(join(dataDir, 'w', 'a.img')), 'its replica files stay')
  t.equal((await call(server, '/volumes/w')).status, 404, 'GET /volumes/w is 404 now')
  t.match(await call(server, '/readyz'), { status: 503, body: { failedVolumes: [{ name: 'v' }] } }, '/readyz still names v, and only v')

  rmSync(filler)
  const reopened = await call(server, '/volumes/v', putJson(CONFIG))
  t.equal(reopened.status, 200, 'with room again, a PUT of its configuration opens it')
  t.match(reopened.body, { state: 'ok', size: data.length })
  t.match(await call(server, '/readyz'), { status: 200, body: { status: 'ready', volumes: 1 } }, '/readyz is 200')
  await stop(server)

  server = await start(t, { DATA_DIR: dataDir })
  await whenReady(server)
  t.same((await call(server, '/volumes')).body.volumes.map((v: { name: string; state: string }) => [v.name, v.state]), [['v', 'ok']], 'after a restart: v opens, w is gone')
  await stop(server)
})

t.test('a write whose journal append finds the journal directory full is refused with 507 naming the cause; with room, writes go on', { skip }, async (t) => {
  const dataDir = await scratch(t)
  const journals = join(dataDir, '.filemirror', 'journals')
  mkdirSync(journals, { recursive: true })
  if (!tryMount(t, journals, '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs')) return
  const server = await start(t, { DATA_DIR: dataDir })
  await whenReady(server)
  const data = randomBytes(1 << 20)
  await volumeWith(t, server, 'v', data)
  const filler = fill(journals)

  // Each write appends to b's journal (a is the source write-behind copies from); the last page fills up.
  let refused: Awaited<ReturnType<typeof call>> | undefined
  let offset = 0
  for (let i = 0; i < 4000 && !refused; i++) {
    offset = i * 256
    const res = await call(server, '/volumes/v/data', { method: 'PUT', body: Buffer.alloc(16, 7), headers: { 'content-range': `bytes ${offset}-${offset + 15}/*` } })
    if (res.status !== 200 && res.status !== 202) refused = res
  }
  t.ok(refused, 'a write is refused once the journal directory is full')
  t.equal(refused?.status, 507, '507 Insufficient Storage')
  t.equal(refused?.body.type, 'https://filemirror.dev/problems/insufficient-storage')
  t.equal(refused?.body.detail, 'the write cannot be journaled: journal directory full (ENOSPC)', 'naming the cause')
  t.notMatch(JSON.stringify(refused?.body), dataDir, 'no path is shown')
  const at = await fetch(`${server.url}/volumes/v/data`, { headers: { range: `bytes=${offset}-${offset + 15}` } })
  t.ok(Buffer.from(await at.arrayBuffer()).equals(data.subarray(offset, offset + 16)), 'the refused write wrote nothing')
  t.equal((await call(server, '/volumes/v')).body.state, 'ok', 'the volume is still ok')

  rmSync(filler)
  const after = await call(server, '/volumes/v/data', { method: 'PUT', body: Buffer.alloc(16, 9), headers: { 'content-range': `bytes ${offset}-${offset + 15}/*`, prefer: 'wait=10' } })
  t.equal(after.status, 200, 'with room again, the same write is taken')
  const back = await fetch(`${server.url}/volumes/v/data`, { headers: { range: `bytes=${offset}-${offset + 15}` } })
  t.ok(Buffer.from(await back.arrayBuffer()).equals(Buffer.alloc(16, 9)), 'and reads back')
  await stop(server)
})
