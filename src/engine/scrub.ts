import { toIoError, type Replica } from './replica.js'
import { Throttle, type Clock } from './throttle.js'
import type { OperationGroup } from './operation-group.js'
import { goodCopy, repairBlock, type ChecksumStore } from './verified-read.js'
import type { Volume } from './volume.js'

export const SCRUB_CHUNK = 1 << 20
/** Longest a scrub defers to client writes before it takes its next chunk anyway. */
const MAX_YIELD_MS = 1_000

/** Bytes of one replica found wrong; `repaired`: rewritten from a good copy (checksummed bytes) or queued for write-behind (others). */
export interface ScrubMismatch {
  replica: string
  offset: number
  length: number
  repaired: boolean
}

/** What the last scrub of a volume found: when it ended, the bytes of the volume it checked, its mismatches. */
export interface LastScrub {
  at: string
  bytes: number
  mismatches: ScrubMismatch[]
}

export interface ScrubOptions {
  repair: boolean
  maxBytesPerSecond: number | null
  /** The throttle's time; the real clock when absent. */
  clock?: Clock
}

/** The span [first, last] of bytes where a and b differ, or undefined when equal. */
export function differingSpan(a: Buffer, b: Buffer): [number, number] | undefined {
  const n = Math.max(a.length, b.length)
  let first = -1
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) {
      first = i
      break
    }
  }
  if (first < 0) return undefined
  let last = n - 1
  while (last > first && a[last] === b[last]) last--
  return [first, last]
}

/** Appends a mismatch, merging it into the previous one when they touch and say the same of the same replica. */
function addMismatch(list: ScrubMismatch[], m: ScrubMismatch): void {
  const prev = list.at(-1)
  if (prev && prev.offset + prev.length === m.offset && prev.replica === m.replica && prev.repaired === m.repaired) prev.length += m.length
  else list.push(m)
}

async function readChunk(replica: Replica, buffer: Buffer, offset: number): Promise<Buffer> {
  const n = await replica.file!.read(buffer, offset)
  return buffer.subarray(0, n)
}

/**
 * Checks every healthy replica chunk by chunk, throttled and yielding to client writes. Blocks with a checksum are
 * judged on every replica against it, so whichever replica is wrong is the one found (and with repair, rewritten
 * from a copy that verifies); bytes without one are compared with an in-sync replica as before (with repair,
 * write-behind copies them) and then checksummed from it. Lists the mismatches on the group and on the volume.
 */
export async function scrub(volume: Volume, group: OperationGroup, options: ScrubOptions): Promise<void> {
  const sums: ChecksumStore | null = volume.checksums
  const source = volume.source()
  const mismatches: ScrubMismatch[] = []
  group.extra = { mismatches }
  let checked = 0
  const record = () => (volume.lastScrub = { at: new Date().toISOString(), bytes: checked, mismatches: mismatches.map((m) => ({ ...m })) })
  if (!source && !sums) {
    group.failOpen({ code: 'ENOSOURCE', message: 'no in-sync replica to compare against' })
    record()
    return
  }
  const replicas = volume.replicas.filter((r) => !r.failed)
  const ops = new Map(replicas.map((r) => [r, group.add(r.id, r.spec.mode)]))
  for (const op of group.operations) group.start(op)
  const throttle = new Throttle(options.maxBytesPerSecond, options.clock)
  const expected = Buffer.allocUnsafe(SCRUB_CHUNK)
  const actual = Buffer.allocUnsafe(SCRUB_CHUNK)
  const size = volume.size
  group.length = size
  try {
    for (let offset = 0; offset < size; offset += SCRUB_CHUNK) {
      await volume.quietOrAfter(MAX_YIELD_MS)
      const delay = throttle.take(Math.min(SCRUB_CHUNK, size - offset))
      if (delay > 0) await throttle.sleep(delay)
      const end = Math.min(offset + SCRUB_CHUNK, volume.size)
      if (end <= offset) break
      const unchecksummed = uncoveredRuns(sums, offset, end)
      const judged = sums !== null && !(unchecksummed.length === 1 && unchecksummed[0][0] === offset && unchecksummed[0][1] === end)
      const agreed = new Set<Replica>()
      for (const replica of replicas) {
        const op = ops.get(replica)!
        if (replica.failed || op.status !== 'started' || replica.lacks(offset, end)) continue
        try {
          if (judged) await judgeChunk(volume, sums, replica, actual.subarray(0, end - offset), offset, options.repair, mismatches)
          let same = true
          if (replica !== source) {
            for (const [start, stop] of unchecksummed) {
              if (!source || source.failed) throw new SourceReadError('no source', { cause: source?.error ?? new Error('no in-sync replica to compare against') })
              const span = await compare(volume, source, replica, expected.subarray(0, stop - start), actual.subarray(0, stop - start), start)
              if (!span) continue
              same = false
              const [first, last] = span
              addMismatch(mismatches, { replica: replica.id, offset: start + first, length: last - first + 1, repaired: options.repair })
              if (options.repair) {
                await replica.journal.markDirty(start + first, last - first + 1)
                replica.markPending(start + first, start + last + 1)
                volume.wakeWriteBehind()
              }
            }
          }
          if (same) agreed.add(replica)
          op.bytes += end - offset
        } catch (err) {
          if (err instanceof SourceReadError) throw err.cause
          volume.replicaFailed(replica, err)
          group.finish(op, op.bytes, toIoError(err))
        }
      }
      // Bytes the replicas agree on (or that were just queued for repair) take their checksums from the source.
      const everyoneAgreed = replicas.every((r) => agreed.has(r) || r.failed || r.lacks(offset, end))
      if (sums && source && !source.failed && (everyoneAgreed || options.repair)) {
        for (const [start, stop] of unchecksummed) await coverFrom(sums, source, expected.subarray(0, stop - start), start, volume.size)
      }
      checked = end
    }
  } catch (err) {
    if (source) volume.replicaFailed(source, err)
    group.failOpen(toIoError(err))
    record()
    return
  }
  for (const [replica, op] of ops) group.finish(op, op.bytes, replica.error && op.status !== 'done' ? replica.error : null)
  record()
}

