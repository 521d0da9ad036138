import { randomBytes, randomInt } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { checksumsFileCheck } from '../helpers/checksums-file.js'
import { eventually } from '../helpers/eventually.js'
import { serverBuilt, startServer, whenReady, type ServerProcess } from '../helpers/server-process.js'
import { scratch } from '../helpers/scratch.js'

const WRITE = 16 << 10
const WRITES = 256
const THROTTLE = 1 << 20

type Status = { replicas: Array<{ id: string; state: string; dirtyBytes: number }>; checksums: { enabled: boolean; coveredPercent: number; coveredBytes: number } }

async function status(server: ServerProcess): Promise<Status> {
  const res = await fetch(`${server.url}/volumes/disk`)
  return (await res.json()) as Status
}

async function slow(server: ServerProcess) {
  return (await status(server)).replicas.find((r) => r.id === 'slow')!
}

/**
 * After a restart: once coverage reaches 100% (GET /volumes/disk), the checksums file (flushed every second) holds
 * the CRC of every block of the fast replica's bytes, with no region left in flux.
 */
async function checksumsRight(t: Test, server: ServerProcess, dataDir: string, when: string): Promise<void> {
  await eventually(async () => (await status(server)).checksums.coveredPercent === 100, `checksums to be covered ${when}`, 30_000)
  const file = join(dataDir, '.filemirror', 'journals', 'disk', 'checksums')
  let last = { wrong: [] as number[], inFlux: [] as number[] }
  const fine = await eventually(
    () => {
      last = checksumsFileCheck(file, readFileSync(join(dataDir, 'fast.img')))
      return last.wrong.length === 0 && last.inFlux.length === 0
    },
    `the checksums file to match the fast replica ${when}`,
    10_000,
  ).catch(() => false)
  t.ok(fine, `${when}: coveredPercent 100 and every block's checksum is the CRC of the fast replica's bytes (${last.wrong.length} wrong, regions in flux: ${last.inFlux.join(', ') || 'none'})`)
}

t.test('every acknowledged write survives two kill -9s, one during recovery, and the slow replica converges', { skip: !serverBuilt && 'run npm run build first' }, async (t) => {
  const dataDir = await scratch(t)
  let server = await startServer({ DATA_DIR: dataDir })
  t.teardown(() => server.child.kill('SIGKILL'))
  await whenReady(server)
  const created = await fetch(`${server.url}/volumes/disk`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ replicas: [{ id: 'fast', path: 'fast.img' }, { id: 'slow', path: 'slow/slow.img', mode: 'async', maxBytesPerSecond: THROTTLE }] }),
  })
  t.equal(created.status, 201)

  // Non-overlapping slots in a random order, four writers at a time; only acknowledged writes count.
  const slots = Array.from({ length: WRITES }, (_, i) => i).sort(() => randomInt(3) - 1)
  const acked = new Map<number, Buffer>()
  const writer = async () => {
    for (let slot = slots.pop(); slot !== undefined; slot = slots.pop()) {
      const body = randomBytes(WRITE)
      const first = slot * WRITE
      const res = await fetch(`${server.url}/volumes/disk/data`, {
        method: 'PUT',
        headers: { 'content-range': `bytes ${first}-${first + WRITE - 1}/*` },
        body,
      })
      await res.arrayBuffer()
      if (res.status === 200 || res.status === 202) acked.set(first, body)
    }
  }
  await Promise.all([writer(), writer(), writer(), writer()])
  t.equal(acked.size, WRITES, 'every write was acknowledged')
  const behind = await slow(server)
  t.ok(behind.dirtyBytes > (WRITES * WRITE) / 2, `the slow replica is far behind (${behind.dirtyBytes} dirty bytes)`)
  t.equal(behind.state, 'behind')

  server.child.kill('SIGKILL')
  await server.exited
  server = await startServer({ DATA_DIR: dataDir })
  await whenReady(server)
  const recovering = await slow(server)
  t.equal(recovering.state, 'resyncing', 'after the crash the slow replica resyncs from its journal')
  t.ok(recovering.dirtyBytes > 0)
  await checksumsRight(t, server, dataDir, 'after the first kill -9')

  // Kill again in the middle of recovery.
  await eventually(async () => (await slow(server)).dirtyBytes < recovering.dirtyBytes, 'recovery to make progress', 10_000)
  server.child.kill('SIGKILL')
  await server.exited
  server = await startServer({ DATA_DIR: dataDir })
  await whenReady(server)
  // Usually still resyncing; in-sync only when what was left fit the throttle's first burst (a loaded machine kills later).
  const second = await slow(server)
  t.ok(['resyncing', 'in-sync'].includes(second.state), `after the second crash the slow replica resumes its recovery (${second.state}, ${second.dirtyBytes} bytes left)`)
  await checksumsRight(t, server, dataDir, 'after the second kill -9')

  for (const [first, body] of acked) {
    const res = await fetch(`${server.url}/volumes/disk/data`, { headers: { range: `bytes=${first}-${first + WRITE - 1}` } })
    const got = Buffer.from(await res.arrayBuffer())
    if (res.status !== 206 || !got.equals(body)) {
      t.fail(`acknowledged write at ${first} is missing`)
      return
    }
  }
  t.pass(`all ${acked.size} acknowledged writes read back`)

  await eventually(async () => (await slow(server)).state === 'in-sync', 'the slow replica to converge', 60_000)
  const final = await slow(server)
  t.equal(final.dirtyBytes, 0)
  const fast = readFileSync(join(dataDir, 'fast.img'))
  const slowBytes = readFileSync(join(dataDir, 'slow/slow.img'))
  t.equal(slowBytes.length, fast.length, 'same size')
  t.ok(slowBytes.equals(fast), 'the slow replica is byte for byte the fast one')
  for (const [first, body] of acked) if (!fast.subarray(first, first + WRITE).equals(body)) t.fail(`fast replica lacks write at ${first}`)
  // Scrub by checksum: both replicas verify against the checksums, block by block.
  const started = await fetch(`${server.url}/volumes/disk/scrub?maxBytesPerSecond=1073741824`, { method: 'POST' })
  t.equal(started.status, 202)
  const group = (await (await fetch(`${server.url}/operations/${((await started.json()) as { id: string }).id}?wait=30000`)).json()) as { status: string; mismatches: unknown[] }
  t.equal(group.status, 'done')
  t.same(group.mismatches, [], 'a scrub finds every block of both replicas equal to its checksum')
  server.child.kill('SIGTERM')
  t.equal((await server.exited).code, 0, 'a graceful stop exits 0')
})

