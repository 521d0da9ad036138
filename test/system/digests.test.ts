// RFC 9530 digests with a real client: curl against a listening server, its digests compared with sha256sum
// of the same bytes (hex, turned into base64). Skips without curl or sha256sum (Debian: curl, coreutils).
import t, { type Test } from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createVolume, listen, makeApp, putData, waitInSync } from '../helpers/app.js'
import { run, which } from '../helpers/clients.js'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'

const CURL = which('curl')
const SHA256SUM = which('sha256sum')
const skip = !CURL ? 'curl is not installed (Debian package: curl)' : !SHA256SUM ? 'sha256sum is not installed (coreutils)' : false

/** sha256sum of a file, as an RFC 9530 field value. */
async function sha256sum(t: Test, path: string): Promise<string> {
  const res = await run(SHA256SUM!, [path], { timeoutMs: 60_000 })
  t.equal(res.code, 0, `sha256sum ${path}`)
  return `sha-256=:${Buffer.from(res.stdout.split(' ')[0], 'hex').toString('base64')}:`
}

/** Runs curl -sS with the head written to head.txt (trailers after it, as curl writes them); returns status and fields. */
async function curl(t: Test, cwd: string, args: string[]) {
  const res = await run(CURL!, ['-sS', '-D', 'head.txt', '-w', '%{http_code}', ...args], { cwd, timeoutMs: 90_000 })
  t.equal(res.code, 0, `curl exits 0 (${res.stderr.trim()})`)
  const text = await readFile(join(cwd, 'head.txt'), 'latin1')
  // The head, then (after its blank line) the trailer fields.
  const [head, trailer = ''] = text.split('\r\n\r\n')
  const fields = (block: string) => Object.fromEntries(block.split('\r\n').filter((l) => l.includes(':') && !l.startsWith('HTTP/')).map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]))
  return { status: Number(res.stdout.trim()), headers: fields(head), trailers: fields(trailer) }
}

async function served(t: Test, size: number) {
  const made = await makeApp(t)
  await createVolume(t, made.app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'slow', path: 'slow.bin', mode: 'async' }])
  const content = pattern(size, 5)
  t.equal((await putData(made.app, 'v', content, { prefer: 'wait=30' })).statusCode, 200, `seeded ${size} bytes`)
  const base = await listen(t, made.app)
  const work = await scratch(t, 'filemirror-digests-')
  return { ...made, content, url: `${base}/volumes/v/data`, work }
}

t.test("curl -H 'Want-Content-Digest: sha-256=10' gets sha256sum of the bytes it saved", { skip }, async (t) => {
  const { url, work } = await served(t, 700_000)
  const whole = await curl(t, work, ['-o', 'whole.bin', '-H', 'Want-Content-Digest: sha-256=10', '-H', 'Want-Repr-Digest: sha-256=10', url])
  t.equal(whole.status, 200)
  const sum = await sha256sum(t, join(work, 'whole.bin'))
  t.equal(whole.headers['content-digest'], sum, 'Content-Digest is sha256sum of the body curl saved')
  t.equal(whole.headers['repr-digest'], sum, 'and so is Repr-Digest')

  const range = await curl(t, work, ['-o', 'range.bin', '-r', '1000-200999', '-H', 'Want-Content-Digest: sha-256=10', '-H', 'Want-Repr-Digest: sha-256=10', url])
  t.equal(range.status, 206)
  t.equal(range.headers['content-digest'], await sha256sum(t, join(work, 'range.bin')), 'a range: Content-Digest is sha256sum of the range')
  t.equal(range.headers['repr-digest'], sum, 'Repr-Digest is sha256sum of the whole content')

  const multi = await curl(t, work, ['-o', 'multi.bin', '-r', '0-99,5000-5099', '-H', 'Want-Content-Digest: sha-256=10', url])
  t.equal(multi.status, 206)
  t.equal(multi.headers['content-digest'], await sha256sum(t, join(work, 'multi.bin')), 'two ranges: sha256sum of the multipart body')

  const md5 = await curl(t, work, ['-o', 'md5.bin', '-H', 'Want-Content-Digest: md5=10', url])
  t.equal(md5.status, 200)
  t.equal(md5.headers['content-digest'], undefined, 'md5 is not supported: no digest')
})

