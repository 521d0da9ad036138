import multipart, { type Multipart } from '@fastify/multipart'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { z } from 'zod'
import { isEngineError } from '../src/engine/errors.js'
import type { BodyLimits, Volume } from '../src/engine/volume.js'
import { checkWritePreconditions, isEmptyQuery, replyWritten, writeOptionsOf } from '../src/http/data-requests.js'
import { requestDigest } from '../src/http/digests.js'
import { Problem, problems } from '../src/http/problem.js'
import { dataQuerySchema } from '../src/http/schemas.js'
import { parseOr400, volumeOr404 } from './lookup.js'

const nameParams = z.object({ name: z.string() })
/** Writes go to every replica: no ?replica. Built once, not per request. */
const writeQuerySchema = dataQuerySchema.omit({ replica: true })

function bodyLimits(app: FastifyInstance, request: FastifyRequest): BodyLimits {
  // A stalled body will never end: drop the connection rather than wait for it.
  return { idleTimeoutMs: app.config.bodyIdleTimeoutMs, maxVolumeBytes: app.config.maxVolumeBytes, stopBody: (err) => request.raw.destroy(err) }
}

/** Errors the multipart parser raises with a 4xx status of its own (limits). */
function isClientError(err: unknown): boolean {
  const status = (err as { statusCode?: unknown }).statusCode
  return typeof status === 'number' && status >= 400 && status < 500
}

/** The offset field of a form, checked: a POST writes into or appends to the content, never past its end. */
function offsetOf(value: string, volume: Volume): number {
  if (!/^\d{1,16}$/.test(value) || !Number.isSafeInteger(Number(value))) throw problems.badRequest(`offset ${JSON.stringify(value)} is not a non-negative integer`)
  const offset = Number(value)
  if (offset > volume.size) throw problems.badRequest(`offset ${offset} is past the end of the volume (${volume.size} bytes)`)
  return offset
}

/** The file parts of a form, one body after another; a field after the first file is refused. */
async function* fileParts(first: Multipart, rest: AsyncIterator<Multipart>): AsyncGenerator<Buffer> {
  if (first.type === 'file') yield* first.file
  for (let next = await rest.next(); !next.done; next = await rest.next()) {
    const part = next.value
    if (part.type === 'file') yield* part.file
    else if (part.fieldname === 'offset') throw problems.badRequest('the offset field must come before the file parts')
  }
}

export default async function dataWriteRoutes(app: FastifyInstance): Promise<void> {
  // Bodies of PUT are bytes whatever their content type: no parser may consume them.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, _payload, done) => done(null))
  await app.register(multipart)

  app.put('/volumes/:name/data', async (request, reply) => {
    // The router gives the name as a string; an empty query needs no schema.
    const { name } = request.params as { name: string }
    const volume = volumeOr404(app, name)
    if (!isEmptyQuery(request.query)) parseOr400(writeQuerySchema, request.query)
    const options = writeOptionsOf(request)
    checkWritePreconditions(request, volume.etag)
    // RFC 9530 §2: a body that does not match its Content-Digest changes nothing.
    const digest = requestDigest(request, 'body')
    const group = await volume.write(options, request.raw, { ...bodyLimits(app, request), check: digest?.check })
    digest?.record(group)
    return replyWritten(request, reply, () => volume.etag, group)
  })

  app.post('/volumes/:name/data', async (request, reply) => {
    const { name } = parseOr400(nameParams, request.params)
    const volume = volumeOr404(app, name)
    if (!request.isMultipart()) throw problems.unsupportedMediaType('POST takes multipart/form-data: a field "offset", then one or more files')
    checkWritePreconditions(request, volume.etag)
    // The digest covers the request's content, the whole form (RFC 9530 §2), tapped before the parser reads it.
    const digest = requestDigest(request, 'request')
    const parts = request.parts({ limits: { fileSize: Number.MAX_SAFE_INTEGER, fields: 16, parts: 1024 } })[Symbol.asyncIterator]()
    try {
      let offset: number | undefined
      for (let next = await parts.next(); !next.done; next = await parts.next()) {
        const part = next.value
        if (part.type === 'field') {
          if (part.fieldname === 'offset') offset = offsetOf(String(part.value), volume)
          continue
        }
        if (offset === undefined) throw problems.badRequest('the offset field must come before the file parts')
        const group = await volume.write({ offset, length: null, resizeTo: null }, fileParts(part, parts), { ...bodyLimits(app, request), check: digest?.check })
        digest?.record(group)
        return await replyWritten(request, reply, () => volume.etag, group)
      }
      throw problems.badRequest('the form has no file part')
    } catch (err) {
      if (err instanceof Problem || isEngineError(err) || isClientError(err)) throw err
      throw problems.badRequest(`malformed multipart/form-data body: ${(err as Error).message}`)
    }
  })
}
