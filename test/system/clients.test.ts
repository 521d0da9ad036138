// Real HTTP clients against a real listening server: curl, aria2c, wget and qemu-img (its curl-based
// http block driver). Each test writes or reads a volume that has a sync replica and a throttled async
// replica, compares the bytes with what was written, and waits (bounded) until both replica files are
// byte-identical and the async replica reports in-sync. A test skips when its client is missing;
// .ci/run installs them (Debian: curl aria2 wget qemu-utils qemu-block-extra).
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createVolume, getData, listen, makeApp, parseByteranges, putData } from '../helpers/app.js'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'
import { assertConverged, describeRequests, recordRequests, run, which, type SeenRequest } from '../helpers/clients.js'

const CURL = which('curl')
const ARIA2C = which('aria2c')
const WGET = which('wget')
const QEMU_IMG = which('qemu-img')
const QEMU_IO = which('qemu-io')
const CLIENT_TIMEOUT_MS = 90_000
/** A healthy convert of the 8 MiB image takes well under a second here. */
const QEMU_CONVERT_TIMEOUT_MS = 30_000

const missing = (name: string, path: string | null) => (path ? false : `${name} is not installed (Debian package: ${name === 'aria2c' ? 'aria2' : name === 'qemu-img' ? 'qemu-utils' : name})`)

/**
 * An app on a real socket with volume `v`: a sync replica `fast` and an async replica `behind`
 * throttled to 24 MiB/s, so that the async one is really behind for a moment after each write.
 */
async function mirror(t: Test) {
  const made = await makeApp(t)
  const seen = recordRequests(made.app)
  await createVolume(t, made.app, 'v', [
    { id: 'fast', path: 'fast.bin' },
    { id: 'behind', path: 'behind.bin', mode: 'async', maxBytesPerSecond: 24 << 20 },
  ])
  const base = await listen(t, made.app)
  const work = await scratch(t, 'filemirror-clients-')
  const files = [join(made.dataDir, 'fast.bin'), join(made.dataDir, 'behind.bin')]
  /** Writes `bytes` as the whole content (through the app, not a client) and waits for every replica. */
  const seed = async (bytes: Buffer) => {
    const res = await putData(made.app, 'v', bytes, { prefer: 'wait=30' })
    t.equal(res.statusCode, 200, `seeded ${bytes.length} bytes on every replica`)
  }
  return { ...made, seen, base, url: `${base}/volumes/v/data`, work, files, seed }
}

/** The requests a client made to the data route, as the server saw them. */
function dataRequests(seen: SeenRequest[], userAgent?: RegExp): SeenRequest[] {
  return seen.filter((r) => r.url.startsWith('/volumes/v/data') && (!userAgent || userAgent.test(String(r.headers['user-agent'] ?? ''))))
}

/** Runs curl with -sS, returning the exit code, the status it printed and its stderr. */
async function curl(args: string[], cwd: string) {
  const res = await run(CURL!, ['-sS', '-w', '%{http_code} %{content_type}', ...args], { cwd, timeoutMs: CLIENT_TIMEOUT_MS })
  const [status, ...type] = res.stdout.trim().split(' ')
  return { ...res, status: Number(status), contentType: type.join(' ') }
}

// ------------------------------------------------------------------------------------------------ curl

