import type { EngineError, ErrorKind } from '../engine/errors.js'
import { ChecksumMismatchError } from '../engine/verified-read.js'
import { Problem, problems } from './problem.js'

/** Paths never leave the service in a 5xx detail. */
const withoutPaths = (message: string) => message.replace(/\/[^\s]*/g, '<path>')

/** The one table from an engine error's kind to the problem a client gets. */
const BY_KIND: Record<ErrorKind, (err: EngineError) => Problem> = {
  'not-found': (err) => problems.notFound(err.message),
  conflict: (err) => problems.conflict(err.message),
  busy: (err) => problems.unavailable(err.message, 1),
  invalid: (err) => problems.badRequest(err.message),
  'precondition-failed': (err) => problems.preconditionFailed(err.message),
  'too-large': (err) => problems.contentTooLarge(err.message),
  timeout: (err) => problems.requestTimeout(err.message),
  'write-failed': (err) => problems.writeFailed(withoutPaths(err.message), err.details.groupId ?? ''),
  'read-failed': (err) => (err instanceof ChecksumMismatchError ? checksumMismatch(err) : problems.readFailed(withoutPaths(err.message))),
  'insufficient-storage': (err) => new Problem(507, 'Insufficient Storage', withoutPaths(err.message), 'https://filemirror.dev/problems/insufficient-storage'),
  'digest-mismatch': (err) => new Problem(400, 'Digest Mismatch', err.message, 'https://filemirror.dev/problems/digest-mismatch'),
  locked: (err) => new Problem(423, 'Locked', err.message, 'https://filemirror.dev/problems/locked'),
  io: () => problems.internal(),
}

/** No replica holds a copy of the bytes that verifies: the offset, the replicas tried and what to do (its message names no path). */
function checksumMismatch(err: ChecksumMismatchError): Problem {
  const members = { offset: err.offset, length: err.length, replicas: err.tried }
  return new Problem(500, 'Checksum Mismatch', err.message, 'https://filemirror.dev/problems/checksum-mismatch', { members })
}

export function problemOfEngineError(err: EngineError): Problem {
  return BY_KIND[err.kind](err)
}
