// GET /events and GET /volumes/{name}/events: Server-Sent Events of each replica's operation start
// and done, replica state changes and idle; heartbeats; Last-Event-ID resumption within a bounded
// window; and a client that stops reading is dropped rather than buffered for.
import http from 'node:http'
import t from 'tap'
import { EventStream, type EventSink } from '../../src/http/event-stream.js'
import { createVolume, json, listen, makeApp, putData } from '../helpers/app.js'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { pattern } from '../helpers/pattern.js'
import { openSse, seqOf, type SseEvent } from '../helpers/sse.js'

const SYNC_AND_ASYNC = [
  { id: 'fast', path: 'fast/v.bin' },
  { id: 'slow', path: 'slow/v.bin', mode: 'async' as const },
]

const ops = (events: SseEvent[], group?: string) => events.filter((e) => e.event === 'operation' && (group === undefined || e.json.group === group))
const doneFor = (events: SseEvent[], group: string, replicas: string[]) => replicas.every((r) => ops(events, group).some((e) => e.json.replica === r && e.json.phase === 'done'))

t.test('a write yields, per replica, a start then a done event with the fields, in order', async (t) => {
  const { app } = await makeApp(t)
  const base = await listen(t, app)
  await createVolume(t, app, 'v', SYNC_AND_ASYNC)
  const stream = await openSse(`${base}/volumes/v/events`, { 'x-request-id': 'sse-test-1' })
  t.equal(stream.status, 200)
  t.match(stream.headers['content-type'], /^text\/event-stream/, 'text/event-stream')
  t.equal(stream.headers['cache-control'], 'no-cache, no-transform')
  t.equal(stream.headers['x-request-id'], 'sse-test-1', 'the stream echoes the request id too')

  const body = pattern(65_536, 3)
  const res = await putData(app, 'v', body)
  t.ok(res.statusCode === 200 || res.statusCode === 202, `write accepted (${res.statusCode})`)
  const group = res.headers['operation-id'] as string
  t.ok(group, 'the reply names its operation group')

  const events = await stream.until((e) => doneFor(e, group, ['fast', 'slow']), 10_000, 'done events of both replicas')
  t.equal(stream.retry, 2000, 'the stream starts with a reconnection delay')
  const seqs = events.map((e) => seqOf(e.id))
  t.same(seqs, [...seqs].sort((a, b) => a - b), 'event ids increase')
  t.equal(new Set(seqs).size, seqs.length, 'event ids are unique')

  for (const replica of ['fast', 'slow']) {
    const mine = ops(events, group).filter((e) => e.json.replica === replica)
    t.same(mine.map((e) => e.json.phase), ['start', 'done'], `${replica}: exactly one start, then one done`)
    const [start, done] = mine
    t.ok(seqOf(start.id) < seqOf(done.id), `${replica}: start is sent before done`)
    t.match(start.json, { type: 'operation', volume: 'v', group, kind: 'write', replica, phase: 'start', status: 'started', offset: 0, bytes: 0, error: null, durationMs: 0 }, `${replica}: start fields`)
    t.match(done.json, { type: 'operation', volume: 'v', group, kind: 'write', replica, phase: 'done', status: 'done', offset: 0, length: body.length, bytes: body.length, error: null }, `${replica}: done fields`)
    t.equal(typeof done.json.durationMs, 'number', `${replica}: durationMs is a number`)
    t.ok(done.json.durationMs >= 0, `${replica}: durationMs >= 0`)
    t.equal(done.json.mode, replica === 'fast' ? 'sync' : 'async', `${replica}: its mode`)
    t.ok(!Number.isNaN(Date.parse(done.json.time)), `${replica}: a timestamp`)
  }
  const fastDone = ops(events, group).find((e) => e.json.replica === 'fast' && e.json.phase === 'done')!
  const slowDone = ops(events, group).find((e) => e.json.replica === 'slow' && e.json.phase === 'done')!
  t.ok(seqOf(fastDone.id) < seqOf(slowDone.id), 'the sync replica is done before the async one')

  // The async replica fell behind while it waited for write-behind, then caught up; then the volume went idle.
  await stream.until((e) => e.some((x) => x.event === 'idle') && e.some((x) => x.event === 'replicaState' && x.json.state === 'in-sync'), 10_000, 'idle and in-sync')
  const states = stream.events.filter((e) => e.event === 'replicaState' && e.json.replica === 'slow').map((e) => [e.json.previous, e.json.state])
  t.same(states, [['in-sync', 'behind'], ['behind', 'in-sync']], 'slow: in-sync -> behind -> in-sync')
  const idle = stream.events.find((e) => e.event === 'idle')!
  t.match(idle.json, { type: 'idle', volume: 'v' }, 'idle names the volume')
  stream.close()
})

