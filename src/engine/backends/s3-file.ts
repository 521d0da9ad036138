import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3'
import type { ReplicaFile } from '../replica-file.js'

/**
 * A replica stored in an S3 bucket (AWS S3, MinIO, Ceph RGW, or anything speaking the S3 API).
 *
 * Object layout under `prefix` (a `/` is added to a non-empty prefix that lacks one):
 *   `<prefix>manifest.json`         {"format":"filemirror-s3-replica","version":1,"volume","replica","size","chunkBytes","generation"}
 *   `<prefix>chunks/<12 hex digits>` chunk `index` holds bytes [index·chunkBytes, (index+1)·chunkBytes) of the volume;
 *                                    a missing chunk, and the part of a chunk past its object's length, read as zeros.
 *
 * Invariants: nothing stored is past the size (bytes past it read as zeros once the size grows again), and
 * every chunk object is at most chunkBytes long. A write replaces one whole chunk object (never a
 * read-modify-write against the store); the only read-modify-write is the partial last chunk at a truncate.
 *
 * The size lives in the manifest, which is written at open (when missing or claimed), at truncate, at sync()
 * and at close() when it changed. A chunk is durable once its write resolves; a size grown by writes is
 * durable once sync() resolves. Chunks past the manifest's size (writes whose size was never synced: a crash)
 * are deleted when the file is next opened.
 *
 * Memory: a read streams each chunk's range straight into the caller's buffer; a write sends the caller's
 * buffer; only a truncate to a partial last chunk holds one (partial) chunk buffer of its own.
 *
 * One writer per prefix: the manifest carries the identity of the volume and replica it belongs to, and a
 * file opened with another identity is refused (EIDENTITY) unless claimed. No conditional writes are used.
 */

export interface S3Identity {
  /** The volume's UUID. */
  volume: string
  /** The replica's UUID. */
  replica: string
}

export interface S3FileOptions {
  bucket: string
  /** Key prefix of this replica's objects, e.g. `volumes/vol1/replica-b/`. */
  prefix: string
  /** For S3-compatible stores (MinIO, Ceph RGW): `http://host:9000`. AWS S3 when absent. */
  endpoint?: string
  region: string
  /** Path-style URLs (`endpoint/bucket/key`), as MinIO and most RGW setups need. Default false. */
  forcePathStyle?: boolean
  /** Size of a chunk object, for a new replica (an existing manifest's value wins). Default 4 MiB. */
  chunkBytes?: number
  /** Whose replica this is; checked against the manifest and written into it. */
  identity: S3Identity
  /** Take over a prefix whose manifest names another identity (its bytes are kept but should be resynced). Default false. */
  claim?: boolean
  /**
   * Credentials; the SDK's default chain when absent (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, then
   * shared config files, then container/instance metadata).
   */
  credentials?: S3ClientConfig['credentials']
  /** Attempts per request, the SDK's retries included (its standard back-off). Default 3. */
  maxAttempts?: number
  /** Connection establishment limit. Default 5 000 ms. */
  connectTimeoutMs?: number
  /** Limit for one whole request and its response headers. Default 60 000 ms. */
  requestTimeoutMs?: number
  /** A socket (a body being streamed) idle this long fails. Default 30 000 ms. */
  idleTimeoutMs?: number
  /** Keys per listing page when trimming (the store's limit is 1000). Default 1000. */
  listPageKeys?: number
  /** Content-MD5 on every chunk write, checked by the store. Default true. */
  contentMd5?: boolean
  /**
   * The SDK's flexible checksums. Default 'WHEN_REQUIRED': with 'WHEN_SUPPORTED' the SDK sends bodies in
   * aws-chunked framing with trailing checksums, which several S3-compatible stores (and s3rver) do not support.
   */
  requestChecksumCalculation?: 'WHEN_REQUIRED' | 'WHEN_SUPPORTED'
  responseChecksumValidation?: 'WHEN_REQUIRED' | 'WHEN_SUPPORTED'
}

