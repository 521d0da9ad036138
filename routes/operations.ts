import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { settlesWithin } from '../src/engine/operation-list.js'
import { problems } from '../src/http/problem.js'
import { groupQuerySchema } from '../src/http/schemas.js'
import { parseOr400 } from './lookup.js'

const idParams = z.object({ id: z.string() })

export default async function operationRoutes(app: FastifyInstance): Promise<void> {
  app.get('/operations/:id', async (request) => {
    const { id } = parseOr400(idParams, request.params)
    const { wait } = parseOr400(groupQuerySchema, request.query)
    const group = app.groups.get(id)
    if (!group) throw problems.notFound(`no operation group ${id} (unknown, or no longer retained)`)
    // Long-poll: reply as soon as the group settles, or when the wait is up.
    if (wait) await settlesWithin(group.whenSettled(), wait)
    return group.toJSON()
  })
}
