/**
 * What went wrong, in the engine's words; the HTTP layer maps each kind to one problem status
 * (src/http/error-map.ts), so no engine file knows about HTTP.
 */
export type ErrorKind =
  /** No such volume, replica or group. */
  | 'not-found'
  /** The request contradicts the volumes as they are (a configuration change, a path taken, a resync with no source). */
  | 'conflict'
  /** A limit or a closing volume refuses a data request for now: retry shortly. */
  | 'busy'
  /** The request itself is wrong (a body longer than it declared, a path outside the storage roots). */
  | 'invalid'
  | 'precondition-failed'
  /** A write would reach past the largest volume. */
  | 'too-large'
  /** A body stopped arriving. */
  | 'timeout'
  /** No replica a read could use took the write: the bytes are nowhere to be found. */
  | 'write-failed'
  /** No replica holding the bytes could be read. */
  | 'read-failed'
  | 'insufficient-storage'
  | 'digest-mismatch'
  | 'locked'
  /** Anything else that failed on a replica's storage. */
  | 'io'

/** An engine error with its kind; `details` carries what a reply may name (an operation group id). */
export class EngineError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly details: { groupId?: string; code?: string } = {},
  ) {
    super(message)
    this.name = 'EngineError'
  }
}

export const isEngineError = (err: unknown, kind?: ErrorKind): err is EngineError => err instanceof EngineError && (kind === undefined || err.kind === kind)