t.test("curl -H 'TE: trailers' on a 4 MiB GET gets the digest as a trailer", { skip }, async (t) => {
  const { url, work } = await served(t, 4 << 20)
  const res = await curl(t, work, ['-o', 'big.bin', '-H', 'TE: trailers', '-H', 'Want-Content-Digest: sha-256=10', url])
  t.equal(res.status, 200)
  t.equal(res.headers.trailer, 'content-digest', 'Trailer: content-digest')
  t.equal(res.headers['transfer-encoding'], 'chunked', 'chunked')
  t.equal(res.headers['content-digest'], undefined, 'not in the head')
  t.equal(res.trailers['content-digest'], await sha256sum(t, join(work, 'big.bin')), 'the trailer is sha256sum of the 4 MiB curl saved')

  const plain = await curl(t, work, ['-o', 'plain.bin', '-H', 'Want-Content-Digest: sha-256=10', url])
  t.equal(plain.headers['content-digest'], await sha256sum(t, join(work, 'plain.bin')), 'without TE: trailers, a field in the head')
})

t.test('curl uploads with Content-Digest: verified, or refused leaving both replica files as they were', { skip }, async (t) => {
  const { app, url, work, dataDir, content } = await served(t, 300_000)
  const part = pattern(100_000, 6)
  await writeFile(join(work, 'part.bin'), part)
  const good = await sha256sum(t, join(work, 'part.bin'))
  await writeFile(join(work, 'other.bin'), pattern(100_000, 7))
  const bad = await sha256sum(t, join(work, 'other.bin'))
  const before = await Promise.all(['fast.bin', 'slow.bin'].map((f) => sha256sum(t, join(dataDir, f))))
  t.equal(before[0], before[1], 'the replicas start identical')

  const refused = await curl(t, work, ['-o', 'reply.json', '-X', 'PUT', '-H', 'Content-Range: bytes 100000-199999/*', '-H', `Content-Digest: ${bad}`, '--data-binary', '@part.bin', url])
  t.equal(refused.status, 400, 'a ranged PUT whose Content-Digest is of other bytes: 400')
  const replaced = await curl(t, work, ['-o', 'reply.json', '-T', 'part.bin', '-H', `Content-Digest: ${bad}`, url])
  t.equal(replaced.status, 400, 'a whole replace (curl -T) likewise')
  await waitInSync(app, 'v')
  t.same(await Promise.all(['fast.bin', 'slow.bin'].map((f) => sha256sum(t, join(dataDir, f)))), before, 'both replica files as they were')

  const ok = await curl(t, work, ['-o', 'reply.json', '-X', 'PUT', '-H', 'Prefer: wait=30', '-H', 'Content-Range: bytes 100000-199999/*', '-H', `Content-Digest: ${good}`, '--data-binary', '@part.bin', url])
  t.equal(ok.status, 200, 'with the right Content-Digest: written')
  const expected = Buffer.from(content)
  part.copy(expected, 100_000)
  await writeFile(join(work, 'expected.bin'), expected)
  const back = await curl(t, work, ['-o', 'back.bin', '-H', 'Want-Repr-Digest: sha-256=1', url])
  t.equal(back.headers['repr-digest'], await sha256sum(t, join(work, 'expected.bin')), 'the new content reads back with its digest')
  await waitInSync(app, 'v')
  const after = await Promise.all(['fast.bin', 'slow.bin'].map((f) => sha256sum(t, join(dataDir, f))))
  t.same(after, [back.headers['repr-digest'], back.headers['repr-digest']], 'both replica files hold it')
})
