import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { coarsen, type Interval } from '../src/http/coarse-ranges.js'
import { parseOr400, volumeOr404 } from './lookup.js'

const nameParams = z.object({ name: z.string() })
const rangesQuery = z.strictObject({ max: z.coerce.number().int().min(1).max(4096).default(256) })

/** Each replica's dirty and cached ranges, bounded for display (GET /volumes/{name}/ranges?max=N). */
export default async function rangeRoutes(app: FastifyInstance): Promise<void> {
  app.get('/volumes/:name/ranges', async (request) => {
    const { name } = parseOr400(nameParams, request.params)
    const volume = volumeOr404(app, name)
    const { max } = parseOr400(rangesQuery, request.query)
    return {
      volume: volume.name,
      size: volume.size,
      max,
      replicas: volume.replicas.map((r) => ({
        id: r.id,
        mode: r.spec.mode,
        read: r.spec.read,
        write: r.spec.write,
        state: r.state,
        dirty: coarsen(clip(r.dirty(), volume.size), max),
        // Cached: read since last written; only meaningful on reading replicas.
        cached: coarsen(r.file ? clip(volume.mirror.cachedRanges(r.file), volume.size) : [], max),
      })),
    }
  })
}

/** Intervals within [0, size): a write in flight may have journaled intent past the current end. */
function* clip(ranges: Iterable<Interval>, size: number): Generator<Interval> {
  for (const [s, e] of ranges) {
    if (s >= size) return
    yield [s, Math.min(e, size)]
  }
}