t.test('a failing replica: its done event carries the error, and its state change to failed is sent', async (t) => {
  const faults = new FaultInjector()
  const { app, dataDir } = await makeApp(t, {}, { openFile: faults.opener })
  const base = await listen(t, app)
  await createVolume(t, app, 'v', [
    { id: 'a', path: 'a.bin' },
    { id: 'b', path: 'b.bin' },
  ])
  const stream = await openSse(`${base}/volumes/v/events`)
  faults.set(`${dataDir}/b.bin`, { failWrites: 'EIO' })
  const res = await putData(app, 'v', pattern(1000))
  const group = res.headers['operation-id'] as string
  const events = await stream.until((e) => doneFor(e, group, ['a', 'b']) && e.some((x) => x.event === 'replicaState' && x.json.state === 'failed'), 10_000, 'failure events')
  const bDone = ops(events, group).find((e) => e.json.replica === 'b' && e.json.phase === 'done')!
  t.equal(bDone.json.status, 'failed', 'b: failed')
  t.equal(bDone.json.error.code, 'EIO', 'b: the error code')
  const failed = events.find((e) => e.event === 'replicaState' && e.json.state === 'failed')!
  t.match(failed.json, { volume: 'v', replica: 'b', state: 'failed', previous: 'in-sync', error: { code: 'EIO' } }, 'b: in-sync -> failed, with the error')
  t.equal(ops(events, group).find((e) => e.json.replica === 'a' && e.json.phase === 'done')!.json.status, 'done', 'a: done')
  stream.close()
})

t.test('GET /events carries every volume; a volume stream only its own; an unknown volume is 404', async (t) => {
  const { app } = await makeApp(t)
  const base = await listen(t, app)
  await createVolume(t, app, 'one', [{ id: 'r', path: 'one.bin' }])
  const all = await openSse(`${base}/events`)
  const onlyTwo = await openSse(`${base}/volumes/two/events`)
  t.equal(onlyTwo.status, 404, 'no stream for a volume that does not exist')
  t.match(onlyTwo.headers['content-type'], /^application\/problem\+json/)
  t.equal(onlyTwo.events[0].json.status, 404)
  t.ok(onlyTwo.events[0].json.requestId, 'the problem carries the request id')

  // A volume created after the stream opened is followed too.
  await createVolume(t, app, 'two', [{ id: 'r', path: 'two.bin' }])
  const two = await openSse(`${base}/volumes/two/events`)
  const g1 = (await putData(app, 'one', pattern(10))).headers['operation-id'] as string
  const g2 = (await putData(app, 'two', pattern(20))).headers['operation-id'] as string
  await all.until((e) => doneFor(e, g1, ['r']) && doneFor(e, g2, ['r']), 10_000, 'both volumes on /events')
  await two.until((e) => doneFor(e, g2, ['r']), 10_000, 'two on its own stream')
  t.same([...new Set(ops(all.events).map((e) => e.json.volume))].sort(), ['one', 'two'], '/events: both volumes')
  t.same([...new Set(two.events.map((e) => e.json.volume))], ['two'], '/volumes/two/events: only two')
  all.close()
  two.close()
})

t.test('HEAD of a stream is answered at once, without a stream', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'r', path: 'v.bin' }])
  for (const url of ['/events', '/volumes/v/events']) {
    const res = await app.inject({ method: 'HEAD', url })
    t.equal(res.rawPayload.length, 0, `HEAD ${url}: answered (${res.statusCode}), no body`)
  }
  t.equal(app.events.subscriberCount, 0, 'nobody subscribed')
})