t.test('checksums stay right across kill -9 in the middle of overlapping writes', { skip: !serverBuilt && 'run npm run build first' }, async (t) => {
  const dataDir = await scratch(t)
  let server = await startServer({ DATA_DIR: dataDir })
  t.teardown(() => server.child.kill('SIGKILL'))
  await whenReady(server)
  const created = await fetch(`${server.url}/volumes/disk`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ replicas: [{ id: 'fast', path: 'fast.img' }, { id: 'slow', path: 'slow/slow.img', mode: 'async' }] }),
  })
  t.equal(created.status, 201)
  // Unaligned writes that overlap each other and grow the volume, from four writers, until the kill.
  const SPAN = 8 << 20
  const acked: Array<{ first: number; body: Buffer }> = []
  let stop = false
  const writer = async () => {
    while (!stop) {
      const first = randomInt(SPAN)
      const body = randomBytes(1 + randomInt(3 * WRITE))
      const res = await fetch(`${server.url}/volumes/disk/data`, { method: 'PUT', headers: { 'content-range': `bytes ${first}-${first + body.length - 1}/*` }, body }).catch(() => null)
      if (!res) return
      await res.arrayBuffer().catch(() => {})
      if (res.status === 200 || res.status === 202) acked.push({ first, body })
    }
  }
  const writers = [writer(), writer(), writer(), writer()]
  await eventually(() => acked.length >= 200, 'writes to be acknowledged', 30_000)
  server.child.kill('SIGKILL')
  stop = true
  await server.exited
  await Promise.all(writers)
  server = await startServer({ DATA_DIR: dataDir })
  await whenReady(server)
  t.comment(`at restart ${(await status(server)).checksums.coveredPercent}% covered: the regions in flux at the kill are checksummed again`)
  await checksumsRight(t, server, dataDir, 'after a kill -9 during writes')
  const expected = readFileSync(join(dataDir, 'fast.img'))
  const res = await fetch(`${server.url}/volumes/disk/data`)
  t.ok(Buffer.from(await res.arrayBuffer()).equals(expected), 'a GET verifies every block and returns the fast replica\'s bytes')
  server.child.kill('SIGTERM')
  t.equal((await server.exited).code, 0)
})

t.test('SIGTERM lets write-behind run for the grace period, persists the rest, and the next start resumes', { skip: !serverBuilt && 'run npm run build first' }, async (t) => {
  const dataDir = await scratch(t)
  let server = await startServer({ DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: '300' })
  t.teardown(() => server.child.kill('SIGKILL'))
  await whenReady(server)
  await fetch(`${server.url}/volumes/disk`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ replicas: [{ id: 'fast', path: 'fast.img' }, { id: 'slow', path: 'slow.img', mode: 'async', maxBytesPerSecond: 512 << 10 }] }),
  })
  const body = randomBytes(4 << 20)
  const put = await fetch(`${server.url}/volumes/disk/data`, { method: 'PUT', body })
  t.equal(put.status, 202)
  const before = (await slow(server)).dirtyBytes
  server.child.kill('SIGTERM')
  const exit = await server.exited
  t.equal(exit.code, 0, 'exits 0 after the grace period')
  t.match(server.output(), /stopping/, 'logs the stop')

  server = await startServer({ DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: '300' })
  await whenReady(server)
  const resumed = await slow(server)
  t.ok(resumed.dirtyBytes > 0 && resumed.dirtyBytes <= before, `the backlog (${resumed.dirtyBytes} of ${before} bytes) resumes from the journal`)
  t.equal(resumed.state, 'resyncing')
  await fetch(`${server.url}/volumes/disk`, { method: 'GET' })
  await eventually(async () => (await slow(server)).state === 'in-sync', 'convergence', 30_000)
  t.ok(readFileSync(join(dataDir, 'slow.img')).equals(body), 'slow replica converged')
  server.child.kill('SIGTERM')
  await server.exited
})
