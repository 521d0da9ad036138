// Reads that verify and heal, and scrub by checksum, against a real server process (dist/src/server.js: npm run
// build first) whose replica files are damaged behind it: a flipped byte is never served, the replica that holds it
// is repaired, and when no replica holds a good copy the read fails (a problem, or a streamed reply cut short).
import { readFileSync } from 'node:fs'
import http from 'node:http'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { eventually } from '../helpers/eventually.js'
import { flipByte } from '../helpers/flip.js'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'
import { logLines, serverBuilt, startServer, whenReady, type ServerProcess } from '../helpers/server-process.js'

const skip = !serverBuilt && 'run npm run build first'
const KiB = 1 << 10
const MiB = 1 << 20
const SIZE = 3 * MiB + 1000

type Json = any

async function serve(t: Test): Promise<{ server: ServerProcess; dataDir: string }> {
  const dataDir = await scratch(t, 'filemirror-checksums-')
  const server = await startServer({ DATA_DIR: dataDir })
  t.teardown(async () => {
    if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL')
    await server.exited
  })
  await whenReady(server)
  return { server, dataDir }
}

async function call(server: ServerProcess, method: string, path: string, body?: Buffer | object, headers: Record<string, string> = {}) {
  const json = body !== undefined && !Buffer.isBuffer(body)
  const res = await fetch(server.url + path, {
    method,
    headers: json ? { 'content-type': 'application/json', ...headers } : headers,
    body: body === undefined ? undefined : json ? JSON.stringify(body) : new Uint8Array(body as Buffer),
    signal: AbortSignal.timeout(60_000),
  })
  const bytes = Buffer.from(await res.arrayBuffer())
  const type = res.headers.get('content-type') ?? ''
  return { status: res.status, type, bytes, json: type.includes('json') ? (JSON.parse(bytes.toString()) as Json) : undefined }
}

/** A volume over `replicas`, written with `data`, every replica in sync and every byte checksummed. */
async function volumeWith(server: ServerProcess, name: string, replicas: object[], data: Buffer, extra: object = {}): Promise<void> {
  const created = await call(server, 'PUT', `/volumes/${name}`, { replicas, ...extra })
  if (created.status !== 201) throw new Error(`PUT /volumes/${name}: ${created.status} ${created.bytes}`)
  const put = await call(server, 'PUT', `/volumes/${name}/data`, data)
  if (![200, 201, 202, 204].includes(put.status)) throw new Error(`PUT data: ${put.status} ${put.bytes}`)
  await eventually(
    async () => {
      const s = (await call(server, 'GET', `/volumes/${name}`)).json
      const checksummed = s.checksums?.enabled === false || s.checksums?.coveredPercent === 100
      return s.replicas.every((r: Json) => r.state === 'in-sync') && checksummed
    },
    `${name}: every replica in sync, every byte checksummed`,
    30_000,
  )
}

/** Flips one byte of a replica's file behind the server. */
const flip = flipByte

/** The checksumMismatch events of a volume's event stream, collected from now until the test ends. */
function mismatchEvents(t: Test, server: ServerProcess, name: string): Json[] {
  const events: Json[] = []
  const controller = new AbortController()
  t.teardown(() => controller.abort())
  void (async () => {
    const res = await fetch(`${server.url}/volumes/${name}/events`, { signal: controller.signal })
    let text = ''
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      text += Buffer.from(chunk).toString()
      let end: number
      while ((end = text.indexOf('\n\n')) >= 0) {
        const frame = text.slice(0, end)
        text = text.slice(end + 2)
        if (!/^event: checksumMismatch$/m.test(frame)) continue
        events.push(JSON.parse(/^data: (.*)$/m.exec(frame)![1]))
      }
    }
  })().catch(() => {})
  return events
}

