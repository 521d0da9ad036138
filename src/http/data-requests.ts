import type { FastifyReply, FastifyRequest } from 'fastify'
import type { OperationGroup } from '../engine/operation-group.js'
import type { WriteOptions } from '../engine/write-session.js'
import { parseContentRange } from './headers/content-range.js'
import { ifMatchPasses, ifNoneMatchPasses } from './headers/entity-tag.js'
import { preferredWaitSeconds } from './headers/prefer.js'
import { problems } from './problem.js'

/** A query string with nothing in it, the common case of a data request: nothing to validate. */
export function isEmptyQuery(query: unknown): boolean {
  for (const _ in query as object) return false
  return true
}

/** Longest `Prefer: wait` honoured. */
const MAX_PREFER_WAIT_SECONDS = 60

/** A request header as one string (repeated ones joined, as RFC 9110 §5.3 allows for lists). */
export function headerOf(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name]
  return Array.isArray(value) ? value.join(', ') : value
}

/** Where a PUT lands: Content-Range (RFC 9110 §14.4, partial PUT) or, without it, a whole replace. */
export function writeOptionsOf(request: FastifyRequest): WriteOptions {
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

/** If-Match and If-None-Match on a write (RFC 9110 §13.1.1, §13.1.2): a failed one is 412. */
export function checkWritePreconditions(request: FastifyRequest, etag: string): void {
  if (!ifMatchPasses(headerOf(request, 'if-match'), etag)) throw problems.preconditionFailed('If-Match does not match the current ETag')
  if (!ifNoneMatchPasses(headerOf(request, 'if-none-match'), etag)) throw problems.preconditionFailed('If-None-Match matches the current ETag')
}

/** Replies once the sync replicas hold the bytes: 200 when every replica is done, else 202 with where to poll (RFC 7240 wait). */
export async function replyWritten(request: FastifyRequest, reply: FastifyReply, etag: () => string, group: OperationGroup) {
  const wait = preferredWaitSeconds(request.headers['prefer'], MAX_PREFER_WAIT_SECONDS)
  if (wait && !group.settled) {
    const timer = new Promise<void>((resolve) => setTimeout(resolve, wait * 1000).unref())
    await Promise.race([group.whenSettled(), timer])
  }
  reply.header('operation-id', group.id).header('etag', etag())
  if (wait !== undefined) reply.header('preference-applied', `wait=${wait}`)
  if (group.settled) return reply.code(200).send(group.toJSON())
  return reply.code(202).header('location', `/operations/${group.id}`).send(group.toJSON())
}