export const DEFAULT_CHUNK_BYTES = 4 << 20
const MIN_CHUNK_BYTES = 1 << 10
/** PutObject's limit. */
const MAX_CHUNK_BYTES = 5 * 2 ** 30
const MANIFEST_FORMAT = 'filemirror-s3-replica'
const MANIFEST_VERSION = 1
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const CHUNK_NAME = /^[0-9a-f]{12}$/
const MAX_CHUNK_INDEX = 16 ** 12 - 1

export type S3ErrorCode =
  /** The store cannot be reached or answered 5xx / throttled / timed out: try again later (retryable). */
  | 'EREMOTE_UNAVAILABLE'
  /** Credentials refused: AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, expired or missing ones. */
  | 'EACCES'
  /** The bucket does not exist. */
  | 'ENOENT'
  /** A write that is not one whole chunk (or the last chunk up to the size). */
  | 'EALIGN'
  /** The manifest names another volume or replica. */
  | 'EIDENTITY'
  /** The manifest cannot be parsed or is inconsistent. */
  | 'EBADMANIFEST'
  /** Wrong arguments (options, offsets, sizes). */
  | 'EINVAL'
  /** Used after close(). */
  | 'EBADF'
  /** Anything else the store refused. */
  | 'EIO'

/** Every error an S3File throws: a code, whether retrying may help, and the store's own error when there was one. */
export class S3FileError extends Error {
  override readonly name = 'S3FileError'
  constructor(
    readonly code: S3ErrorCode,
    message: string,
    readonly retryable: boolean,
    /** What the store or the network threw. */
    cause?: unknown,
    /** s3Code: the store's error code (`AccessDenied`) or the socket's (`ECONNREFUSED`); status: the HTTP status. */
    readonly details: { s3Code?: string; status?: number; operation?: string; key?: string } = {},
  ) {
    super(message, cause === undefined ? undefined : { cause })
  }
}

const ACCESS_CODES = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'AccountProblem',
  'AllAccessDisabled',
  'InvalidSecurity',
  'CredentialsProviderError',
])
const THROTTLE_CODES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'BandwidthLimitExceeded',
  'ServiceUnavailable',
  'InternalError',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
])
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTCONN',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
])

interface ErrorShape {
  name?: unknown
  code?: unknown
  Code?: unknown
  message?: unknown
  errors?: unknown
  $retryable?: unknown
  $metadata?: { httpStatusCode?: number }
}

/** The code of a network error, looking into an AggregateError (several addresses tried). */
function networkCode(err: ErrorShape): string | undefined {
  if (typeof err.code === 'string' && NETWORK_CODES.has(err.code)) return err.code
  if (Array.isArray(err.errors)) {
    for (const inner of err.errors) {
      const code = inner && typeof inner === 'object' ? networkCode(inner as ErrorShape) : undefined
      if (code) return code
    }
  }
  return undefined
}

/** Maps whatever the SDK or the network threw to an S3FileError with its code and retryability. */
export function mapS3Error(err: unknown, where: string, operation?: string, key?: string): S3FileError {
  if (err instanceof S3FileError) return err
  const e = (err && typeof err === 'object' ? err : {}) as ErrorShape
  const s3Code = typeof e.Code === 'string' ? e.Code : typeof e.name === 'string' && e.name !== 'Error' ? e.name : undefined
  const status = e.$metadata?.httpStatusCode
  const net = networkCode(e)
  const text = typeof e.message === 'string' && e.message ? e.message : String(err)
  const what = `${where}: ${operation ?? 'request'}${key ? ` ${key}` : ''}`
  const details = { s3Code: net ?? s3Code, status, operation, key }
  if (s3Code && ACCESS_CODES.has(s3Code)) return new S3FileError('EACCES', `${what} refused: ${text} (${s3Code})`, false, err, details)
  if (s3Code === 'NoSuchBucket') return new S3FileError('ENOENT', `${what}: no such bucket (NoSuchBucket)`, false, err, details)
  if (net || (s3Code && THROTTLE_CODES.has(s3Code)) || (status !== undefined && (status >= 500 || status === 429)) || e.$retryable) {
    return new S3FileError('EREMOTE_UNAVAILABLE', `${what}: store unavailable: ${text} (${net ?? s3Code ?? status})`, true, err, details)
  }
  // A HEAD-style reply has no body to name the error: fall back on the status.
  if (status === 403) return new S3FileError('EACCES', `${what} refused: ${text} (403)`, false, err, details)
  return new S3FileError('EIO', `${what} failed: ${text}${s3Code ? ` (${s3Code})` : ''}`, false, err, details)
}

