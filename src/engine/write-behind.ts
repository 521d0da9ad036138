import { isRetryable, retryAfterOf, retryDelay, type RemoteRetryPolicy } from './remote.js'
import { toIoError, type Replica } from './replica.js'
import { Throttle, type Clock } from './throttle.js'

/**
 * Largest single copy to a local file; one buffer of this size per replica is all the memory write-behind uses.
 * A remote's copies are its preferredWriteUnit (HTTP), or exactly one of its chunks (S3, writeUnit).
 */
export const COPY_CHUNK = 1 << 20
/** Largest copy whatever a remote prefers. */
const MAX_COPY = 64 << 20
/** Dirty ranges closer than this are copied as one, re-copying the clean gap to save a seek. */
const COALESCE_GAP = 64 << 10

export interface WriteBehindHost {
  /** An in-sync replica to copy from, other than `target`; undefined when none is healthy. */
  source(target: Replica): Replica | undefined
  /** The volume's current size. */
  size(): number
  /** fdatasync each copy before recording it clean. */
  fsync: boolean
  /** A source replica's read failed. */
  sourceFailed(source: Replica, err: unknown): void
  /**
   * Reads what a copy sends from `source`, verified against the volume's block checksums when it keeps them (a bad
   * block healed from a replica that holds a good copy): rot on the source is never copied over good bytes.
   */
  readSource?(source: Replica, target: Replica, chunk: Buffer, start: number): Promise<number>
  onCopy?(target: Replica, start: number, end: number): void
  /** Resolves when client writes have quieted down (bounded), so a resync prefers idle time. */
  idle?(): Promise<void>
  /** The throttle's time; the real clock when absent. */
  clock?: Clock
  /**
   * How a remote replica's retryable errors (timeout, refused connection, 5xx) are retried: the replica stays
   * behind, its dirty ranges kept. Without it, any write error fails the replica.
   */
  retry?: RemoteRetryPolicy
  /** Reopens a remote replica that failed with a retryable error and has it copy what it lacks (a resync). */
  reconnect?(target: Replica): Promise<void>
  /** The target failed for good: the volume records it, tells its clients and lets the file go. */
  targetFailed?(target: Replica, err: unknown): void
  /** A remote replica began or ended waiting to retry, or its error changed. */
  retryChanged?(target: Replica): void
}

/** An Error with an errno-style code. */
function coded(code: string, message: string): Error {
  return Object.assign(new Error(message), { code })
}

/**
 * Feeds one replica from an in-sync replica's data: its pending ranges are copied in
 * ascending sweeps, coalesced, throttled, one at a time. Never from request bodies held in memory.
 */
export class WriteBehind {
  readonly throttle: Throttle
  private buffer: Buffer | undefined
  private cursor = 0
  private wakeUp: (() => void) | undefined
  /** Ends a throttle pause early; only stop() uses it, so new writes never shorten a pause. */
  private endPause: (() => void) | undefined
  private stopping = false
  private signalled = false
  /** Whether the replica's size or resync state may need settling when the copy queue next runs dry. */
  private needsSettle = true
  private loop: Promise<void> | undefined
  private copyInProgress: Promise<void> | undefined
  /** A remote that was failing answered the probe: the next copy (or settle) goes ahead, and its outcome ends or renews the retry. */
  private retryProbed = false

  constructor(
    private readonly replica: Replica,
    private readonly host: WriteBehindHost,
  ) {
    this.throttle = new Throttle(replica.spec.maxBytesPerSecond, host.clock)
  }

  start(): void {
    this.stopping = false
    this.loop ??= this.run().finally(() => (this.loop = undefined))
  }

  /** Something changed: new pending bytes, a new source, a resync request. */
  wake(recheckSize = false): void {
    if (recheckSize) this.needsSettle = true
    const wake = this.wakeUp
    this.wakeUp = undefined
    // Remembered when the loop is busy, so a wake during a copy or a settle is never lost.
    if (wake) wake()
    else this.signalled = true
  }

  /** Resolves once no copy is in progress (the next one may start right after). */
  async idle(): Promise<void> {
    while (this.copyInProgress) await this.copyInProgress
  }

  /** Stops after the copy in progress; what is left stays pending (and in the journal). */
  async stop(): Promise<void> {
    this.stopping = true
    this.endPause?.()
    this.wake()
    await this.loop
    this.buffer = undefined
  }

  /** Waits for wake(), unless one came while the loop was busy. */
  private sleep(): Promise<void> {
    if (this.signalled || this.stopping) {
      this.signalled = false
      return Promise.resolve()
    }
    return new Promise((resolve) => (this.wakeUp = resolve))
  }

