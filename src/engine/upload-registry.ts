import { randomBytes } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { z } from 'zod'
import type { Body, BodyCheck } from './body-stages.js'
import { EngineError } from './errors.js'
import { writeFileAtomic } from './journal.js'
import type { OperationGroup } from './operation-group.js'
import type { BodyLimits, Volume } from './volume.js'

/** Upload ids: 32 hex digits, safe as a file name and a URL segment. */
export const UPLOAD_ID = /^[0-9a-f]{32}$/

const recordSchema = z.object({
  id: z.string().regex(UPLOAD_ID),
  volume: z.string().min(1),
  /** Where the upload's first byte lands in the volume. */
  start: z.number().int().min(0),
  length: z.number().int().min(0),
  /** Bytes acknowledged so far: the volume holds the upload's bytes in [start, start + offset). */
  offset: z.number().int().min(0),
  /** Once complete, the volume's size is the upload's length (a whole replace). */
  replace: z.boolean(),
  /** Upload-Metadata as the client sent it. */
  metadata: z.string().nullable(),
  createdAt: z.number(),
  /** Creation or the last acknowledged write: the upload is forgotten expiryMs after it. */
  touchedAt: z.number(),
  /** CRC-32 of the bytes acknowledged so far, to tell whether the volume still holds them. */
  crc: z.number().int().min(0),
  /** The volume's ETag when it was last known to hold them with no other write since; null: read them back to know. */
  etag: z.string().nullable(),
})

/** A resumable upload into a volume, as persisted in DATA_DIR/.filemirror/uploads/<volume>/<id>.json. */
export type UploadRecord = z.infer<typeof recordSchema>

/**
 * Each volume's writes seen starting an operation while someone watches (one listener per volume, however many
 * watch). A write changes bytes only after its operations start, so a write that runs while no other was in
 * flight and sees no other start had the volume to itself (a late 'done' of an older write changes nothing).
 */
const watchers = new WeakMap<Volume, Set<Set<string>>>()

function watchWrites(volume: Volume): { seen: Set<string>; stop: () => void } {
  let windows = watchers.get(volume)
  if (!windows) {
    const set = new Set<Set<string>>()
    volume.on('operation', ({ group, phase }) => {
      if (group.kind === 'write' && phase === 'start') for (const seen of set) seen.add(group.id)
    })
    watchers.set(volume, (windows = set))
  }
  const seen = new Set<string>()
  windows.add(seen)
  return { seen, stop: () => windows.delete(seen) }
}

/**
 * Whether the volume still holds the bytes the upload wrote. Its ETag unchanged since the record took it says so
 * at once; otherwise (anyone wrote anywhere, or the server restarted: ETags are per process) those bytes are read
 * back and their CRC-32 compared. A match taken while no other write ran lets the record take the new ETag.
 */
export async function stillHeld(volume: Volume, record: UploadRecord): Promise<boolean> {
  if (record.offset === 0 || record.etag === volume.etag) return true
  if (volume.size < record.start + record.offset) return false
  const etag = volume.etag
  const quiet = volume.writesInFlight === 0
  const watch = watchWrites(volume)
  const session = volume.openRead(record.start, record.offset)
  let crc = 0
  try {
    for await (const chunk of session.stream(record.start, record.offset)) crc = crc32(chunk, crc)
    session.settle()
  } catch (err) {
    session.settle(err)
    // A write landed on those bytes while they were read back: they are not the upload's any more.
    if (session.torn) return false
    throw err
  } finally {
    session.close(true)
    watch.stop()
  }
  if (crc !== record.crc) return false
  if (quiet && watch.seen.size === 0 && volume.writesInFlight === 0 && volume.etag === etag) record.etag = etag
  return true
}

/** Where a body goes: its declared length (null when chunked), a check it must pass, and the limits of any body. */
export interface UploadBody {
  body: Body
  contentLength: number | null
  check?: BodyCheck
  limits: BodyLimits
}

/**
 * Writes a body at the upload's offset (one volume write), then the record, before the caller replies: a crash in
 * between leaves the record behind the data, and the client sends again bytes that are already there. The final
 * write of a replacing upload sets the volume's size. Returns the write's group (none for an empty body that
 * changes nothing) and the new record, saved.
 */