async function metric(server: ServerProcess, name: string, labels: string): Promise<number> {
  const text = (await call(server, 'GET', '/metrics')).bytes.toString()
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`))
  return line ? Number(line.split(' ').at(-1)) : 0
}

async function scrub(server: ServerProcess, name: string, repair: boolean): Promise<Json> {
  const started = await call(server, 'POST', `/volumes/${name}/scrub?repair=${repair}&maxBytesPerSecond=1073741824`)
  if (started.status !== 202) throw new Error(`scrub: ${started.status} ${started.bytes}`)
  return (await call(server, 'GET', `/operations/${started.json.id}?wait=30000`)).json
}

/**
 * GETs `url` whole over a real socket, as a streaming client sees it: the bytes received and whether the reply
 * ended complete (false when the server cut it short). Needs no curl, so it runs wherever the server does.
 */
function streamGet(url: string): Promise<{ complete: boolean; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      const chunks: Buffer[] = []
      let done = false
      const finish = (complete: boolean) => {
        if (done) return
        done = true
        resolve({ complete, body: Buffer.concat(chunks) })
      }
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => finish(res.complete))
      res.on('error', () => finish(false))
      res.on('close', () => finish(res.complete))
    })
    req.on('error', reject)
    req.setTimeout(60_000, () => req.destroy(new Error(`GET ${url}: no reply within 60 s`)))
  })
}

const FAST_SLOW = [
  { id: 'fast', path: 'fast.img' },
  { id: 'slow', path: 'slow.img', mode: 'async', read: false },
]

t.test('a byte flipped in the fast replica behind the server is never served, and the file is repaired', { skip }, async (t) => {
  const { server, dataDir } = await serve(t)
  const data = pattern(SIZE, 1)
  await volumeWith(server, 'v', FAST_SLOW, data)
  const events = mismatchEvents(t, server, 'v')
  await new Promise((r) => setTimeout(r, 200))
  const fastPath = join(dataDir, 'fast.img')
  // One flip per kind of read, each in a block only that read touches first.
  const flips = { aligned: 100 * KiB + 10, unaligned: 600 * KiB + 333, streamed: 2 * MiB + 5000, tail: SIZE - 1 }
  for (const at of Object.values(flips)) flip(fastPath, at)

  const aligned = await call(server, 'GET', '/volumes/v/data', undefined, { range: `bytes=${100 * KiB}-${104 * KiB - 1}` })
  t.equal(aligned.status, 206)
  t.ok(aligned.bytes.equals(data.subarray(100 * KiB, 104 * KiB)), 'ranged 4 KiB: the right bytes')
  const from = 600 * KiB + 100
  const unaligned = await call(server, 'GET', '/volumes/v/data', undefined, { range: `bytes=${from}-${from + 999}` })
  t.ok(unaligned.bytes.equals(data.subarray(from, from + 1000)), 'ranged unaligned: the right bytes')
  const whole = await streamGet(`${server.url}/volumes/v/data`)
  t.ok(whole.complete, 'the streamed whole read completes')
  t.ok(whole.body.equals(data), 'streamed (> 1 MiB): the right bytes, tail block included')
  t.ok(readFileSync(fastPath).equals(data), 'the fast file is repaired')

  await eventually(() => events.length >= 4, 'four checksumMismatch events', 10_000)
  const blockOf = (at: number) => at - (at % 4096)
  t.same(
    events.map((e) => [e.replica, e.offset, e.repaired, e.from]).sort((a, b) => a[1] - b[1]),
    Object.values(flips).map((at) => ['fast', blockOf(at), true, 'slow']),
    'an event per bad block: on fast, repaired from slow',
  )
  const warns = logLines(server).filter((l) => l.level === 40 && l.msg.startsWith('block checksum mismatch'))
  t.same(warns.map((l) => [l.volume, l.replica, l.offset]).sort((a, b) => (a[2] as number) - (b[2] as number)), Object.values(flips).map((at) => ['v', 'fast', blockOf(at)]), 'a warn line for each names volume, replica, offset')
  t.equal(await metric(server, 'filemirror_checksum_mismatches_total', 'volume="v",replica="fast"'), 4, 'mismatches counted')
  t.equal(await metric(server, 'filemirror_checksum_repairs_total', 'volume="v",replica="fast"'), 4, 'repairs counted')
})

t.test('scrub repairs a flip on the slow replica; with two sync replicas, whichever is flipped', { skip }, async (t) => {
  const { server, dataDir } = await serve(t)
  const data = pattern(SIZE, 2)
  await volumeWith(server, 'v', FAST_SLOW, data)
  const at = 2_500_123
  flip(join(dataDir, 'slow.img'), at)
  const found = await scrub(server, 'v', false)
  t.equal(found.status, 'done')
  t.same(found.mismatches, [{ replica: 'slow', offset: at, length: 1, repaired: false }], 'found on slow, not repaired without repair')
  const fixed = await scrub(server, 'v', true)
  t.same(fixed.mismatches, [{ replica: 'slow', offset: at, length: 1, repaired: true }], 'repaired with repair=true')
  t.ok(readFileSync(join(dataDir, 'slow.img')).equals(data), 'the slow file is repaired')
  const status = (await call(server, 'GET', '/volumes/v')).json
  t.match(status.checksums?.lastScrub, { bytes: SIZE, mismatches: [{ replica: 'slow', offset: at, length: 1, repaired: true }] }, 'the volume shows its last scrub')
  t.same((await scrub(server, 'v', false)).mismatches, [], 'then a scrub finds nothing')

  await volumeWith(
    server,
    'w',
    [
      { id: 'a', path: 'a.img' },
      { id: 'b', path: 'b.img' },
    ],
    data,
  )
  for (const bad of ['a', 'b']) {
    flip(join(dataDir, `${bad}.img`), 1_234_567)
    const group = await scrub(server, 'w', true)
    t.same(group.mismatches, [{ replica: bad, offset: 1_234_567, length: 1, repaired: true }], `${bad} flipped: ${bad} found and repaired`)
    t.ok(readFileSync(join(dataDir, 'a.img')).equals(data) && readFileSync(join(dataDir, 'b.img')).equals(data), `${bad} flipped: both files right`)
  }
})

t.test('both replicas flipped in one block: a problem, or a streamed reply cut short; never wrong bytes', { skip }, async (t) => {
  const { server, dataDir } = await serve(t)
  const data = pattern(SIZE, 3)
  await volumeWith(server, 'v', FAST_SLOW, data)
  const at = 2 * MiB + 4096 + 17
  flip(join(dataDir, 'fast.img'), at)
  flip(join(dataDir, 'slow.img'), at + 1)
  const small = await call(server, 'GET', '/volumes/v/data', undefined, { range: `bytes=${2 * MiB}-${2 * MiB + 64 * KiB - 1}` })
  t.equal(small.status, 500)
  t.equal(small.type, 'application/problem+json')
  t.match(small.json, { type: 'https://filemirror.dev/problems/checksum-mismatch', offset: 2 * MiB + 4096, length: 4096, replicas: ['fast', 'slow'] })
  t.match(small.json.detail, /backup/, 'the detail says what to do')
  // The whole volume streams (> 1 MiB): its headers are out before the bad block is read, so the reply is cut.
  const streamed = await streamGet(`${server.url}/volumes/v/data`)
  t.ok(!streamed.complete && streamed.body.length < data.length, `the streamed reply is cut short (${streamed.body.length} bytes)`)
  t.ok(streamed.body.length <= 2 * MiB + 4096, 'nothing at or after the bad block was sent')
  t.ok(data.subarray(0, streamed.body.length).equals(streamed.body), 'every byte sent is right')
  t.ok((await call(server, 'GET', '/volumes/v/data', undefined, { range: 'bytes=0-4095' })).bytes.equals(data.subarray(0, 4096)), 'other blocks still read')
})

t.test('writes racing reads of the same blocks are never reported as rot, and a flip they overwrite is never served', { skip }, async (t) => {
  const { server, dataDir } = await serve(t)
  const data = pattern(SIZE, 4)
  // Two sync replicas: a block found bad on a always has a copy on b that holds the latest write.
  await volumeWith(
    server,
    'v',
    [
      { id: 'a', path: 'a.img' },
      { id: 'b', path: 'b.img' },
    ],
    data,
  )
  const events = mismatchEvents(t, server, 'v')
  const range = { start: MiB - 2048, end: MiB + 6144 } // spans three blocks, unaligned at both ends
  const versions = [data.subarray(range.start, range.end), ...[5, 6, 7, 8].map((seed) => pattern(range.end - range.start, seed))]
  let stop = false
  const writer = (async () => {
    for (let round = 0; !stop; round++) {
      const body = versions[1 + (round % 4)]
      const res = await call(server, 'PUT', '/volumes/v/data', Buffer.from(body), { 'content-range': `bytes ${range.start}-${range.end - 1}/*` })
      if (res.status >= 300) throw new Error(`write: ${res.status}`)
    }
  })()
  const flippedAt = MiB + 100
  const statuses: number[] = []
  const foreign: number[] = []
  for (let i = 0; i < 60; i++) {
    if (i === 30) flip(join(dataDir, 'a.img'), flippedAt)
    const res = await call(server, 'GET', '/volumes/v/data', undefined, { range: `bytes=${range.start}-${range.end - 1}` })
    statuses.push(res.status)
    // Each byte is of some version (a read racing a write may mix them), never the flipped one.
    if (![...res.bytes].every((b, k) => versions.some((v) => v[k] === b))) foreign.push(i)
  }
  stop = true
  await writer
  t.same(statuses, statuses.map(() => 206), 'every read served')
  t.same(foreign, [], 'no read had a byte no write wrote')
  await new Promise((r) => setTimeout(r, 200))
  // The flip was overwritten by the next write, or found and repaired by a read before it: never anything else.
  t.ok(events.every((e) => e.replica === 'a' && e.offset === flippedAt - (flippedAt % 4096) && e.repaired), `no race reported as rot (${events.length} event(s), all the real flip at ${flippedAt}: ${JSON.stringify(events)})`)
})

t.test('write-behind never copies rot over good bytes: a full resync of slow heals fast from slow\'s own block, and so does a copy that folds a gap between two writes', { skip }, async (t) => {
  const { server, dataDir } = await serve(t)
  const data = pattern(SIZE, 5)
  await volumeWith(server, 'v', FAST_SLOW, data)
  const events = mismatchEvents(t, server, 'v')
  await new Promise((r) => setTimeout(r, 200))
  const fastPath = join(dataDir, 'fast.img')
  const slowPath = join(dataDir, 'slow.img')

  // A full resync marks all of slow dirty, yet its block that verifies is the content: fast is healed from it.
  flip(fastPath, 1 * MiB + 77)
  t.equal((await call(server, 'POST', '/volumes/v/replicas/slow/resync?full=true')).status, 202, 'full resync of slow started')
  await eventually(async () => (await call(server, 'GET', '/volumes/v')).json.replicas.every((r: Json) => r.state === 'in-sync'), 'slow in sync again', 30_000)
  t.ok(readFileSync(slowPath).equals(data), 'slow still holds the right bytes: the flipped byte was not copied')
  t.ok(readFileSync(fastPath).equals(data), 'fast is repaired from slow')

  // Two writes with a flipped block between them, held back by a throttle: write-behind folds the gap into one copy.
  const spec = (rate: number | null) => ({ replicas: [FAST_SLOW[0], { ...FAST_SLOW[1], maxBytesPerSecond: rate }] })
  t.equal((await call(server, 'PUT', '/volumes/v', spec(1))).status, 200, 'slow throttled to 1 byte/s')
  const patch = pattern(4096, 6)
  const expected = Buffer.from(data)
  for (const at of [0, 2 * MiB, 2 * MiB + 8192]) {
    const put = await call(server, 'PUT', '/volumes/v/data', patch, { 'content-range': `bytes ${at}-${at + 4095}/*` })
    t.ok([200, 202, 204].includes(put.status), `a write at ${at} (${put.status})`)
    patch.copy(expected, at)
  }
  flip(fastPath, 2 * MiB + 4096 + 5)
  t.equal((await call(server, 'PUT', '/volumes/v', spec(null))).status, 200, 'the throttle lifted')
  await eventually(async () => (await call(server, 'GET', '/volumes/v')).json.replicas.every((r: Json) => r.state === 'in-sync'), 'slow in sync after the writes', 30_000)
  t.ok(readFileSync(slowPath).equals(expected), "slow holds the writes and its good block between them: the fold did not copy fast's rot")
  t.ok(readFileSync(fastPath).equals(expected), 'fast is repaired from slow')
  await eventually(() => events.some((e) => e.offset === 2 * MiB + 4096), 'the fold mismatch reported', 10_000)
  await eventually(() => events.some((e) => e.offset === 1 * MiB), 'the resync mismatch reported', 10_000)
  t.match(events.find((e) => e.offset === 1 * MiB), { replica: 'fast', repaired: true, from: 'slow' }, 'reported: fast repaired from slow')
})

t.test('with checksums off none of this runs', { skip }, async (t) => {
  const { server, dataDir } = await serve(t)
  const data = pattern(256 * KiB, 9)
  await volumeWith(server, 'v', FAST_SLOW, data, { checksums: false })
  t.equal((await call(server, 'GET', '/volumes/v')).json.checksums?.enabled, false)
  flip(join(dataDir, 'fast.img'), 1000)
  const res = await call(server, 'GET', '/volumes/v/data', undefined, { range: 'bytes=0-4095' })
  t.equal(res.bytes[1000], data[1000] ^ 0xff, 'the file as it is: unverified')
  const group = await scrub(server, 'v', false)
  t.same(group.mismatches, [{ replica: 'slow', offset: 1000, length: 1, repaired: false }], "scrub compares with the source as before (it trusts fast)")
  t.equal(await metric(server, 'filemirror_checksum_mismatches_total', 'volume="v",replica="fast"'), 0)
})
