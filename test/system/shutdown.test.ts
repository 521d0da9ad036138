// Stopping the real server process: SIGTERM or SIGINT drains, and the last log line tells, per volume
// and replica, the bytes left dirty in the journals; a second signal while stopping exits at once.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { scratch } from '../helpers/scratch.js'
import { eventually } from '../helpers/eventually.js'
import { logLines, serverBuilt, startServer, whenReady, type ServerProcess } from '../helpers/server-process.js'

const skip = serverBuilt ? false : 'dist/src/server.js is missing: run npm run build'


/** A volume with a sync replica and an async one throttled to 1 KiB/s, given 64 KiB: the async one stays behind. */
async function behindVolume(t: Test, server: ServerProcess): Promise<void> {
  // The server listens before its volumes are open; until then a PUT /volumes/{name} is a 503.
  await whenReady(server)
  const created = await fetch(`${server.url}/volumes/v`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ replicas: [{ id: 'fast', path: 'v/fast.img' }, { id: 'slow', path: 'v/slow.img', mode: 'async', maxBytesPerSecond: 1024 }] }),
  })
  t.equal(created.status, 201, 'volume v created')
  const written = await fetch(`${server.url}/volumes/v/data`, { method: 'PUT', body: randomBytes(64 << 10) })
  t.equal(written.status, 202, 'the write is acknowledged with the slow replica behind')
  const other = await fetch(`${server.url}/volumes/w`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ replicas: [{ id: 'a', path: 'w/a.img' }] }),
  })
  t.equal(other.status, 201, 'volume w created (one sync replica: never dirty)')
}

function started(t: Test, server: ServerProcess): void {
  t.teardown(() => {
    if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL')
  })
}

t.test('SIGTERM: the last line lists what each replica left dirty in the journal', { skip }, async (t) => {
  const dataDir = await scratch(t)
  const server = await startServer({ DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: '300' })
  started(t, server)
  await behindVolume(t, server)
  server.child.kill('SIGTERM')
  const exit = await server.exited
  t.same(exit, { code: 0, signal: null }, 'exit code 0')
  const lines = logLines(server)
  const stopping = lines.find((l) => /^stopping on SIGTERM/.test(l.msg))
  t.ok(stopping, 'it logged that it is stopping')
  t.match(stopping?.msg, /send SIGTERM again to exit at once/, 'and how to stop at once')
  const last = lines[lines.length - 1]
  t.match(last, { level: 30, signal: 'SIGTERM', exitCode: 0 }, 'the last line is the stop summary')
  t.match(last.msg, /^stopped: \d+ bytes on 1 replica left dirty in the journals/, `its message says how much is left (${last.msg})`)
  const dirty = last.dirty as Record<string, Record<string, number>>
  t.same(Object.keys(dirty), ['v', 'w'], 'every volume is listed')
  t.same(Object.keys(dirty.v), ['fast', 'slow'], 'with every replica')
  t.equal(dirty.v.fast, 0, 'the sync replica is clean')
  t.ok(dirty.v.slow > 0 && dirty.v.slow <= 64 << 10, `the throttled replica left ${dirty.v.slow} bytes`)
  t.same(dirty.w, { a: 0 }, 'the other volume is clean')
  t.equal(last.dirtyBytes, dirty.v.slow, 'dirtyBytes is the total')
})

t.test('SIGINT with nothing left to copy: the last line says nothing is dirty', { skip }, async (t) => {
  const dataDir = await scratch(t)
  const server = await startServer({ DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: '5000' })
  started(t, server)
  await whenReady(server)
  const created = await fetch(`${server.url}/volumes/c`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ replicas: [{ id: 'a', path: 'c/a.img' }, { id: 'b', path: 'c/b.img', mode: 'async' }] }),
  })
  t.equal(created.status, 201)
  t.ok((await fetch(`${server.url}/volumes/c/data`, { method: 'PUT', body: randomBytes(4096) })).ok, 'written')
  await eventually(async () => ((await (await fetch(`${server.url}/volumes/c`)).json()) as { replicas: Array<{ dirtyBytes: number }> }).replicas.every((r) => r.dirtyBytes === 0), 'the async replica to catch up', 10_000)
  server.child.kill('SIGINT')
  t.same(await server.exited, { code: 0, signal: null }, 'exit code 0')
  const last = logLines(server).at(-1)!
  t.match(last, { signal: 'SIGINT', dirtyBytes: 0, dirty: { c: { a: 0, b: 0 } } }, 'every replica clean')
  t.match(last.msg, /^stopped: nothing is left dirty in the journals$/, last.msg)
})

for (const [signal, code] of [
  ['SIGTERM', 143],
  ['SIGINT', 130],
] as const) {
  t.test(`a second ${signal} while stopping exits at once, non-zero, and says so`, { skip }, async (t) => {
    const dataDir = await scratch(t)
    // A minute of grace: without the second signal the stop would wait for the throttled replica.
    const server = await startServer({ DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: '60000' })
    started(t, server)
    await behindVolume(t, server)
    server.child.kill(signal)
    await eventually(async () => /stopping on/.test(server.output()), 'the stopping line', 10_000)
    const second = Date.now()
    server.child.kill(signal)
    const exit = await server.exited
    const took = Date.now() - second
    t.same(exit, { code, signal: null }, `exit code ${code} (128 + the signal's number)`)
    t.ok(took < 5_000, `it exited ${took} ms after the second signal, not after the grace`)
    const last = logLines(server).at(-1)!
    t.match(last, { level: 40, signal }, 'the last line is a warning')
    t.match(last.msg, new RegExp(`^second ${signal} while stopping: exiting at once`), last.msg)
    t.match(last.msg, /left dirty in the journals/, 'and it says what is left')
    const dirty = last.dirty as Record<string, Record<string, number>>
    t.ok(dirty.v.slow > 0, `the throttled replica's ${dirty.v.slow} dirty bytes are listed`)
    t.notOk(logLines(server).some((l) => /^stopped:/.test(l.msg)), 'the graceful stop never finished')
  })
}