  /** Waits out the throttle. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const cancel = this.throttle.clock.setTimer(resolve, ms)
      this.endPause = () => {
        cancel()
        resolve()
      }
    })
  }

  private async run(): Promise<void> {
    const replica = this.replica
    while (!this.stopping) {
      // A remote failing with retryable errors waits out its backoff, then is probed (or reopened) before anything else.
      if (replica.retry && this.host.retry && !this.retryProbed) {
        await this.retryRemote()
        continue
      }
      const source = replica.failed ? undefined : this.host.source(replica)
      const next = source ? this.pick() : undefined
      if (!source || !next) {
        if (source && this.needsSettle && replica.copying.isEmpty && replica.pending.isEmpty) await this.settle()
        else if (source && this.retryProbed) this.retryEnded()
        await this.sleep()
        continue
      }
      const [start, end] = next
      if (replica.resyncing && this.host.idle) await this.host.idle()
      const delay = this.throttle.take(end - start)
      if (delay > 0) {
        await this.pause(delay)
        if (this.stopping) break
      }
      this.copyInProgress = this.copy(source, start, end)
      await this.copyInProgress
      this.copyInProgress = undefined
    }
  }

  /** How copies to the target are cut: aligned to its write unit (S3 chunks), else at most its preferred size. */
  private units(): { align: number | undefined; limit: number } {
    const file = this.replica.file
    const align = file?.writeUnit
    if (align !== undefined && align > 0) return { align, limit: align }
    return { align: undefined, limit: Math.max(1, Math.min(file?.preferredWriteUnit ?? COPY_CHUNK, MAX_COPY)) }
  }

  /**
   * The next range to copy from the sweep's cursor, with nearby ranges folded in; for a target written in whole
   * chunks, the one chunk holding the first dirty byte (its clean bytes are copied too: never a read-modify-write
   * against the store).
   */
  private pick(): [number, number] | undefined {
    const pending = this.replica.pending
    const first = pending.firstFrom(this.cursor) ?? pending.firstFrom(0)
    if (!first) return undefined
    const { align, limit } = this.units()
    if (align !== undefined) {
      const chunk = Math.floor(first[0] / align) * align
      return [chunk, chunk + align]
    }
    const start = first[0]
    let end = Math.min(first[1], start + limit)
    for (let next = pending.firstFrom(end); next && next[0] - end <= COALESCE_GAP && next[1] <= start + limit; next = pending.firstFrom(end)) {
      end = next[1]
    }
    return [start, end]
  }

  private async copy(source: Replica, start: number, end: number): Promise<void> {
    const replica = this.replica
    const { align, limit } = this.units()
    replica.startCopy(start, end)
    if (!this.buffer || this.buffer.length < end - start) this.buffer = Buffer.allocUnsafe(Math.max(limit, end - start))
    const chunk = this.buffer.subarray(0, end - start)
    let read: number
    try {
      read = this.host.readSource ? await this.host.readSource(source, replica, chunk, start) : await source.file!.read(chunk, start)
    } catch (err) {
      replica.copyFailed()
      this.host.sourceFailed(source, err)
      return
    }
    const size = this.host.size()
    try {
      const file = replica.file!
      let length: number
      let grew = false
      if (align !== undefined) {
        // A whole chunk, or a shorter last one reaching the volume's end (or the target's, when it is still longer: settle cuts it).
        const targetSize = await file.size()
        length = Math.min(end - start, Math.max(size, targetSize) - start)
        const kept = Math.max(0, Math.min(read, size - start))
        if (length > kept) chunk.fill(0, kept, length)
        grew = start + length > targetSize
      } else {
        // Past the source's end the volume reads as zeros (a grown or truncated-then-grown tail): copy those too, up to the volume's size.
        length = Math.max(read, Math.min(end, size) - start)
        if (length > read) chunk.fill(0, read, length)
      }
      if (length > 0) await file.write(chunk.subarray(0, length), start)
      // A chunked store keeps its size apart from the chunks (S3's manifest): a copy that grew it is durable only once synced.
      if (this.host.fsync || grew) await file.sync()
    } catch (err) {
      replica.copyFailed()
      this.targetError(err)
      return
    }
    this.cursor = end
    this.needsSettle = true
    replica.copied(start, end)
    this.retryEnded()
    this.host.onCopy?.(replica, start, end)
  }

  // ------------------------------------------------------------------ remote replicas: retries

  /** A write to the target failed: a remote that did not answer is retried (behind, its ranges kept); anything else fails it. */
  private targetError(err: unknown): void {
    this.retryProbed = false
    // The loop may be about to sleep (a settle failed): it must come round to the retry instead.
    this.signalled = true
    const replica = this.replica
    if (!this.host.retry || !replica.isRemote || !isRetryable(err)) return this.failTarget(err)
    const clock = this.throttle.clock
    const error = toIoError(err)
    if (!replica.retry) replica.retry = { error, since: clock.now(), sinceWall: Date.now(), attempt: 0, nextAt: 0, nextAtWall: 0 }
    replica.retry.error = error
    this.schedule(retryAfterOf(err))
    this.host.retryChanged?.(replica)
  }

