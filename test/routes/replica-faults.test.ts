import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { openLocalFile } from '../../src/engine/replica-file.js'
import { makeApp } from '../helpers/app.js'
import { eventually } from '../helpers/eventually.js'
import { scratch } from '../helpers/scratch.js'

type Status = { state: string; size: number; replicas: Array<{ id: string; state: string; dirtyBytes: number; error: { code: string } | null }> }

async function createVolume(app: FastifyInstance, name: string, replicas: unknown[]): Promise<void> {
  const res = await app.inject({ method: 'PUT', url: `/volumes/${name}`, payload: { replicas } })
  if (res.statusCode !== 201) throw new Error(`create failed: ${res.statusCode} ${res.body}`)
}

function put(app: FastifyInstance, name: string, body: Buffer, first?: number) {
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream' }
  if (first !== undefined) headers['content-range'] = `bytes ${first}-${first + body.length - 1}/*`
  return app.inject({ method: 'PUT', url: `/volumes/${name}/data`, payload: body, headers })
}

async function status(app: FastifyInstance, name: string): Promise<Status> {
  return (await app.inject({ url: `/volumes/${name}` })).json() as Status
}

const allInSync = (app: FastifyInstance, name: string) => async () => (await status(app, name)).replicas.every((r) => r.state === 'in-sync')

t.test('ENOSPC on a full tmpfs marks the replica failed, the group failed with the code, the volume degraded, and the write is still acknowledged', async (t) => {
  const mnt = await scratch(t, 'filemirror-tmpfs-')
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', mnt], { stdio: 'ignore' })
  } catch {
    t.pass('ENOSPC on a full tmpfs', { skip: 'this machine does not allow mount' })
    return
  }
  t.teardown(() => execFileSync('umount', ['-l', mnt], { stdio: 'ignore' }))
  const dataDir = await scratch(t, 'filemirror-data-')
  const { app: app2 } = await makeApp(t, { DATA_DIR: dataDir, STORAGE_ROOTS: `${dataDir},${mnt}` })
  await createVolume(app2, 'v', [
    { id: 'fast', path: join(dataDir, 'fast.img') },
    { id: 'small', path: join(mnt, 'small.img'), read: false },
  ])
  const body = randomBytes(1 << 20)
  const res = await put(app2, 'v', body)
  t.ok(res.statusCode === 200 || res.statusCode === 202, `acknowledged (${res.statusCode}) because the reading replica took it`)
  const group = res.json()
  t.equal(group.status, 'failed')
  const small = group.operations.find((o: { replica: string }) => o.replica === 'small')
  t.equal(small.status, 'failed')
  t.equal(small.error.code, 'ENOSPC')
  t.match(small.error.message, /ENOSPC|no space/i)
  const s = await status(app2, 'v')
  t.equal(s.state, 'degraded')
  t.equal(s.replicas.find((r) => r.id === 'small')!.state, 'failed')
  t.ok(s.replicas.find((r) => r.id === 'small')!.dirtyBytes > 0, 'its dirty ranges are tracked from the failure on')
  t.ok(readFileSync(join(dataDir, 'fast.img')).equals(body), 'the fast replica holds the write')
  const read = await app2.inject({ url: '/volumes/v/data' })
  t.ok(read.rawPayload.equals(body), 'reads still served')
})

t.test('a read error fails the replica over to another in-sync reading replica', async (t) => {
  const faults = new FaultInjector(openLocalFile)
  const { app, dataDir } = await makeApp(t, {}, { openFile: faults.opener })
  await createVolume(app, 'v', [
    { id: 'a', path: 'a.img' },
    { id: 'b', path: 'b.img' },
  ])
  const body = randomBytes(300_000)
  t.equal((await put(app, 'v', body)).statusCode, 200)
  faults.set(join(dataDir, 'a.img'), { failReads: 'EIO' })
  const res = await app.inject({ url: '/volumes/v/data', headers: { range: 'bytes=1000-1999' } })
  t.equal(res.statusCode, 206)
  t.ok(res.rawPayload.equals(body.subarray(1000, 2000)), 'the bytes came from b')
  const s = await status(app, 'v')
  t.equal(s.state, 'degraded')
  const a = s.replicas.find((r) => r.id === 'a')!
  t.equal(a.state, 'failed')
  t.equal(a.error!.code, 'EIO')
  const group = (await app.inject({ url: `/operations/${res.headers['operation-id']}` })).json()
  t.equal(group.kind, 'read')
  t.same(
    group.operations.map((o: { replica: string; status: string }) => [o.replica, o.status]),
    [
      ['a', 'failed'],
      ['b', 'done'],
    ],
    'the read group records the failed attempt and the failover',
  )
  const named = await app.inject({ url: '/volumes/v/data?replica=a' })
  t.equal(named.statusCode, 500, 'reading the failed replica by name is a 5xx problem')
  t.equal(named.headers['content-type'], 'application/problem+json')
  t.notMatch(named.body, new RegExp(dataDir), 'the problem does not show a path')
})

