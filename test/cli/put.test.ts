// filemirror put against a real server (tus): killed mid-way (SIGKILL) and run again, it resumes where the server
// says it stopped (HEAD of the upload) rather than from 0, and the volume's bytes equal the file; a whole put
// sets the volume's size, --offset writes in place and may grow it; a changed file is a new upload.
import { createHash } from 'node:crypto'
import { readFileSync, utimesSync, writeFileSync } from 'node:fs'
import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { eventually } from '../helpers/eventually.js'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'
import { cliServer, createVolume, hasScript, killCli, putData, readVolume, runCli, skipUnbuilt, startCli, startCliInPty } from './cli-process.js'

const MiB = 1 << 20

/** The uploads the CLI remembers (its cache file), by upload URL. */
function remembered(cacheDir: string): { uploadUrl: string; size: number; metadata: Record<string, string> }[] {
  try {
    return Object.values(JSON.parse(readFileSync(join(cacheDir, 'uploads.json'), 'utf8')))
  } catch {
    return []
  }
}

/** The volume's write groups, oldest first. */
async function writeGroups(url: string, name: string): Promise<{ id: string; offset: number; length: number; status: string }[]> {
  const body = (await (await fetch(`${url}/volumes/${name}/operations`)).json()) as { operations: any[] }
  return body.operations.filter((g) => g.kind === 'write').sort((a, b) => Date.parse(a.createdAt) - Date.parse(b.createdAt))
}

/** The upload's offset once no write of the volume is in flight and two HEADs 200 ms apart agree. */
async function settledOffset(url: string, name: string, uploadUrl: string): Promise<number> {
  const offset = async () => {
    const head = await fetch(uploadUrl, { method: 'HEAD', headers: { 'tus-resumable': '1.0.0' } })
    if (head.status !== 200) throw new Error(`HEAD of the upload: ${head.status}`)
    return Number(head.headers.get('upload-offset'))
  }
  return eventually(async () => {
    const pending = (await writeGroups(url, name)).some((g) => g.status === 'pending')
    const before = await offset()
    await new Promise((resolve) => setTimeout(resolve, 200))
    return !pending && (await offset()) === before ? before : 0
  }, 'the killed upload to settle', 15_000)
}

t.test('put killed mid-way resumes where the server has it; the volume equals the file', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'big', [{ id: 'fast', path: 'fast/big.img' }])
  await putData(url, 'big', pattern(3 * MiB, 20)) // old content, longer than nothing
  const dir = await scratch(t)
  const cache = join(dir, 'cache')
  const file = join(dir, 'big.bin')
  const content = pattern(64 * MiB, 21)
  writeFileSync(file, content)
  // 4 MiB per PATCH, at 16 MiB/s: the first run is still going when killed.
  const env = { FILEMIRROR_CACHE_DIR: cache, FILEMIRROR_CLI_CHUNK_BYTES: String(4 * MiB) }

  const first = startCli(['put', file, `${url}/volumes/big`, '--limit-rate', '16M'], env)
  const line = await first.waitForLine((l) => l.type === 'progress' && l.bytes >= 14 * MiB)
  t.match(line, { command: 'put', volume: 'big', total: 64 * MiB, bytesPerSecond: Number }, 'progress lines: bytes, total, rate')
  await killCli(first)

  const [stored] = remembered(cache)
  t.ok(stored, 'the upload URL is remembered in FILEMIRROR_CACHE_DIR')
  t.match(stored, { size: 64 * MiB, metadata: { offset: '0', replace: 'true' } })
  // A PATCH whose whole body reached the server before the kill still lands: read the offset once it has.
  const acknowledged = await settledOffset(url, 'big', stored.uploadUrl)
  t.ok(acknowledged >= 8 * MiB && acknowledged < 64 * MiB, `the server holds part of it (${acknowledged} bytes)`)
  t.equal(acknowledged % (4 * MiB), 0, 'whole PATCHes of 4 MiB')
  const writesBefore = (await writeGroups(url, 'big')).length

  const second = await runCli(['put', file, `${url}/volumes/big`], env)
  t.equal(second.code, 0, second.stderr)
  t.match(second.result, { type: 'result', ok: true, command: 'put', volume: 'big', bytes: 64 * MiB, replace: true, resumedFrom: acknowledged, uploadUrl: stored.uploadUrl, volumeSize: 64 * MiB })
  const progress = second.lines.filter((l) => l.type === 'progress')
  t.equal(progress[0]?.bytes, acknowledged, 'the second run starts at what the server had')
  const writes = (await writeGroups(url, 'big')).slice(writesBefore)
  t.equal(writes[0]?.offset, acknowledged, 'its first write lands where the first run stopped, not at 0')
  t.equal(writes.reduce((n, w) => n + w.length, 0), 64 * MiB - acknowledged, 'and it sent only the rest')
  t.ok((await readVolume(url, 'big')).equals(content), 'the volume holds the file, byte for byte')
  t.same(remembered(cache), [], 'the finished upload is forgotten')
  t.ok(second.result?.operationIds.length > 0, 'the result names the write groups (for filemirror wait)')
})

