import { slabs } from './buffer-pool.js'
import { EngineError } from './errors.js'
import type { OperationGroup } from './operation-group.js'

/** What a read session needs of its volume. */
export interface ReadHost {
  /** Reads into `buffer` from `offset` for `group` (from the named replica, or one holding the bytes); returns the bytes read. */
  readInto(buffer: Buffer, offset: number, group: OperationGroup, replicaId?: string): Promise<number>
}

/** Reads up to this size are read whole into one buffer; larger ones stream. */
export const WHOLE_READ_LIMIT = 1 << 20
const STREAM_CHUNK = 256 << 10
/** Below this, Node's own allocator is cheap enough. */
const SLAB_FROM = 64 << 10

/**
 * One read of a volume, as a reply streams it: its operation group, the volume's hold on it (a close
 * waits for it), and the pooled buffer it reads into. End it with close() however the reply ended.
 */
export class ReadSession {
  private slab: Buffer | undefined
  private closed = false
  /** What a streamed reply has still to read, [start, end) in order: a write there after the reply began tears it. */
  private unread: Array<[number, number]> = []
  /** A write landed on bytes this reply had yet to read. */
  torn = false
  /** Ends the reply at once (set by whoever sends it): a close past its grace period cuts stalled readers. */
  onCut: (() => void) | undefined

  constructor(
    private readonly host: ReadHost,
    readonly group: OperationGroup,
    private readonly replica: string | undefined,
    private readonly release: () => void,
  ) {}

  /** Reads [offset, offset + length) whole; a large one lands in a pooled slab, valid until close(). */
  async readWhole(offset: number, length: number): Promise<Buffer> {
    let buffer: Buffer
    if (length >= SLAB_FROM && length <= WHOLE_READ_LIMIT) {
      this.slab ??= slabs.take()
      buffer = this.slab.subarray(0, length)
    } else buffer = Buffer.allocUnsafe(length)
    await this.fill(buffer, offset)
    return buffer
  }

  /** The ranges a streamed reply will read, in order (offset, length), when it has more than one. */
  expect(parts: Array<[number, number]>): void {
    this.unread = parts.map(([offset, length]) => [offset, offset + length])
  }

  /**
   * Streams [offset, offset + length) chunk by chunk, reading each as the consumer asks for it. The reply is
   * the bytes of one instant (one strong ETag): a write landing on bytes it has yet to read cuts it short.
   */
  async *stream(offset: number, length: number): AsyncGenerator<Buffer> {
    if (this.unread.length === 0) this.unread = [[offset, offset + length]]
    for (let at = offset, end = offset + length; at < end; ) {
      const buffer = Buffer.allocUnsafe(Math.min(STREAM_CHUNK, end - at))
      await this.fill(buffer, at)
      at += buffer.length
      const first = this.unread[0]
      if (first) first[0] = at
      if (first && first[0] >= first[1]) this.unread.shift()
      if (this.torn) throw new EngineError('busy', 'the volume changed under this streamed reply: it is cut short (resume with If-Range)')
      yield buffer
    }
  }

  /** Bytes [start, end) are about to change. */
  noteWrite(start: number, end: number): void {
    if (this.torn) return
    for (const [s, e] of this.unread) if (start < e && s < end) this.torn = true
  }

  cut(): void {
    this.onCut?.()
  }

  private async fill(buffer: Buffer, offset: number): Promise<void> {
    const n = await this.host.readInto(buffer, offset, this.group, this.replica)
    // A replica shorter than the volume reads as zeros past its end (a sparse tail still being written behind).
    if (n < buffer.length) buffer.fill(0, n)
  }

  /** The read is over (all sent, or failed with `error`): its group settles. Idempotent. */
  settle(error: unknown = null): void {
    const group = this.group
    if (group.settled && group.finishedAt !== null) return
    const failure = error ? { code: (error instanceof EngineError && error.details.code) || 'EIO', message: (error as Error).message } : null
    for (const op of group.operations) group.finish(op, op.bytes, op.status === 'failed' ? op.error : failure)
    group.seal()
  }

  /**
   * The reply has ended: settle (a reply cut short fails its group), let a close of the volume proceed,
   * and give the slab back, only when `delivered`: a reply cut short may still have it in a socket write.
   */
  close(delivered: boolean): void {
    if (this.closed) return
    this.closed = true
    this.settle(this.group.settled ? null : { message: 'the client went away before the reply ended' })
    this.release()
    if (this.slab && delivered) slabs.give(this.slab)
    this.slab = undefined
  }
}