t.test('a write that no replica took fails with a 5xx problem naming the group', async (t) => {
  const faults = new FaultInjector(openLocalFile)
  const { app, dataDir } = await makeApp(t, {}, { openFile: faults.opener })
  await createVolume(app, 'v', [
    { id: 'a', path: 'a.img' },
    { id: 'w', path: 'w.img', read: false },
  ])
  // A write that the write-only replica alone took is acknowledged (reads fall back to it); one neither took is not.
  faults.set(join(dataDir, 'a.img'), { failWrites: 'EIO' })
  faults.set(join(dataDir, 'w.img'), { failWrites: 'ENOSPC' })
  const res = await put(app, 'v', randomBytes(1000), 0)
  t.equal(res.statusCode, 500)
  t.equal(res.headers['content-type'], 'application/problem+json')
  const problem = res.json()
  t.ok(problem.operationId, 'the problem names the group')
  t.equal(res.headers['operation-id'], problem.operationId)
  const group = (await app.inject({ url: `/operations/${problem.operationId}` })).json()
  t.equal(group.status, 'failed')
  t.equal(group.operations.find((o: { replica: string }) => o.replica === 'a').error.code, 'EIO')
})

t.test('a failed replica replaced by an empty disk is resynced whole and the volume returns to ok', async (t) => {
  const faults = new FaultInjector(openLocalFile)
  const { app, dataDir } = await makeApp(t, {}, { openFile: faults.opener })
  await createVolume(app, 'v', [
    { id: 'a', path: 'a.img' },
    { id: 'b', path: 'disk2/b.img', read: false },
  ])
  t.equal((await put(app, 'v', randomBytes(3 << 20))).statusCode, 200)
  const bPath = join(dataDir, 'disk2/b.img')
  faults.set(bPath, { failWrites: 'EIO' })
  t.equal((await put(app, 'v', randomBytes(64 << 10), 4096)).json().status, 'failed')
  t.equal((await status(app, 'v')).state, 'degraded')
  for (let i = 0; i < 5; i++) await put(app, 'v', randomBytes(10_000), i * 500_000)
  // The disk is replaced: the old file is gone, the new one is empty.
  faults.clear()
  rmSync(join(dataDir, 'disk2'), { recursive: true })
  mkdirSync(join(dataDir, 'disk2'))
  const res = await app.inject({ method: 'POST', url: '/volumes/v/replicas/b/resync' })
  t.equal(res.statusCode, 202)
  t.ok(['resyncing', 'in-sync'].includes(res.json().replicas.find((r: { id: string }) => r.id === 'b').state))
  await eventually(allInSync(app, 'v'), 'b to resync', 20_000)
  const s = await status(app, 'v')
  t.equal(s.state, 'ok')
  t.ok(readFileSync(bPath).equals(readFileSync(join(dataDir, 'a.img'))), 'b is byte-identical to a')
  t.equal((await app.inject({ method: 'POST', url: '/volumes/v/replicas/nope/resync' })).statusCode, 404)
})

t.test('a failed replica that kept its file resyncs only its dirty ranges', async (t) => {
  const faults = new FaultInjector(openLocalFile)
  const { app, dataDir } = await makeApp(t, {}, { openFile: faults.opener })
  await createVolume(app, 'v', [
    { id: 'a', path: 'a.img' },
    { id: 'b', path: 'b.img' },
  ])
  await put(app, 'v', randomBytes(2 << 20))
  faults.set(join(dataDir, 'b.img'), { failWrites: 'ENOSPC' })
  await put(app, 'v', randomBytes(1000), 5000)
  await put(app, 'v', randomBytes(1000), 900_000)
  const dirty = (await status(app, 'v')).replicas.find((r) => r.id === 'b')!.dirtyBytes
  t.ok(dirty >= 2000 && dirty < 100_000, `only the missed writes are dirty (${dirty} bytes)`)
  faults.clear()
  t.equal((await app.inject({ method: 'POST', url: '/volumes/v/replicas/b/resync' })).statusCode, 202)
  await eventually(allInSync(app, 'v'), 'b to resync', 20_000)
  t.ok(readFileSync(join(dataDir, 'b.img')).equals(readFileSync(join(dataDir, 'a.img'))))
})