  private failTarget(err: unknown): void {
    if (this.host.targetFailed) this.host.targetFailed(this.replica, err)
    else this.replica.fail(err)
  }

  /** The next retry of the target, after its attempts so far. */
  private schedule(retryAfterMs?: number): void {
    const retry = this.replica.retry!
    const delay = retryDelay(retry.attempt, this.host.retry!, retryAfterMs)
    retry.nextAt = this.throttle.clock.now() + delay
    retry.nextAtWall = Date.now() + delay
  }

  /** The remote answered again: no more retries. */
  private retryEnded(): void {
    this.retryProbed = false
    if (!this.replica.retry) return
    this.replica.retry = null
    this.host.retryChanged?.(this.replica)
  }

  /**
   * Waits for the target's next retry, then probes it: a file still open is asked whether the remote answers
   * (reachable()); a replica whose file was let go (it failed to open, or failed in the request path) is reopened
   * through the host (a resync). Past the policy's failAfterMs without a success, the replica is failed.
   */
  private async retryRemote(): Promise<void> {
    const replica = this.replica
    const policy = this.host.retry!
    const clock = this.throttle.clock
    const retry = replica.retry!
    if (Number.isNaN(retry.since)) {
      // Failed elsewhere (at open, in the request path): the first retry is scheduled here.
      retry.since = clock.now()
      this.schedule()
      this.host.retryChanged?.(replica)
    }
    const giveUpAt = retry.since + policy.failAfterMs
    const wait = Math.min(retry.nextAt, giveUpAt) - clock.now()
    if (wait > 0) {
      await this.pause(wait)
      if (this.stopping || replica.retry !== retry) return
    }
    if (clock.now() >= giveUpAt) return this.giveUp(retry)
    retry.attempt++
    if (replica.failed) {
      if (!this.host.reconnect) return this.giveUp(retry)
      try {
        await this.host.reconnect(replica)
      } catch (err) {
        // A volume closing refuses the reopening: the retry waits for the next start.
        if (replica.retry !== retry || this.stopping) return
        const cause = (err as { cause?: unknown }).cause ?? err
        if (!replica.failed) {
          // Reopened, and what followed the reopening failed: an ordinary target error.
          return this.targetError(cause)
        }
        if (isRetryable(cause)) {
          retry.error = replica.error = toIoError(cause)
          this.schedule(retryAfterOf(cause))
        } else {
          replica.retry = null
          replica.error = toIoError(cause)
        }
        this.host.retryChanged?.(replica)
        return
      }
      if (replica.retry === retry) this.retryEnded()
      return
    }
    let up: boolean
    try {
      up = replica.file?.reachable ? await replica.file.reachable() : true
    } catch (err) {
      // It answers, and refuses (credentials, a missing bucket): failed for good.
      replica.retry = null
      return this.failTarget(err)
    }
    if (replica.retry !== retry) return
    if (!up) {
      this.schedule()
      this.host.retryChanged?.(replica)
      return
    }
    this.retryProbed = true
  }

  /** Unreachable for longer than the policy allows: failed, saying for how long and why. */
  private giveUp(retry: NonNullable<Replica['retry']>): void {
    const replica = this.replica
    const seconds = Math.round(this.host.retry!.failAfterMs / 1000)
    const err = coded(
      retry.error.code,
      `remote unreachable for ${seconds} s (since ${new Date(retry.sinceWall).toISOString()}; REMOTE_FAIL_AFTER_MS): ${retry.error.message}; resync it (POST …/resync) once it answers`,
    )
    replica.retry = null
    this.retryProbed = false
    if (replica.failed) {
      replica.error = toIoError(err)
      this.host.retryChanged?.(replica)
    } else this.failTarget(err)
  }

  /** Nothing left to copy: match the volume's size and leave resync. */
  private async settle(): Promise<void> {
    this.needsSettle = false
    const replica = this.replica
    try {
      const size = this.host.size()
      const file = replica.file!
      const current = await file.size()
      if (current !== size) {
        try {
          await file.truncate(size)
        } catch (err) {
          // A remote that cannot shrink a file (Apache mod_dav): it is emptied and copied whole again.
          if ((err as { code?: unknown }).code !== 'ENOTSUP' || size >= current) throw err
          if (size > 0) {
            replica.pending.add(0, size)
            replica.resyncing = true
            await replica.journal.markDirty(0, size)
          }
          await file.truncate(0)
          this.needsSettle = true
          this.signalled = true
          this.retryEnded()
          return
        }
      }
    } catch (err) {
      this.needsSettle = true
      this.targetError(err)
      return
    }
    this.retryEnded()
    replica.resyncing = false
  }
}
