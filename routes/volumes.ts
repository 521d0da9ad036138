import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { Problem, problems } from '../src/http/problem.js'
import { groupListQuerySchema } from '../src/http/schemas.js'
import { nameSchema, volumeSpecSchema } from '../src/engine/spec.js'
import { DirtyVolumeError } from '../src/engine/volume-registry.js'
import { parseOr400, volumeOr404 } from './lookup.js'

const nameParams = z.object({ name: z.string() })
const listQuery = groupListQuerySchema.extend({ limit: z.coerce.number().int().min(1).max(1000).default(100) })
const booleanQuery = z.enum(['true', 'false']).transform((v) => v === 'true')
/** force=true: do it even though it leaves no replica holding every acknowledged byte (logged at warn). */
const forceQuery = z.strictObject({ force: booleanQuery.default(false) })

export default async function volumeRoutes(app: FastifyInstance): Promise<void> {
  // Volumes that could not be opened are listed too, with state failed and their error.
  app.get('/volumes', async () => ({ volumes: app.volumes.statuses() }))

  app.put('/volumes/:name', async (request, reply) => {
    const { name } = parseOr400(nameParams, request.params)
    if (!nameSchema.safeParse(name).success) throw problems.badRequest(`volume name ${JSON.stringify(name)}: ${nameSchema.safeParse(name).error!.issues[0].message}`)
    if (!app.isReady()) throw problems.unavailable('volumes are still being opened', 1)
    const { force } = parseOr400(forceQuery, request.query)
    const spec = parseOr400(volumeSpecSchema, request.body ?? {})
    const { created, volume } = await app.volumes.put(name, spec, { force })
    return reply.code(created ? 201 : 200).header('location', `/volumes/${name}`).send(volume.status())
  })

  app.get('/volumes/:name', async (request) => {
    const { name } = parseOr400(nameParams, request.params)
    return (app.volumes.record(name) ?? volumeOr404(app, name)).status()
  })

  app.delete('/volumes/:name', async (request, reply) => {
    const { name } = parseOr400(nameParams, request.params)
    // A volume that could not be opened can be deleted too (its configuration and journals are forgotten).
    if (!app.volumes.record(name)) volumeOr404(app, name)
    const { force } = parseOr400(forceQuery, request.query)
    // Write-behind gets the shutdown grace to finish: a replica that cannot catch up must not hang the request.
    const deleted = await app.volumes.delete(name, app.config.shutdownGraceMs, { force }).catch((err: unknown) => {
      if (!(err instanceof DirtyVolumeError)) throw err
      const conflict = problems.conflict(err.message)
      throw new Problem(conflict.status, conflict.title, conflict.detail, conflict.type, { members: { dirty: err.dirty, dirtyBytes: err.dirtyBytes } })
    })
    if (!deleted) throw problems.notFound(`no volume named ${name}`)
    // Forced: say what the replicas lacked when the volume was forgotten.
    return force ? reply.code(200).send(deleted) : reply.code(204).send()
  })

  app.get('/volumes/:name/operations', async (request) => {
    const { name } = parseOr400(nameParams, request.params)
    if (!app.volumes.record(name)) volumeOr404(app, name)
    const { status, limit } = parseOr400(listQuery, request.query)
    return { operations: app.groups.list(name, (g) => status === undefined || g.status === status, limit).map((g) => g.toJSON()) }
  })
}
