// The tus 1.0.0 resumable upload protocol (https://tus.io/protocols/resumable-upload), as routes/uploads.ts
// speaks it: its headers, its metadata, its checksums and its problems.
import { createHash, type Hash } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { BodyCheck } from '../engine/body-stages.js'
import { EngineError } from '../engine/errors.js'
import type { UploadRecord } from '../engine/upload-registry.js'
import type { Volume } from '../engine/volume.js'
import { headerOf } from './data-requests.js'
import { Problem, problems } from './problem.js'

export const TUS_VERSION = '1.0.0'
export const TUS_EXTENSIONS = 'creation,creation-with-upload,termination,checksum,expiration'
export const CHECKSUM_ALGORITHMS = ['sha1', 'sha256'] as const
export const OFFSET_STREAM = 'application/offset+octet-stream'

const TYPE = 'https://filemirror.dev/problems/'

export const tusProblems = {
  resumableRequired: () =>
    new Problem(412, 'Precondition Failed', `this is a tus ${TUS_VERSION} endpoint: send Tus-Resumable: ${TUS_VERSION}`, TYPE + 'tus-version', { headers: { 'tus-version': TUS_VERSION } }),
  offsetConflict: (sent: number, offset: number) =>
    problems.conflict(`Upload-Offset ${sent} is not the upload's offset ${offset}: HEAD the upload and send from there`),
  gone: (id: string) =>
    new Problem(410, 'Gone', `upload ${id} is gone: the volume changed under the bytes it wrote; start a new upload`, TYPE + 'upload-gone'),
  locked: (id: string) => new Problem(423, 'Locked', `upload ${id} is taking another request: retry once it ends`, TYPE + 'locked'),
  checksumMismatch: (algorithm: string) =>
    new Problem(460, 'Checksum Mismatch', `the body's ${algorithm} is not the Upload-Checksum sent: nothing of it was written`, TYPE + 'checksum-mismatch'),
  notOffsetStream: () => problems.unsupportedMediaType(`upload bodies are sent with Content-Type: ${OFFSET_STREAM}`),
}

/** A header holding a non-negative integer (decimal digits, a safe integer); undefined when absent, 400 when malformed. */
export function integerHeader(request: FastifyRequest, name: string): number | undefined {
  const value = headerOf(request, name)
  if (value === undefined) return undefined
  if (!/^\d{1,16}$/.test(value.trim()) || !Number.isSafeInteger(Number(value))) throw problems.badRequest(`${name} ${JSON.stringify(value)} is not a non-negative integer`)
  return Number(value)
}

/** Upload-Metadata (comma-separated `key` or `key base64value`, keys unique): the decoded values by key. */
export function parseMetadata(header: string | undefined): Map<string, string | null> {
  const meta = new Map<string, string | null>()
  if (header === undefined || header.trim() === '') return meta
  for (const pair of header.split(',')) {
    const [key, value, ...rest] = pair.trim().split(' ')
    const valid = /^[\x21-\x2b\x2d-\x7e]+$/.test(key) && rest.length === 0 && (value === undefined || (value.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(value)))
    if (!valid || meta.has(key)) throw problems.badRequest(`Upload-Metadata is not comma-separated unique "key base64value" pairs: ${JSON.stringify(pair.trim())}`)
    meta.set(key, value === undefined ? null : Buffer.from(value, 'base64').toString('utf8'))
  }
  return meta
}

/** Where an upload goes, from its metadata: `offset` (default 0, within the volume's content) and `replace`. */
export function placementOf(meta: Map<string, string | null>, volume: Volume): { start: number; replace: boolean } {
  const offset = meta.get('offset')
  const replace = meta.get('replace')
  if (offset !== undefined && (offset === null || !/^\d{1,16}$/.test(offset) || !Number.isSafeInteger(Number(offset)))) {
    throw problems.badRequest(`metadata offset ${JSON.stringify(offset)} is not a non-negative integer`)
  }
  if (replace !== undefined && replace !== 'true' && replace !== 'false') throw problems.badRequest(`metadata replace ${JSON.stringify(replace)} is neither true nor false`)
  const start = offset === undefined ? 0 : Number(offset)
  if (start > volume.size) throw problems.badRequest(`metadata offset ${start} is past the end of the volume (${volume.size} bytes)`)
  if (replace === 'true' && start !== 0) throw problems.badRequest('metadata replace=true replaces the whole content: it takes no offset but 0')
  return { start, replace: replace === 'true' }
}

class ChecksumCheck implements BodyCheck {
  private readonly hash: Hash
  constructor(
    private readonly algorithm: string,
    private readonly expected: Buffer,
  ) {
    this.hash = createHash(algorithm)
  }

  update(chunk: Buffer): void {
    this.hash.update(chunk)
  }

  verify(): EngineError | null {
    return this.hash.digest().equals(this.expected) ? null : new EngineError('digest-mismatch', `${this.algorithm} mismatch`)
  }
}

/** Upload-Checksum (`sha1 <base64>` or `sha256 <base64>`) as a check the body must pass; undefined when absent, 400 when unusable. */
export function checksumOf(request: FastifyRequest): { algorithm: string; check: BodyCheck } | undefined {
  const header = headerOf(request, 'upload-checksum')
  if (header === undefined) return undefined
  const [algorithm, digest, ...rest] = header.trim().split(' ')
  if (!(CHECKSUM_ALGORITHMS as readonly string[]).includes(algorithm)) {
    throw problems.badRequest(`Upload-Checksum algorithm ${JSON.stringify(algorithm)} is not supported (Tus-Checksum-Algorithm: ${CHECKSUM_ALGORITHMS.join(',')})`)
  }
  const expected = Buffer.from(digest ?? '', 'base64')
  if (rest.length > 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(digest ?? '') || expected.length !== createHash(algorithm).digest().length) {
    throw problems.badRequest(`Upload-Checksum ${JSON.stringify(header)} is not "${algorithm} <base64 digest>"`)
  }
  return { algorithm, check: new ChecksumCheck(algorithm, expected) }
}

/** The body's declared length: Content-Length, null when chunked, 0 without a body. */
export function bodyLength(request: FastifyRequest): number | null {
  const declared = integerHeader(request, 'content-length')
  if (declared !== undefined) return declared
  return request.headers['transfer-encoding'] === undefined ? 0 : null
}

export function isOffsetStream(request: FastifyRequest): boolean {
  return String(request.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase() === OFFSET_STREAM
}

/** Upload-Offset, and Upload-Expires while the upload is incomplete (RFC 9110 date). */
export function offsetHeaders(reply: FastifyReply, record: UploadRecord, expiresAt: number): FastifyReply {
  reply.header('upload-offset', String(record.offset))
  if (record.offset < record.length) reply.header('upload-expires', new Date(expiresAt).toUTCString())
  return reply
}
