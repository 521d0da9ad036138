// GET /metrics: Prometheus text from a registry of the app's own; counters and histograms move with
// traffic, per volume and replica; gauges show queue depth, dirty bytes and retained groups.
import t from 'tap'
import { createVolume, makeApp, putData, waitInSync } from '../helpers/app.js'
import { pattern } from '../helpers/pattern.js'

type Samples = Map<string, number>

/** Parses the exposition format into `name{labels}` -> value, labels sorted by name. */
function parse(text: string): Samples {
  const samples: Samples = new Map()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`unparsable metrics line: ${line}`)
    const labels = [...(m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)].map(([, k, v]) => `${k}="${v}"`).sort()
    samples.set(labels.length ? `${m[1]}{${labels.join(',')}}` : m[1], Number(m[3]))
  }
  return samples
}

/** A sample's key with its labels in name order. */
function key(name: string, labels: Record<string, string> = {}): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort()
  return parts.length ? `${name}{${parts.join(',')}}` : name
}

t.test('GET /metrics: the exposition format, process metrics, a registry per app', async (t) => {
  const { app } = await makeApp(t)
  const { app: other } = await makeApp(t)
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/, 'Prometheus text format')
  const samples = parse(res.body)
  t.ok(samples.has('process_cpu_user_seconds_total'), 'process CPU')
  t.ok(samples.has('process_resident_memory_bytes'), 'process memory')
  t.ok([...samples.keys()].some((k) => k.startsWith('nodejs_heap_size_used_bytes')), 'Node heap')
  t.equal(samples.get('filemirror_groups_retained'), 0, 'no groups yet')
  t.match(res.body, /# TYPE filemirror_http_request_duration_seconds histogram/, 'the request histogram is declared')
  t.equal((await other.inject({ method: 'GET', url: '/metrics' })).statusCode, 200, 'a second app in the same process has its own registry')
})

