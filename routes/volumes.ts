import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { problems } from '../src/problem.js'
import { groupListQuerySchema, nameSchema, volumeSpecSchema } from '../src/schemas.js'
import { PathRefusedError } from '../src/storage-roots.js'
import { VolumeConflictError } from '../src/volume-registry.js'
import { parseOr400, volumeOr404 } from './lookup.js'

const nameParams = z.object({ name: z.string() })
const listQuery = groupListQuerySchema.extend({ limit: z.coerce.number().int().min(1).max(1000).default(100) })

export default async function volumeRoutes(app: FastifyInstance): Promise<void> {
  app.get('/volumes', async () => ({ volumes: app.volumes.list().map((v) => v.status()) }))

  app.put('/volumes/:name', async (request, reply) => {
    const { name } = parseOr400(nameParams, request.params)
    if (!nameSchema.safeParse(name).success) throw problems.badRequest(`volume name ${JSON.stringify(name)}: ${nameSchema.safeParse(name).error!.issues[0].message}`)
    if (!app.isReady()) throw problems.unavailable('volumes are still being opened', 1)
    const spec = parseOr400(volumeSpecSchema, request.body ?? {})
    try {
      const { created, volume } = await app.volumes.put(name, spec)
      return reply.code(created ? 201 : 200).header('location', `/volumes/${name}`).send(volume.status())
    } catch (err) {
      if (err instanceof VolumeConflictError) throw problems.conflict(err.message)
      if (err instanceof PathRefusedError) throw problems.badRequest(err.message)
      throw err
    }
  })

  app.get('/volumes/:name', async (request) => {
    const { name } = parseOr400(nameParams, request.params)
    return volumeOr404(app, name).status()
  })

  app.delete('/volumes/:name', async (request, reply) => {
    const { name } = parseOr400(nameParams, request.params)
    volumeOr404(app, name)
    // Pending work gets the shutdown grace: a replica that cannot catch up must not hang the request.
    await app.volumes.delete(name, app.config.shutdownGraceMs)
    return reply.code(204).send()
  })

  app.get('/volumes/:name/operations', async (request) => {
    const { name } = parseOr400(nameParams, request.params)
    volumeOr404(app, name)
    const { status, limit } = parseOr400(listQuery, request.query)
    return { operations: app.groups.list(name, (g) => status === undefined || g.status === status, limit).map((g) => g.toJSON()) }
  })
}
