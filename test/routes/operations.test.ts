import t, { type Test } from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { operationGroupSchema } from '../../src/engine/status.js'
import {
  assertProblem,
  closeOnce,
  createVolume,
  getData,
  json,
  makeApp,
  putData,
} from '../helpers/app.js'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { pattern } from '../helpers/pattern.js'

const GROUP_KEYS = ['createdAt', 'finishedAt', 'id', 'kind', 'length', 'offset', 'operations', 'status', 'volume']
const OPERATION_KEYS = ['bytes', 'durationMs', 'error', 'mode', 'replica', 'status']
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('GET /operations/{id}: the shape of a group, pending then done', async (t) => {
  const { app, dataDir } = await makeApp(t)
  // 50 kB/s from a full 50 kB bucket: 150 kB reach the async replica after about 2 s.
  await createVolume(t, app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'slow', path: 'slow.bin', mode: 'async', maxBytesPerSecond: 50_000 }])
  const bytes = pattern(150_000, 1)
  const put = await putData(app, 'v', bytes, { 'content-range': `bytes 0-${bytes.length - 1}/*` })
  t.equal(put.statusCode, 202)
  const id = put.headers['operation-id'] as string

  const first = await app.inject({ method: 'GET', url: `/operations/${id}` })
  t.equal(first.statusCode, 200)
  t.match(String(first.headers['content-type']), /^application\/json/)
  const pending = json(first)
  t.ok(operationGroupSchema.safeParse(pending).success, 'matches the documented group schema')
  t.same(Object.keys(pending).sort(), GROUP_KEYS, 'exactly the documented members')
  t.equal(pending.id, id)
  t.equal(pending.volume, 'v')
  t.equal(pending.kind, 'write')
  t.equal(pending.offset, 0)
  t.equal(pending.length, bytes.length)
  t.equal(pending.status, 'pending', 'the first poll: pending')
  t.match(pending.createdAt, ISO, 'createdAt is an ISO timestamp')
  t.equal(pending.finishedAt, null, 'not finished')
  t.equal(pending.operations.length, 2, 'one operation per writing replica')
  for (const op of pending.operations) t.same(Object.keys(op).sort(), OPERATION_KEYS, `operation ${op.replica}: exactly the documented members`)
  const [fast, slow] = pending.operations
  t.same([fast.replica, fast.mode, fast.status, fast.bytes, fast.error], ['fast', 'sync', 'done', bytes.length, null])
  t.ok(fast.durationMs >= 0)
  t.same([slow.replica, slow.mode, slow.bytes, slow.error], ['slow', 'async', 0, null])
  t.ok(['queued', 'started'].includes(slow.status), `the async operation is queued or started (${slow.status})`)

  // Long-poll: returns once the group is done, well before the wait is over.
  const started = Date.now()
  const polled = await app.inject({ method: 'GET', url: `/operations/${id}?wait=30000` })
  const elapsed = Date.now() - started
  t.equal(polled.statusCode, 200)
  const done = json(polled)
  t.equal(done.status, 'done', 'the long-poll returns the group done')
  t.ok(elapsed < 25_000, `it returned when the group was done, not at the end of the wait (${elapsed} ms)`)
  t.match(done.finishedAt, ISO, 'finishedAt is set')
  t.ok(Date.parse(done.finishedAt) >= Date.parse(done.createdAt), 'finishedAt is not before createdAt')
  t.same([done.operations[1].status, done.operations[1].bytes, done.operations[1].error], ['done', bytes.length, null], 'the async operation is done with every byte')
  t.ok((await readFile(join(dataDir, 'slow.bin'))).equals(bytes), 'and the async replica holds them')
  t.same(json(await app.inject({ method: 'GET', url: `/operations/${id}?wait=30000` })), done, 'polling a done group with a wait answers at once and the same')
})

t.test('GET /operations/{id}?wait= times out with the group still pending', async (t) => {
  const { app } = await makeApp(t)
  // 1 kB/s for 100 kB: the async replica needs a minute and a half; the test never waits for it.
  await createVolume(t, app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'slow', path: 'slow.bin', mode: 'async', maxBytesPerSecond: 1000 }])
  const put = await putData(app, 'v', pattern(100_000))
  t.equal(put.statusCode, 202)
  const started = Date.now()
  const res = await app.inject({ method: 'GET', url: `/operations/${put.headers['operation-id']}?wait=300` })
  const elapsed = Date.now() - started
  t.equal(res.statusCode, 200, 'a wait that runs out is still a 200')
  t.equal(json(res).status, 'pending', 'with the group pending')
  t.equal(json(res).finishedAt, null)
  t.ok(elapsed >= 250, `it did wait (${elapsed} ms)`)
  t.equal(json(await app.inject({ method: 'GET', url: `/operations/${put.headers['operation-id']}?wait=0` })).status, 'pending', 'wait=0 answers at once')
})