t.test('heartbeats keep an idle stream alive', async (t) => {
  const { app } = await makeApp(t, { EVENTS_HEARTBEAT_MS: '40' })
  const base = await listen(t, app)
  const stream = await openSse(`${base}/events`)
  const deadline = Date.now() + 5_000
  while (stream.comments.filter((c) => c.startsWith('heartbeat')).length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  t.ok(stream.comments.filter((c) => c.startsWith('heartbeat')).length >= 3, 'at least three heartbeat comments')
  t.equal(stream.events.length, 0, 'heartbeats are comments, not events')
  stream.close()
})

t.test('Last-Event-ID resumes within the window; an unknown or evicted id gets a reset event', async (t) => {
  const { app } = await makeApp(t, { EVENTS_REPLAY_WINDOW: '50' })
  const base = await listen(t, app)
  await createVolume(t, app, 'v', [{ id: 'r', path: 'v.bin' }])
  const first = await openSse(`${base}/volumes/v/events`)
  const g1 = (await putData(app, 'v', pattern(100))).headers['operation-id'] as string
  await first.until((e) => doneFor(e, g1, ['r']), 10_000, 'first write')
  const resumeFrom = first.events[0]
  first.close()
  await first.ended

  const g2 = (await putData(app, 'v', pattern(200))).headers['operation-id'] as string
  const resumed = await openSse(`${base}/volumes/v/events`, { 'last-event-id': resumeFrom.id! })
  await resumed.until((e) => doneFor(e, g2, ['r']), 10_000, 'replayed events of the write made while away')
  const replayed = resumed.events
  t.equal(seqOf(replayed[0].id), seqOf(resumeFrom.id) + 1, 'replay starts right after the last id seen')
  t.ok(replayed.every((e) => seqOf(e.id) > seqOf(resumeFrom.id)), 'nothing at or before the last id is sent again')
  t.same(
    replayed.slice(0, first.events.length - 1).map((e) => e.id),
    first.events.slice(1).map((e) => e.id),
    'the events after the last id come again, the same ids in the same order',
  )
  t.same(
    replayed.map((e) => seqOf(e.id)),
    replayed.map((_e, i) => seqOf(resumeFrom.id) + 1 + i),
    'then everything published while away: no gap (this is the only volume)',
  )
  t.ok(ops(replayed, g1).length > 0, 'the rest of the first write is replayed')
  resumed.close()

  const unknown = await openSse(`${base}/volumes/v/events`, { 'last-event-id': 'ffffffff-3' })
  await unknown.until((e) => e.some((x) => x.event === 'reset'), 5_000, 'reset for an unknown id')
  t.equal(unknown.events[0].event, 'reset', 'an id from another epoch: reset first')
  t.equal(unknown.events[0].json.lastEventId, 'ffffffff-3', 'reset names the id it could not resume from')
  t.equal(unknown.events[0].id, app.events.lastId, 'reset carries the current id to resume from')
  unknown.close()

  // Push the first write's events out of the 50-event window.
  for (let i = 0; i < 60; i++) app.events.publish('idle', 'v', {})
  const evicted = await openSse(`${base}/volumes/v/events`, { 'last-event-id': resumeFrom.id! })
  await evicted.until((e) => e.some((x) => x.event === 'reset'), 5_000, 'reset for an evicted id')
  t.equal(evicted.events.length, 1, 'nothing is replayed past a gap')
  evicted.close()

  const current = app.events.lastId
  const upToDate = await openSse(`${base}/volumes/v/events`, { 'last-event-id': current })
  await new Promise((r) => setTimeout(r, 100))
  t.equal(upToDate.events.length, 0, 'resuming from the latest id replays nothing and does not reset')
  upToDate.close()
})

t.test('a client that stops reading is dropped; one that keeps up is not', async (t) => {
  const { app } = await makeApp(t, { EVENTS_QUEUE_LIMIT: '16', EVENTS_REPLAY_WINDOW: '10' })
  const base = await listen(t, app)
  const port = new URL(base).port

  const keepsUp = await openSse(`${base}/events`)
  // A raw client that reads the head and then nothing more.
  const stalled = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/events' }, (res) => {
      res.pause()
      resolve(res)
    }).on('error', reject)
  })
  // A paused response never emits 'close': watch its socket.
  const stalledClosed = new Promise<void>((resolve) => stalled.socket.once('close', () => resolve()))
  stalled.on('error', () => {})
  await new Promise((r) => setTimeout(r, 50))
  t.equal(app.events.subscriberCount, 2, 'both clients subscribed')

  // 1 KiB events, a few at a time, so a client that reads keeps up while one that does not fills its socket and its queue.
  const pad = 'x'.repeat(1024)
  let sent = 0
  for (let round = 0; round < 3000 && app.events.subscriberCount > 1; round++) {
    for (let i = 0; i < 10; i++, sent++) app.events.publish('idle', 'v', { pad, n: sent })
    await new Promise((r) => setImmediate(r))
  }
  t.equal(app.events.subscriberCount, 1, `the stalled client was dropped (after ${sent} events)`)
  t.equal(app.events.droppedCount, 1, 'one drop counted')
  // Once it reads again it finds its stream cut off (a paused socket cannot notice before).
  stalled.resume()
  await stalledClosed
  t.pass('the stalled client finds its connection cut')

  await keepsUp.until((e) => e.length >= sent, 10_000, 'every event for the client that reads')
  t.same(keepsUp.events.map((e) => e.json.n), Array.from({ length: sent }, (_, i) => i), 'the reading client got every event, in order')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /^filemirror_event_clients_dropped_total 1$/m, 'the drop shows in the metrics')
  t.match(metrics, /^filemirror_event_clients 1$/m, 'one client left')
  keepsUp.close()
})

