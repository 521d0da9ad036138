// filemirror get against a real server: resumed after kill -9 with If-Range, started over when the content
// changed meanwhile, --range, the final size checked, JSON lines when not a terminal, a bar on one.
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'
import { cliServer, createVolume, hasScript, killCli, putData, runCli, skipUnbuilt, startCli, startCliInPty } from './cli-process.js'

const MiB = 1 << 20

/** The volume's read operation groups, newest first. */
async function readGroups(url: string, name: string): Promise<{ offset: number; length: number; createdAt: string }[]> {
  const res = await fetch(`${url}/volumes/${name}/operations`)
  const body = (await res.json()) as { groups?: any[]; operations?: any[] } | any[]
  const groups = Array.isArray(body) ? body : (body.groups ?? body.operations ?? [])
  return groups.filter((g: any) => g.kind === 'read').sort((a: any, b: any) => Date.parse(b.createdAt) - Date.parse(a.createdAt))
}

t.test('get killed mid-way resumes with If-Range where it stopped; the bytes equal the volume', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'big', [{ id: 'fast', path: 'fast/big.img' }])
  const content = pattern(64 * MiB, 11)
  await putData(url, 'big', content)
  const dir = await scratch(t)
  const file = join(dir, 'big.img')

  // Throttled, so that it is still running when killed.
  const first = startCli(['get', `${url}/volumes/big`, file, '--limit-rate', '16M'])
  const line = await first.waitForLine((l) => l.type === 'progress' && l.bytes >= 8 * MiB)
  t.equal(line.total, 64 * MiB, 'progress lines give the total')
  t.equal(line.command, 'get')
  t.type(line.bytesPerSecond, 'number', 'and a rate')
  await killCli(first)
  const partial = statSync(file).size
  t.ok(partial > 0 && partial < 64 * MiB, `killed part-way (${partial} bytes on disk)`)
  const saved = JSON.parse(readFileSync(`${file}.filemirror-etag`, 'utf8'))
  const etag = (await fetch(`${url}/volumes/big/data`, { method: 'HEAD' })).headers.get('etag')
  t.equal(saved.etag, etag, 'the ETag is saved beside the partial file')

  const second = await runCli(['get', `${url}/volumes/big`, file])
  t.equal(second.code, 0, `the second run succeeds (${second.stderr})`)
  t.match(second.result, { ok: true, command: 'get', bytes: 64 * MiB, resumedFrom: partial, startedOver: false, etag })
  t.ok(readFileSync(file).equals(content), 'the file holds the volume, byte for byte')
  t.notOk(existsSync(`${file}.filemirror-etag`), 'the ETag file is removed once complete')
  const reads = await readGroups(url, 'big')
  t.equal(reads[0]?.offset, partial, 'the server read from where the first run stopped, not from 0')
  t.equal(reads[0]?.length, 64 * MiB - partial)
  t.ok(second.lines.filter((l) => l.type === 'progress').every((l) => l.bytes >= partial), 'progress starts at the resumed offset')

  const again = await runCli(['get', `${url}/volumes/big`, file])
  t.equal(again.code, 0, 'a complete file with no ETag file: fetched again whole')
  t.match(again.result, { ok: true, resumedFrom: 0 })
})

t.test('get resumed after the content changed starts over and gets the new content', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'v', [{ id: 'fast', path: 'fast/v.img' }])
  await putData(url, 'v', pattern(32 * MiB, 1))
  const dir = await scratch(t)
  const file = join(dir, 'v.img')

  const first = startCli(['get', `${url}/volumes/v`, file, '--limit-rate', '16M'])
  await first.waitForLine((l) => l.type === 'progress' && l.bytes >= 4 * MiB)
  await killCli(first)
  const partial = statSync(file).size
  t.ok(partial > 0 && partial < 32 * MiB, 'killed part-way')

  const next = pattern(20 * MiB + 5, 2)
  await putData(url, 'v', next)
  const second = await runCli(['get', `${url}/volumes/v`, file])
  t.equal(second.code, 0, second.stderr)
  t.match(second.result, { ok: true, startedOver: true, bytes: next.length })
  t.ok(readFileSync(file).equals(next), 'the file holds the new content, not a mix')
})

t.test('a reply cut short by a write (one instant per ETag) is resumed in the same run: the new content, whole', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'c', [{ id: 'fast', path: 'fast/c.img' }])
  const old = pattern(48 * MiB, 6)
  await putData(url, 'c', old)
  const dir = await scratch(t)
  const file = join(dir, 'c')
  const run = startCli(['get', `${url}/volumes/c`, file, '--limit-rate', '16M'])
  await run.waitForLine((l) => l.type === 'progress' && l.bytes >= 4 * MiB)
  // A write to bytes the streamed reply has yet to send cuts it short.
  const patched = Buffer.from(old)
  pattern(MiB, 7).copy(patched, 40 * MiB)
  const res = await fetch(`${url}/volumes/c/data`, { method: 'PUT', headers: { 'content-range': `bytes ${40 * MiB}-${41 * MiB - 1}/${48 * MiB}` }, body: new Uint8Array(pattern(MiB, 7)) })
  t.ok(res.ok, 'the write lands')
  const { code } = await run.exited
  t.equal(code, 0, run.stderr())
  const result = run.lines().find((l) => l.type === 'result')
  t.match(result, { ok: true, bytes: 48 * MiB, startedOver: true }, 'it started over for the new instant')
  t.ok(readFileSync(file).equals(patched), 'the file is the new content, never a mix')
})