t.test('GET /operations/{id}: bad waits and unknown ids', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.bin' }])
  const id = (await putData(app, 'v', pattern(10))).headers['operation-id'] as string
  t.equal((await app.inject({ method: 'GET', url: `/operations/${id}?wait=60000` })).statusCode, 200, 'wait=60000 is the most allowed')
  for (const wait of ['60001', '-1', '1.5', 'soon']) {
    assertProblem(t, await app.inject({ method: 'GET', url: `/operations/${id}?wait=${wait}` }), 400, `wait=${wait}`)
  }
  assertProblem(t, await app.inject({ method: 'GET', url: `/operations/${id}?timeout=5` }), 400, 'an unknown query parameter')
  const unknown = await app.inject({ method: 'GET', url: '/operations/00000000-0000-4000-8000-000000000000' })
  const problem = assertProblem(t, unknown, 404, 'an unknown id')
  t.match(problem.detail, /00000000-0000-4000-8000-000000000000/, 'the detail names the id')
  assertProblem(t, await app.inject({ method: 'GET', url: '/operations/not-a-uuid' }), 404, 'a malformed id')
  assertProblem(t, await app.inject({ method: 'GET', url: '/operations/00000000-0000-4000-8000-000000000000?wait=100' }), 404, 'an unknown id with a wait')
})

t.test('GET /volumes/{name}/operations: newest first, filtered by status', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'slow', path: 'slow.bin', mode: 'async', maxBytesPerSecond: 1000 }])
  await createVolume(t, app, 'other', [{ id: 'a', path: 'other.bin' }])
  await createVolume(t, app, 'sync', [{ id: 'a', path: 'sync-a.bin' }, { id: 'b', path: 'sync-b.bin' }])

  // Distinct milliseconds apart, so creation order is unambiguous.
  const done: string[] = []
  for (let i = 0; i < 3; i++) {
    const res = await putData(app, 'sync', pattern(100, i), { 'content-range': `bytes ${i * 100}-${i * 100 + 99}/*` })
    t.equal(res.statusCode, 200)
    done.push(res.headers['operation-id'] as string)
    await sleep(5)
  }
  const read = (await getData(app, 'sync', { range: 'bytes=0-9' })).headers['operation-id'] as string
  await sleep(5)
  // A body longer than its Content-Range: the write is refused and its group fails.
  const refused = await app.inject({
    method: 'PUT',
    url: '/volumes/sync/data',
    headers: { 'content-range': 'bytes 0-9/*', 'content-type': 'application/octet-stream' },
    payload: Readable.from([Buffer.alloc(64, 1)]),
  })
  t.equal(refused.statusCode, 400, 'an overrunning body is refused')
  await sleep(5)
  const pending = (await putData(app, 'v', pattern(20_000))).headers['operation-id'] as string
  t.equal((await putData(app, 'other', pattern(10))).statusCode, 200)

  const all = await app.inject({ method: 'GET', url: '/volumes/sync/operations' })
  t.equal(all.statusCode, 200)
  const groups = json(all).operations
  t.ok(groups.every((g: any) => operationGroupSchema.safeParse(g).success), 'every item is a group')
  t.ok(groups.every((g: any) => g.volume === 'sync'), "only this volume's groups")
  const ids = groups.map((g: any) => g.id)
  t.equal(ids.length, 5, 'three writes, a read and the refused write')
  t.same(ids.slice(1), [read, ...[...done].reverse()], 'newest first: the refused write, the read, then the writes newest first')
  t.equal(groups[0].status, 'failed', 'the newest is the refused write')
  t.same(groups.map((g: any) => g.createdAt), [...groups.map((g: any) => g.createdAt)].sort().reverse(), 'createdAt never increases down the list')

  const failed = json(await app.inject({ method: 'GET', url: '/volumes/sync/operations?status=failed' })).operations
  t.equal(failed.length, 1, 'status=failed: the refused write')
  t.equal(failed[0].id, ids[0])
  t.equal(failed[0].status, 'failed')
  t.ok(failed[0].operations.every((o: any) => o.status === 'failed' && o.error && typeof o.error.code === 'string'), 'its operations carry an error')
  const doneList = json(await app.inject({ method: 'GET', url: '/volumes/sync/operations?status=done' })).operations
  t.same(doneList.map((g: any) => g.id), [read, ...[...done].reverse()], 'status=done: the read and the writes, newest first')
  t.same(json(await app.inject({ method: 'GET', url: '/volumes/sync/operations?status=pending' })).operations, [], 'status=pending: none on the sync volume')

  const slowPending = json(await app.inject({ method: 'GET', url: '/volumes/v/operations?status=pending' })).operations
  t.same(slowPending.map((g: any) => g.id), [pending], 'status=pending: the write the throttled replica has not taken')
  t.same(json(await app.inject({ method: 'GET', url: '/volumes/v/operations?status=done' })).operations, [], 'and nothing done there')

  const limited = json(await app.inject({ method: 'GET', url: '/volumes/sync/operations?limit=2' })).operations
  t.same(limited.map((g: any) => g.id), ids.slice(0, 2), 'limit keeps the newest')
  for (const bad of ['status=finished', 'limit=0', 'limit=1001', 'limit=x', 'order=asc']) {
    assertProblem(t, await app.inject({ method: 'GET', url: `/volumes/sync/operations?${bad}` }), 400, bad)
  }
  assertProblem(t, await app.inject({ method: 'GET', url: '/volumes/nope/operations' }), 404, 'an unknown volume')
})