const isMissing = (err: unknown) => {
  const name = (err as ErrorShape | undefined)?.name
  return name === 'NoSuchKey' || name === 'NotFound'
}

interface Manifest {
  format: typeof MANIFEST_FORMAT
  version: typeof MANIFEST_VERSION
  volume: string
  replica: string
  size: number
  chunkBytes: number
  generation: number
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0

function parseManifest(text: string, where: string): Manifest {
  let m: Partial<Manifest>
  try {
    m = JSON.parse(text) as Partial<Manifest>
  } catch (err) {
    throw new S3FileError('EBADMANIFEST', `${where}: manifest.json is not JSON: ${(err as Error).message}`, false, err)
  }
  const bad = (why: string) => new S3FileError('EBADMANIFEST', `${where}: manifest.json ${why}`, false)
  if (!m || typeof m !== 'object' || m.format !== MANIFEST_FORMAT) throw bad(`is not a ${MANIFEST_FORMAT} manifest`)
  if (m.version !== MANIFEST_VERSION) throw bad(`has version ${String(m.version)}, this server reads ${MANIFEST_VERSION}`)
  if (typeof m.volume !== 'string' || typeof m.replica !== 'string') throw bad('has no identity')
  if (!isCount(m.size)) throw bad(`has a bad size: ${String(m.size)}`)
  if (!isCount(m.chunkBytes) || m.chunkBytes < MIN_CHUNK_BYTES || m.chunkBytes > MAX_CHUNK_BYTES) throw bad(`has a bad chunkBytes: ${String(m.chunkBytes)}`)
  if (!isCount(m.generation)) throw bad(`has a bad generation: ${String(m.generation)}`)
  if (Math.ceil(m.size / m.chunkBytes) - 1 > MAX_CHUNK_INDEX) throw bad('has a size past the last chunk index')
  return m as Manifest
}

const invalid = (message: string) => new S3FileError('EINVAL', message, false)

/** An S3 replica: the volume's bytes as chunk objects plus a manifest. Open with S3File.open(). */
export class S3File implements ReplicaFile {
  /** `s3://bucket/prefix`, for logs and errors. */
  readonly path: string
  /** Capabilities a remote backend has beyond a file. */
  readonly remote = true
  /** Writes must be whole chunks of this size (the last chunk up to the size). */
  readonly writeUnit: number
  /** The write size the engine should use: one chunk. */
  readonly preferredWriteUnit: number
  readonly chunkBytes: number

  private readonly chunkPrefix: string
  private readonly manifestKey: string
  /** The size as writes and truncates left it. */
  private currentSize: number
  /** The manifest as last written or read. */
  private stored: Manifest
  private closed = false
  private readonly client: S3Client
  private probeClient: S3Client | undefined
  private readonly writes = new Set<Promise<unknown>>()
  /** A truncate in progress: writes wait for it, it waits for the writes in flight. */
  private truncating: Promise<void> | undefined
  /** Manifest writes, one at a time and in order. */
  private manifestChain: Promise<void> = Promise.resolve()

  private constructor(
    private readonly options: S3FileOptions & { prefix: string; chunkBytes: number },
    private readonly config: S3ClientConfig,
    client: S3Client,
    manifest: Manifest,
  ) {
    this.client = client
    this.path = `s3://${options.bucket}/${options.prefix}`
    this.chunkPrefix = `${options.prefix}chunks/`
    this.manifestKey = `${options.prefix}manifest.json`
    this.chunkBytes = this.writeUnit = this.preferredWriteUnit = manifest.chunkBytes
    this.currentSize = manifest.size
    this.stored = manifest
  }

