import { Readable } from 'node:stream'
import multipart from '@fastify/multipart'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { z } from 'zod'
import { parseRange, rangeLength, type ByteRange } from '../src/byte-range.js'
import { parseContentRange } from '../src/content-range.js'
import { ifMatchPasses, ifNoneMatchPasses, ifRangePasses, parseEntityTagList } from '../src/entity-tag.js'
import { makeBoundary, planMultipartByteranges } from '../src/multipart-byteranges.js'
import { preferredWaitSeconds } from '../src/prefer.js'
import { Problem, problems } from '../src/problem.js'
import { dataQuerySchema } from '../src/schemas.js'
import type { TrackedGroup } from '../src/tracked-group.js'
import { ReadFailedError, VolumeBusyError, type Volume } from '../src/volume.js'
import { WriteFailedError, type WriteOptions, type WriteSession } from '../src/write-session.js'
import { parseOr400, volumeOr404 } from './lookup.js'

const nameParams = z.object({ name: z.string() })
/** Writes go to every replica: no ?replica. Built once, not per request. */
const writeQuerySchema = dataQuerySchema.omit({ replica: true })
const OCTET = 'application/octet-stream'
/** Replies up to this size are read whole and sent as one buffer; larger ones stream. */
const WHOLE_READ_LIMIT = 1 << 20
const STREAM_CHUNK = 256 << 10
/** Longest `Prefer: wait` honoured. */
const MAX_PREFER_WAIT_SECONDS = 60

function headerOf(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name]
  return Array.isArray(value) ? value.join(', ') : value
}

/** Streams [start, end] of the volume, reading chunk by chunk as the client takes them. */
async function* readRange(volume: Volume, range: ByteRange, group: TrackedGroup, replica: string | undefined): AsyncGenerator<Buffer> {
  for (let at = range.start; at <= range.end; ) {
    const length = Math.min(STREAM_CHUNK, range.end - at + 1)
    const buffer = Buffer.allocUnsafe(length)
    const n = await volume.readInto(buffer, at, group, replica)
    // A replica shorter than the volume reads as zeros past its end (a sparse tail still being written behind).
    if (n < length) buffer.fill(0, n)
    yield buffer
    at += length
  }
}

/** Large read buffers are reused: a fresh megabyte per GET costs more in garbage collection than the read itself. */
const slabs: Buffer[] = []
const MAX_FREE_SLABS = 32
/** Below this, Node's own allocator is cheap enough. */
const SLAB_FROM = 64 << 10

/** Reads a range whole into one buffer; a pooled slab goes back once the reply has been handed to the socket. */
async function readWhole(volume: Volume, range: ByteRange, group: TrackedGroup, replica: string | undefined, reply: FastifyReply): Promise<Buffer> {
  const length = rangeLength(range)
  let buffer: Buffer
  if (length >= SLAB_FROM) {
    const slab = slabs.pop() ?? Buffer.allocUnsafeSlow(WHOLE_READ_LIMIT)
    // Only a finished reply returns it: a reply cut short may still have the slab in a socket write.
    reply.raw.once('finish', () => slabs.length < MAX_FREE_SLABS && slabs.push(slab))
    buffer = slab.subarray(0, length)
  } else buffer = Buffer.allocUnsafe(length)
  const n = await volume.readInto(buffer, range.start, group, replica)
  if (n < buffer.length) buffer.fill(0, n)
  return buffer
}

function finishRead(group: TrackedGroup, error: unknown): void {
  const failure = error ? { code: (error as ReadFailedError).error?.code ?? 'EIO', message: (error as Error).message } : null
  for (const op of group.operations) group.finish(op, op.bytes, op.status === 'failed' ? op.error : failure)
  group.seal()
}

