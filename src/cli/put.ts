// filemirror put FILE URL/volumes/NAME [--offset N]: a resumable upload through the server's tus 1.0 routes
// (POST /volumes/{name}/uploads, then PATCH the upload URL it answers).
//
// Without --offset the file replaces the volume's content (tus metadata `replace`: the completed upload sets
// the volume's size); with --offset it is written at that offset, and may grow the volume. The upload's URL is
// remembered (url-storage.ts) under a fingerprint of the file (path, size, mtime), the target and the offset, so
// the same command run again after an interruption asks the server where it stopped (HEAD) and sends the rest.
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { basename, resolve } from 'node:path'
import { Readable } from 'node:stream'
import { defaultOptions, Upload, type DetailedError, type HttpRequest, type HttpResponse, type UploadOptions } from 'tus-js-client'
import { CliError, describeCause, parseVolumeUrl, request, UsageError, authHeaders } from './http.js'
import { RateLimit } from './limit-rate.js'
import { outputMode, Progress, result } from './output.js'
import { formatBytes } from './format.js'
import { JsonFileUrlStorage } from './url-storage.js'

export interface PutOptions {
  offset?: number
  limitRate?: number
  json?: boolean
}

/** Bytes per PATCH: FILEMIRROR_CLI_CHUNK_BYTES (hidden, for tests), else 8 MiB. */
function chunkBytes(): number {
  const v = Number(process.env.FILEMIRROR_CLI_CHUNK_BYTES)
  return Number.isSafeInteger(v) && v > 0 ? v : 8 * 1024 * 1024
}

type TusFileReader = NonNullable<UploadOptions['fileReader']>

/**
 * The default file reader, each slice read whole (at most a chunk: bounded memory) so its sha256 can go in the
 * PATCH's Upload-Checksum (the server refuses a body that does not match it, 460, and writes none of it), then
 * passed on through the rate limit, if any. `sums` maps a slice's start to its digest.
 */
function checksummedReader(sums: Map<number, string>, limit: RateLimit | null): TusFileReader {
  const inner = defaultOptions.fileReader
  return {
    async openFile(input: unknown, chunkSize: number) {
      const source = await inner.openFile(input, chunkSize)
      return {
        size: source.size,
        close: () => source.close(),
        async slice(start: number, end: number) {
          const slice = await source.slice(start, end)
          const parts: Buffer[] = []
          for await (const part of slice.value as AsyncIterable<Buffer>) parts.push(part)
          const bytes = Buffer.concat(parts)
          sums.clear() // only the slice about to be sent is needed
          sums.set(start, createHash('sha256').update(bytes).digest('base64'))
          const body = Readable.from([bytes])
          const value = (limit ? body.pipe(limit.stream()) : body) as NodeJS.ReadableStream & { size?: number }
          value.size = bytes.length
          return { value, done: slice.done }
        },
      }
    },
  }
}

/** The sha256 of a file, read once more after the upload (the server's Repr-Digest is compared with it). */
async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const part of createReadStream(path)) hash.update(part as Buffer)
  return hash.digest('base64')
}

function tusFailure(err: Error | DetailedError): CliError {
  const detailed = err as DetailedError
  const res = detailed.originalResponse
  if (res) {
    let detail = res.getBody()
    try {
      const problem = JSON.parse(detail) as { detail?: string; title?: string }
      detail = problem.detail ?? problem.title ?? detail
    } catch {
      // not a problem document
    }
    const status = res.getStatus()
    const req = detailed.originalRequest
    const hint = status === 401 ? (process.env.FILEMIRROR_TOKEN ? ' (FILEMIRROR_TOKEN was not accepted)' : " (set FILEMIRROR_TOKEN to the server's AUTH_TOKEN)") : ''
    return new CliError(`${req.getMethod()} ${req.getURL()}: HTTP ${status}${detail ? `: ${detail.trim().slice(0, 500)}` : ''}${hint}`, 1, { status, method: req.getMethod() })
  }
  const cause = detailed.causingError ? describeCause(detailed.causingError) : err.message
  return new CliError(`upload failed: ${cause}; run the same command again to resume`)
}