  /**
   * Opens the replica under `prefix`: reads its manifest (creating one for a new replica), checks the
   * identity, and deletes whatever lies past the manifest's size (chunks of writes never synced).
   */
  static async open(options: S3FileOptions): Promise<S3File> {
    const { bucket, region, identity } = options
    if (typeof bucket !== 'string' || bucket === '') throw invalid('S3 replica: bucket is required')
    if (typeof region !== 'string' || region === '') throw invalid('S3 replica: region is required')
    if (typeof options.prefix !== 'string') throw invalid('S3 replica: prefix is required (it may be empty)')
    const prefix = options.prefix === '' || options.prefix.endsWith('/') ? options.prefix : `${options.prefix}/`
    const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES
    if (options.listPageKeys !== undefined && (!Number.isSafeInteger(options.listPageKeys) || options.listPageKeys < 1 || options.listPageKeys > 1000)) {
      throw invalid(`S3 replica: listPageKeys must be an integer from 1 to 1000: ${String(options.listPageKeys)}`)
    }
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < MIN_CHUNK_BYTES || chunkBytes > MAX_CHUNK_BYTES) {
      throw invalid(`S3 replica: chunkBytes must be an integer from ${MIN_CHUNK_BYTES} to ${MAX_CHUNK_BYTES}: ${String(chunkBytes)}`)
    }
    if (!identity || !UUID.test(String(identity.volume)) || !UUID.test(String(identity.replica))) {
      throw invalid('S3 replica: identity needs the volume and replica UUIDs')
    }
    const config = clientConfig(options)
    const client = new S3Client(config)
    const where = `s3://${bucket}/${prefix}`
    try {
      const text = await getText(client, bucket, `${prefix}manifest.json`, where)
      let manifest: Manifest
      let write = false
      if (text === undefined) {
        manifest = { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, volume: identity.volume, replica: identity.replica, size: 0, chunkBytes, generation: 0 }
        write = true
      } else {
        manifest = parseManifest(text, where)
        const same = manifest.volume.toLowerCase() === identity.volume.toLowerCase() && manifest.replica.toLowerCase() === identity.replica.toLowerCase()
        if (!same && !options.claim) {
          throw new S3FileError(
            'EIDENTITY',
            `${where} belongs to volume ${manifest.volume} replica ${manifest.replica}, not volume ${identity.volume} replica ${identity.replica}`,
            false,
          )
        }
        if (!same) {
          manifest = { ...manifest, volume: identity.volume, replica: identity.replica }
          write = true
        }
      }
      const file = new S3File({ ...options, prefix, chunkBytes: manifest.chunkBytes }, config, client, manifest)
      await file.trimPast(manifest.size)
      if (write) await file.writeManifest()
      return file
    } catch (err) {
      client.destroy()
      throw mapS3Error(err, where, 'open')
    }
  }

  /**
   * The manifest under `prefix` as it is stored, without opening the replica (nothing is written or deleted):
   * undefined when there is none. For deciding, before a volume is created over it, whether it holds data.
   */
  static async peek(options: Omit<S3FileOptions, 'identity'>): Promise<Readonly<Manifest> | undefined> {
    if (typeof options.bucket !== 'string' || options.bucket === '') throw invalid('S3 replica: bucket is required')
    if (typeof options.region !== 'string' || options.region === '') throw invalid('S3 replica: region is required')
    const prefix = options.prefix === '' || options.prefix.endsWith('/') ? options.prefix : `${options.prefix}/`
    const client = new S3Client(clientConfig(options))
    const where = `s3://${options.bucket}/${prefix}`
    try {
      const text = await getText(client, options.bucket, `${prefix}manifest.json`, where)
      return text === undefined ? undefined : parseManifest(text, where)
    } catch (err) {
      throw mapS3Error(err, where, 'peek')
    } finally {
      client.destroy()
    }
  }

  /** The manifest as last written (or read at open). */
  get manifest(): Readonly<Manifest> {
    return this.stored
  }

  /** How many times the manifest was written. */
  get generation(): number {
    return this.stored.generation
  }

  /** The key of chunk `index`. */
  chunkKey(index: number): string {
    return `${this.chunkPrefix}${index.toString(16).padStart(12, '0')}`
  }

