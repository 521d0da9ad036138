import type { BufferPool } from './buffer-pool.js'
import { EngineError } from './errors.js'

/** A request body as the engine takes it; a Node stream also has destroy(), which a stall calls. */
export type Body = AsyncIterable<Buffer> & { destroy?: (error?: Error) => void }

/**
 * Fails a body that sends nothing for `idleMs`: one timer, pushed back by every chunk and held while the
 * consumer works on one (time spent writing to the replicas is ours, not the client's). `stop` ends the source
 * (a pending read cannot be interrupted otherwise).
 */
export class StallGuard {
  private consuming = false
  private stalled: EngineError | undefined
  private readonly timer: NodeJS.Timeout

  constructor(idleMs: number, stop: (error: Error) => void) {
    this.timer = setTimeout(() => {
      if (this.consuming) return void this.timer.refresh()
      this.stalled = new EngineError('timeout', `no body bytes for ${idleMs} ms`)
      stop(this.stalled)
    }, idleMs)
  }

  /** A chunk arrived: the consumer works on it until resume(). */
  arrived(): void {
    this.consuming = true
  }

  resume(): void {
    this.consuming = false
    this.timer.refresh()
  }

  /** The error to report: the stall, when the body ended because of it. */
  reason(err: unknown): unknown {
    return this.stalled ?? err
  }

  /** A body that ended (rather than failed) after its source was stopped still stalled. */
  check(): void {
    if (this.stalled) throw this.stalled
  }

  done(): void {
    clearTimeout(this.timer)
  }
}

/**
 * Refuses, before it is written, any chunk that would pass `limit` (the end the body declared) or `maxEnd`
 * (the largest volume); `start` is where the body's first byte lands.
 */
export class WithinLimits {
  private at: number

  constructor(
    private readonly start: number,
    private readonly limit: number | null,
    private readonly maxEnd: number,
  ) {
    this.at = start
  }

  check(chunk: Buffer): void {
    this.at += chunk.length
    if (this.limit !== null && this.at > this.limit) throw new EngineError('invalid', `the body is longer than the ${this.limit - this.start} bytes it declares; nothing past them was written`)
    if (this.at > this.maxEnd) throw new EngineError('too-large', `writes may not reach past ${this.maxEnd} bytes`)
  }
}

/**
 * Gathers small chunks into writes of `bytes` (one write of 1 MiB costs far less than sixteen of 64 KiB). A
 * buffer handed to `write` is reused once it resolves; with `keep`, every one is fresh, for a consumer that keeps
 * it after the write returns.
 */
export class Gatherer {
  private slab: Buffer | null = null
  private filled = 0

  constructor(
    private readonly bytes: number,
    private readonly pool: BufferPool,
    private readonly keep: boolean,
  ) {}

  async add(chunk: Buffer, write: (buffer: Buffer) => Promise<void>): Promise<void> {
    // Already big enough: written as it came, no copy.
    if (this.filled === 0 && chunk.length >= this.bytes) return write(chunk)
    for (let at = 0; at < chunk.length; ) {
      this.slab ??= this.keep ? Buffer.allocUnsafe(this.bytes) : this.pool.take()
      const n = chunk.copy(this.slab, this.filled, at, Math.min(chunk.length, at + this.bytes - this.filled))
      this.filled += n
      at += n
      if (this.filled === this.bytes) await this.flush(write)
    }
  }

  async flush(write: (buffer: Buffer) => Promise<void>): Promise<void> {
    if (this.filled === 0) return
    const full = this.slab!.subarray(0, this.filled)
    this.filled = 0
    if (this.keep) this.slab = null
    await write(full)
  }

  release(): void {
    if (this.slab && !this.keep) this.pool.give(this.slab)
    this.slab = null
  }
}

/** Checks a body as it streams (a digest, a checksum) and says at its end whether it is what it claims to be. */
export interface BodyCheck {
  update(chunk: Buffer): void
  /** null when the body checks out, else the error to refuse it with (kind 'digest-mismatch'). */
  verify(): EngineError | null
}

export interface BodyStages {
  idleMs: number
  stop?: (error: Error) => void
  /** Where the body's first byte lands, and the end it declared (null: unknown). */
  start: number
  limit: number | null
  maxEnd: number
  gatherBytes: number
  pool: BufferPool
  /** The consumer keeps the buffers it is given (queued writes): never reuse them. */
  keep: boolean
  check?: BodyCheck
}

/** Runs a body through the stages (stall guard, limits, gathering) into `write`, one loop, no promise per stage. */
export async function pumpBody(body: Body, stages: BodyStages, write: (buffer: Buffer) => Promise<void>): Promise<void> {
  const guard = new StallGuard(stages.idleMs, stages.stop ?? ((e) => body.destroy?.(e)))
  const limits = new WithinLimits(stages.start, stages.limit, stages.maxEnd)
  const gatherer = new Gatherer(stages.gatherBytes, stages.pool, stages.keep)
  try {
    for await (const chunk of body) {
      guard.arrived()
      limits.check(chunk)
      stages.check?.update(chunk)
      await gatherer.add(chunk, write)
      guard.resume()
    }
    guard.check()
    await gatherer.flush(write)
  } catch (err) {
    throw guard.reason(err)
  } finally {
    guard.done()
    gatherer.release()
  }
}