export async function putCommand(file: string, urlText: string, options: PutOptions): Promise<number> {
  const mode = outputMode(options.json)
  const target = parseVolumeUrl(urlText)
  const path = resolve(file)
  let info
  try {
    info = await stat(path)
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  if (!info.isFile()) throw new UsageError(`${file} is not a regular file`)
  const size = info.size
  const replace = options.offset === undefined
  const offset = options.offset ?? 0
  const endpoint = `${target.url}/uploads`
  const progress = new Progress(mode, 'put', { volume: target.volume, file })
  const limit = options.limitRate ? new RateLimit(options.limitRate) : null
  const operationIds: string[] = []
  const sums = new Map<number, string>()
  let resumedFrom = 0
  let started = false

  const startAt = (at: number) => {
    resumedFrom = at
    progress.start(size, at)
    started = true
  }

  const storage = new JsonFileUrlStorage()
  // One fingerprint per file version and target: another file, a changed file or another target is a new upload.
  const fingerprint = ['filemirror-put', path, size, info.mtimeMs, target.url, replace ? 'replace' : `offset=${offset}`].join(' ')

  const upload = () =>
    new Promise<string>((resolvePromise, reject) => {
      const tusOptions: UploadOptions = {
        endpoint,
        uploadSize: size,
        chunkSize: chunkBytes(),
        metadata: { filename: basename(path), offset: String(offset), ...(replace ? { replace: 'true' } : {}) },
        headers: authHeaders(),
        fingerprint: async () => fingerprint,
        urlStorage: storage,
        storeFingerprintForResuming: true,
        removeFingerprintOnSuccess: true,
        retryDelays: [0, 1000, 3000, 5000],
        fileReader: checksummedReader(sums, limit),
        onBeforeRequest: (req: HttpRequest) => {
          if (req.getMethod() !== 'PATCH') return
          const sum = sums.get(Number(req.getHeader('Upload-Offset')))
          if (sum) req.setHeader('Upload-Checksum', `sha256 ${sum}`)
        },
        onAfterResponse: (req: HttpRequest, res: HttpResponse) => {
          const opid = res.getHeader('operation-id')
          if (opid && !operationIds.includes(opid)) operationIds.push(opid)
          const method = req.getMethod()
          if (!started && (method === 'HEAD' || method === 'POST') && res.getStatus() < 300) {
            const at = Number.parseInt(res.getHeader('upload-offset') ?? '0', 10)
            startAt(Number.isNaN(at) ? 0 : at)
          }
        },
        onProgress: (sent: number, total: number) => {
          if (!started) startAt(0)
          progress.update(sent, total)
        },
        onSuccess: () => resolvePromise(tusUpload.url ?? ''),
        onError: (err) => reject(tusFailure(err)),
      }
      const tusUpload = new Upload(createReadStream(path), tusOptions)
      tusUpload
        .findPreviousUploads()
        .then((previous) => {
          if (previous.length > 0) tusUpload.resumeFromPreviousUpload(previous[0])
          tusUpload.start()
        })
        .catch((err: Error) => reject(new CliError(`cannot read the upload cache ${storage.path}: ${err.message}`)))
    })

  let uploadUrl: string
  try {
    uploadUrl = await upload()
  } catch (err) {
    // The upload went away under us (expired: 404; the volume changed under its bytes: 410): once, a new one.
    const { status, method } = err instanceof CliError ? err.details : {}
    if (method !== 'PATCH' || (status !== 404 && status !== 410)) throw err
    for (const stale of await storage.findUploadsByFingerprint(fingerprint)) await storage.removeUpload(stale.urlStorageKey)
    started = false
    uploadUrl = await upload()
  }
  if (!started) startAt(size)
  progress.update(size, size)
  progress.stop()

  // What the volume looks like now: its size must cover what was written; after a replace, its sha256 is the file's.
  const head = await request(`${target.url}/data`, { method: 'HEAD', headers: replace ? { 'want-repr-digest': 'sha-256=10' } : {} })
  const volumeSize = Number(head.headers.get('content-length'))
  const etag = head.headers.get('etag')
  const expected = replace ? size : offset + size
  if (head.ok && (replace ? volumeSize !== expected : volumeSize < expected)) {
    throw new CliError(`the upload completed but volume ${target.volume} is ${volumeSize} bytes, where ${replace ? '' : 'at least '}${expected} were expected`)
  }
  // The server may leave a digest out (over its size limit for one): then only the per-PATCH checksums vouch for it.
  const served = /sha-256=:([A-Za-z0-9+/=]+):/.exec(head.headers.get('repr-digest') ?? '')?.[1] ?? null
  const sha256 = served ? await fileSha256(path) : null
  if (served && served !== sha256) {
    throw new CliError(`the upload completed but volume ${target.volume}'s sha-256 (${served}) is not ${file}'s (${sha256}): its content changed meanwhile, or was damaged; run put again`)
  }
  const summary = progress.summary()
  result(
    mode,
    {
      ok: true,
      command: 'put',
      volume: target.volume,
      file,
      bytes: size,
      offset,
      replace,
      resumedFrom,
      uploadUrl,
      volumeSize: head.ok ? volumeSize : null,
      etag,
      sha256: served,
      operationIds,
      seconds: summary.seconds,
    },
    `${file}: ${formatBytes(size)} (${size} bytes) ${replace ? 'replaced the content of' : `written at ${offset} to`} ${target.volume}${resumedFrom > 0 ? `, resumed at ${resumedFrom}` : ''}; volume ${formatBytes(volumeSize)}, etag ${etag}${served ? ', sha-256 verified' : ''}`,
  )
  return 0
}