  private checkOpen(): void {
    if (this.closed) throw new S3FileError('EBADF', `file is closed: ${this.path}`, false)
  }

  private fail(err: unknown, operation: string, key?: string): S3FileError {
    return mapS3Error(err, this.path, operation, key)
  }

  async read(buffer: Buffer, offset: number): Promise<number> {
    this.checkOpen()
    if (!Number.isSafeInteger(offset) || offset < 0) throw invalid(`${this.path}: bad read offset ${String(offset)}`)
    const end = Math.min(offset + buffer.length, this.currentSize)
    if (end <= offset) return 0
    const cb = this.chunkBytes
    for (let at = offset; at < end; ) {
      const index = Math.floor(at / cb)
      const upTo = Math.min(end, (index + 1) * cb)
      await this.readChunk(index, at - index * cb, buffer.subarray(at - offset, upTo - offset))
      at = upTo
    }
    return end - offset
  }

  /** Fills `into` with chunk `index` from byte `from` of the chunk: zeros where the chunk or its object ends. */
  private async readChunk(index: number, from: number, into: Buffer): Promise<void> {
    const key = this.chunkKey(index)
    let body: Readable
    let start = 0
    try {
      const reply = await this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key, Range: `bytes=${from}-${from + into.length - 1}` }))
      body = reply.Body as Readable
      // A store that ignores Range sends the whole object.
      const range = reply.ContentRange ? /^bytes (\d+)-/.exec(reply.ContentRange) : null
      start = range ? Number(range[1]) : 0
    } catch (err) {
      const name = (err as ErrorShape | undefined)?.name
      if (isMissing(err) || name === 'InvalidRange') {
        into.fill(0)
        return
      }
      throw this.fail(err, 'GetObject', key)
    }
    let filled = 0
    let skip = from - start
    try {
      // Read to the end (bytes past `into` are dropped), so the connection goes back to the pool.
      for await (const piece of body as AsyncIterable<Buffer>) {
        let bytes = piece
        if (skip > 0) {
          const n = Math.min(skip, bytes.length)
          skip -= n
          bytes = bytes.subarray(n)
        }
        const n = Math.min(bytes.length, into.length - filled)
        if (n > 0) bytes.copy(into, filled, 0, n)
        filled += n
      }
    } catch (err) {
      body.destroy()
      throw this.fail(err, 'GetObject (body)', key)
    }
    if (filled < into.length) into.fill(0, filled)
  }

  /**
   * Writes one chunk: `buffer` must start on a chunk boundary and be one whole chunk, or shorter only as the
   * last chunk (ending at or past the size, so no byte of the chunk past it held data). Anything else: EALIGN.
   */
  async write(buffer: Buffer, offset: number): Promise<number> {
    this.checkOpen()
    if (!Number.isSafeInteger(offset) || offset < 0) throw invalid(`${this.path}: bad write offset ${String(offset)}`)
    if (buffer.length === 0) return 0
    if (offset % this.chunkBytes !== 0) throw this.unaligned(buffer.length, offset)
    return this.writeChunk(offset / this.chunkBytes, buffer)
  }

  private unaligned(length: number, offset: number): S3FileError {
    return new S3FileError(
      'EALIGN',
      `${this.path}: writes must be whole chunks: ${length} bytes at ${offset} is not (chunkBytes ${this.chunkBytes}: the offset a multiple of it and ` +
        `the length equal to it, or shorter only for a last chunk that ends at or past the size, ${this.currentSize})`,
      false,
    )
  }

  /** Replaces chunk `index` with `bytes` (see write()); resolves once the store has it. */
  async writeChunk(index: number, bytes: Buffer): Promise<number> {
    this.checkOpen()
    if (!Number.isSafeInteger(index) || index < 0 || index > MAX_CHUNK_INDEX) throw invalid(`${this.path}: bad chunk index ${String(index)}`)
    const start = index * this.chunkBytes
    if (bytes.length === 0) return 0
    while (this.truncating) await this.truncating.catch(() => undefined)
    if (bytes.length > this.chunkBytes || (bytes.length < this.chunkBytes && start + bytes.length < this.currentSize)) throw this.unaligned(bytes.length, start)
    const key = this.chunkKey(index)
    const put = this.client.send(
      new PutObjectCommand({
        Bucket: this.options.bucket,
        Key: key,
        Body: bytes,
        ContentLength: bytes.length,
        ContentType: 'application/octet-stream',
        ContentMD5: this.options.contentMd5 === false ? undefined : createHash('md5').update(bytes).digest('base64'),
      }),
    )
    this.writes.add(put)
    try {
      await put
    } catch (err) {
      throw this.fail(err, 'PutObject', key)
    } finally {
      this.writes.delete(put)
    }
    this.currentSize = Math.max(this.currentSize, start + bytes.length)
    return bytes.length
  }

  async size(): Promise<number> {
    this.checkOpen()
    return this.currentSize
  }

  /**
   * Sets the size. Shrinking deletes the chunks wholly past the new end and rewrites a partial last chunk cut
   * to the new end (one ranged read and one write: the only read-modify-write), then writes the manifest;
   * growing writes the manifest only (nothing is stored past the old size, so the new bytes read as zeros).
   * Waits for the writes in flight; writes started meanwhile wait for it.
   */
  async truncate(size: number): Promise<void> {
    this.checkOpen()
    if (!Number.isSafeInteger(size) || size < 0 || Math.ceil(size / this.chunkBytes) - 1 > MAX_CHUNK_INDEX) throw invalid(`${this.path}: bad size ${String(size)}`)
    while (this.truncating) await this.truncating.catch(() => undefined)
    const run = (async () => {
      await Promise.allSettled([...this.writes])
      const old = this.currentSize
      if (size < old) {
        this.currentSize = size
        try {
          await this.trimPast(size)
        } catch (err) {
          // The bytes past `size` may be partly gone: the size stays as it was (a failed truncate), and a retry trims again.
          this.currentSize = old
          throw err
        }
      } else {
        this.currentSize = size
      }
      if (this.stored.size !== this.currentSize) await this.writeManifest()
    })()
    this.truncating = run
    try {
      await run
    } finally {
      if (this.truncating === run) this.truncating = undefined
    }
  }

  /** Writes the manifest when the size changed since it was last written; chunks are durable once written. */
  async sync(): Promise<void> {
    this.checkOpen()
    if (this.stored.size !== this.currentSize) await this.writeManifest()
  }

  /** Writes the manifest if the size changed (as a local file keeps its size), then lets the connections go. */
  async close(): Promise<void> {
    if (this.closed) return
    try {
      while (this.truncating) await this.truncating.catch(() => undefined)
      await Promise.allSettled([...this.writes])
      if (this.stored.size !== this.currentSize) await this.writeManifest()
    } finally {
      this.closed = true
      this.client.destroy()
      this.probeClient?.destroy()
    }
  }

  /**
   * Whether the store answers (one listing of the manifest's key, no retries): false when it cannot be
   * reached, answers 5xx or throttles; throws the error when it answers but refuses (EACCES, ENOENT).
   */
  async reachable(): Promise<boolean> {
    this.checkOpen()
    this.probeClient ??= new S3Client({ ...this.config, maxAttempts: 1 })
    try {
      await this.probeClient.send(new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: this.manifestKey, MaxKeys: 1 }))
      return true
    } catch (err) {
      const mapped = this.fail(err, 'ListObjectsV2', this.manifestKey)
      if (mapped.retryable) return false
      throw mapped
    }
  }

  /** Writes the manifest with the current size and the next generation; one at a time, in order. */
  private writeManifest(): Promise<void> {
    const run = this.manifestChain.then(async () => {
      const next: Manifest = { ...this.stored, size: this.currentSize, generation: this.stored.generation + 1 }
      const body = JSON.stringify(next)
      try {
        await this.client.send(
          new PutObjectCommand({
            Bucket: this.options.bucket,
            Key: this.manifestKey,
            Body: body,
            ContentType: 'application/json',
            ContentMD5: this.options.contentMd5 === false ? undefined : createHash('md5').update(body).digest('base64'),
          }),
        )
      } catch (err) {
        throw this.fail(err, 'PutObject', this.manifestKey)
      }
      this.stored = next
    })
    this.manifestChain = run.catch(() => undefined)
    return run
  }

  /**
   * Makes everything past `size` read as zeros: deletes the chunk objects wholly past it and cuts a longer
   * partial last chunk down to it. Lists the chunks from the one `size` falls in, so strays left by a crash
   * (chunks written past a size never synced) are found too.
   */
  private async trimPast(size: number): Promise<void> {
    const cb = this.chunkBytes
    const firstDropped = Math.ceil(size / cb)
    const partial = size % cb === 0 ? undefined : Math.floor(size / cb)
    const keep = size - Math.floor(size / cb) * cb
    const listFrom = partial ?? firstDropped
    const bucket = this.options.bucket
    let token: string | undefined
    let rewrite = false
    do {
      let page
      try {
        page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: bucket,
            Prefix: this.chunkPrefix,
            StartAfter: listFrom > 0 ? this.chunkKey(listFrom - 1) : undefined,
            ContinuationToken: token,
            MaxKeys: this.options.listPageKeys,
          }),
        )
      } catch (err) {
        throw this.fail(err, 'ListObjectsV2', this.chunkPrefix)
      }
      const doomed: Array<{ Key: string }> = []
      for (const object of page.Contents ?? []) {
        const name = object.Key?.slice(this.chunkPrefix.length) ?? ''
        if (!object.Key || !CHUNK_NAME.test(name)) continue
        const index = parseInt(name, 16)
        if (index >= firstDropped) doomed.push({ Key: object.Key })
        else if (index === partial && (object.Size ?? Infinity) > keep) rewrite = true
      }
      if (doomed.length > 0) {
        let reply
        try {
          reply = await this.client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: doomed, Quiet: true } }))
        } catch (err) {
          throw this.fail(err, 'DeleteObjects', this.chunkPrefix)
        }
        const refused = reply.Errors?.[0]
        if (refused) {
          throw this.fail(Object.assign(new Error(refused.Message ?? 'delete refused'), { name: refused.Code ?? 'Error' }), 'DeleteObjects', refused.Key)
        }
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (token)
    if (rewrite && partial !== undefined) {
      const kept = Buffer.allocUnsafe(keep)
      await this.readChunk(partial, 0, kept)
      const key = this.chunkKey(partial)
      try {
        await this.client.send(
          new PutObjectCommand({
            Bucket: bucket,
            Key: key,
            Body: kept,
            ContentLength: keep,
            ContentType: 'application/octet-stream',
            ContentMD5: this.options.contentMd5 === false ? undefined : createHash('md5').update(kept).digest('base64'),
          }),
        )
      } catch (err) {
        throw this.fail(err, 'PutObject', key)
      }
    }
  }
}