t.test('put replaces the content and sets the size; --offset writes in place and may grow it', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'v', [{ id: 'fast', path: 'fast/v.img' }])
  await putData(url, 'v', pattern(2 * MiB, 1))
  const dir = await scratch(t)
  const env = { FILEMIRROR_CACHE_DIR: join(dir, 'cache') }

  const small = join(dir, 'small')
  writeFileSync(small, pattern(100_000, 2))
  const whole = await runCli(['put', small, `${url}/volumes/v`], env)
  t.equal(whole.code, 0, whole.stderr)
  t.match(whole.result, { ok: true, replace: true, offset: 0, volumeSize: 100_000 })
  t.ok((await readVolume(url, 'v')).equals(pattern(100_000, 2)), 'a whole put: the volume is the file, its size too (shrunk from 2 MiB)')

  const patch = join(dir, 'patch')
  writeFileSync(patch, pattern(50_000, 3))
  const inside = await runCli(['put', patch, `${url}/volumes/v`, '--offset', '10000'], env)
  t.equal(inside.code, 0, inside.stderr)
  const expected = Buffer.from(pattern(100_000, 2))
  pattern(50_000, 3).copy(expected, 10_000)
  t.match(inside.result, { ok: true, replace: false, offset: 10_000, volumeSize: 100_000 })
  t.ok((await readVolume(url, 'v')).equals(expected), '--offset: written in place, the rest kept')

  const growing = await runCli(['put', patch, `${url}/volumes/v`, '--offset', '90000'], env)
  t.equal(growing.code, 0, growing.stderr)
  t.match(growing.result, { ok: true, volumeSize: 140_000 })
  const grown = Buffer.concat([expected.subarray(0, 90_000), pattern(50_000, 3)])
  t.ok((await readVolume(url, 'v')).equals(grown), '--offset past the old end grows the volume')

  const past = await runCli(['put', patch, `${url}/volumes/v`, '--offset', '1M'], env)
  t.equal(past.code, 1, 'an offset past the end is refused by the server: exit 1')
  t.match(past.stderr, /HTTP 400: metadata offset 1048576 is past the end of the volume \(140000 bytes\)/)

  const empty = join(dir, 'empty')
  writeFileSync(empty, '')
  const none = await runCli(['put', empty, `${url}/volumes/v`], env)
  t.equal(none.code, 0, none.stderr)
  t.match(none.result, { ok: true, volumeSize: 0 }, 'an empty file empties the volume')

  const missing = await runCli(['put', join(dir, 'nope'), `${url}/volumes/v`], env)
  t.equal(missing.code, 1)
  t.match(missing.stderr, /cannot read .*nope: ENOENT/)
  const noVolume = await runCli(['put', small, `${url}/volumes/nope`], env)
  t.equal(noVolume.code, 1)
  t.match(noVolume.stderr, /HTTP 404: no volume named nope/)
})

t.test('a file changed since the interrupted put is a new upload, from 0', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'c', [{ id: 'fast', path: 'fast/c.img' }])
  const dir = await scratch(t)
  const env = { FILEMIRROR_CACHE_DIR: join(dir, 'cache'), FILEMIRROR_CLI_CHUNK_BYTES: String(2 * MiB) }
  const file = join(dir, 'c.bin')
  writeFileSync(file, pattern(24 * MiB, 4))
  const first = startCli(['put', file, `${url}/volumes/c`, '--limit-rate', '8M'], env)
  await first.waitForLine((l) => l.type === 'progress' && l.bytes >= 6 * MiB)
  await killCli(first)
  const next = pattern(24 * MiB, 5)
  writeFileSync(file, next)
  utimesSync(file, new Date(), new Date(Date.now() + 5000))
  const second = await runCli(['put', file, `${url}/volumes/c`], env)
  t.equal(second.code, 0, second.stderr)
  t.match(second.result, { ok: true, resumedFrom: 0 }, 'not resumed: another file version')
  t.ok((await readVolume(url, 'c')).equals(next))
})

