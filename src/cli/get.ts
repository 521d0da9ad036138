// filemirror get URL/volumes/NAME FILE [--range a-b]: a resumable download.
//
// The ETag of the reply is saved beside the partial file (FILE.filemirror-etag) before its first byte is
// written. Run again, the download asks for the rest with Range and If-Range: the same ETag gets the rest
// (206), a changed one gets the whole new content (200) and the download starts over. A reply cut short (the
// server cuts a streamed reply when a write lands on bytes it has yet to send) is resumed the same way, in the
// same run. At the end the file's size must be the one the server announced.
import { open, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises'
import { pipeline, type Readable } from 'node:stream'
import { CliError, parseVolumeUrl, request, streamFailure, streamGet, UsageError } from './http.js'
import { RateLimit } from './limit-rate.js'
import { outputMode, Progress, result } from './output.js'
import { formatBytes } from './format.js'

export interface ByteRangeOption {
  start: number
  /** Inclusive; null: to the end. */
  end: number | null
}

export interface GetOptions {
  range?: ByteRangeOption
  limitRate?: number
  json?: boolean
}

/** What is saved beside the partial file: the instant it holds bytes of, and what was asked. */
interface SavedState {
  etag: string
  url: string
  range: string | null
}

/** How many replies in a row may be cut short without a byte of progress before the download gives up. */
const MAX_FRUITLESS_ATTEMPTS = 5
/** Bytes gathered before one positional write to the file. */
const WRITE_BATCH = 1 << 20

export function statePath(file: string): string {
  return `${file}.filemirror-etag`
}

/** a-b, a- (to the end); inclusive, as in HTTP. */
export function parseRangeOption(text: string): ByteRangeOption {
  const m = /^(\d+)-(\d*)$/.exec(text.trim())
  if (!m) throw new UsageError(`--range ${JSON.stringify(text)}: expected FIRST-LAST or FIRST- (byte offsets, inclusive)`)
  const start = Number(m[1])
  const end = m[2] === '' ? null : Number(m[2])
  if (!Number.isSafeInteger(start) || (end !== null && (!Number.isSafeInteger(end) || end < start))) {
    throw new UsageError(`--range ${JSON.stringify(text)}: LAST must not be before FIRST`)
  }
  return { start, end }
}

function rangeText(range: ByteRangeOption | undefined): string | null {
  return range ? `${range.start}-${range.end ?? ''}` : null
}

async function readState(file: string, url: string, range: string | null): Promise<SavedState | null> {
  try {
    const state = JSON.parse(await readFile(statePath(file), 'utf8')) as Partial<SavedState>
    if (typeof state.etag !== 'string' || state.url !== url || (state.range ?? null) !== range) return null
    return state as SavedState
  } catch {
    return null
  }
}

async function saveState(file: string, state: SavedState): Promise<void> {
  const path = statePath(file)
  try {
    await writeFile(`${path}.tmp`, `${JSON.stringify(state)}\n`)
    await rename(`${path}.tmp`, path)
  } catch (err) {
    throw new CliError(`cannot write ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

async function sizeOf(file: string): Promise<number | null> {
  try {
    return (await stat(file)).size
  } catch {
    return null
  }
}

/** bytes first-last/complete */
function parseContentRange(header: string | null): { first: number; last: number; size: number | null } | null {
  const m = header ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim()) : null
  if (!m) return null
  return { first: Number(m[1]), last: Number(m[2]), size: m[3] === '*' ? null : Number(m[3]) }
}

export async function getCommand(urlText: string, file: string, options: GetOptions): Promise<number> {
  const mode = outputMode(options.json)
  const target = parseVolumeUrl(urlText)
  const dataUrl = `${target.url}/data`
  const range = options.range
  const rangeStart = range?.start ?? 0
  const asked = rangeText(range)
  const limit = options.limitRate ? new RateLimit(options.limitRate) : null
  const progress = new Progress(mode, 'get', { volume: target.volume, file })

  const existing = await stat(file).catch(() => null)
  if (existing?.isDirectory()) throw new UsageError(`${file} is a directory`)
  // A device or a pipe (/dev/null, a FIFO) is written as a stream: no state beside it, no resume across runs.
  const regular = !existing || existing.isFile()
  let state = regular ? await readState(file, dataUrl, asked) : null
  let have = state ? ((await sizeOf(file)) ?? 0) : 0
  if (!state || have === 0) state = null
  const resumedFrom = have
  let startedOver = false
  let fruitless = 0
  let started = false
  let expected = 0
  let etag = ''

  for (;;) {
    const headers: Record<string, string> = {}
    if (state || range) headers.range = `bytes=${rangeStart + have}-${range?.end ?? ''}`
    if (state) headers['if-range'] = state.etag
    const res = await streamGet(dataUrl, headers)
    const header = (name: string): string | null => {
      const value = res.headers[name]
      return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value
    }

    if (res.statusCode === 416) {
      res.resume()
      const complete = state ? await alreadyComplete(dataUrl, state.etag, range, have) : null
      if (complete !== null) {
        expected = complete
        etag = state!.etag
        break
      }
      if (state) {
        // The content changed (or shrank): what we hold is of another instant.
        state = null
        have = 0
        startedOver = true
        continue
      }
      const size = /^bytes \*\/(\d+)$/.exec(header('content-range') ?? '')?.[1]
      throw new CliError(`range ${asked} starts past the end of volume ${target.volume}${size === undefined ? '' : ` (${formatBytes(Number(size))}, ${size} bytes)`}`)
    }
    if (res.statusCode !== 200 && res.statusCode !== 206) throw await streamFailure(res, `GET ${dataUrl}`)

    etag = header('etag') ?? ''
    let writeAt: number
    if (res.statusCode === 206) {
      const cr = parseContentRange(header('content-range'))
      if (!cr || cr.first !== rangeStart + have) {
        res.destroy()
        throw new CliError(`the server answered another range (${header('content-range')}) than asked (${headers.range})`)
      }
      writeAt = have
      expected = cr.last + 1 - rangeStart
    } else {
      if (range && (range.start > 0 || range.end !== null)) {
        // If-Range did not match: the server sent the whole new content, not our range. Ask again, from scratch.
        res.destroy()
        if (!state) throw new CliError('the server ignored the Range header (answered 200 with the whole content)')
        state = null
        have = 0
        startedOver = true
        continue
      }
      if (state) startedOver = true
      writeAt = 0
      expected = Number(header('content-length') ?? NaN)
      if (!Number.isSafeInteger(expected)) expected = NaN
    }
    if (etag && (!state || state.etag !== etag)) {
      state = { etag, url: dataUrl, range: asked }
      if (regular) await saveState(file, state)
    }

    if (!started || writeAt === 0) {
      progress.start(Number.isNaN(expected) ? null : expected, writeAt)
      started = true
    }
    const before = writeAt
    let cut: unknown = null
    let writeError: unknown = null
    let pos = writeAt
    let fh: FileHandle
    try {
      fh = await open(file, writeAt > 0 && regular ? 'r+' : 'w')
    } catch (err) {
      res.destroy()
      throw new CliError(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    // What arrived is written in batches of WRITE_BATCH, and whatever arrived before a cut is written too.
    let batch: Buffer[] = []
    let batched = 0
    const flush = async () => {
      if (batched === 0) return
      const buffers = batch
      const length = batched
      batch = []
      batched = 0
      try {
        await (regular ? fh.writev(buffers, pos) : fh.writev(buffers))
      } catch (err) {
        throw new CliError(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
      }
      pos += length
      progress.update(pos)
    }
    try {
      if (writeAt === 0 && regular) await fh.truncate(0)
      const source: Readable = limit ? pipeline(res, limit.stream(), () => {}) : res
      for await (const chunk of source as AsyncIterable<Buffer>) {
        batch.push(chunk)
        batched += chunk.length
        if (batched >= WRITE_BATCH || limit) await flush()
      }
    } catch (err) {
      if (err instanceof CliError) writeError = err
      else cut = err
    } finally {
      try {
        await flush()
      } catch (err) {
        writeError ??= err
      } finally {
        await fh.close()
      }
    }
    if (writeError) {
      res.destroy()
      progress.stop()
      throw writeError
    }
    have = pos
    if (!Number.isNaN(expected) && have >= expected) break
    if (Number.isNaN(expected) && cut === null) {
      expected = have
      break
    }
    // Cut short: resume from what arrived (If-Range keeps it to the same instant).
    fruitless = have > before ? 0 : fruitless + 1
    if (fruitless >= MAX_FRUITLESS_ATTEMPTS || !state) {
      progress.stop()
      throw new CliError(`the reply was cut short at ${have} of ${expected} bytes${cut ? ` (${(cut as Error).message})` : ''}; run the same command again to resume`, 1, { bytes: have })
    }
  }

  progress.stop()
  const size = regular ? ((await sizeOf(file)) ?? 0) : have
  if (size !== expected) {
    throw new CliError(`${file} holds ${size} bytes where the server announced ${expected}; run the same command again to resume`, 1, { bytes: size, expected })
  }
  if (regular) await rm(statePath(file), { force: true })
  const summary = progress.summary()
  result(
    mode,
    { ok: true, command: 'get', volume: target.volume, file, bytes: size, etag, range: asked, resumedFrom: startedOver ? 0 : resumedFrom, startedOver, seconds: summary.seconds },
    `${file}: ${formatBytes(size)} (${size} bytes) from ${target.volume}${asked ? ` range ${asked}` : ''}, etag ${etag}${resumedFrom > 0 && !startedOver ? `, resumed at ${resumedFrom}` : ''}${startedOver ? ', started over (the content changed)' : ''}`,
  )
  return 0
}

/**
 * After a 416 on resume: the file may already hold everything. Asks the size with HEAD: the length of what was
 * asked when the ETag is still ours and the file holds exactly that, else null.
 */
async function alreadyComplete(dataUrl: string, etag: string, range: ByteRangeOption | undefined, have: number): Promise<number | null> {
  const res = await request(dataUrl, { method: 'HEAD' })
  if (!res.ok || res.headers.get('etag') !== etag) return null
  const size = Number(res.headers.get('content-length'))
  const start = range?.start ?? 0
  const end = range?.end === null || range?.end === undefined ? size : Math.min(range.end + 1, size)
  const length = end - start
  return length === have ? length : null
}