/** The SDK client's configuration for these options. */
function clientConfig(options: Omit<S3FileOptions, 'identity'>): S3ClientConfig {
  return {
    region: options.region,
    endpoint: options.endpoint,
    forcePathStyle: options.forcePathStyle ?? false,
    credentials: options.credentials,
    maxAttempts: options.maxAttempts ?? 3,
    requestChecksumCalculation: options.requestChecksumCalculation ?? 'WHEN_REQUIRED',
    responseChecksumValidation: options.responseChecksumValidation ?? 'WHEN_REQUIRED',
    requestHandler: {
      connectionTimeout: options.connectTimeoutMs ?? 5_000,
      requestTimeout: options.requestTimeoutMs ?? 60_000,
      throwOnRequestTimeout: true,
      socketTimeout: options.idleTimeoutMs ?? 30_000,
    },
  }
}

/** An object's text, or undefined when there is no such object. */
async function getText(client: S3Client, bucket: string, key: string, where: string): Promise<string | undefined> {
  try {
    const reply = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
    return await reply.Body!.transformToString('utf8')
  } catch (err) {
    if (isMissing(err)) return undefined
    throw mapS3Error(err, where, 'GetObject', key)
  }
}

/** Opens an S3 replica (see S3File.open). */
export const openS3File = (options: S3FileOptions): Promise<S3File> => S3File.open(options)