t.test('curl -T uploads a whole file (PUT); both replicas converge', { skip: missing('curl', CURL) }, async (t) => {
  const { app, url, work, files, seen } = await mirror(t)
  // Over 1 MiB, so curl also sends Expect: 100-continue and waits for the interim reply.
  const src = randomBytes((3 << 20) + 4321)
  await writeFile(join(work, 'src.bin'), src)
  const res = await curl(['--fail-with-body', '-T', 'src.bin', '-o', 'reply.json', url], work)
  t.equal(res.code, 0, `curl exits 0 (${res.stderr.trim()})`)
  t.ok(res.status === 200 || res.status === 202, `200 or 202 (${res.status})`)
  const group = JSON.parse(await readFile(join(work, 'reply.json'), 'utf8'))
  t.equal(group.kind, 'write', 'the reply is the write operation group')
  t.equal(group.length, src.length, 'covering every byte sent')
  const puts = dataRequests(seen, /^curl\//).filter((r) => r.method === 'PUT')
  t.equal(puts.length, 1, 'one PUT')
  t.equal(Number(puts[0]?.headers['content-length']), src.length, 'with the Content-Length of the file')
  t.comment(`curl -T sent: ${describeRequests(puts)}`)
  t.ok((await getData(app, 'v')).rawPayload.equals(src), 'a GET returns the uploaded bytes')
  await assertConverged(t, app, 'v', files, src, 'after curl -T')
})

t.test('curl ranged uploads: PUT with Content-Range: bytes a-b/* and --data-binary', { skip: missing('curl', CURL) }, async (t) => {
  const { app, url, work, files, seed } = await mirror(t)
  const initial = pattern(1 << 20, 3)
  await seed(initial)
  let expected = Buffer.from(initial)

  // Inside the content.
  const part = randomBytes(100_000)
  await writeFile(join(work, 'part.bin'), part)
  let res = await curl(['--fail-with-body', '-o', 'reply.json', '-X', 'PUT', '-H', 'Content-Range: bytes 300000-399999/*', '--data-binary', '@part.bin', url], work)
  t.equal(res.code, 0, `inside: curl exits 0 (${res.stderr.trim()})`)
  t.ok(res.status === 200 || res.status === 202, `inside: 200 or 202 (${res.status})`)
  part.copy(expected, 300_000)

  // Straddling the end: the volume grows.
  const tail = randomBytes(70_000)
  await writeFile(join(work, 'tail.bin'), tail)
  const at = expected.length - 20_000
  res = await curl(['--fail-with-body', '-o', 'reply.json', '-X', 'PUT', '-H', `Content-Range: bytes ${at}-${at + tail.length - 1}/*`, '--data-binary', '@tail.bin', url], work)
  t.equal(res.code, 0, `across the end: curl exits 0 (${res.stderr.trim()})`)
  expected = Buffer.concat([expected.subarray(0, at), tail])

  // With a complete length: the volume is resized to it.
  await writeFile(join(work, 'head.bin'), Buffer.from('0123456789'))
  res = await curl(['--fail-with-body', '-o', 'reply.json', '-X', 'PUT', '-H', 'Content-Range: bytes 0-9/700000', '--data-binary', '@head.bin', url], work)
  t.equal(res.code, 0, `with a complete length: curl exits 0 (${res.stderr.trim()})`)
  expected = Buffer.concat([Buffer.from('0123456789'), expected.subarray(10, 700_000)])

  // A range that disagrees with the body is refused and changes nothing.
  res = await curl(['--fail-with-body', '-o', 'problem.json', '-X', 'PUT', '-H', 'Content-Range: bytes 0-9/*', '--data-binary', '@part.bin', url], work)
  t.equal(res.code, 22, 'a Content-Range that disagrees with the body: curl --fail-with-body exits 22')
  t.equal(res.status, 400, '400')
  t.match(res.contentType, /^application\/problem\+json/, 'a problem')

  t.ok((await getData(app, 'v')).rawPayload.equals(expected), 'a GET returns the content with every range applied')
  await assertConverged(t, app, 'v', files, expected, 'after the ranged uploads')
})

t.test('curl -r downloads ranges (206), several ranges as multipart/byteranges', { skip: missing('curl', CURL) }, async (t) => {
  const { app, url, work, files, seed, seen } = await mirror(t)
  const content = randomBytes(1_000_003)
  await seed(content)
  const cases: Array<[string, number, number]> = [
    ['100-199', 100, 199],
    ['-500', content.length - 500, content.length - 1],
    ['999000-', 999_000, content.length - 1],
    ['0-0', 0, 0],
    ['1000000-9999999', 1_000_000, content.length - 1],
  ]
  for (const [range, start, end] of cases) {
    const res = await curl(['--fail-with-body', '-r', range, '-o', 'out.bin', url], work)
    t.equal(res.code, 0, `-r ${range}: curl exits 0 (${res.stderr.trim()})`)
    t.equal(res.status, 206, `-r ${range}: 206`)
    t.ok((await readFile(join(work, 'out.bin'))).equals(content.subarray(start, end + 1)), `-r ${range}: bytes ${start}-${end}`)
  }
  const multi = await curl(['--fail-with-body', '-r', '0-9,500000-500099,-7', '-o', 'multi.bin', url], work)
  t.equal(multi.status, 206, '-r 0-9,500000-500099,-7: 206')
  t.match(multi.contentType, /^multipart\/byteranges; boundary=/, 'multipart/byteranges')
  const parts = parseByteranges(await readFile(join(work, 'multi.bin')), multi.contentType)
  t.same(parts.map((p) => [p.start, p.end]), [[0, 9], [500_000, 500_099], [content.length - 7, content.length - 1]], 'three parts in the order asked')
  for (const p of parts) t.ok(p.data.equals(content.subarray(p.start, p.end + 1)), `part ${p.start}-${p.end} holds its bytes`)

  const past = await curl(['--fail-with-body', '-r', '2000000-2000010', '-o', 'past.json', url], work)
  t.equal(past.status, 416, 'a range past the end: 416')
  t.equal(past.code, 22, 'curl --fail-with-body exits 22')
  const sent = dataRequests(seen, /^curl\//).map((r) => r.headers.range)
  t.same(sent, ['bytes=100-199', 'bytes=-500', 'bytes=999000-', 'bytes=0-0', 'bytes=1000000-9999999', 'bytes=0-9,500000-500099,-7', 'bytes=2000000-2000010'], 'curl sent the Range headers asked for')
  await assertConverged(t, app, 'v', files, content, 'after the ranged downloads')
})

t.test('curl -C - resumes a partial download', { skip: missing('curl', CURL) }, async (t) => {
  const { app, url, work, files, seed, seen } = await mirror(t)
  const content = randomBytes((3 << 20) + 77)
  await seed(content)
  const out = join(work, 'out.bin')
  await writeFile(out, content.subarray(0, 1_234_567))
  const res = await curl(['--fail-with-body', '-C', '-', '-o', 'out.bin', url], work)
  t.equal(res.code, 0, `curl exits 0 (${res.stderr.trim()})`)
  t.equal(res.status, 206, '206')
  t.ok((await readFile(out)).equals(content), 'the resumed file is the whole content')
  const resumed = dataRequests(seen, /^curl\//)
  t.equal(resumed.at(-1)?.headers.range, 'bytes=1234567-', 'curl asked for the rest: Range: bytes=1234567-')
  t.equal(resumed.at(-1)?.replyHeaders['content-range'], `bytes 1234567-${content.length - 1}/${content.length}`, 'Content-Range of the rest')

  // Resuming a file that is already complete: the range starts at the end, 416 with bytes */size, and curl
  // takes that Content-Range as "nothing left to get".
  const again = await curl(['-C', '-', '-o', 'out.bin', url], work)
  t.equal(again.status, 416, 'resuming a complete file: 416')
  t.equal(again.code, 0, `curl accepts it as complete (exit ${again.code}: ${again.stderr.trim()})`)
  t.equal(dataRequests(seen, /^curl\//).at(-1)?.replyHeaders['content-range'], `bytes */${content.length}`, 'Content-Range: bytes */size')
  t.ok((await readFile(out)).equals(content), 'the file is unchanged')
  await assertConverged(t, app, 'v', files, content, 'after the resumed download')
})

// ------------------------------------------------------------------------------------------------ aria2c

t.test('aria2c -x 8 -s 8 -k 1M downloads a 16 MiB volume in segments', { skip: missing('aria2c', ARIA2C) }, async (t) => {
  const { app, url, work, files, seed, seen } = await mirror(t)
  const content = randomBytes((16 << 20) + 12345)
  await seed(content)
  const res = await run(
    ARIA2C!,
    ['-x', '8', '-s', '8', '-k', '1M', '--dir', work, '--out', 'out.bin', '--allow-overwrite=true', '--auto-file-renaming=false',
      '--file-allocation=none', '--summary-interval=0', '--console-log-level=warn', '--download-result=hide', '--max-tries=1', url],
    { cwd: work, timeoutMs: CLIENT_TIMEOUT_MS },
  )
  t.equal(res.code, 0, `aria2c exits 0 (${(res.stdout + res.stderr).trim().slice(0, 500)})`)
  t.ok((await readFile(join(work, 'out.bin'))).equals(content), 'the downloaded file is byte-identical')
  const gets = dataRequests(seen, /^aria2\//).filter((r) => r.method === 'GET')
  const ranged = gets.filter((r) => r.headers.range && !r.aborted)
  t.ok(ranged.length >= 4, `aria2c fetched in ranged segments (${ranged.length} ranged GETs of ${gets.length})`)
  t.ok(ranged.every((r) => r.status === 206), 'every completed segment was a 206')
  t.ok(ranged.every((r) => r.replyHeaders['content-range'] === `bytes ${String(r.headers.range).slice(6).split('-')[0]}-${String(r.headers.range).split('-')[1] || content.length - 1}/${content.length}`), 'each with the Content-Range of its Range')
  t.comment(`aria2c sent ${gets.length} GETs:\n${describeRequests(gets)}`)
  await assertConverged(t, app, 'v', files, content, 'after the segmented download')
})

// ------------------------------------------------------------------------------------------------ wget

t.test('wget -c resumes a partial download', { skip: missing('wget', WGET) }, async (t) => {
  const { app, url, work, files, seed, seen } = await mirror(t)
  const content = randomBytes((4 << 20) + 3)
  await seed(content)
  const out = join(work, 'out.bin')
  await writeFile(out, content.subarray(0, 1_000_003))
  const res = await run(WGET!, ['-c', '-nv', '-O', out, url], { cwd: work, timeoutMs: CLIENT_TIMEOUT_MS })
  t.equal(res.code, 0, `wget exits 0 (${res.stderr.trim()})`)
  t.ok((await readFile(out)).equals(content), 'the resumed file is the whole content')
  const gets = dataRequests(seen, /^Wget\//)
  t.equal(gets.at(-1)?.headers.range, 'bytes=1000003-', 'wget asked for the rest: Range: bytes=1000003-')
  t.equal(gets.at(-1)?.status, 206, '206')

  // A fresh download with -c (no partial file) is a plain 200.
  const fresh = join(work, 'fresh.bin')
  const again = await run(WGET!, ['-c', '-nv', '-O', fresh, url], { cwd: work, timeoutMs: CLIENT_TIMEOUT_MS })
  t.equal(again.code, 0, `a fresh wget -c exits 0 (${again.stderr.trim()})`)
  t.ok((await readFile(fresh)).equals(content), 'and gets the whole content')
  await assertConverged(t, app, 'v', files, content, 'after the resumed download')
})

// ------------------------------------------------------------------------------------------------ qemu-img

/** Whether qemu-img has the http driver (qemu-block-extra): without it the json: filename fails with "Unknown driver". */
async function qemuHasHttp(): Promise<string | false> {
  if (!QEMU_IMG) return missing('qemu-img', null)
  const probe = await run(QEMU_IMG, ['info', 'json:{"file.driver":"http","file.url":"http://127.0.0.1:9/none"}'], { timeoutMs: 20_000 })
  return /Unknown (driver|protocol)|not whitelisted|Unknown option/i.test(probe.stderr) ? `qemu-img has no http driver (Debian package qemu-block-extra): ${probe.stderr.trim()}` : false
}

const QEMU_SKIP = await qemuHasHttp()

t.test('qemu-img reads a raw disk image through its http driver', { skip: QEMU_SKIP }, async (t) => {
  const { app, url, work, files, seen } = await mirror(t)
  const image = join(work, 'disk.raw')
  const size = 8 << 20
  const created = await run(QEMU_IMG!, ['create', '-f', 'raw', image, '8M'], { timeoutMs: 30_000 })
  t.equal(created.code, 0, `qemu-img create exits 0 (${created.stderr.trim()})`)
  // Known patterns: with qemu-io when it is there, and random bytes written by hand in any case.
  if (QEMU_IO) {
    const io = await run(QEMU_IO, ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0xa5 3M 512k', '-c', 'write -P 0x01 8191k 1k', image], { timeoutMs: 30_000 })
    t.equal(io.code, 0, `qemu-io writes its patterns (${io.stderr.trim()})`)
  }
  const bytes = await readFile(image)
  randomBytes(200_000).copy(bytes, 5 << 20)
  await writeFile(image, bytes)
  t.equal(bytes.length, size, 'an 8 MiB raw image')

  const put = await fetch(url, { method: 'PUT', body: bytes, headers: { 'content-type': 'application/octet-stream' } })
  t.ok(put.status === 200 || put.status === 202, `uploaded (${put.status})`)
  await put.arrayBuffer()

  const source = `json:${JSON.stringify({ 'file.driver': 'http', 'file.url': url })}`
  const info = await run(QEMU_IMG!, ['info', '--output=json', source], { timeoutMs: CLIENT_TIMEOUT_MS })
  t.equal(info.code, 0, `qemu-img info exits 0 (${info.stderr.trim()})`)
  let parsed: any = {}
  try {
    parsed = JSON.parse(info.stdout)
  } catch {
    t.fail(`qemu-img info printed JSON: ${info.stdout}`)
  }
  t.equal(parsed['virtual-size'], size, 'qemu-img info: virtual-size 8 MiB')
  t.equal(parsed.format, 'raw', 'qemu-img info: format raw')

  const convert = () => run(QEMU_IMG!, ['convert', '-f', 'raw', '-O', 'raw', source, join(work, 'out.raw')], { timeoutMs: QEMU_CONVERT_TIMEOUT_MS })
  let converted = await convert()
  // qemu-img convert over its curl driver hangs now and then (about 1 run in 30 here) with every reply sent to its
  // last byte (seen server-side): one more try then, and the replies of the hung run are listed.
  const qemuReads = () => dataRequests(seen).filter((r) => r.method !== 'PUT')
  if (converted.timedOut && qemuReads().every((r) => !r.unfinished)) {
    t.comment(`qemu-img convert hung with every reply sent whole; trying once more. Its requests:\n${describeRequests(qemuReads())}`)
    converted = await convert()
  }
  t.equal(converted.code, 0, `qemu-img convert exits 0 (${converted.stderr.trim()})`)
  t.ok((await readFile(join(work, 'out.raw'))).equals(bytes), 'qemu-img convert over http yields the image byte for byte')

  const compared = await run(QEMU_IMG!, ['compare', '-f', 'raw', '-F', 'raw', image, source], { timeoutMs: CLIENT_TIMEOUT_MS })
  t.equal(compared.code, 0, `qemu-img compare: identical (${(compared.stdout + compared.stderr).trim()})`)

  if (QEMU_IO) {
    const read = await run(QEMU_IO, ['-r', '-f', 'raw', '-c', 'read -P 0xa5 3M 512k', '-c', 'read -P 0x01 8191k 1k', source], { timeoutMs: CLIENT_TIMEOUT_MS })
    t.equal(read.code, 0, `qemu-io reads the patterns back over http (${read.stderr.trim()})`)
    t.notMatch(read.stdout, /Pattern verification failed/, 'qemu-io pattern verification passes')
  }

  // What qemu's curl driver sends: a HEAD for the size (it refuses a server without Accept-Ranges: bytes),
  // then ranged GETs.
  const qemu = dataRequests(seen).filter((r) => !String(r.headers['user-agent'] ?? '').startsWith('node') && r.method !== 'PUT')
  const heads = qemu.filter((r) => r.method === 'HEAD')
  const gets = qemu.filter((r) => r.method === 'GET')
  t.ok(heads.length >= 1, `qemu sent HEAD (${heads.length})`)
  t.ok(heads.every((r) => r.status === 200 && r.replyHeaders['accept-ranges'] === 'bytes'), 'each HEAD was answered 200 with Accept-Ranges: bytes')
  t.ok(gets.length >= 1 && gets.every((r) => /^bytes=\d+-\d+$/.test(String(r.headers.range)) && r.status === 206), `qemu's GETs were all ranged and answered 206 (${gets.length})`)
  // Every request when one failed (a qemu-img that hangs: whether a reply stalled on the server's side shows here).
  t.comment(`qemu-img/qemu-io sent ${qemu.length} requests${t.passing() ? ', e.g.' : ''}:\n${describeRequests(t.passing() ? qemu.slice(0, 6) : qemu)}`)
  await assertConverged(t, app, 'v', files, bytes, 'after the qemu reads')
})
