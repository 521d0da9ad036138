import type { Journal } from './journal.js'
import { RangeSet } from './range-set.js'
import type { ReplicaFile } from './replica-file.js'
import { isRemoteSpec, type IoError, type ReplicaSpec, type ReplicaState } from './spec.js'

/** A replica's configuration with its path resolved inside a storage root. */
export type ResolvedReplicaSpec = ReplicaSpec & { resolvedPath: string }

interface HoldWaiter {
  start: number
  end: number
  resolve: (error: IoError | null) => void
}

export function toIoError(err: unknown): IoError {
  const e = err as NodeJS.ErrnoException
  return { code: typeof e?.code === 'string' ? e.code : 'EIO', message: e instanceof Error ? e.message : String(err) }
}

/**
 * One file of a volume and what it lacks. Its dirty bytes are the union of:
 * writes in flight that it has not taken yet (intents), bytes waiting to be copied to it (pending),
 * and the range being copied now. The union is what its journal holds.
 */
/** A write in flight: journaled up to `end`, written so far up to `reach`. */
interface Intent {
  start: number
  end: number
  reach: number
}

/**
 * A remote replica failing with retryable errors (timeout, refused connection, 5xx): behind, not failed, until
 * it answers again or has failed for too long. `attempt` counts the retries made; `nextAt` and `since` are on the
 * write-behind's clock, `nextAtWall` and `sinceWall` in epoch milliseconds (for the status).
 */
export interface RemoteRetry {
  error: IoError
  since: number
  sinceWall: number
  attempt: number
  nextAt: number
  nextAtWall: number
}

export class Replica {
  error: IoError | null = null
  /** Set while a remote replica waits to retry after a retryable error (see RemoteRetry). */
  retry: RemoteRetry | null = null
  /** Its dirty bytes came from recovery, a re-add or a resync request rather than from write-behind. */
  resyncing = false
  private readonly intents = new Map<number, Intent>()
  private nextIntent = 0
  readonly pending = new RangeSet()
  /** The pending bytes being copied now (a copy may span clean gaps; only these count as dirty). */
  readonly copying = new RangeSet()
  /** Waiters for bytes to arrive, filed under every 1 MiB bucket they touch: a change re-checks only its own buckets. */
  private readonly holdBuckets = new Map<number, Set<HoldWaiter>>()

  constructor(
    public spec: ResolvedReplicaSpec,
    public file: ReplicaFile | null,
    public journal: Journal,
  ) {}

  get id(): string {
    return this.spec.id
  }

  get isAsync(): boolean {
    return this.spec.mode === 'async'
  }

  /** On another machine (an HTTP remote or S3): never written through a lane, never staged, retried when unreachable. */
  get isRemote(): boolean {
    return isRemoteSpec(this.spec)
  }

  get failed(): boolean {
    return this.error !== null || this.file === null
  }

  /** Holds every acknowledged byte: not failed, nothing pending or being copied. */
  get inSync(): boolean {
    return !this.failed && this.pending.isEmpty && this.copying.isEmpty
  }

  get state(): ReplicaState {
    // A remote that is unreachable for now catches up by itself once it answers: behind (its error says why), not failed.
    if (this.failed) return this.retry ? (this.resyncing ? 'resyncing' : 'behind') : 'failed'
    if (this.pending.isEmpty && this.copying.isEmpty && (!this.isAsync || !this.hasReach())) return 'in-sync'
    return this.resyncing ? 'resyncing' : 'behind'
  }

  private hasReach(): boolean {
    for (const i of this.intents.values()) if (i.reach > i.start) return true
    return false
  }

  /** What the journal must hold: pending, copying, and every intent up to its journaled end. */
  dirty(): RangeSet {
    const set = this.pending.clone()
    set.addAll(this.copying)
    for (const i of this.intents.values()) set.add(i.start, i.end)
    return set
  }

  /** Bytes this replica lacks now: pending, copying, and writes in flight up to where they have got. */
  get dirtyBytes(): number {
    if (this.intents.size === 0 && this.copying.isEmpty) return this.pending.bytes
    const set = this.pending.clone()
    set.addAll(this.copying)
    for (const i of this.intents.values()) set.add(i.start, i.reach)
    return set.bytes
  }

  /** Whether an acknowledged byte of [start, end) is missing (pending or being copied); writes in flight aside. */
  lacksAcknowledged(start: number, end: number): boolean {
    return this.pending.intersects(start, end) || this.copying.intersects(start, end)
  }

  /** Whether any byte of [start, end) is missing from this replica. */
  lacks(start: number, end: number): boolean {
    if (this.pending.intersects(start, end) || this.copying.intersects(start, end)) return true
    for (const i of this.intents.values()) if (i.start < end && start < i.reach) return true
    return false
  }

  /** Records a write about to happen; resolves once the journal holds it (the write may then proceed). */
  async intend(start: number, end: number): Promise<number> {
    const id = this.nextIntent++
    if (end <= start) return id
    this.intents.set(id, { start, end, reach: start })
    await this.journal.markDirty(start, end - start)
    return id
  }

  /** Grows an intent to cover up to `end`; resolves once the journal holds it. */
  async extendIntent(id: number, end: number): Promise<void> {
    const intent = this.intents.get(id)
    if (!intent || end <= intent.end) return
    const from = intent.end
    intent.end = end
    await this.journal.markDirty(from, end - from)
  }

