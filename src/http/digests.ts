// RFC 9530 digests on the data routes: a request's Content-Digest verified as its body streams (a BodyCheck,
// so a body that fails it changes nothing), and the Content-Digest / Repr-Digest a reply sends when asked by
// Want-Content-Digest / Want-Repr-Digest. The header parsers are pure (./headers/digest.ts); this is the wiring.
import { createHash, type Hash } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { BodyCheck } from '../engine/body-stages.js'
import { EngineError } from '../engine/errors.js'
import type { OperationGroup } from '../engine/operation-group.js'
import { WHOLE_READ_LIMIT, type ReadSession } from '../engine/read-session.js'
import { headerOf } from './data-requests.js'
import { chooseDigestAlgorithm, DIGEST_SPECS, parseDigestField, parseWantDigestField, serializeDigestField, type DigestAlgorithm } from './headers/digest.js'
import { problems } from './problem.js'

const hashOf = (algorithm: DigestAlgorithm): Hash => createHash(DIGEST_SPECS[algorithm].hash)
const field = (algorithm: DigestAlgorithm, digest: Buffer) => serializeDigestField([[algorithm, digest]])

// ------------------------------------------------------------------ requests

/** A request's Content-Digest: the check a write streams its body through, and what its group reports once it passed. */
export interface RequestDigest {
  check: BodyCheck
  /** The write checked out: its group reports the digests it verified (`digest`, base64 by algorithm). */
  record(group: OperationGroup): void
}

/**
 * The Content-Digest of a request (RFC 9530 §2), undefined without one or when it names no supported algorithm
 * (ignored, as §2 lets a recipient). A malformed one is a 400. Every supported digest it carries must match.
 * `over` says what the digest covers: the body the write takes ('body', a PUT), or the whole request content as
 * it arrives ('request', a multipart POST: its framing and fields too), tapped from the socket's stream, which
 * must then not have started flowing yet.
 */
export function requestDigest(request: FastifyRequest, over: 'body' | 'request'): RequestDigest | undefined {
  const value = headerOf(request, 'content-digest')
  if (value === undefined) return undefined
  const parsed = parseDigestField(value)
  if (!parsed.ok) throw problems.badRequest(`Content-Digest is malformed: ${parsed.reason}`)
  if (parsed.value.size === 0) return undefined
  const digests = [...parsed.value].map(([algorithm, expected]) => ({ algorithm, expected, hash: hashOf(algorithm) }))
  const update = (chunk: Buffer) => {
    for (const d of digests) d.hash.update(chunk)
  }
  let ended = over === 'body'
  if (over === 'request') {
    request.raw.on('data', update)
    request.raw.once('end', () => (ended = true))
  }
  const check: BodyCheck = {
    update: over === 'body' ? update : () => {},
    verify() {
      if (!ended) return new EngineError('digest-mismatch', 'Content-Digest cannot be verified: the request content had not ended with the form; nothing was written')
      const wrong = digests.flatMap(({ algorithm, expected, hash }) => {
        const actual = hash.digest()
        return actual.equals(expected) ? [] : [`${algorithm} (sent :${expected.toString('base64')}:, the ${over === 'body' ? 'body' : 'request content'} has :${actual.toString('base64')}:)`]
      })
      return wrong.length ? new EngineError('digest-mismatch', `Content-Digest does not match: ${wrong.join(', ')}; nothing was written`) : null
    },
  }
  return {
    check,
    record: (group) => void (group.extra = { ...group.extra, digest: Object.fromEntries(digests.map((d) => [d.algorithm, d.expected.toString('base64')])) }),
  }
}

// ------------------------------------------------------------------ replies

/** What a read asks for: an algorithm per field (RFC 9530 §4), and whether it takes trailers (RFC 9110 §10.1.4). */
export interface WantedDigests {
  content: DigestAlgorithm | null
  repr: DigestAlgorithm | null
  trailers: boolean
}

