// The remotes a replica on another machine may be on, started for a test: a second filemirror (in-process, on a
// real socket, behind a bearer token), Apache httpd with mod_dav, s3rver. Each gives the replica configuration
// for a volume, what the remote holds (read on the remote's side, not through the replica), and stop()/start().
import { readFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3'
import type { FastifyInstance } from 'fastify'
import type { AppOptions } from '../../src/app.js'
import { startApache } from './apache.js'
import { closeOnce, makeApp, type TestLike } from './app.js'
import { S3RVER_CREDENTIALS, startS3rver } from './s3rver.js'
import { scratch } from './scratch.js'

export const REMOTE_TOKEN = 'remote-token-0123456789abcdef'

export interface Backend {
  /** The REMOTE_ALLOW entry for it. */
  allow: string
  /** AppOptions.remote for the service holding the volume (S3 credentials), and one the remote refuses. */
  remoteOptions?: AppOptions['remote']
  wrongRemoteOptions?: AppOptions['remote']
  /** AppOptions.env for the service holding the volume (the tokenEnv variables). */
  env: Record<string, string>
  /** Replica `dr` of a volume on this remote under `key` (what the remote needs is made first). */
  replica(t: TestLike, key: string): Promise<Record<string, unknown>>
  /** What the remote holds under `key`, read on its side. */
  content(key: string): Promise<Buffer>
  stop(): Promise<void>
  start(): Promise<void>
  /** What GET /volumes/{name} shows of the replica's backend. */
  statusMatch: Record<string, unknown>
  /** How a refusal of the credentials reads. */
  accessDenied: RegExp
  /** The file on this machine that holds `key` (Apache). */
  localPath?(key: string): string
}

const auth = { authorization: `Bearer ${REMOTE_TOKEN}` }

/** A second filemirror, each key a volume `key` with one local replica, behind AUTH_TOKEN; stop() closes it, start() opens it again on its port. */
export async function filemirrorBackend(t: TestLike): Promise<Backend> {
  const dataDir = await scratch(t, 'filemirror-remote-')
  let app: FastifyInstance | undefined
  let port = 0
  const start = async () => {
    app = (await makeApp(t, { DATA_DIR: dataDir, AUTH_TOKEN: REMOTE_TOKEN })).app
    await app.listen({ port, host: '127.0.0.1' })
    port = (app.server.address() as AddressInfo).port
  }
  await start()
  const base = () => `http://127.0.0.1:${port}`
  return {
    allow: base(),
    // Copies of 64 KiB (not the default 1 MiB), so a throttled write-behind is seen mid-stream.
    remoteOptions: { http: { preferredWriteUnit: 64 << 10 } },
    wrongRemoteOptions: { http: { preferredWriteUnit: 64 << 10 } },
    env: { FILEMIRROR_REMOTE_DR_TOKEN: REMOTE_TOKEN },
    async replica(_t, key) {
      const res = await app!.inject({ method: 'PUT', url: `/volumes/${key}`, headers: auth, payload: { replicas: [{ id: 'disk', path: `${key}.img` }] } })
      if (res.statusCode !== 201 && res.statusCode !== 200) throw new Error(`remote volume ${key}: ${res.statusCode} ${res.body}`)
      return { id: 'dr', url: `${base()}/volumes/${key}/data`, tokenEnv: 'FILEMIRROR_REMOTE_DR_TOKEN' }
    },
    async content(key) {
      const res = await fetch(`${base()}/volumes/${key}/data`, { headers: auth })
      if (res.status !== 200) throw new Error(`remote GET ${key}: ${res.status}`)
      return Buffer.from(await res.arrayBuffer())
    },
    async stop() {
      if (app) await closeOnce(app)
      app = undefined
    },
    start,
    statusMatch: { url: /^http:\/\/127\.0\.0\.1:\d+\/volumes\/\w+\/data$/, s3: null },
    accessDenied: /refused the credentials \(401/,
  }
}

/** Apache httpd with mod_dav: each key a file `key.img` in its DAV directory (created when the replica is added). */
export async function apacheBackend(t: TestLike): Promise<Backend> {
  const apache = await startApache(t)
  return {
    allow: apache.base,
    remoteOptions: { http: { preferredWriteUnit: 64 << 10 } },
    env: {},
    async replica(_t, key) {
      return { id: 'dr', url: `${apache.base}/${key}.img` }
    },
    content: (key) => readFile(join(apache.root, `${key}.img`)),
    stop: () => apache.stop(),
    start: () => apache.start(),
    statusMatch: { url: /^http:\/\/127\.0\.0\.1:\d+\/\w+\.img$/, s3: null },
    accessDenied: /$^/,
    localPath: (key) => join(apache.root, `${key}.img`),
  }
}

/** s3rver with bucket `filemirror`: each key a prefix `vols/key/`, in 64 KiB chunks. */
export async function s3Backend(t: TestLike): Promise<Backend> {
  const s3 = await startS3rver(t, ['filemirror'])
  const client = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: S3RVER_CREDENTIALS, maxAttempts: 1 })
  t.teardown(() => client.destroy())
  const text = async (key: string): Promise<Buffer | undefined> => {
    try {
      const reply = await client.send(new GetObjectCommand({ Bucket: 'filemirror', Key: key }))
      return Buffer.from(await reply.Body!.transformToByteArray())
    } catch (err) {
      if ((err as { name?: string }).name === 'NoSuchKey') return undefined
      throw err
    }
  }
  const CHUNK = 64 << 10
  return {
    allow: s3.endpoint,
    remoteOptions: { s3: { credentials: S3RVER_CREDENTIALS } },
    wrongRemoteOptions: { s3: { credentials: { accessKeyId: 'WRONGKEY', secretAccessKey: 'WRONGSECRET' } } },
    env: {},
    async replica(_t, key) {
      return { id: 'dr', s3: { bucket: 'filemirror', prefix: `vols/${key}/`, endpoint: s3.endpoint, forcePathStyle: true, chunkBytes: CHUNK } }
    },
    // The manifest's size, and each chunk (missing ones and past their ends read as zeros), read with a client of our own.
    async content(key) {
      const manifest = await text(`vols/${key}/manifest.json`)
      if (!manifest) throw new Error(`no manifest under vols/${key}/`)
      const { size, chunkBytes } = JSON.parse(manifest.toString('utf8')) as { size: number; chunkBytes: number }
      const out = Buffer.alloc(size)
      for (let index = 0; index * chunkBytes < size; index++) {
        const chunk = await text(`vols/${key}/chunks/${index.toString(16).padStart(12, '0')}`)
        chunk?.copy(out, index * chunkBytes, 0, Math.min(chunk.length, size - index * chunkBytes))
      }
      return out
    },
    stop: () => s3.stop(),
    start: () => s3.start(),
    statusMatch: { url: null, s3: { bucket: 'filemirror', prefix: /^vols\/\w+\/$/, endpoint: s3.endpoint, region: 'us-east-1' } },
    accessDenied: /InvalidAccessKeyId|refused/,
  }
}