/** GET and HEAD: RFC 9110 preconditions (§13.2.2 order), then ranges (§14). */
async function serveData(app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, head: boolean) {
  const { name } = parseOr400(nameParams, request.params)
  const volume = volumeOr404(app, name)
  const { replica } = parseOr400(dataQuerySchema, request.query)
  if (replica !== undefined && !volume.replica(replica)) throw problems.notFound(`volume ${name} has no replica ${replica}`)
  const size = volume.size
  const etag = volume.etag
  reply.header('accept-ranges', 'bytes').header('etag', etag)
  if (!ifMatchPasses(headerOf(request, 'if-match'), etag)) throw problems.preconditionFailed('If-Match does not match the current ETag')
  const ifNoneMatch = headerOf(request, 'if-none-match')
  // A malformed If-None-Match is ignored on reads (RFC 9110 §13.1.2): only a real match earns a 304.
  if (ifNoneMatch !== undefined && parseEntityTagList(ifNoneMatch) !== null && !ifNoneMatchPasses(ifNoneMatch, etag)) return reply.code(304).send()

  const rangeHeader = ifRangePasses(headerOf(request, 'if-range'), etag) ? headerOf(request, 'range') : undefined
  const ranges = parseRange(rangeHeader, size, { maxRanges: app.config.maxRanges })
  if (ranges.kind === 'unsatisfiable') throw problems.rangeNotSatisfiable(size)

  let release: () => void
  try {
    release = volume.holdReader()
  } catch (err) {
    if (err instanceof VolumeBusyError) throw problems.unavailable(err.message, 1)
    throw err
  }
  const group = volume.newGroup('read', ranges.kind === 'ranges' ? ranges.ranges[0].start : 0)
  // Whatever way the reply ends (sent, failed, client gone), the read is over: settle its group and let a close proceed.
  reply.raw.once('close', () => {
    finishRead(group, group.settled ? null : { message: 'the client went away before the reply ended' })
    release()
  })
  reply.header('operation-id', group.id)
  const whole: ByteRange = { start: 0, end: size - 1 }
  const selected = ranges.kind === 'ranges' ? ranges.ranges : size > 0 ? [whole] : []
  group.length = selected.reduce((n, r) => n + rangeLength(r), 0)

  if (ranges.kind === 'ranges' && selected.length > 1) {
    const plan = planMultipartByteranges(selected, size, OCTET, makeBoundary())
    reply.code(206).header('content-type', plan.contentType).header('content-length', plan.contentLength)
    if (head) return finishAndSend(reply, group)
    return reply.send(
      Readable.from(
        (async function* () {
          try {
            for (const part of plan.parts) {
              yield part.head
              yield* readRange(volume, part.range, group, replica)
            }
            yield plan.tail
            finishRead(group, null)
          } catch (err) {
            finishRead(group, err)
            throw err
          }
        })(),
      ),
    )
  }

  if (ranges.kind === 'ranges') reply.code(206).header('content-range', `bytes ${selected[0].start}-${selected[0].end}/${size}`)
  reply.header('content-type', OCTET).header('content-length', group.length)
  if (head || selected.length === 0) return finishAndSend(reply, group)
  const range = selected[0]
  if (rangeLength(range) <= WHOLE_READ_LIMIT) {
    try {
      const body = await readWhole(volume, range, group, replica, reply)
      finishRead(group, null)
      return reply.send(body)
    } catch (err) {
      finishRead(group, err)
      throw readProblem(err)
    }
  }
  // The first chunk is read before the status goes out, so a failing replica still gets a problem reply.
  const chunks = readRange(volume, range, group, replica)
  let first: IteratorResult<Buffer>
  try {
    first = await chunks.next()
  } catch (err) {
    finishRead(group, err)
    throw readProblem(err)
  }
  return reply.send(
    Readable.from(
      (async function* () {
        try {
          if (!first.done) yield first.value
          yield* chunks
          finishRead(group, null)
        } catch (err) {
          finishRead(group, err)
          throw err
        }
      })(),
    ),
  )
}

function finishAndSend(reply: FastifyReply, group: TrackedGroup) {
  finishRead(group, null)
  return reply.send()
}

function readProblem(err: unknown) {
  if (err instanceof ReadFailedError) return problems.readFailed(err.message.replace(/\/[^\s]*/g, '<path>'))
  return err
}

/** Replies once the sync replicas hold the bytes: 200 when every replica is done, else 202 with where to poll. */
async function replyWritten(request: FastifyRequest, reply: FastifyReply, volume: Volume, group: TrackedGroup) {
  const wait = preferredWaitSeconds(request.headers['prefer'], MAX_PREFER_WAIT_SECONDS)
  if (wait && !group.settled) {
    const timer = new Promise<void>((resolve) => setTimeout(resolve, wait * 1000).unref())
    await Promise.race([group.whenSettled(), timer])
  }
  reply.header('operation-id', group.id).header('etag', volume.etag)
  if (wait !== undefined) reply.header('preference-applied', `wait=${wait}`)
  if (group.settled) return reply.code(200).send(group.toJSON())
  return reply.code(202).header('location', `/operations/${group.id}`).send(group.toJSON())
}