/**
 * Want-Content-Digest and Want-Repr-Digest of a request: the preferred supported algorithm of each, or null
 * (absent, none acceptable, or malformed: these fields are only hints, §4, and a read is not refused for one).
 */
/** No digest asked for: the common case, answered without parsing anything. */
const NONE_WANTED: WantedDigests = { content: null, repr: null, trailers: false }

export function wantedDigests(request: FastifyRequest): WantedDigests {
  if (request.headers['want-content-digest'] === undefined && request.headers['want-repr-digest'] === undefined) return NONE_WANTED
  const pick = (name: string) => {
    const value = headerOf(request, name)
    const parsed = value === undefined ? undefined : parseWantDigestField(value)
    return parsed?.ok ? chooseDigestAlgorithm(parsed.value) : null
  }
  const te = headerOf(request, 'te') ?? ''
  // Trailers need chunked transfer coding: HTTP/1.1 and later (RFC 9112 §7.1.2).
  const http11 = request.raw.httpVersionMajor > 1 || (request.raw.httpVersionMajor === 1 && request.raw.httpVersionMinor >= 1)
  const trailers = http11 && te.split(',').some((member) => member.split(';')[0].trim().toLowerCase() === 'trailers')
  return { content: pick('want-content-digest'), repr: pick('want-repr-digest'), trailers }
}

/**
 * Repr-Digests of volumes, one entry per volume (keyed by the volume object, so a deleted volume's goes with
 * it), valid for one ETag: an entry for another ETag is dropped when looked up or replaced.
 */
const reprCache = new WeakMap<object, { etag: string; digests: Map<DigestAlgorithm, Buffer> }>()

export function cachedReprDigest(volume: object, etag: string, algorithm: DigestAlgorithm): Buffer | undefined {
  const entry = reprCache.get(volume)
  if (entry && entry.etag !== etag) reprCache.delete(volume)
  return entry?.etag === etag ? entry.digests.get(algorithm) : undefined
}

function cacheReprDigest(volume: object, etag: string, algorithm: DigestAlgorithm, digest: Buffer): void {
  let entry = reprCache.get(volume)
  if (!entry || entry.etag !== etag) reprCache.set(volume, (entry = { etag, digests: new Map() }))
  entry.digests.set(algorithm, digest)
}

/** A reply that will not be the one its digests were computed for (an error, or prepared again) sends none of them. */
export function withdrawDigests(reply: FastifyReply): void {
  reply.removeHeader('content-digest').removeHeader('repr-digest').removeHeader('trailer')
}

/** A reply body, in order: framing bytes (multipart heads) and ranges of the volume, [offset, length]. */
export type BodySegment = Buffer | readonly [number, number]

/** The segments of a multipart/byteranges body: each part's head and range, then the closing delimiter. */
export function multipartSegments(plan: { parts: Array<{ head: Buffer; range: { start: number; end: number } }>; tail: Buffer }): BodySegment[] {
  return [...plan.parts.flatMap((p) => [p.head, [p.range.start, p.range.end - p.range.start + 1] as const]), plan.tail]
}

export interface ReplyShape {
  volume: { readonly etag: string }
  session: ReadSession
  /** The ETag the reply carries, and the volume's size then. */
  etag: string
  size: number
  head: boolean
  /** The body is the whole representation (a 200): its Content-Digest is its Repr-Digest. */
  whole: boolean
  segments: BodySegment[]
  /** The body's length: up to WHOLE_READ_LIMIT, it is read whole before the status goes out, else it streams. */
  length: number
  /** Larger bodies, sent without trailers, are digested in a pass of their own up to this size (DIGEST_MAX_BYTES). */
  maxBytes: number
}

/** Where a digest comes from: the buffered body, the streamed body (a trailer), or a pass of its own before the status. */
type Source = 'body' | 'trailer' | 'pass-body' | 'pass-whole'
type Field = 'content' | 'repr'

