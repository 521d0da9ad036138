import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { Problem, problems } from '../src/http/problem.js'

/** openapi.yaml sits at the project root, two levels above the compiled routes and one above the sources. */
async function readOpenApi(): Promise<string> {
  for (const candidate of ['../openapi.yaml', '../../openapi.yaml']) {
    try {
      return await readFile(fileURLToPath(new URL(candidate, import.meta.url)), 'utf8')
    } catch {
      // try the next layout
    }
  }
  throw problems.notFound('openapi.yaml is not installed')
}

export default async function healthRoutes(app: FastifyInstance): Promise<void> {
  app.get('/healthz', async () => ({ status: 'ok' }))

  app.get('/readyz', async () => {
    if (!app.isReady()) throw problems.unavailable('volumes are still being opened', 1)
    // Not ready while a persisted volume could not be opened: until it opens (a PUT of its configuration) or is deleted.
    const failed = app.volumes.failedVolumes()
    if (failed.length > 0) {
      throw new Problem(
        503,
        'Service Unavailable',
        `${failed.length === 1 ? 'a volume' : `${failed.length} volumes`} could not be opened: ${failed.map((v) => `${v.name} (${v.error.message})`).join('; ')}`,
        'https://filemirror.dev/problems/not-ready',
        { members: { failedVolumes: failed.map((v) => ({ name: v.name, error: v.error })) } },
      )
    }
    return { status: 'ready', volumes: app.volumes.list().length }
  })

  let openapi: string | undefined
  app.get('/openapi.yaml', async (_request, reply) => {
    openapi ??= await readOpenApi()
    return reply.type('application/yaml').send(openapi)
  })
}