t.test('put with FILEMIRROR_TOKEN', { skip: skipUnbuilt }, async (t) => {
  const token = 'cli-put-token-0123456789'
  const { url } = await cliServer(t, { AUTH_TOKEN: token })
  const auth = { authorization: `Bearer ${token}` }
  await createVolume(url, 'a', [{ id: 'fast', path: 'fast/a.img' }], auth)
  const dir = await scratch(t)
  const file = join(dir, 'a.bin')
  writeFileSync(file, pattern(1 * MiB, 6))
  const env = { FILEMIRROR_CACHE_DIR: join(dir, 'cache') }
  const denied = await runCli(['put', file, `${url}/volumes/a`], { ...env, FILEMIRROR_TOKEN: '' })
  t.equal(denied.code, 1, 'without it: exit 1')
  t.match(denied.stderr, /HTTP 401.*set FILEMIRROR_TOKEN/)
  const ok = await runCli(['put', file, `${url}/volumes/a`], { ...env, FILEMIRROR_TOKEN: token })
  t.equal(ok.code, 0, ok.stderr)
  t.ok((await readVolume(url, 'a', auth)).equals(pattern(1 * MiB, 6)))
})

t.test('put on a terminal draws a progress bar with bytes, rate and ETA', { skip: skipUnbuilt || (hasScript ? false : 'no script(1) from util-linux') }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'a', [{ id: 'fast', path: 'fast/a.img' }])
  const dir = await scratch(t)
  const file = join(dir, 'a.bin')
  writeFileSync(file, pattern(6 * MiB, 6))
  const run = startCliInPty(['put', file, `${url}/volumes/a`, '--limit-rate', '4M'], { FILEMIRROR_CACHE_DIR: join(dir, 'cache') })
  const { code } = await run.exited
  t.equal(code, 0, run.stdout())
  t.match(run.stdout(), /put \[[█░]+\] \d+% \| [\d.]+ (KiB|MiB) \/ 6\.00 MiB \| [\d.]+ (KiB|MiB)\/s \| ETA \d+s/, 'a bar: percent, bytes, rate, ETA')
  t.match(run.stdout(), /a\.bin: 6\.00 MiB \(6291456 bytes\) replaced the content of a/, 'and a plain last line')
  t.notMatch(run.stdout(), /"type":"progress"/, 'no JSON lines on a terminal')
  t.ok((await readVolume(url, 'a')).equals(pattern(6 * MiB, 6)))
})

/** A proxy in front of the server that records each PATCH's Upload-Checksum and, when asked, flips a body byte. */
async function checksumProxy(t: Test, target: string) {
  const seen: Array<string | undefined> = []
  const state = { corrupt: false }
  const server = createServer((req, res) => {
    if (req.method === 'PATCH') seen.push(req.headers['upload-checksum'] as string | undefined)
    const flip = req.method === 'PATCH' && state.corrupt
    let first = true
    const upstream = httpRequest(target + req.url, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode!, answer.headers)
      answer.pipe(res)
    })
    upstream.on('error', () => res.destroy())
    req.on('data', (chunk: Buffer) => {
      if (flip && first && chunk.length > 0) chunk[0] ^= 0xff // the same length, one wrong byte
      first = false
      upstream.write(chunk)
    })
    req.on('end', () => upstream.end())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, state }
}

t.test('every PATCH carries the sha256 of its bytes: one damaged on the way is refused and writes nothing; the whole put is checked against Repr-Digest', { skip: skipUnbuilt }, async (t) => {
  const { url } = await cliServer(t)
  await createVolume(url, 'v', [{ id: 'fast', path: 'fast/v.img' }])
  const before = pattern(3 * MiB, 7)
  await putData(url, 'v', before)
  const proxy = await checksumProxy(t, url)
  const dir = await scratch(t)
  const env = { FILEMIRROR_CACHE_DIR: join(dir, 'cache'), FILEMIRROR_CLI_CHUNK_BYTES: String(1 * MiB) }
  const file = join(dir, 'f.bin')
  const content = pattern(3 * MiB + 1234, 8)
  writeFileSync(file, content)

  proxy.state.corrupt = true
  const damaged = await runCli(['put', file, `${proxy.url}/volumes/v`], env)
  t.equal(damaged.code, 1, `a damaged PATCH fails the put (${damaged.stderr.trim()})`)
  t.match(damaged.stderr, /HTTP 460/, 'the server answered 460 Checksum Mismatch')
  t.ok((await readVolume(url, 'v')).equals(before), 'the volume is unchanged: none of the damaged body was written')

  proxy.state.corrupt = false
  proxy.seen.length = 0
  const ok = await runCli(['put', file, `${proxy.url}/volumes/v`], env)
  t.equal(ok.code, 0, ok.stderr)
  t.ok(proxy.seen.length >= 4, `the put sent its 4 chunks as PATCHes (${proxy.seen.length})`)
  t.ok(proxy.seen.every((h) => /^sha256 [A-Za-z0-9+/]+=*$/.test(h ?? '')), `each with Upload-Checksum: sha256 (${proxy.seen[0]})`)
  t.equal(ok.result?.sha256, createHash('sha256').update(content).digest('base64'), "the result's sha256 is the file's, as the server's Repr-Digest gave it")
  t.ok((await readVolume(url, 'v')).equals(content))
})