/**
 * The digests one reply sends (RFC 9530 §2, §3), before its body as fields wherever that is affordable: from
 * the repr cache; computed from a buffered body; from a pass of their own over the bytes, up to `maxBytes`;
 * else, for a client that takes trailers (TE: trailers), as trailer fields computed while the body streams;
 * else not at all (the Want-* fields are hints, §4). A write landing on bytes a pass read before the body has
 * them means preparing the reply again: `prepare` and `fromBody` throw then, with `session.torn` set.
 */
export class ReplyDigests {
  private readonly wanted = new Map<Field, { algorithm: DigestAlgorithm; source: Source }>()
  /** Fields sent as trailers, and one hash per algorithm they need. */
  private readonly trailers: Array<{ which: Field; algorithm: DigestAlgorithm }> = []
  private readonly streaming = new Map<DigestAlgorithm, Hash>()
  private passed = false

  constructor(
    private readonly reply: FastifyReply,
    wants: WantedDigests,
    private readonly shape: ReplyShape,
  ) {
    const { head, whole, length, size, maxBytes } = shape
    const buffered = length <= WHOLE_READ_LIMIT
    const bodySource: Source | null = buffered ? 'body' : wants.trailers ? 'trailer' : length <= maxBytes ? 'pass-body' : null
    if (!head && wants.content) this.want('content', wants.content, bodySource)
    if (wants.repr) this.want('repr', wants.repr, whole && !head ? bodySource : size <= maxBytes ? 'pass-whole' : null)
  }

  private want(which: Field, algorithm: DigestAlgorithm, source: Source | null): void {
    // A whole reply's content is the representation: either digest serves for both.
    const cached = which === 'repr' || this.shape.whole ? cachedReprDigest(this.shape.volume, this.shape.etag, algorithm) : undefined
    if (cached) this.send(which, algorithm, cached)
    else if (source) this.wanted.set(which, { algorithm, source })
  }

  /** Before any byte of the body is read: the passes of their own, and the trailers declared. */
  async prepare(): Promise<void> {
    const { session, segments, size } = this.shape
    const bodyRanges = segments.filter((s): s is readonly [number, number] => !Buffer.isBuffer(s)).map(([o, l]): [number, number] => [o, l])
    const passes = { 'pass-body': new Set<DigestAlgorithm>(), 'pass-whole': new Set<DigestAlgorithm>() }
    for (const [which, { algorithm, source }] of this.wanted) {
      if (source === 'pass-body' || source === 'pass-whole') passes[source].add(algorithm)
      else if (source === 'trailer') this.trailers.push({ which, algorithm })
    }
    if (this.trailers.length) {
      for (const { algorithm } of this.trailers) if (!this.streaming.has(algorithm)) this.streaming.set(algorithm, hashOf(algorithm))
      // RFC 9110 §6.6.2; a message with trailers is chunked, which no Content-Length may accompany (RFC 9112 §6.2).
      this.reply.header('trailer', this.trailers.map(({ which }) => `${which}-digest`).join(', ')).removeHeader('content-length')
    }
    if (passes['pass-body'].size || passes['pass-whole'].size) {
      // Every byte a pass reads counts as unread until the body has it: a write on one tears the reply.
      session.expect(passes['pass-whole'].size ? [...bodyRanges, [0, size]] : bodyRanges)
      this.passed = true
      const digests = {
        'pass-body': await this.digestSegments(segments, passes['pass-body']),
        'pass-whole': await this.digestSegments([[0, size]], passes['pass-whole']),
      }
      // A Repr-Digest is of the content under the reply's ETag: a write that moved it meanwhile (one in flight when
      // the reply began, which tore no read of it) means preparing the reply again, for the new ETag.
      if (passes['pass-whole'].size && this.shape.volume.etag !== this.shape.etag) session.torn = true
      if (session.torn) throw new EngineError('busy', 'the volume changed while the digest of the reply was computed')
      for (const [which, { algorithm, source }] of this.wanted) {
        if (source === 'pass-body' || source === 'pass-whole') this.send(which, algorithm, digests[source].get(algorithm)!)
      }
    }
    // From here on, only the body's own bytes are unread, in the order the reply sends them.
    if (bodyRanges.length) session.expect(bodyRanges)
  }

