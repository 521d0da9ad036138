// filemirror status against a real server: an async replica throttled behind a fast one catches up, seen as
// JSON lines (not a terminal) and on a terminal (under script(1)'s pseudo-terminal), with lag and ETA.
import t from 'tap'
import { pattern } from '../helpers/pattern.js'
import { cliServer, createVolume, deadUrl, hasScript, putData, runCli, skipUnbuilt, startCli, startCliInPty } from './cli-process.js'

const MiB = 1 << 20

/** A volume whose async replica write-behind copies at 1 MiB/s. */
async function throttled(url: string, name: string): Promise<void> {
  await createVolume(url, name, [
    { id: 'fast', path: `${name}/fast.img` },
    { id: 'slow', path: `${name}/slow.img`, mode: 'async', read: false, maxBytesPerSecond: MiB },
  ])
}

t.test('status --watch, not a terminal: a JSON line a second, lag shrinking, an ETA, then in-sync', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await throttled(url, 'lag')
  // Watching first, so the lag is seen whatever time the CLI takes to start on a busy machine.
  const run = startCli(['status', url, 'lag', '--watch'])
  await run.waitForLine((l) => l.type === 'status')
  await putData(url, 'lag', pattern(3 * MiB, 8))
  const slowOf = (l: Record<string, any>) => l.volumes[0].replicas.find((r: any) => r.id === 'slow')
  const seenBehind = await run.waitForLine((l) => l.type === 'status' && slowOf(l).dirtyBytes > 0)
  await run.waitForLine((l) => l.type === 'status' && l.inSync && Date.parse(l.time) > Date.parse(seenBehind.time), 40_000)
  run.child.kill('SIGINT')
  const { code } = await run.exited
  t.equal(code, 0, `Ctrl-C ends the watch with exit 0 (${run.stderr()})`)
  const lines = run.lines()
  const ticks = lines.filter((l) => l.type === 'status')
  const times = ticks.map((l) => Date.parse(l.time))
  t.ok(times.every((at, i) => i === 0 || at - times[i - 1] >= 950), 'a tick a second (at most)')
  const slow = ticks.map(slowOf)
  const behind = slow.filter((r) => r.dirtyBytes > 0)
  t.ok(behind.length >= 2, `the async replica seen behind (${behind.length} ticks)`)
  t.match(behind[0], { state: /behind|resyncing/, mode: 'async', maxBytesPerSecond: MiB })
  t.ok(behind.every((r, i) => i === 0 || r.dirtyBytes <= behind[i - 1].dirtyBytes), 'its lag only shrinks')
  t.ok(behind.every((r) => typeof r.etaSeconds === 'number' && r.etaSeconds > 0), 'while behind, every tick has an ETA')
  t.ok(behind.every((r) => ['throttle', 'measured'].includes(r.etaBasis)), 'resting on its throttle or a measured rate')
  if (behind[0].etaBasis === 'throttle') {
    t.equal(behind[0].rateBytesPerSecond, MiB, 'the throttle is the rate')
    t.ok(Math.abs(behind[0].etaSeconds - behind[0].dirtyBytes / MiB) <= 0.2, 'ETA = lag / throttle at the first look')
  }
  t.ok(behind[behind.length - 1].etaSeconds < behind[0].etaSeconds, 'the ETA goes down as it catches up')
  const last = ticks[ticks.length - 1]
  t.match(last, { inSync: true, volumes: [{ name: 'lag', inSync: true, etaSeconds: 0 }] })
  t.match(slowOf(last), { state: 'in-sync', dirtyBytes: 0, etaSeconds: 0 })
  t.match(lines[lines.length - 1], { type: 'result', ok: true, command: 'status', inSync: true, interrupted: true })

  const until = await runCli(['status', url, 'lag', '--watch', '--until-in-sync'])
  t.equal(until.code, 0, '--until-in-sync on a volume in sync: exit 0 at once')
  t.equal(until.lines.filter((l) => l.type === 'status').length, 1)
  t.match(until.result, { ok: true, inSync: true, interrupted: false })
})