t.test('closing the app ends open streams instead of waiting for them', async (t) => {
  const { app } = await makeApp(t)
  const base = await listen(t, app)
  const stream = await openSse(`${base}/events`)
  const started = Date.now()
  await app.close()
  await stream.ended
  t.ok(Date.now() - started < 5_000, 'closed promptly')
  t.equal(app.events.subscriberCount, 0, 'no subscriber left')
})

t.test('EventStream: queueing behind a full sink, draining, and dropping past the limit', async (t) => {
  const written: string[] = []
  let room = true
  let destroyed = false
  const sink: EventSink = {
    write: (text) => (written.push(text), room),
    end: () => {},
    destroy: () => (destroyed = true),
  }
  const bus = new EventStream({ replayWindow: 100, queueLimit: 3, heartbeatMs: 60_000 })
  const sub = bus.subscribe({ sink })
  t.equal(written.length, 1, 'the retry hint goes out first')
  room = false
  bus.publish('idle', 'v', { n: 1 })
  t.equal(written.length, 2, 'a write that reports a full sink was still handed to it')
  bus.publish('idle', 'v', { n: 2 })
  bus.publish('idle', 'v', { n: 3 })
  t.equal(sub.queued, 2, 'later events wait in the queue')
  room = true
  sub.drained()
  t.equal(sub.queued, 0, 'drain sends what waited')
  t.match(written.at(-1), /"n":3/, 'in order')
  room = false
  for (let n = 4; n <= 8; n++) bus.publish('idle', 'v', { n })
  t.ok(sub.dropped && destroyed, 'past the queue limit the subscriber is dropped and its sink destroyed')
  t.equal(bus.subscriberCount, 0, 'and forgotten')
  const before = written.length
  bus.publish('idle', 'v', { n: 9 })
  t.equal(written.length, before, 'nothing more goes to a dropped subscriber')

  const filtered: string[] = []
  const only = bus.subscribe({ volume: 'w', sink: { write: (s) => (filtered.push(s), true), end() {}, destroy() {} } })
  bus.publish('idle', 'v', {})
  bus.publish('idle', 'w', {})
  t.equal(filtered.filter((f) => f.startsWith('id:')).length, 1, 'a volume subscriber sees only its volume')
  only.close()
})

t.test('GET /volumes/{name}/ranges: dirty and cached ranges per replica, bounded', async (t) => {
  const { app } = await makeApp(t)
  // Without checksums the cached ranges are exactly the bytes asked for (a verified read reads whole 4 KiB blocks).
  await createVolume(
    t,
    app,
    'v',
    [
      { id: 'fast', path: 'fast.bin' },
      { id: 'slow', path: 'slow.bin', mode: 'async', maxBytesPerSecond: 1000 },
    ],
    { checksums: false },
  )
  t.equal((await putData(app, 'v', pattern(100_000))).statusCode, 202, 'the throttled async replica is left behind')
  for (let i = 0; i < 10; i++) {
    await app.inject({ method: 'GET', url: '/volumes/v/data', headers: { range: `bytes=${i * 10_000}-${i * 10_000 + 99}` } })
  }
  const ranges = json(await app.inject({ method: 'GET', url: '/volumes/v/ranges?max=4' }))
  t.equal(ranges.size, 100_000)
  t.equal(ranges.max, 4)
  const fast = ranges.replicas.find((r: any) => r.id === 'fast')
  const slow = ranges.replicas.find((r: any) => r.id === 'slow')
  t.same(fast.dirty, { bytes: 0, count: 0, intervals: [], merged: false }, 'fast: nothing dirty')
  t.same(slow.dirty.intervals, [[0, 100_000]], 'slow: everything is dirty')
  t.equal(fast.cached.bytes, 1000, 'fast: the exact cached bytes')
  t.equal(fast.cached.count, 10, 'fast: ten cached intervals')
  t.equal(fast.cached.intervals.length, 4, 'merged down to max=4 for display')
  t.ok(fast.cached.merged, 'and says so')
  t.equal(fast.cached.intervals[0][0], 0, 'the merged cover starts at the first cached byte')
  t.equal(fast.cached.intervals.at(-1)[1], 90_100, 'and ends at the last')
  t.equal((await app.inject({ method: 'GET', url: '/volumes/v/ranges?max=0' })).statusCode, 400, 'max must be positive')
  t.equal((await app.inject({ method: 'GET', url: '/volumes/nope/ranges' })).statusCode, 404, 'unknown volume')
})