t.test('get --range writes that range; resumed too; a range past the end fails', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'r', [{ id: 'fast', path: 'fast/r.img' }])
  const content = pattern(24 * MiB, 3)
  await putData(url, 'r', content)
  const dir = await scratch(t)

  const small = join(dir, 'small')
  const a = await runCli(['get', `${url}/volumes/r`, small, '--range', '1000-1999'])
  t.equal(a.code, 0, a.stderr)
  t.ok(readFileSync(small).equals(content.subarray(1000, 2000)), 'bytes 1000-1999')

  const tail = join(dir, 'tail')
  const first = startCli(['get', `${url}/volumes/r`, tail, '--range', `${4 * MiB}-`, '--limit-rate', '8M'])
  await first.waitForLine((l) => l.type === 'progress' && l.bytes >= 2 * MiB)
  await killCli(first)
  const partial = statSync(tail).size
  const b = await runCli(['get', `${url}/volumes/r`, tail, '--range', `${4 * MiB}-`])
  t.equal(b.code, 0, b.stderr)
  t.match(b.result, { ok: true, resumedFrom: partial, bytes: 20 * MiB })
  t.ok(readFileSync(tail).equals(content.subarray(4 * MiB)), 'the rest of the volume from 4 MiB, resumed')

  // Another range over the same partial file is another download: it starts over.
  writeFileSync(`${tail}.filemirror-etag`, JSON.stringify({ etag: '"x"', url: `${url}/volumes/r/data`, range: '0-9' }))
  const c = await runCli(['get', `${url}/volumes/r`, tail, '--range', '10-19'])
  t.equal(c.code, 0)
  t.ok(readFileSync(tail).equals(content.subarray(10, 20)), 'another range: fetched afresh')

  const past = await runCli(['get', `${url}/volumes/r`, join(dir, 'past'), '--range', `${30 * MiB}-`])
  t.equal(past.code, 1, 'a range past the end fails (exit 1)')
  t.match(past.result, { ok: false, command: 'get', error: /past the end/ })
  t.match(past.stderr, /range .* starts past the end of volume r \(24\.0 MiB, 25165824 bytes\)/)

  const devnull = await runCli(['get', `${url}/volumes/r`, '/dev/null'])
  t.match(devnull.result, { ok: true, bytes: 24 * MiB }, 'a device is written as a stream (/dev/null)')
  t.notOk(existsSync('/dev/null.filemirror-etag'), 'with no state file beside it')
  const toDir = await runCli(['get', `${url}/volumes/r`, dir])
  t.equal(toDir.code, 2, 'a directory: exit 2')
  t.match(toDir.stderr, /is a directory/)

  const missing = await runCli(['get', `${url}/volumes/nope`, join(dir, 'nope')])
  t.equal(missing.code, 1, 'an unknown volume fails (exit 1)')
  t.match(missing.stderr, /HTTP 404: no volume named nope/)
})

t.test('get with FILEMIRROR_TOKEN against a server with AUTH_TOKEN', { skip: skipUnbuilt }, async (t) => {
  const token = 'cli-test-token-0123456789'
  const { url } = await cliServer(t, { AUTH_TOKEN: token })
  const auth = { authorization: `Bearer ${token}` }
  await createVolume(url, 'a', [{ id: 'fast', path: 'fast/a.img' }], auth)
  const content = pattern(100_000, 4)
  await putData(url, 'a', content, auth)
  const dir = await scratch(t)
  const file = join(dir, 'a')
  const denied = await runCli(['get', `${url}/volumes/a`, file], { FILEMIRROR_TOKEN: '' })
  t.equal(denied.code, 1, 'without a token: exit 1')
  t.match(denied.stderr, /HTTP 401.*set FILEMIRROR_TOKEN/)
  const ok = await runCli(['get', `${url}/volumes/a`, file], { FILEMIRROR_TOKEN: token })
  t.equal(ok.code, 0, ok.stderr)
  t.ok(readFileSync(file).equals(content))
})

t.test('get on a terminal draws a progress bar with bytes, rate and ETA', { skip: skipUnbuilt || (hasScript ? false : 'no script(1) from util-linux') }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'p', [{ id: 'fast', path: 'fast/p.img' }])
  await putData(url, 'p', pattern(6 * MiB, 5))
  const dir = await scratch(t)
  const file = join(dir, 'p')
  const run = startCliInPty(['get', `${url}/volumes/p`, file, '--limit-rate', '4M'])
  const { code } = await run.exited
  t.equal(code, 0, run.stderr())
  const screen = run.stdout()
  t.match(screen, /get \[[█░]+\] \d+% \| [\d.]+ (KiB|MiB) \/ 6\.00 MiB \| [\d.]+ (KiB|MiB)\/s \| ETA \d+s/, 'a bar: percent, bytes of total, rate, ETA')
  t.match(screen, /100% \| 6\.00 MiB \/ 6\.00 MiB/, 'that ends full')
  t.match(screen, /p: 6\.00 MiB \(6291456 bytes\) from p/, 'and a plain last line')
  t.notMatch(screen, /"type":"progress"/, 'no JSON lines on a terminal')
  t.ok(readFileSync(file).equals(pattern(6 * MiB, 5)))
})
