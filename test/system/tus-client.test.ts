// tus-js-client (a real tus client, from npm) uploading into a volume of a real server process
// (dist/src/server.js: npm run build first): 64 MiB aborted half way, resumed from its URL after a
// SIGTERM restart and after a kill -9, and the volume holds exactly the source; a wrong Upload-Checksum
// is refused with 460 and changes nothing.
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import * as tus from 'tus-js-client'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'
import { serverBuilt, startServer, whenReady, type ServerProcess } from '../helpers/server-process.js'

const skip = !serverBuilt && 'run npm run build first'
const MiB = 1 << 20
const TOKEN = 'tus-client-test-token-0123456789'
const auth = { authorization: `Bearer ${TOKEN}` }
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex')

/** One server process at a time over `dataDir`; killed when the test ends. */
class Served {
  proc!: ServerProcess
  constructor(
    private readonly t: Test,
    private readonly dataDir: string,
  ) {
    t.teardown(() => this.stop('SIGKILL'))
  }

  async start(): Promise<string> {
    this.proc = await startServer({ DATA_DIR: this.dataDir, AUTH_TOKEN: TOKEN, SHUTDOWN_GRACE_MS: '2000' })
    await whenReady(this.proc)
    return this.proc.url
  }

  async stop(signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    const child = this.proc?.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    child.kill(signal)
    const exit = await this.proc.exited
    if (signal === 'SIGTERM') this.t.equal(exit.code, 0, 'SIGTERM: a clean stop')
  }
}

interface Run {
  upload: tus.Upload
  /** Upload-Offset of the first PATCH this run sent (where it resumed). */
  firstOffset: () => number | undefined
  /** Resolves once the upload succeeded, or was aborted by `abortAt`; rejects on an error. */
  ended: Promise<'done' | 'aborted'>
}

/** Starts tus-js-client on `source`: resuming `uploadUrl` when given, aborting once `abortAt` bytes are sent. */
function run(source: Buffer, options: tus.UploadOptions & { abortAt?: number }): Run {
  let firstOffset: number | undefined
  let upload!: tus.Upload
  const ended = new Promise<'done' | 'aborted'>((resolve, reject) => {
    upload = new tus.Upload(source, {
      chunkSize: 4 * MiB,
      retryDelays: [100, 300, 1000],
      headers: auth,
      ...options,
      onBeforeRequest: async (req) => {
        if (req.getMethod() === 'PATCH') firstOffset ??= Number(req.getHeader('Upload-Offset'))
        await options.onBeforeRequest?.(req)
      },
      onProgress: (sent) => {
        if (options.abortAt !== undefined && sent >= options.abortAt) upload.abort().then(() => resolve('aborted'), reject)
      },
      onSuccess: () => resolve('done'),
      onError: reject,
    })
    upload.start()
  })
  return { upload, firstOffset: () => firstOffset, ended }
}

async function volumeBytes(url: string, name: string): Promise<Buffer> {
  const res = await fetch(`${url}/volumes/${name}/data`, { headers: auth })
  return Buffer.from(await res.arrayBuffer())
}

async function uploadOffset(url: string, location: string): Promise<number> {
  const res = await fetch(location.startsWith('http') ? location : `${url}${location}`, { method: 'HEAD', headers: { ...auth, 'tus-resumable': '1.0.0' } })
  return Number(res.headers.get('upload-offset'))
}

t.test('64 MiB through tus-js-client: aborted half way, resumed after SIGTERM and after kill -9, the bytes match', { skip }, async (t) => {
  const dataDir = await scratch(t, 'filemirror-tus-')
  const server = new Served(t, dataDir)
  let url = await server.start()
  const create = await fetch(`${url}/volumes/big`, {
    method: 'PUT',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ replicas: [{ id: 'fast', path: 'big/fast.img' }, { id: 'slow', path: 'big/slow.img', mode: 'async' }] }),
  })
  t.equal(create.status, 201, 'volume created')
  // Old content, longer than the upload: replace=true makes the volume the upload, 64 MiB.
  const old = await fetch(`${url}/volumes/big/data`, { method: 'PUT', headers: auth, body: new Uint8Array(pattern(65 * MiB, 3)) })
  t.ok(old.status === 200 || old.status === 202, `65 MiB of old content written (${old.status})`)
  const source = pattern(64 * MiB, 11)
  const endpoint = () => `${url}/volumes/big/uploads`

  const first = run(source, { endpoint: endpoint(), metadata: { filename: 'disk.img', replace: 'true' }, uploadDataDuringCreation: true, abortAt: 30 * MiB })
  t.equal(await first.ended, 'aborted', 'the first run is aborted half way')
  const location = first.upload.url!
  t.match(location, /\/volumes\/big\/uploads\/[0-9a-f]{32}$/, 'the upload URL')
  const atStop = await uploadOffset(url, location)
  // Chunks of 4 MiB: an interrupted PATCH acknowledges nothing of its chunk.
  t.ok(atStop % (4 * MiB) === 0 && atStop >= 28 * MiB && atStop <= 32 * MiB, `acknowledged ${atStop / MiB} MiB before the abort`)

  await server.stop('SIGTERM')
  url = await server.start()
  const resumedUrl = location.replace(/^http:\/\/[^/]+/, url)
  const second = run(source, { endpoint: endpoint(), uploadUrl: resumedUrl, abortAt: 46 * MiB })
  t.equal(await second.ended, 'aborted', 'the second run (after SIGTERM) is aborted too')
  t.equal(second.firstOffset(), atStop, 'after SIGTERM it resumed where the server had stopped')
  t.equal(second.upload.url, resumedUrl, 'the same upload')
  const atKill = await uploadOffset(url, resumedUrl)
  t.ok(atKill % (4 * MiB) === 0 && atKill > atStop && atKill <= 48 * MiB, `acknowledged ${atKill / MiB} MiB before the kill`)

  await server.stop('SIGKILL')
  url = await server.start()
  const finalUrl = location.replace(/^http:\/\/[^/]+/, url)
  const third = run(source, { endpoint: endpoint(), uploadUrl: finalUrl })
  t.equal(await third.ended, 'done', 'the third run (after kill -9) completes')
  t.equal(third.firstOffset(), atKill, 'after kill -9 it resumed from the recorded offset')
  t.equal(third.upload.url, finalUrl, 'still the same upload')

  const stored = await volumeBytes(url, 'big')
  t.equal(stored.length, source.length, 'the volume is 64 MiB (replace=true)')
  t.equal(sha256(stored), sha256(source), 'the volume holds exactly the source')
  t.equal(sha256(await readFile(join(dataDir, 'big', 'fast.img'))), sha256(source), 'so does the sync replica file')

  // A wrong Upload-Checksum: 460, nothing written.
  let status: number | undefined
  const refused = run(Buffer.alloc(MiB, 0xee), {
    endpoint: endpoint(),
    onBeforeRequest: (req) => {
      if (req.getMethod() === 'PATCH') req.setHeader('Upload-Checksum', `sha1 ${createHash('sha1').update('not the body').digest('base64')}`)
    },
    onShouldRetry: () => false,
  })
  await refused.ended.then(
    () => t.fail('the upload with a wrong checksum succeeded'),
    (err: tus.DetailedError) => (status = err.originalResponse?.getStatus()),
  )
  t.equal(status, 460, 'a wrong Upload-Checksum is 460 Checksum Mismatch')
  t.equal(await uploadOffset(url, refused.upload.url!), 0, 'the upload took none of it')
  t.equal(sha256(await volumeBytes(url, 'big')), sha256(source), 'the volume is unchanged')
})