/** A body that sent nothing for too long: the upload is aborted with nothing acknowledged. */
class StalledBodyError extends Error {}

/** Body chunks are gathered up to this many bytes per engine write: one write of 1 MiB costs far less than sixteen of 64 KiB. */
const GATHER_BYTES = 256 << 10

/** Takes a slab for gathering, or a fresh buffer when the session keeps chunks after writing them (queued for a lane). */
function gatherBuffer(session: WriteSession): Buffer {
  if (session.keepsChunks) return Buffer.allocUnsafe(GATHER_BYTES)
  return slabs.pop() ?? Buffer.allocUnsafeSlow(WHOLE_READ_LIMIT)
}

/**
 * Streams a body into a write session, refusing (before writing) any chunk that would pass the declared
 * end or the largest volume, and aborting a body that stalls longer than `idleMs`.
 */
async function pump(session: WriteSession, body: Readable, limit: number | null, maxVolumeBytes: number, idleMs: number): Promise<void> {
  // One timer per upload, pushed back by every chunk; when it fires the body is destroyed, which ends the loop below.
  let writing = false
  // Time spent writing to the replicas is ours, not the client's: it never counts as a stall.
  const timer = setTimeout(() => (writing ? timer.refresh() : body.destroy(new StalledBodyError(`no body bytes for ${idleMs} ms`))), idleMs)
  let gather: Buffer | null = null
  let gathered = 0
  const flush = async () => {
    if (gathered === 0) return
    writing = true
    await session.write(gather!.subarray(0, gathered))
    writing = false
    gathered = 0
    if (session.keepsChunks) gather = null
  }
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      const end = session.position + gathered + chunk.length
      if (limit !== null && end > limit) {
        throw problems.badRequest(`the body is longer than the ${limit - session.options.offset} bytes its Content-Range declares; nothing past the range was written`)
      }
      if (end > maxVolumeBytes) throw problems.contentTooLarge(`writes may not reach past ${maxVolumeBytes} bytes`)
      timer.refresh()
      if (gathered === 0 && chunk.length >= GATHER_BYTES) {
        // Already big enough: written as it came, no copy.
        writing = true
        await session.write(chunk)
        writing = false
        continue
      }
      for (let at = 0; at < chunk.length; ) {
        gather ??= gatherBuffer(session)
        const n = chunk.copy(gather, gathered, at, Math.min(chunk.length, at + GATHER_BYTES - gathered))
        gathered += n
        at += n
        if (gathered === GATHER_BYTES) await flush()
      }
    }
    await flush()
  } finally {
    clearTimeout(timer)
    if (gather && !session.keepsChunks && slabs.length < MAX_FREE_SLABS) slabs.push(gather)
  }
}

/** Starts a write, turning a busy volume into 503 with Retry-After. */
async function begin(volume: Volume, options: WriteOptions): Promise<WriteSession> {
  try {
    return await volume.beginWrite(options)
  } catch (err) {
    if (err instanceof VolumeBusyError) throw problems.unavailable(err.message, 1)
    throw err
  }
}

/** Refuses, before anything is written, a write whose declared end or size passes the largest volume. */
function checkSize(options: WriteOptions, maxVolumeBytes: number): void {
  const end = options.offset + (options.length ?? 0)
  const size = typeof options.resizeTo === 'number' ? options.resizeTo : 0
  if (end > maxVolumeBytes || size > maxVolumeBytes) throw problems.contentTooLarge(`writes may not reach past ${maxVolumeBytes} bytes`)
}

function abortWith(session: WriteSession, err: unknown, request?: FastifyRequest): never {
  session.abort({ code: 'ABORTED', message: err instanceof Error && !(err instanceof WriteFailedError) ? err.message : 'write failed' })
  if (err instanceof StalledBodyError) {
    // Nothing more will come: drop the connection rather than wait for a body that never ends.
    request?.raw.destroy()
    throw problems.requestTimeout(err.message)
  }
  if (err instanceof WriteFailedError) {
    throw problems.writeFailed(`no reading replica took the write: ${err.errors.map((e) => e.code).join(', ') || 'EIO'}`, err.group.id)
  }
  throw err
}

/** Errors the multipart parser raises with a 4xx status of its own (limits). */
function isClientError(err: unknown): boolean {
  const status = (err as { statusCode?: unknown }).statusCode
  return typeof status === 'number' && status >= 400 && status < 500
}

