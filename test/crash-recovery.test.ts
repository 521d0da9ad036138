import { randomBytes, randomInt } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { serverBuilt, startServer, until, type ServerProcess } from './helpers/server-process.js'
import { scratch } from './helpers/scratch.js'

const WRITE = 16 << 10
const WRITES = 256
const THROTTLE = 1 << 20

type Status = { replicas: Array<{ id: string; state: string; dirtyBytes: number }> }

async function status(server: ServerProcess): Promise<Status> {
  const res = await fetch(`${server.url}/volumes/disk`)
  return (await res.json()) as Status
}

async function slow(server: ServerProcess) {
  return (await status(server)).replicas.find((r) => r.id === 'slow')!
}

async function ready(server: ServerProcess): Promise<void> {
  await until(async () => (await fetch(`${server.url}/readyz`)).status === 200, 20_000, 'readyz')
}

t.test('every acknowledged write survives two kill -9s, one during recovery, and the slow replica converges', { skip: !serverBuilt && 'run npm run build first' }, async (t) => {
  const dataDir = await scratch(t)
  let server = await startServer({ DATA_DIR: dataDir })
  t.teardown(() => server.child.kill('SIGKILL'))
  await ready(server)
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
  await ready(server)
  const recovering = await slow(server)
  t.equal(recovering.state, 'resyncing', 'after the crash the slow replica resyncs from its journal')
  t.ok(recovering.dirtyBytes > 0)

  // Kill again in the middle of recovery.
  await until(async () => (await slow(server)).dirtyBytes < recovering.dirtyBytes, 10_000, 'recovery to make progress')
  server.child.kill('SIGKILL')
  await server.exited
  server = await startServer({ DATA_DIR: dataDir })
  await ready(server)
  t.not((await slow(server)).state, 'in-sync', 'still resyncing after the second crash')

  for (const [first, body] of acked) {
    const res = await fetch(`${server.url}/volumes/disk/data`, { headers: { range: `bytes=${first}-${first + WRITE - 1}` } })
    const got = Buffer.from(await res.arrayBuffer())
    if (res.status !== 206 || !got.equals(body)) {
      t.fail(`acknowledged write at ${first} is missing`)
      return
    }
  }
  t.pass(`all ${acked.size} acknowledged writes read back`)

  await until(async () => (await slow(server)).state === 'in-sync', 60_000, 'the slow replica to converge')
  const final = await slow(server)
  t.equal(final.dirtyBytes, 0)
  const fast = readFileSync(join(dataDir, 'fast.img'))
  const slowBytes = readFileSync(join(dataDir, 'slow/slow.img'))
  t.equal(slowBytes.length, fast.length, 'same size')
  t.ok(slowBytes.equals(fast), 'the slow replica is byte for byte the fast one')
  for (const [first, body] of acked) if (!fast.subarray(first, first + WRITE).equals(body)) t.fail(`fast replica lacks write at ${first}`)
  server.child.kill('SIGTERM')
  t.equal((await server.exited).code, 0, 'a graceful stop exits 0')
})

t.test('SIGTERM lets write-behind run for the grace period, persists the rest, and the next start resumes', { skip: !serverBuilt && 'run npm run build first' }, async (t) => {
  const dataDir = await scratch(t)
  let server = await startServer({ DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: '300' })
  t.teardown(() => server.child.kill('SIGKILL'))
  await ready(server)
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
  await ready(server)
  const resumed = await slow(server)
  t.ok(resumed.dirtyBytes > 0 && resumed.dirtyBytes <= before, `the backlog (${resumed.dirtyBytes} of ${before} bytes) resumes from the journal`)
  t.equal(resumed.state, 'resyncing')
  await fetch(`${server.url}/volumes/disk`, { method: 'GET' })
  await until(async () => (await slow(server)).state === 'in-sync', 30_000, 'convergence')
  t.ok(readFileSync(join(dataDir, 'slow.img')).equals(body), 'slow replica converged')
  server.child.kill('SIGTERM')
  await server.exited
})
