import { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { WHOLE_READ_LIMIT, type ReadSession } from '../src/engine/read-session.js'
import { headerOf, isEmptyQuery } from '../src/http/data-requests.js'
import { multipartSegments, ReplyDigests, wantedDigests, withdrawDigests } from '../src/http/digests.js'
import { parseRange, rangeLength, type ByteRange } from '../src/http/headers/byte-range.js'
import { ifMatchPasses, ifNoneMatchPasses, ifRangePasses, parseEntityTagList } from '../src/http/headers/entity-tag.js'
import { makeBoundary, planMultipartByteranges } from '../src/http/headers/multipart-byteranges.js'
import { problems } from '../src/http/problem.js'
import { dataQuerySchema } from '../src/http/schemas.js'
import { parseOr400, volumeOr404 } from './lookup.js'

const OCTET = 'application/octet-stream'

/** A reply body read from the session; a failure settles the group and cuts the reply short. */
function streamed(session: ReadSession, parts: () => AsyncGenerator<Buffer>, digests: ReplyDigests | undefined): Readable {
  if (digests) parts = digests.tap(parts)
  return Readable.from(
    (async function* () {
      try {
        yield* parts()
        session.settle()
      } catch (err) {
        session.settle(err)
        throw err
      }
    })(),
  )
}

/** How often a reply whose first chunk a write tore is prepared again before the status goes out. */
const TORN_RETRIES = 3

/** GET and HEAD: RFC 9110 preconditions (§13.2.2 order), then ranges (§14). */
async function serveData(app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, head: boolean, attempt = 0): Promise<FastifyReply> {
  // The router gives the name as a string; an empty query needs no schema.
  const { name } = request.params as { name: string }
  const volume = volumeOr404(app, name)
  const { replica } = isEmptyQuery(request.query) ? { replica: undefined } : parseOr400(dataQuerySchema, request.query)
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
  const whole: ByteRange = { start: 0, end: size - 1 }
  const selected = ranges.kind === 'ranges' ? ranges.ranges : size > 0 ? [whole] : []
  const length = selected.reduce((n, r) => n + rangeLength(r), 0)

  const session = volume.openRead(ranges.kind === 'ranges' ? selected[0].start : 0, length, replica)
  // Nothing is sent yet: a write that tore what was read means preparing the reply again, for the new instant.
  const preparedAgain = (err: unknown) => {
    withdrawDigests(reply)
    session.settle(err)
    if (!session.torn || attempt >= TORN_RETRIES) throw err
    session.close(false)
    return serveData(app, request, reply, head, attempt + 1)
  }
  // Whatever way the reply ends (sent, failed, client gone), the read is over.
  reply.raw.once('close', () => session.close(reply.raw.writableFinished))
  session.onCut = () => reply.raw.destroy()
  reply.header('operation-id', session.group.id)

  const multi = ranges.kind === 'ranges' && selected.length > 1
  const plan = multi ? planMultipartByteranges(selected, size, OCTET, makeBoundary()) : undefined
  if (plan) reply.code(206).header('content-type', plan.contentType).header('content-length', plan.contentLength)
  else {
    if (ranges.kind === 'ranges') reply.code(206).header('content-range', `bytes ${selected[0].start}-${selected[0].end}/${size}`)
    reply.header('content-type', OCTET).header('content-length', length)
  }
  const replyLength = plan?.contentLength ?? length
  // Digests only when asked for (RFC 9530 §4): a reply nobody asked one of costs nothing more.
  const wants = wantedDigests(request)
  let digests: ReplyDigests | undefined
  if (wants.content || wants.repr) {
    const segments = head ? [] : plan ? multipartSegments(plan) : selected.map((r) => [r.start, length] as const)
    const shape = { volume, session, etag, size, head, whole: ranges.kind !== 'ranges', segments, length: replyLength, maxBytes: app.config.digestMaxBytes }
    digests = new ReplyDigests(reply, wants, shape)
    try {
      await digests.prepare()
    } catch (err) {
      return preparedAgain(err)
    }
  }
  if (head) return settleAndSend(reply, session)

  const parts = async function* () {
    for (const part of plan!.parts) {
      yield part.head
      yield* session.stream(part.range.start, rangeLength(part.range))
    }
    yield plan!.tail
  }
  if (replyLength <= WHOLE_READ_LIMIT) {
    // Small enough to read whole before the status goes out: a write that tears it means preparing it again.
    let body: Buffer
    try {
      const chunks: Buffer[] = []
      if (plan) for await (const chunk of parts()) chunks.push(chunk)
      body = plan ? Buffer.concat(chunks) : selected.length ? await session.readWhole(selected[0].start, length) : Buffer.alloc(0)
      digests?.fromBody(body)
    } catch (err) {
      return preparedAgain(err)
    }
    session.settle()
    return reply.send(body)
  }
  if (plan) return reply.send(streamed(session, parts, digests))
  const range = selected[0]
  // The first chunk is read before the status goes out, so a failing replica still gets a problem reply.
  const chunks = session.stream(range.start, length)
  let first: IteratorResult<Buffer>
  try {
    first = await chunks.next()
  } catch (err) {
    return preparedAgain(err)
  }
  return reply.send(
    streamed(session, async function* () {
      if (!first.done) yield first.value
      yield* chunks
    }, digests),
  )
}

function settleAndSend(reply: FastifyReply, session: ReadSession) {
  session.settle()
  return reply.send()
}

export default async function dataReadRoutes(app: FastifyInstance): Promise<void> {
  // HEAD first, so Fastify does not add its own HEAD that would read the data only to drop it.
  app.head('/volumes/:name/data', (request, reply) => serveData(app, request, reply, true))
  app.get('/volumes/:name/data', (request, reply) => serveData(app, request, reply, false))
}