  /** The write has got as far as `reach` (the end of the chunk now being written). */
  reachIntent(id: number, reach: number): void {
    const intent = this.intents.get(id)
    if (intent && reach > intent.reach) intent.reach = Math.min(reach, intent.end)
  }

  /** Ends an intent; the bytes it covered that are not otherwise dirty are recorded clean. */
  endIntent(id: number): void {
    const intent = this.intents.get(id)
    if (!intent) return
    this.intents.delete(id)
    this.recordClean(intent.start, intent.end)
    this.notifyHolders(intent.start, intent.end)
  }

  /** Bytes this replica must receive by copying (write-behind, or a failure's backlog). */
  markPending(start: number, end: number): void {
    this.pending.add(start, end)
  }

  /** Moves the pending bytes of [start, end) to copying. */
  startCopy(start: number, end: number): void {
    for (let at = start, next = this.pending.firstFrom(at); next && next[0] < end; next = this.pending.firstFrom(at)) {
      this.copying.add(next[0], Math.min(next[1], end))
      at = next[1]
    }
    this.pending.remove(start, end)
  }

  /** A copy failed: what it was copying is pending again. */
  copyFailed(): void {
    this.pending.addAll(this.copying)
    this.copying.clear()
  }

  /** Finishes copying [start, end): journal the bytes no newer write dirtied, and wake holders. */
  copied(start: number, end: number): void {
    this.copying.clear()
    this.recordClean(start, end)
    this.notifyHolders(start, end)
  }

  /** Appends clean records for [start, end) minus whatever is still dirty; never awaited: a lost one only costs a resync. */
  private recordClean(start: number, end: number): void {
    let pieces: Array<[number, number]> = []
    for (let at = start; at < end; ) {
      const next = this.pending.firstFrom(at)
      const gapEnd = next ? Math.min(next[0], end) : end
      if (gapEnd > at) pieces.push([at, gapEnd])
      if (!next) break
      at = next[1]
    }
    const busy: Array<[number, number]> = [...this.intents.values()].map((i) => [i.start, i.end])
    busy.push(...this.copying)
    for (const [bs, be] of busy) pieces = pieces.flatMap(([s, e]) => cut(s, e, bs, be))
    for (const [s, e] of pieces) this.journal.markClean(s, e - s).catch(() => {})
  }

  fail(err: unknown): void {
    if (this.error) return
    this.error = toIoError(err)
    // A remote that did not answer is retried (by its write-behind), one that refused is failed for good.
    const retryable = this.isRemote && typeof err === 'object' && err !== null && (err as { retryable?: unknown }).retryable === true
    if (!retryable) this.retry = null
    else if (!this.retry) this.retry = { error: this.error, since: NaN, sinceWall: Date.now(), attempt: 0, nextAt: NaN, nextAtWall: Date.now() }
    else this.retry.error = this.error
    const all = new Set<HoldWaiter>()
    for (const bucket of this.holdBuckets.values()) for (const w of bucket) all.add(w)
    this.holdBuckets.clear()
    for (const w of all) w.resolve(this.error)
  }

  /** Resolves (null) once this replica holds [start, end), or with the error if it fails first. */
  whenHolds(start: number, end: number): Promise<IoError | null> {
    if (this.error) return Promise.resolve(this.error)
    if (!this.lacks(start, end)) return Promise.resolve(null)
    return new Promise((resolve) => {
      const waiter = { start, end, resolve }
      for (let b = bucketOf(start), last = bucketOf(end - 1); b <= last; b++) {
        let bucket = this.holdBuckets.get(b)
        if (!bucket) this.holdBuckets.set(b, (bucket = new Set()))
        bucket.add(waiter)
      }
    })
  }

  /** Wakes the waiters whose range overlaps [start, end) and is now held. */
  private notifyHolders(start: number, end: number): void {
    for (let b = bucketOf(start), last = bucketOf(Math.max(start, end - 1)); b <= last; b++) {
      const bucket = this.holdBuckets.get(b)
      if (!bucket) continue
      for (const w of bucket) {
        // Only a waiter touching what changed can have become whole (a bucket may hold hundreds while a replica is behind).
        if (w.start >= end || w.end <= start || this.lacks(w.start, w.end)) continue
        for (let c = bucketOf(w.start), wl = bucketOf(w.end - 1); c <= wl; c++) {
          const other = this.holdBuckets.get(c)
          other?.delete(w)
          if (other?.size === 0) this.holdBuckets.delete(c)
        }
        w.resolve(null)
      }
    }
  }

  /** Drops dirty bytes past a new end of the volume. */
  truncate(size: number): void {
    this.pending.truncate(size)
    for (const b of [...this.holdBuckets.keys()]) if (b >= bucketOf(size)) this.notifyHolders(b * HOLD_BUCKET, (b + 1) * HOLD_BUCKET)
  }
}

const HOLD_BUCKET = 1 << 20
const bucketOf = (offset: number) => Math.floor(offset / HOLD_BUCKET)

/** [s, e) without [cs, ce): zero, one or two pieces. */
function cut(s: number, e: number, cs: number, ce: number): Array<[number, number]> {
  if (ce <= s || cs >= e) return [[s, e]]
  const out: Array<[number, number]> = []
  if (cs > s) out.push([s, cs])
  if (ce < e) out.push([ce, e])
  return out
}
