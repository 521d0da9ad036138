import { toIoError, type Replica } from './replica.js'
import { Throttle } from './throttle.js'
import type { TrackedGroup } from './tracked-group.js'
import type { Volume } from './volume.js'

export const SCRUB_CHUNK = 1 << 20
/** Longest a scrub defers to client writes before it takes its next chunk anyway. */
const MAX_YIELD_MS = 1_000

export interface Mismatch {
  offset: number
  length: number
  replicas: string[]
}

export interface ScrubOptions {
  repair: boolean
  maxBytesPerSecond: number | null
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

/** Appends a mismatch, merging it into the previous one when they touch and name the same replicas. */
function addMismatch(list: Mismatch[], m: Mismatch): void {
  const prev = list.at(-1)
  if (prev && prev.offset + prev.length === m.offset && prev.replicas.join() === m.replicas.join()) prev.length += m.length
  else list.push(m)
}

async function readChunk(replica: Replica, buffer: Buffer, offset: number): Promise<Buffer> {
  const n = await replica.file!.read(buffer, offset)
  return buffer.subarray(0, n)
}

/**
 * Compares every healthy replica with an in-sync one chunk by chunk, throttled and yielding to
 * client writes; lists the mismatched ranges on the group, and with repair has write-behind copy them.
 */
export async function scrub(volume: Volume, group: TrackedGroup, options: ScrubOptions): Promise<void> {
  const source = volume.source()
  const mismatches: Mismatch[] = []
  group.extra = { mismatches }
  if (!source) {
    group.failOpen({ code: 'ENOSOURCE', message: 'no in-sync replica to compare against' })
    return
  }
  const targets = volume.replicas.filter((r) => r !== source && !r.failed)
  const sourceOp = group.add(source.id, source.spec.mode)
  const ops = new Map(targets.map((r) => [r, group.add(r.id, r.spec.mode)]))
  for (const op of group.operations) group.start(op)
  const throttle = new Throttle(options.maxBytesPerSecond)
  const expected = Buffer.allocUnsafe(SCRUB_CHUNK)
  const actual = Buffer.allocUnsafe(SCRUB_CHUNK)
  const size = volume.size
  group.length = size
  try {
    for (let offset = 0; offset < size; offset += SCRUB_CHUNK) {
      await volume.quietOrAfter(MAX_YIELD_MS)
      const delay = throttle.take(Math.min(SCRUB_CHUNK, size - offset))
      if (delay > 0) await new Promise((r) => setTimeout(r, delay))
      const end = Math.min(offset + SCRUB_CHUNK, volume.size)
      if (end <= offset) break
      for (const target of targets) {
        const op = ops.get(target)!
        if (target.failed || op.status !== 'started' || target.lacks(offset, end)) continue
        try {
          const span = await compare(volume, source, target, expected.subarray(0, end - offset), actual.subarray(0, end - offset), offset)
          op.bytes += end - offset
          if (!span) continue
          const [first, last] = span
          addMismatch(mismatches, { offset: offset + first, length: last - first + 1, replicas: [target.id] })
          if (options.repair) {
            await target.journal.markDirty(offset + first, last - first + 1)
            target.markPending(offset + first, offset + last + 1)
            volume.wakeCopiers()
          }
        } catch (err) {
          if (err instanceof SourceReadError) throw err.cause
          volume.replicaFailed(target, err)
          group.finish(op, op.bytes, toIoError(err))
        }
      }
      sourceOp.bytes += end - offset
    }
  } catch (err) {
    volume.replicaFailed(source, err)
    group.failOpen(toIoError(err))
    return
  }
  group.finish(sourceOp, sourceOp.bytes, null)
  for (const [target, op] of ops) group.finish(op, op.bytes, target.error && op.status !== 'done' ? target.error : null)
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
    span = differingSpan(expected, await readChunk(target, b, offset))
    if (!span) return undefined
    if (volume.etag === etag && !target.lacks(offset, offset + a.length)) return span
  }
  // Bytes still being copied to the target are not a mismatch: write-behind will bring them.
  return target.lacks(offset, offset + a.length) ? undefined : span
}