  /** A buffered body, read whole: the digests it is the source of. */
  fromBody(body: Buffer): void {
    if (this.passed && this.shape.session.torn) throw new EngineError('busy', 'the volume changed while the digest of the reply was computed')
    const digests = new Map<DigestAlgorithm, Buffer>()
    for (const [which, { algorithm, source }] of this.wanted) {
      if (source !== 'body') continue
      if (!digests.has(algorithm)) digests.set(algorithm, hashOf(algorithm).update(body).digest())
      this.send(which, algorithm, digests.get(algorithm)!)
    }
  }

  /** A streamed body: its chunks hashed on their way out, and the trailers added after the last one (never to a reply cut short). */
  tap(parts: () => AsyncGenerator<Buffer>): () => AsyncGenerator<Buffer> {
    if (this.trailers.length === 0) return parts
    const hashes = [...this.streaming.values()]
    const addTrailers = () => this.addTrailers()
    return async function* () {
      for await (const chunk of parts()) {
        for (const hash of hashes) hash.update(chunk)
        yield chunk
      }
      addTrailers()
    }
  }

  /**
   * Before the body's end: Node sends them with the last chunk. Not reply.trailer(): Fastify 5 lists several
   * trailer names in the Trailer field separated by spaces, not commas (RFC 9110 §6.6.2: #field-name).
   */
  private addTrailers(): void {
    const digests = new Map([...this.streaming].map(([algorithm, hash]) => [algorithm, hash.digest()]))
    const fields: Record<string, string> = {}
    for (const { which, algorithm } of this.trailers) {
      fields[`${which}-digest`] = field(algorithm, digests.get(algorithm)!)
      if (which === 'repr' || this.shape.whole) this.cache(algorithm, digests.get(algorithm)!)
    }
    this.reply.raw.addTrailers(fields)
  }

  private send(which: Field, algorithm: DigestAlgorithm, digest: Buffer): void {
    this.reply.header(`${which}-digest`, field(algorithm, digest))
    if (which === 'repr' || this.shape.whole) this.cache(algorithm, digest)
  }

  /** Cached only while the volume still has the reply's ETag and nothing tore the read: the bytes were that instant's. */
  private cache(algorithm: DigestAlgorithm, digest: Buffer): void {
    const { volume, etag, session } = this.shape
    if (volume.etag === etag && !session.torn) cacheReprDigest(volume, etag, algorithm, digest)
  }

  /** Reads `segments` through the session, a chunk at a time, into one hash per algorithm (none: nothing read). */
  private async digestSegments(segments: BodySegment[], algorithms: Set<DigestAlgorithm>): Promise<Map<DigestAlgorithm, Buffer>> {
    if (algorithms.size === 0) return new Map()
    const hashes = [...algorithms].map((algorithm) => [algorithm, hashOf(algorithm)] as const)
    const update = (chunk: Buffer) => {
      for (const [, hash] of hashes) hash.update(chunk)
    }
    for (const segment of segments) {
      if (Buffer.isBuffer(segment)) {
        update(segment)
        continue
      }
      const [offset, length] = segment
      for (let at = offset; at < offset + length && !this.shape.session.torn; at += WHOLE_READ_LIMIT) {
        update(await this.shape.session.readWhole(at, Math.min(WHOLE_READ_LIMIT, offset + length - at)))
      }
    }
    return new Map(hashes.map(([algorithm, hash]) => [algorithm, hash.digest()]))
  }
}