t.test('GET /volumes/{name}/operations: newest first even within one millisecond', async (t) => {
  const bug = t
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.bin' }])
  // A fast machine does several writes within one millisecond: freeze the clock to make that certain.
  const realNow = Date.now
  const frozen = realNow()
  Date.now = () => frozen
  const ids: string[] = []
  try {
    for (let i = 0; i < 3; i++) ids.push((await putData(app, 'v', pattern(10, i))).headers['operation-id'] as string)
    ids.push((await getData(app, 'v')).headers['operation-id'] as string)
  } finally {
    Date.now = realNow
  }
  const listed = json(await app.inject({ method: 'GET', url: '/volumes/v/operations' })).operations.map((g: any) => g.id)
  t.equal(listed.length, 4)
  bug.same(listed, [...ids].reverse(), 'the newest (the read) first, then the writes newest first')
})

t.test('read groups: the Operation-Id of a GET is a group of kind read', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.bin' }, { id: 'b', path: 'b.bin' }])
  t.equal((await putData(app, 'v', pattern(1000))).statusCode, 200)
  const get = await getData(app, 'v', { range: 'bytes=100-299' })
  t.equal(get.statusCode, 206)
  const res = await app.inject({ method: 'GET', url: `/operations/${get.headers['operation-id']}` })
  t.equal(res.statusCode, 200, 'the id resolves')
  const group = json(res)
  t.ok(operationGroupSchema.safeParse(group).success, 'a group like any other')
  t.equal(group.kind, 'read')
  t.equal(group.volume, 'v')
  t.equal(group.offset, 100, 'offset: where the read started')
  t.equal(group.length, 200, 'length: the bytes read')
  t.equal(group.status, 'done')
  t.match(group.finishedAt, ISO)
  t.equal(group.operations.length, 1, 'one replica served it')
  t.same([group.operations[0].replica, group.operations[0].mode, group.operations[0].status, group.operations[0].bytes, group.operations[0].error], ['a', 'sync', 'done', 200, null])

  const whole = json(await app.inject({ method: 'GET', url: `/operations/${(await getData(app, 'v')).headers['operation-id']}` }))
  t.same([whole.kind, whole.offset, whole.length, whole.operations[0].bytes], ['read', 0, 1000, 1000], 'a whole read')
  const multi = await getData(app, 'v', { range: 'bytes=0-9,500-519' })
  const multiGroup = json(await app.inject({ method: 'GET', url: `/operations/${multi.headers['operation-id']}` }))
  t.same([multiGroup.kind, multiGroup.offset, multiGroup.length, multiGroup.status], ['read', 0, 30, 'done'], 'a multipart read counts every range')
  t.equal(multiGroup.operations[0].bytes, 30)

  const listed = json(await app.inject({ method: 'GET', url: '/volumes/v/operations' })).operations
  t.ok(listed.some((g: any) => g.kind === 'read' && g.id === get.headers['operation-id']), "read groups are in the volume's list")
  t.equal((await app.inject({ method: 'DELETE', url: '/volumes/v' })).statusCode, 204)
  assertProblem(t, await app.inject({ method: 'GET', url: `/operations/${get.headers['operation-id']}` }), 404, "a deleted volume's groups are gone")
})