function writeOptions(request: FastifyRequest): WriteOptions {
  const header = headerOf(request, 'content-range')
  const contentLength = request.headers['content-length'] === undefined ? null : Number(request.headers['content-length'])
  if (header === undefined) return { offset: 0, length: contentLength, resizeTo: 'end' }
  const parsed = parseContentRange(header)
  if (!parsed.ok) throw problems.invalidRange(parsed.reason)
  const { first, last, completeLength } = parsed.value
  const length = last - first + 1
  if (contentLength !== null && contentLength !== length) {
    throw problems.invalidRange(`Content-Length ${contentLength} does not match the ${length} bytes of Content-Range ${header}`)
  }
  return { offset: first, length, resizeTo: completeLength }
}

function checkPreconditions(request: FastifyRequest, volume: Volume): void {
  if (!ifMatchPasses(headerOf(request, 'if-match'), volume.etag)) throw problems.preconditionFailed('If-Match does not match the current ETag')
  if (!ifNoneMatchPasses(headerOf(request, 'if-none-match'), volume.etag)) throw problems.preconditionFailed('If-None-Match matches the current ETag')
}

export default async function dataRoutes(app: FastifyInstance): Promise<void> {
  // Bodies of PUT are bytes whatever their content type: no parser may consume them.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, _payload, done) => done(null))
  await app.register(multipart)

  // HEAD first, so Fastify does not add its own HEAD that would read the data only to drop it.
  app.head('/volumes/:name/data', (request, reply) => serveData(app, request, reply, true))
  app.get('/volumes/:name/data', (request, reply) => serveData(app, request, reply, false))

  app.put('/volumes/:name/data', async (request, reply) => {
    const { name } = parseOr400(nameParams, request.params)
    const volume = volumeOr404(app, name)
    parseOr400(writeQuerySchema, request.query)
    const options = writeOptions(request)
    checkSize(options, app.config.maxVolumeBytes)
    checkPreconditions(request, volume)
    const session = await begin(volume, options)
    const limit = options.length === null ? null : options.offset + options.length
    try {
      await pump(session, request.raw, limit, app.config.maxVolumeBytes, app.config.bodyIdleTimeoutMs)
      if (limit !== null && session.position !== limit) {
        throw problems.badRequest(`the body ended after ${session.position - options.offset} of the ${options.length} bytes declared`)
      }
    } catch (err) {
      abortWith(session, err, request)
    }
    return replyWritten(request, reply, volume, await session.finish())
  })

  app.post('/volumes/:name/data', async (request, reply) => {
    const { name } = parseOr400(nameParams, request.params)
    const volume = volumeOr404(app, name)
    if (!request.isMultipart()) throw problems.unsupportedMediaType('POST takes multipart/form-data: a field "offset", then one or more files')
    checkPreconditions(request, volume)
    let offset: number | undefined
    let session: WriteSession | undefined
    try {
      for await (const part of request.parts({ limits: { fileSize: Number.MAX_SAFE_INTEGER, fields: 16, parts: 1024 } })) {
        if (part.type === 'field') {
          if (part.fieldname !== 'offset') continue
          if (session) throw problems.badRequest('the offset field must come before the file parts')
          const value = String(part.value)
          if (!/^\d{1,16}$/.test(value) || !Number.isSafeInteger(Number(value))) throw problems.badRequest(`offset ${JSON.stringify(value)} is not a non-negative integer`)
          offset = Number(value)
          // A POST writes into or appends to the content; an offset past its end would leave a hole of zeros.
          if (offset > volume.size) throw problems.badRequest(`offset ${offset} is past the end of the volume (${volume.size} bytes)`)
          continue
        }
        if (offset === undefined) throw problems.badRequest('the offset field must come before the file parts')
        session ??= await begin(volume, { offset, length: null, resizeTo: null })
        await pump(session, part.file, null, app.config.maxVolumeBytes, app.config.bodyIdleTimeoutMs)
      }
      if (!session) throw problems.badRequest('the form has no file part')
    } catch (err) {
      const refused = err instanceof Problem || err instanceof WriteFailedError || isClientError(err) ? err : problems.badRequest(`malformed multipart/form-data body: ${(err as Error).message}`)
      if (session) abortWith(session, refused, request)
      throw refused
    }
    return replyWritten(request, reply, volume, await session.finish())
  })
}