export async function receive(registry: UploadRegistry, volume: Volume, record: UploadRecord, input: UploadBody): Promise<{ group: OperationGroup | null; record: UploadRecord }> {
  const remaining = record.length - record.offset
  const { contentLength } = input
  if (contentLength !== null && contentLength > remaining) throw new EngineError('too-large', `the body (${contentLength} bytes) is longer than the ${remaining} bytes the upload lacks`)
  const known = contentLength !== null && contentLength === remaining
  if (contentLength === 0 && !(known && record.replace && volume.size !== record.length)) return { group: null, record }
  let bytes = 0
  let crc = record.crc
  const counted = (async function* () {
    for await (const chunk of input.body as AsyncIterable<Buffer>) {
      bytes += chunk.length
      if (bytes > remaining) throw new EngineError('too-large', `the body is longer than the ${remaining} bytes the upload lacks; nothing past them was written`)
      crc = crc32(chunk, crc)
      yield chunk
    }
  })()
  // The ETag after this write is the upload's own only when no other write ran meanwhile.
  const trusted = (record.offset === 0 || record.etag === volume.etag) && volume.writesInFlight === 0
  const watch = watchWrites(volume)
  const own = new Set<string>()
  let group: OperationGroup
  try {
    const resizeTo = known && record.replace ? record.length : null
    group = await volume.write({ offset: record.start + record.offset, length: contentLength, resizeTo }, counted, { ...input.limits, check: input.check })
    own.add(group.id)
    if (record.replace && record.offset + bytes === record.length && volume.size !== record.length) {
      // A chunked last body: the size is set by a write of nothing.
      own.add((await volume.write({ offset: record.length, length: 0, resizeTo: record.length }, nothing(), input.limits)).id)
    }
  } finally {
    watch.stop()
  }
  const alone = trusted && [...watch.seen].every((id) => own.has(id)) && volume.writesInFlight === 0
  const next: UploadRecord = { ...record, offset: record.offset + bytes, crc, touchedAt: Date.now(), etag: alone ? volume.etag : null }
  await registry.save(next)
  return { group, record: next }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

async function* nothing(): AsyncGenerator<Buffer> {}

/** The uploads of every volume: records on disk (atomically replaced), cached, with one writer at a time per upload. */
export class UploadRegistry {
  private readonly cache = new Map<string, UploadRecord>()
  private readonly locked = new Set<string>()

  constructor(
    private readonly dir: string,
    readonly expiryMs: number,
  ) {}

  private path(volume: string, id: string): string {
    return join(this.dir, volume, `${id}.json`)
  }

  expiresAt(record: UploadRecord): number {
    return record.touchedAt + this.expiryMs
  }

  async create(fields: Pick<UploadRecord, 'volume' | 'start' | 'length' | 'replace' | 'metadata'>): Promise<UploadRecord> {
    const now = Date.now()
    const record: UploadRecord = { ...fields, id: randomBytes(16).toString('hex'), offset: 0, createdAt: now, touchedAt: now, crc: 0, etag: null }
    await this.save(record)
    return record
  }

  async save(record: UploadRecord): Promise<void> {
    await writeFileAtomic(this.path(record.volume, record.id), JSON.stringify(record) + '\n')
    this.cache.set(`${record.volume}/${record.id}`, record)
  }

  /** The upload, or undefined when it is unknown or has expired (then it is forgotten). */
  async get(volume: string, id: string): Promise<UploadRecord | undefined> {
    if (!UPLOAD_ID.test(id)) return undefined
    const key = `${volume}/${id}`
    let record = this.cache.get(key)
    if (!record) {
      const text = await fs.readFile(this.path(volume, id), 'utf8').catch(() => undefined)
      const parsed = text === undefined ? undefined : recordSchema.safeParse(parseJson(text))
      if (!parsed?.success || parsed.data.volume !== volume || parsed.data.id !== id) return undefined
      this.cache.set(key, (record = parsed.data))
    }
    if (this.expiresAt(record) > Date.now()) return record
    await this.remove(record)
    return undefined
  }

  async remove(record: UploadRecord): Promise<void> {
    this.cache.delete(`${record.volume}/${record.id}`)
    await fs.rm(this.path(record.volume, record.id), { force: true })
  }

  /** Takes the upload for one request; false while another holds it. */
  lock(volume: string, id: string): boolean {
    const key = `${volume}/${id}`
    if (this.locked.has(key)) return false
    this.locked.add(key)
    return true
  }

  unlock(volume: string, id: string): void {
    this.locked.delete(`${volume}/${id}`)
  }

  /** Forgets every upload idle past its expiry, and files nothing can read any more (a crash's temporary files); returns how many. */
  async sweep(): Promise<number> {
    let swept = 0
    const volumes = await fs.readdir(this.dir).catch(() => [] as string[])
    for (const volume of volumes) {
      const files = await fs.readdir(join(this.dir, volume)).catch(() => [] as string[])
      for (const file of files) {
        const id = file.slice(0, -'.json'.length)
        if (!file.endsWith('.json') || !UPLOAD_ID.test(id)) {
          if (!file.endsWith(`.${process.pid}.tmp`) && (await this.stale(join(this.dir, volume, file)))) swept++
          continue
        }
        if (!this.lock(volume, id)) continue
        try {
          if (await this.get(volume, id)) continue
          // Forgotten by get() as expired, or a file holding no record: removed once as old as an expired one.
          const left = await fs.stat(this.path(volume, id)).then(() => true, () => false)
          if (!left || (await this.stale(this.path(volume, id)))) swept++
        } finally {
          this.unlock(volume, id)
        }
      }
    }
    return swept
  }

  /** Removes a file left unchanged for longer than the expiry; whether it did. */
  private async stale(path: string): Promise<boolean> {
    const seen = await fs.stat(path).catch(() => undefined)
    if (!seen || seen.mtimeMs + this.expiryMs > Date.now()) return false
    await fs.rm(path, { force: true })
    return true
  }
}