t.test('replicas added and removed under concurrent writes end byte-identical', async (t) => {
  const { app, dataDir } = await makeApp(t)
  await createVolume(app, 'v', [{ id: 'a', path: 'a.img' }])
  await put(app, 'v', randomBytes(4 << 20))
  let writing = true
  let writes = 0
  const writer = async () => {
    while (writing) {
      const res = await put(app, 'v', randomBytes(8192), Math.floor(Math.random() * 512) * 8192)
      if (res.statusCode >= 300) throw new Error(`write failed ${res.statusCode} ${res.body}`)
      writes++
    }
  }
  const writers = Promise.all([writer(), writer(), writer()])
  await new Promise((r) => setTimeout(r, 50))
  const addB = await app.inject({ method: 'PUT', url: '/volumes/v/replicas/b', payload: { path: 'b.img' } })
  t.equal(addB.statusCode, 201)
  const addC = await app.inject({ method: 'PUT', url: '/volumes/v/replicas/c', payload: { path: 'c.img', mode: 'async', read: false } })
  t.equal(addC.statusCode, 201)
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/v/replicas/c', payload: { path: 'c.img', mode: 'async', read: false } })).statusCode, 200, 'the same again is 200')
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/v/replicas/c', payload: { path: 'c.img' } })).statusCode, 409, 'another configuration is 409')
  const addD = await app.inject({ method: 'PUT', url: '/volumes/v/replicas/d', payload: { path: 'd.img', mode: 'async' } })
  t.equal(addD.statusCode, 201)
  await new Promise((r) => setTimeout(r, 100))
  t.equal((await app.inject({ method: 'DELETE', url: '/volumes/v/replicas/d' })).statusCode, 204, 'removed under writes')
  await new Promise((r) => setTimeout(r, 100))
  writing = false
  await writers
  t.ok(writes > 20, `${writes} writes ran alongside`)
  await eventually(allInSync(app, 'v'), 'all replicas in sync', 20_000)
  const a = readFileSync(join(dataDir, 'a.img'))
  t.ok(readFileSync(join(dataDir, 'b.img')).equals(a), 'b equals a')
  t.ok(readFileSync(join(dataDir, 'c.img')).equals(a), 'c equals a')
  const s = await status(app, 'v')
  t.same(s.replicas.map((r) => r.id), ['a', 'b', 'c'])
  t.equal((await app.inject({ method: 'DELETE', url: '/volumes/v/replicas/c' })).statusCode, 204)
  t.equal((await app.inject({ method: 'DELETE', url: '/volumes/v/replicas/b' })).statusCode, 204)
  const last = await app.inject({ method: 'DELETE', url: '/volumes/v/replicas/a' })
  t.equal(last.statusCode, 409, 'the last reading replica cannot go')
  t.equal(last.headers['content-type'], 'application/problem+json')
  // Both changes persist: a new app on the same directory sees only a.
  await app.close()
  const { app: reopened } = await makeApp(t, { DATA_DIR: dataDir })
  t.same((await status(reopened, 'v')).replicas.map((r) => r.id), ['a'])
})

t.test('scrub finds a flipped byte, and with repair copies it back', async (t) => {
  const { app, dataDir } = await makeApp(t)
  await createVolume(app, 'v', [
    { id: 'a', path: 'a.img' },
    { id: 'b', path: 'b.img', mode: 'async' },
  ])
  const body = randomBytes(3 << 20)
  await put(app, 'v', body)
  await eventually(allInSync(app, 'v'), 'b in sync', 20_000)
  const bPath = join(dataDir, 'b.img')
  const flipped = readFileSync(bPath)
  const at = 2_500_123
  flipped[at] ^= 0xff
  writeFileSync(bPath, flipped)

  const check = await app.inject({ method: 'POST', url: '/volumes/v/scrub?repair=false' })
  t.equal(check.statusCode, 202)
  t.equal(check.json().kind, 'scrub')
  const done = (await app.inject({ url: `/operations/${check.json().id}?wait=20000` })).json()
  t.equal(done.status, 'done')
  t.same(done.mismatches, [{ replica: 'b', offset: at, length: 1, repaired: false }])
  t.equal(readFileSync(bPath)[at], flipped[at], 'without repair nothing changes')

  const repair = await app.inject({ method: 'POST', url: '/volumes/v/scrub?repair=true' })
  const repaired = (await app.inject({ url: `/operations/${repair.json().id}?wait=20000` })).json()
  t.same(repaired.mismatches, [{ replica: 'b', offset: at, length: 1, repaired: true }])
  await eventually(allInSync(app, 'v'), 'repair copied', 20_000)
  t.ok(readFileSync(bPath).equals(body), 'b repaired')
  const again = await app.inject({ method: 'POST', url: '/volumes/v/scrub' })
  t.same((await app.inject({ url: `/operations/${again.json().id}?wait=20000` })).json().mismatches, [], 'a clean scrub finds nothing')
  t.equal((await app.inject({ method: 'POST', url: '/volumes/v/scrub?repair=maybe' })).statusCode, 400)
})