t.test('read groups of a HEAD or an empty read are finished too', async (t) => {
  const bug = t
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.bin' }])
  const empty = json(await app.inject({ method: 'GET', url: `/operations/${(await getData(app, 'v')).headers['operation-id']}` }))
  t.equal(empty.status, 'done', 'an empty read is done')
  bug.match(empty.finishedAt, ISO, 'and has a finishedAt')
  t.equal((await putData(app, 'v', pattern(10))).statusCode, 200)
  const head = await app.inject({ method: 'HEAD', url: '/volumes/v/data' })
  const group = json(await app.inject({ method: 'GET', url: `/operations/${head.headers['operation-id']}` }))
  t.equal(group.kind, 'read')
  t.equal(group.status, 'done', 'a HEAD is done')
  bug.match(group.finishedAt, ISO, 'and has a finishedAt')
})

// ------------------------------------------------------------------ write-behind wake-ups

/** A volume with a sync and an unthrottled async replica whose size() the test can hold. */
async function heldVolume(t: Test) {
  const faults = new FaultInjector()
  const made = await makeApp(t, {}, { openFile: faults.opener })
  await createVolume(t, made.app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'slow', path: 'slow.bin', mode: 'async' }])
  const slowPath = join(made.dataDir, 'slow.bin')
  let release!: () => void
  const gate = new Promise<void>((resolve) => (release = resolve))
  let entered!: () => void
  const inside = new Promise<void>((resolve) => (entered = resolve))
  /** From now on, write-behind's next size check of the slow replica waits for release(). */
  const hold = () =>
    faults.set(slowPath, {
      sizeGate: () => {
        entered()
        return gate
      },
    })
  const unhold = () => {
    faults.clear(slowPath)
    release()
  }
  t.teardown(unhold)
  return { ...made, slowPath, hold, unhold, inside }
}

t.test('write-behind does not lose a write that arrives while it settles', async (t) => {
  // Regression: a wake() that came while the copier was settling used to find no sleeper and be lost.
  const { app, slowPath, hold, unhold, inside } = await heldVolume(t)
  hold()
  const first = await putData(app, 'v', pattern(1000, 1), { prefer: 'wait=10' })
  t.equal(first.statusCode, 200, 'the first write reaches both replicas')
  await inside // write-behind caught up and is now checking the replica's size
  const second = await putData(app, 'v', Buffer.from('SECOND'), { 'content-range': 'bytes 0-5/*' })
  t.equal(second.statusCode, 202, 'a second write while it settles: 202')
  unhold()
  const polled = json(await app.inject({ method: 'GET', url: `/operations/${second.headers['operation-id']}?wait=3000` }))
  t.equal(polled.status, 'done', 'the second write reaches the async replica without any further write')
  t.equal((await readFile(slowPath)).subarray(0, 6).toString(), 'SECOND', 'the async replica holds it')
})

t.test('closing right after write-behind caught up finishes', async (t) => {
  // Regression: a stop() while the copier was settling used to be a lost wake-up, and app.close() (SIGTERM) never returned.
  const { app, hold, unhold, inside } = await heldVolume(t)
  hold()
  t.equal((await putData(app, 'v', pattern(1000, 2), { prefer: 'wait=10' })).statusCode, 200)
  await inside
  const closed = closeOnce(app).then(() => 'closed' as const)
  await sleep(20) // let close() reach the copiers while one is still settling
  unhold()
  let timer: NodeJS.Timeout | undefined
  const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(resolve, 5000, 'hung')))
  const outcome = await Promise.race([closed, hung]).finally(() => clearTimeout(timer))
  t.equal(outcome, 'closed', 'app.close() returns within 5 s')
  if (outcome === 'hung') {
    // Unstick it so the suite can go on: wake the copier that went back to sleep.
    const volumes = app.volumes.list()
    const nudger = setInterval(() => volumes.forEach((v) => v.wakeWriteBehind()), 20)
    await closed.finally(() => clearInterval(nudger))
  }
})