t.test('counters and histograms move with traffic, labelled by volume and replica', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [
    { id: 'fast', path: 'fast.bin' },
    { id: 'slow', path: 'slow.bin', mode: 'async' },
  ])
  const scrape = async () => parse((await app.inject({ method: 'GET', url: '/metrics' })).body)
  const before = await scrape()
  const V = (replica: string) => ({ volume: 'v', replica })
  t.equal(before.get(key('filemirror_bytes_written_total', V('fast'))), undefined, 'no bytes written yet')

  const body = pattern(10_000)
  const put = await putData(app, 'v', body)
  t.ok([200, 202].includes(put.statusCode), 'written')
  await waitInSync(app, 'v')
  const read = await app.inject({ method: 'GET', url: '/volumes/v/data', headers: { range: 'bytes=0-999' } })
  t.equal(read.statusCode, 206)
  // The async replica's done event follows its copy: wait for it to be counted.
  let after = await scrape()
  for (let i = 0; i < 100 && after.get(key('filemirror_bytes_written_total', V('slow'))) !== 10_000; i++) {
    await new Promise((r) => setTimeout(r, 20))
    after = await scrape()
  }

  t.equal(after.get(key('filemirror_bytes_written_total', V('fast'))), 10_000, 'bytes written: fast')
  t.equal(after.get(key('filemirror_bytes_written_total', V('slow'))), 10_000, 'bytes written: slow')
  t.equal(after.get(key('filemirror_bytes_read_total', V('fast'))), 1000, 'bytes read: from fast')
  t.equal(after.get(key('filemirror_bytes_read_total', V('slow'))), undefined, 'nothing read from slow')
  t.equal(after.get(key('filemirror_write_behind_bytes_total', V('slow'))), 10_000, 'write-behind copied the write onto slow')
  t.equal(after.get(key('filemirror_operation_duration_seconds_count', { ...V('fast'), kind: 'write', status: 'done' })), 1, 'one write timed on fast')
  t.equal(after.get(key('filemirror_operation_duration_seconds_count', { ...V('slow'), kind: 'write', status: 'done' })), 1, 'one write timed on slow')
  t.equal(after.get(key('filemirror_operation_duration_seconds_count', { ...V('fast'), kind: 'read', status: 'done' })), 1, 'one read timed on fast')
  t.ok(after.get(key('filemirror_operation_duration_seconds_sum', { ...V('slow'), kind: 'write', status: 'done' }))! >= 0, 'durations summed')
  t.equal(
    after.get(key('filemirror_http_request_duration_seconds_count', { method: 'PUT', route: '/volumes/:name/data', status_code: String(put.statusCode) })),
    1,
    'the write request is timed under its route pattern',
  )
  t.equal(after.get(key('filemirror_http_request_duration_seconds_count', { method: 'GET', route: '/volumes/:name/data', status_code: '206' })), 1, 'the read too')
  t.equal(after.get(key('filemirror_groups_retained')), 2, 'a write group and a read group are retained')
  t.equal(after.get(key('filemirror_volume_size_bytes', { volume: 'v' })), 10_000, 'volume size')
  t.equal(after.get(key('filemirror_replica_queue_depth', V('fast'))), 0, 'queue depth per replica')
  t.equal(after.get(key('filemirror_replica_dirty_bytes', V('slow'))), 0, 'nothing dirty once in sync')
  t.equal(after.get(key('filemirror_replica_state', { ...V('slow'), state: 'in-sync' })), 1, 'slow is in sync')

  await putData(app, 'v', pattern(5000), { 'content-range': 'bytes 0-4999/*' })
  await app.inject({ method: 'GET', url: '/volumes/nope' })
  const more = await scrape()
  t.equal(more.get(key('filemirror_bytes_written_total', V('fast'))), 15_000, 'bytes written grow with the next write')
  t.equal(more.get(key('filemirror_operation_duration_seconds_count', { ...V('fast'), kind: 'write', status: 'done' })), 2, 'two writes timed')
  t.equal(more.get(key('filemirror_http_request_duration_seconds_count', { method: 'GET', route: '/volumes/:name', status_code: '404' })), 1, 'a 404 on a known route')
  t.ok(more.get(key('filemirror_http_request_duration_seconds_count', { method: 'GET', route: '/metrics', status_code: '200' }))! >= 2, 'scrapes are timed too')
  t.equal(more.get(key('filemirror_groups_retained')), 3, 'groups retained grow')

  await app.inject({ method: 'GET', url: '/no/such/route' })
  t.equal((await scrape()).get(key('filemirror_http_request_duration_seconds_count', { method: 'GET', route: '<unmatched>', status_code: '404' })), 1, 'unmatched URLs share one label')
})

t.test('dirty bytes and state gauges show a replica left behind', async (t) => {
  const { app } = await makeApp(t)
  await createVolume(t, app, 'v', [
    { id: 'fast', path: 'fast.bin' },
    // About 100 s of copying for this write: it stays dirty for the whole test.
    { id: 'slow', path: 'slow.bin', mode: 'async', maxBytesPerSecond: 1000 },
  ])
  t.equal((await putData(app, 'v', pattern(100_000))).statusCode, 202, 'acknowledged before the async replica has the bytes')
  const samples = parse((await app.inject({ method: 'GET', url: '/metrics' })).body)
  t.equal(samples.get(key('filemirror_replica_dirty_bytes', { volume: 'v', replica: 'slow' })), 100_000, 'slow: 100000 dirty bytes')
  t.equal(samples.get(key('filemirror_replica_dirty_bytes', { volume: 'v', replica: 'fast' })), 0, 'fast: none')
  t.equal(samples.get(key('filemirror_replica_state', { volume: 'v', replica: 'slow', state: 'behind' })), 1, 'slow is behind')
  t.equal(samples.get(key('filemirror_replica_state', { volume: 'v', replica: 'slow', state: 'in-sync' })), 0, 'and not in sync')
  t.equal(samples.get(key('filemirror_bytes_written_total', { volume: 'v', replica: 'slow' })), undefined, 'not counted as written to slow before it has them')
})
