import type { Replica } from './replica.js'
import { Throttle } from './throttle.js'

/** Largest single copy; one buffer of this size per replica is all the memory write-behind uses. */
export const COPY_CHUNK = 1 << 20
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
  onCopy?(target: Replica, start: number, end: number): void
  /** Resolves when client writes have quieted down (bounded), so a resync prefers idle time. */
  idle?(): Promise<void>
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

  constructor(
    private readonly replica: Replica,
    private readonly host: WriteBehindHost,
  ) {
    this.throttle = new Throttle(replica.spec.maxBytesPerSecond)
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
      const timer = setTimeout(resolve, ms)
      this.endPause = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }

  private async run(): Promise<void> {
    const replica = this.replica
    while (!this.stopping) {
      const source = replica.failed ? undefined : this.host.source(replica)
      const next = source ? this.pick() : undefined
      if (!source || !next) {
        if (source && this.needsSettle && replica.copying.isEmpty && replica.pending.isEmpty) await this.settle()
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

  /** The next range to copy from the sweep's cursor, with nearby ranges folded in. */
  private pick(): [number, number] | undefined {
    const pending = this.replica.pending
    const first = pending.firstFrom(this.cursor) ?? pending.firstFrom(0)
    if (!first) return undefined
    const start = first[0]
    let end = Math.min(first[1], start + COPY_CHUNK)
    for (let next = pending.firstFrom(end); next && next[0] - end <= COALESCE_GAP && next[1] <= start + COPY_CHUNK; next = pending.firstFrom(end)) {
      end = next[1]
    }
    return [start, end]
  }

  private async copy(source: Replica, start: number, end: number): Promise<void> {
    const replica = this.replica
    replica.startCopy(start, end)
    this.buffer ??= Buffer.allocUnsafe(COPY_CHUNK)
    const chunk = this.buffer.subarray(0, end - start)
    let read: number
    try {
      read = await source.file!.read(chunk, start)
    } catch (err) {
      replica.copyFailed()
      this.host.sourceFailed(source, err)
      return
    }
    // Past the source's end the volume reads as zeros (a grown or truncated-then-grown tail): copy those too, up to the volume's size.
    const length = Math.max(read, Math.min(end, this.host.size()) - start)
    if (length > read) chunk.fill(0, read, length)
    try {
      if (length > 0) await replica.file!.write(chunk.subarray(0, length), start)
      if (this.host.fsync) await replica.file!.sync()
    } catch (err) {
      replica.copyFailed()
      replica.fail(err)
      return
    }
    this.cursor = end
    this.needsSettle = true
    replica.copied(start, end)
    this.host.onCopy?.(replica, start, end)
  }

  /** Nothing left to copy: match the volume's size and leave resync. */
  private async settle(): Promise<void> {
    this.needsSettle = false
    const replica = this.replica
    try {
      const size = this.host.size()
      if ((await replica.file!.size()) !== size) await replica.file!.truncate(size)
    } catch (err) {
      replica.fail(err)
      return
    }
    replica.resyncing = false
  }
}