/** The runs of [start, end) whose blocks have no trusted checksum (all of it without checksums). */
export function uncoveredRuns(sums: Pick<ChecksumStore, 'blockBytes' | 'covered'> | null, start: number, end: number): Array<[number, number]> {
  if (!sums) return [[start, end]]
  if (sums.covered(start, end)) return []
  const runs: Array<[number, number]> = []
  const bs = sums.blockBytes
  for (let at = start - (start % bs); at < end; at += bs) {
    const from = Math.max(at, start)
    const to = Math.min(at + bs, end)
    if (sums.covered(from, to)) continue
    const prev = runs.at(-1)
    if (prev && prev[1] === from) prev[1] = to
    else runs.push([from, to])
  }
  return runs
}

/** Judges one replica's chunk by the checksums: each block that disagrees is listed, and with repair rewritten from a copy that verifies. */
async function judgeChunk(volume: Volume, sums: ChecksumStore, replica: Replica, buffer: Buffer, offset: number, repair: boolean, mismatches: ScrubMismatch[]): Promise<void> {
  const ticket = sums.beginRead(offset, offset + buffer.length)
  const n = await replica.file!.read(buffer, offset)
  // Holding these bytes by its journal yet shorter than the volume: cut back behind the server, never a source again.
  if (n < buffer.length && offset + n < volume.size) {
    throw Object.assign(new Error(`replica ${replica.id}'s file is shorter than the volume: changed behind the server`), { code: 'ESHRUNK' })
  }
  const bs = sums.blockBytes
  const data = buffer.subarray(0, offset + n === volume.size ? n : n - (n % bs))
  for (const at of sums.mismatches(ticket, offset, data)) {
    const blockEnd = Math.min(at + bs, volume.size)
    const found = await goodCopy(volume, sums, ticket, replica, at, blockEnd)
    // A write touched the block since it was read: not rot, and the next scrub judges it afresh.
    if (found === 'raced') continue
    let [first, length] = [at, blockEnd - at]
    const span = found && differingSpan(data.subarray(at - offset, blockEnd - offset), found.bytes)
    if (span) [first, length] = [at + span[0], span[1] - span[0] + 1]
    const repaired = repair && found ? await repairBlock(volume, sums, replica, found.replica, at, blockEnd) : false
    addMismatch(mismatches, { replica: replica.id, offset: first, length, repaired })
    volume.noteMismatch({ replica: replica.id, offset: first, length, repaired, from: found?.replica.id ?? null })
  }
}

/** Sets the checksums of [offset, offset + buffer.length) from the source's bytes, unless a write changes them meanwhile. */
async function coverFrom(sums: ChecksumStore, source: Replica, buffer: Buffer, offset: number, size: number): Promise<void> {
  const ticket = sums.beginRead(offset, offset + buffer.length)
  // A failure here is the source's: the scrub fails with it.
  const n = await source.file!.read(buffer, offset)
  if (n === buffer.length || offset + n === size) sums.cover(ticket, offset, buffer.subarray(0, n))
}

class SourceReadError extends Error {}

/** Reads a chunk from both; a difference seen while a write moved the ETag is read again once. */
async function compare(volume: Volume, source: Replica, target: Replica, a: Buffer, b: Buffer, offset: number): Promise<[number, number] | undefined> {
  let span: [number, number] | undefined
  for (let attempt = 0; attempt < 2; attempt++) {
    const etag = volume.etag
    let expected: Buffer
    try {
      expected = await readChunk(source, a, offset)
    } catch (err) {
      throw new SourceReadError('source read failed', { cause: err })
    }
    // A source shorter than the volume lost its tail behind the server: it is never the truth for a repair.
    if (expected.length < a.length && offset + expected.length < volume.size) {
      const message = `replica ${source.id}'s file is shorter than the volume: changed behind the server`
      throw new SourceReadError(message, { cause: Object.assign(new Error(message), { code: 'ESHRUNK' }) })
    }
    span = differingSpan(expected, await readChunk(target, b, offset))
    if (!span) return undefined
    if (volume.etag === etag && !target.lacks(offset, offset + a.length)) return span
  }
  // Bytes still being copied to the target are not a mismatch: write-behind will bring them.
  return target.lacks(offset, offset + a.length) ? undefined : span
}
