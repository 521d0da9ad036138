import Fastify, { type FastifyError, type FastifyInstance } from 'fastify'
import { ZodError } from 'zod'
import dataRoutes from '../routes/data.js'
import healthRoutes from '../routes/health.js'
import operationRoutes from '../routes/operations.js'
import replicaRoutes from '../routes/replicas.js'
import volumeRoutes from '../routes/volumes.js'
import type { Config } from './config.js'
import { GroupRegistry } from './group-registry.js'
import { Problem, problems } from './problem.js'
import { openLocalFile, type ReplicaFileOpener } from './replica-file.js'
import { VolumeRegistry } from './volume-registry.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    volumes: VolumeRegistry
    groups: GroupRegistry
    /** Resolves once every persisted volume is open (readiness). */
    volumesOpen: Promise<void>
    isReady: () => boolean
  }
}

export interface AppOptions {
  config: Config
  /** The replica file backend; tests pass a fault-injecting one. */
  openFile?: ReplicaFileOpener
  /** A pino destination for the logs; stdout by default. */
  logStream?: NodeJS.WritableStream
}

/** Builds the service: plugins, the engine's registries, then the routes. Tests build this same app. */
export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { config } = options
  const app = Fastify({
    logger: { level: config.logLevel, ...(options.logStream ? { stream: options.logStream } : {}) },
    exposeHeadRoutes: false,
    bodyLimit: 1 << 20,
    return503OnClosing: true,
  })
  const groups = new GroupRegistry({ retentionMs: config.groupRetentionMs, maxGroups: config.maxGroups, maxReadGroups: config.maxReadGroups })
  const volumes = new VolumeRegistry({
    dataDir: config.dataDir,
    storageRoots: config.storageRoots,
    groups,
    openFile: options.openFile ?? openLocalFile,
    log: app.log,
  })
  let ready = false
  app.decorate('config', config)
  app.decorate('groups', groups)
  app.decorate('volumes', volumes)
  app.decorate('isReady', () => ready)
  app.decorate(
    'volumesOpen',
    volumes.openAll().then(() => {
      ready = true
    }),
  )
  const sweeper = setInterval(() => groups.sweep(), 30_000).unref()

  app.setErrorHandler((error: FastifyError | Problem | ZodError, request, reply) => {
    const problem = toProblem(error)
    if (problem.status >= 500) request.log.error({ err: error }, 'request failed')
    for (const [name, value] of Object.entries(problem.extra.headers ?? {})) reply.header(name, value)
    return reply.code(problem.status).header('content-type', 'application/problem+json').send(Buffer.from(JSON.stringify(problem.toJSON(request.url))))
  })
  app.setNotFoundHandler((request, reply) => {
    const allow = allowedMethods(app, request.url)
    const problem = allow ? problems.methodNotAllowed(allow) : problems.notFound(`no route for ${request.method} ${request.url.split('?')[0]}`)
    for (const [name, value] of Object.entries(problem.extra.headers ?? {})) reply.header(name, value)
    return reply.code(problem.status).header('content-type', 'application/problem+json').send(Buffer.from(JSON.stringify(problem.toJSON(request.url))))
  })

  await app.register(healthRoutes)
  await app.register(volumeRoutes)
  await app.register(operationRoutes)
  await app.register(replicaRoutes)
  await app.register(dataRoutes)

  app.addHook('onClose', async () => {
    clearInterval(sweeper)
    await app.volumesOpen.catch(() => {})
    await volumes.closeAll(config.shutdownGraceMs)
  })
  return app
}

/** Every error becomes a problem; a 5xx never carries the error's own message (it may hold a path). */
export function toProblem(error: unknown): Problem {
  if (error instanceof Problem) return error
  if (error instanceof ZodError) return problems.badRequest(describeZodError(error), { errors: error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) })
  const status = (error as FastifyError).statusCode
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const titles: Record<number, string> = { 400: 'Bad Request', 413: 'Content Too Large', 415: 'Unsupported Media Type', 408: 'Request Timeout' }
    return new Problem(status, titles[status] ?? 'Client Error', (error as Error).message)
  }
  return problems.internal()
}

export function describeZodError(error: ZodError): string {
  return error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ')
}

const KNOWN_METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS']

/** The methods a known path answers, for 405; undefined when the path itself is unknown. */
function allowedMethods(app: FastifyInstance, url: string): string | undefined {
  const path = url.split('?')[0]
  const allowed = KNOWN_METHODS.filter((method) => app.findRoute({ method: method as 'GET', url: path }) !== null)
  return allowed.length ? allowed.join(', ') : undefined
}