t.test('status once: every volume, a second sample when one is behind; unknown volume and server fail', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'calm', [{ id: 'only', path: 'calm/only.img' }])
  await throttled(url, 'lag')
  await putData(url, 'lag', pattern(16 * MiB, 8)) // 16 s behind: still behind once the CLI is up
  const once = await runCli(['status', url])
  t.equal(once.code, 0, once.stderr)
  const [status] = once.lines.filter((l) => l.type === 'status')
  t.same(status.volumes.map((v: any) => v.name).sort(), ['calm', 'lag'], 'every volume')
  const slow = status.volumes.find((v: any) => v.name === 'lag').replicas.find((r: any) => r.id === 'slow')
  t.ok(slow.dirtyBytes > 0 && slow.etaSeconds > 0, 'the replica behind has an ETA')
  t.match(once.result, { ok: true, inSync: false })

  const none = await runCli(['status', url, 'nope'])
  t.equal(none.code, 1)
  t.match(none.stderr, /HTTP 404/)
  const dead = await deadUrl()
  const down = await runCli(['status', dead])
  t.equal(down.code, 1, 'an unreachable server: exit 1')
  t.match(down.stderr, `cannot reach ${dead}: connect ECONNREFUSED`)
})

t.test('status --watch on a terminal redraws a table until Ctrl-C, showing the replica catch up', { skip: skipUnbuilt || (hasScript ? false : 'no script(1) from util-linux') }, async (t) => {
  const { url } = await cliServer(t)
  await throttled(url, 'tty')
  const run = startCliInPty(['status', url, '--watch'])
  const screens = () => run.stdout().split('\x1b[H').slice(1)
  const until = async (what: string, test: (screen: string) => boolean, from = 0) => {
    const deadline = Date.now() + 40_000
    while (!screens().slice(from).some(test)) {
      if (Date.now() > deadline || run.child.exitCode !== null) throw new Error(`no screen with ${what}:\n${run.stdout()}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  await until('the volume', (s) => /^tty  ok/m.test(s))
  await putData(url, 'tty', pattern(3 * MiB, 8))
  await until('the slow replica behind', (s) => /slow\s+async\s+behind/.test(s))
  const seenBehind = screens().length
  await until('it in-sync again', (s) => /slow\s+async\s+in-sync\s+0 B/.test(s), seenBehind)
  // Ctrl-C, typed on the terminal.
  run.child.stdin!.write('\x03')
  const timer = setTimeout(() => run.child.kill('SIGKILL'), 5000)
  const { code } = await run.exited
  clearTimeout(timer)
  t.equal(code, 0, 'Ctrl-C ends the watch, exit 0')
  const all = screens()
  t.ok(all.length >= 3, `the screen was redrawn (${all.length} times)`)
  const behind = all.find((s) => /slow\s+async\s+behind\s+[\d.]+ (KiB|MiB)/.test(s))
  t.ok(behind, 'a screen with the slow replica behind, its lag in KiB or MiB')
  t.match(behind ?? '', /slow\s+async\s+behind\s+[\d.]+ (KiB|MiB)\s+[\d.]+ (KiB|MiB)\/s \((throttle|measured)\)\s+\d+s/, 'its rate and ETA')
  t.match(behind ?? '', /REPLICA\s+MODE\s+STATE\s+LAG\s+RATE\s+ETA/, 'under a table header')
  t.match(behind ?? '', /tty {2}ok {2}3\.00 MiB {2}in sync in \d+s/, 'the volume line gives the ETA to in-sync')
  t.match(all[all.length - 1], /tty {2}ok {2}3\.00 MiB {2}in sync\x1b/, 'the last screen: in sync')
  t.notMatch(run.stdout(), /"type":"status"/, 'no JSON on a terminal')
})

t.test('status --watch keeps watching while the server is unreachable', { skip: skipUnbuilt }, async (t) => {
  const { url, server } = await cliServer(t)
  await createVolume(url, 'v', [{ id: 'only', path: 'v/only.img' }])
  const run = startCli(['status', url, '--watch', '--interval', '0.2'])
  await run.waitForLine((l) => l.type === 'status')
  server.child.kill('SIGKILL')
  await run.waitForLine((l) => l.type === 'error' && /cannot reach/.test(l.message))
  t.equal(run.child.exitCode, null, 'still watching')
  run.child.kill('SIGINT')
  const { code } = await run.exited
  t.equal(code, 0, 'Ctrl-C ends a watch with exit 0')
  t.match(run.lines().pop(), { type: 'result', ok: true, command: 'status', interrupted: true })
})
