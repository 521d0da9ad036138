import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { problems } from '../src/http/problem.js'
import { nameSchema, replicaSpecSchema } from '../src/engine/spec.js'
import { scrub } from '../src/engine/scrub.js'
import { parseOr400, volumeOr404 } from './lookup.js'

const replicaParams = z.object({ name: z.string(), id: z.string() })
const nameParams = z.object({ name: z.string() })
const booleanQuery = z.enum(['true', 'false']).transform((v) => v === 'true')
const resyncQuery = z.strictObject({ full: booleanQuery.default(false) })
/** overwrite=true: the volume's content replaces whatever the file holds. */
const addQuery = z.strictObject({ overwrite: booleanQuery.default(false) })
/** force=true: remove it even though no remaining reading replica holds every acknowledged byte (logged at warn). */
const removeQuery = z.strictObject({ force: booleanQuery.default(false) })
const scrubQuery = z.strictObject({
  repair: booleanQuery.default(false),
  maxBytesPerSecond: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
})
/** Scrubs read every byte of every replica: unthrottled only when asked. */
const DEFAULT_SCRUB_RATE = 64 << 20

export default async function replicaRoutes(app: FastifyInstance): Promise<void> {
  app.put('/volumes/:name/replicas/:id', async (request, reply) => {
    const { name, id } = parseOr400(replicaParams, request.params)
    const volume = volumeOr404(app, name)
    if (!nameSchema.safeParse(id).success) throw problems.badRequest(`replica id ${JSON.stringify(id)} must be 1-128 characters of A-Z a-z 0-9 . _ - and not start with a dot`)
    const body = (request.body ?? {}) as Record<string, unknown>
    if (body.id !== undefined && body.id !== id) throw problems.badRequest(`the body's id ${JSON.stringify(body.id)} differs from the path's ${id}`)
    const spec = parseOr400(replicaSpecSchema, { ...body, id })
    const { overwrite } = parseOr400(addQuery, request.query)
    const { created } = await app.volumes.addReplica(volume, spec, { overwrite })
    return reply.code(created ? 201 : 200).header('location', `/volumes/${name}`).send(volume.status())
  })

  app.delete('/volumes/:name/replicas/:id', async (request, reply) => {
    const { name, id } = parseOr400(replicaParams, request.params)
    const volume = volumeOr404(app, name)
    const { force } = parseOr400(removeQuery, request.query)
    if (!(await app.volumes.removeReplica(volume, id, { force }))) throw problems.notFound(`volume ${name} has no replica ${id}`)
    return reply.code(204).send()
  })

  app.post('/volumes/:name/replicas/:id/resync', async (request, reply) => {
    const { name, id } = parseOr400(replicaParams, request.params)
    const volume = volumeOr404(app, name)
    const { full } = parseOr400(resyncQuery, request.query)
    const replica = volume.replica(id)
    if (!replica) throw problems.notFound(`volume ${name} has no replica ${id}`)
    await volume.resync(replica, full)
    return reply.code(202).header('location', `/volumes/${name}`).send(volume.status())
  })

  app.post('/volumes/:name/scrub', async (request, reply) => {
    const { name } = parseOr400(nameParams, request.params)
    const volume = volumeOr404(app, name)
    const { repair, maxBytesPerSecond } = parseOr400(scrubQuery, request.query)
    const group = volume.newGroup('scrub', 0)
    group.extra = { mismatches: [] }
    void scrub(volume, group, { repair, maxBytesPerSecond: maxBytesPerSecond ?? DEFAULT_SCRUB_RATE }).catch((err) => request.log.error({ err }, 'scrub failed'))
    return reply.code(202).header('operation-id', group.id).header('location', `/operations/${group.id}`).send(group.toJSON())
  })
}
