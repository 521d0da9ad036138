import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { ZodError } from 'zod'
import dataReadRoutes from '../routes/data-read.js'
import dataWriteRoutes from '../routes/data-write.js'
import eventRoutes from '../routes/events.js'
import healthRoutes from '../routes/health.js'
import metricsRoutes from '../routes/metrics.js'
import rangeRoutes from '../routes/ranges.js'
import statusPageRoutes, { sendLoginPage } from '../routes/status-page.js'
import uploadRoutes from '../routes/uploads.js'
import operationRoutes from '../routes/operations.js'
import replicaRoutes from '../routes/replicas.js'
import volumeRoutes from '../routes/volumes.js'
import { authenticate } from './http/auth.js'
import { jsonBodyParser } from './http/json-body.js'
import type { Config } from './config.js'
import { EventStream } from './http/event-stream.js'
import { GroupRegistry } from './engine/group-registry.js'
import { Metrics } from './http/metrics.js'
import { EngineError } from './engine/errors.js'
import { problemOfEngineError } from './http/error-map.js'
import { Problem, problems } from './http/problem.js'
import { openLocalFile, type ReplicaFileOpener } from './engine/replica-file.js'
import { VolumeRegistry, type VolumeRegistryOptions } from './engine/volume-registry.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    volumes: VolumeRegistry
    groups: GroupRegistry
    /** Resolves once every persisted volume is open (readiness). */
    volumesOpen: Promise<void>
    isReady: () => boolean
    /** The engine's events, for GET /events. */
    events: EventStream
    metrics: Metrics
  }
  interface FastifyContextConfig {
    /** false: leave the route out of the request duration histogram (event streams). */
    metrics?: boolean
  }
}

export interface AppOptions {
  config: Config
  /** The replica file backend; tests pass a fault-injecting one. */
  openFile?: ReplicaFileOpener
  /** A pino destination for the logs; stdout by default. */
  logStream?: NodeJS.WritableStream
  /** Options for remote replica backends (timeouts; S3 credentials in tests, else the AWS SDK's chain). */
  remote?: VolumeRegistryOptions['remote']
  /** Where remote replicas' tokenEnv is read: process.env by default. */
  env?: Record<string, string | undefined>
  /** How remote replicas failing with retryable errors are retried (failAfterMs is REMOTE_FAIL_AFTER_MS). */
  remoteRetry?: VolumeRegistryOptions['remoteRetry']
}

/** Builds the service: plugins, the engine's registries, then the routes. Tests build this same app. */
export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { config } = options
  const app = Fastify({
    logger: { level: config.logLevel, ...(options.logStream ? { stream: options.logStream } : {}) },
    // Names may be 128 characters; longer ones reach the handler and get a clear 400 rather than a bare 414.
    routerOptions: { maxParamLength: 1024 },
    bodyLimit: config.maxJsonBytes,
    return503OnClosing: true,
    // No overall request timeout: a healthy large upload is never cut; stalled bodies are caught per route.
    requestTimeout: 0,
    http: { maxHeaderSize: config.maxHeaderBytes, headersTimeout: config.headersTimeoutMs, connectionsCheckingInterval: 1_000 },
    clientErrorHandler: answerClientError,
    // A malformed URL (bad percent-encoding) is refused before routing: still a problem.
    frameworkErrors: (error, request, reply) => sendProblem(request, reply, problems.badRequest(error.message)),
    // The incoming X-Request-Id is validated in genReqId (Fastify's requestIdHeader would take it as is).
    requestIdHeader: false,
    genReqId: requestIdOf,
    // Fastify's two lines per request are off: the onResponse hook below writes one.
    logController: new LogController({ requestIdLogLabel: 'requestId', disableRequestLogging: true }),
  })
  const groups = new GroupRegistry({ retentionMs: config.groupRetentionMs, maxGroups: config.maxGroups, maxReadGroups: config.maxReadGroups })
  // Observability: the event stream and the metrics follow every open volume.
  const events = new EventStream({
    replayWindow: config.eventsReplayWindow,
    queueLimit: config.eventsQueueLimit,
    heartbeatMs: config.eventsHeartbeatMs,
    onDrop: () => metrics.eventClientsDropped.inc(),
  })
  const metrics = new Metrics({ volumes: () => volumes.list(), groups, subscribers: () => events.subscriberCount })
  const volumes = new VolumeRegistry({
    dataDir: config.dataDir,
    storageRoots: config.storageRoots,
    groups,
    openFile: options.openFile ?? openLocalFile,
    log: app.log,
    limits: { maxInflightWrites: config.maxInflightWrites, maxQueuedBytes: config.maxQueuedBytes },
    remoteAllow: config.remoteAllow,
    remoteRetry: { failAfterMs: config.remoteFailAfterMs, ...options.remoteRetry },
    remote: { ...options.remote, http: { preferredWriteUnit: config.remoteHttpWriteBytes, ...options.remote?.http } },
    env: options.env,
    // Every volume opened or created is followed by the event stream and the metrics from its first moment.
    onVolume: (volume) => {
      events.watch(volume)
      metrics.watch(volume)
    },
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

  app.decorate('events', events)
  app.decorate('metrics', metrics)
  // Callback-style hooks: no promise per request.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id)
    done()
  })
  app.addHook('onResponse', (request, reply, done) => {
    const ms = reply.elapsedTime
    // One line per request (Fastify's own two are off): what, how it ended, how long.
    request.log.info({ method: request.method, url: request.url, statusCode: reply.statusCode, responseTime: ms }, 'request completed')
    // routeOptions is built afresh on every access: read it once.
    const route = request.routeOptions
    if (route.config?.metrics !== false) metrics.observeRequest(request.method, route.url ?? '<unmatched>', reply.statusCode, ms / 1000)
    done()
  })

  // With AUTH_TOKEN: the bearer token, or the status page's session cookie for GET and HEAD (src/http/auth.ts).
  const token = config.authToken
  if (token) app.addHook('onRequest', authenticate(token, sendLoginPage))
  // Fastify's JSON parser, with errors that say where the body stops being JSON.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, jsonBodyParser(app))

  app.setErrorHandler((error: FastifyError | Problem | ZodError, request, reply) => {
    const problem = toProblem(error)
    if (problem.status >= 500) request.log.error({ err: error }, 'request failed')
    return sendProblem(request, reply, problem)
  })
  app.setNotFoundHandler((request, reply) => {
    const allow = allowedMethods(app, request.url)
    return sendProblem(request, reply, allow ? problems.methodNotAllowed(allow) : problems.notFound(`no route for ${request.method} ${request.url.split('?')[0]}`))
  })

  await app.register(healthRoutes)
  await app.register(volumeRoutes)
  await app.register(operationRoutes)
  await app.register(replicaRoutes)
  await app.register(dataReadRoutes)
  await app.register(dataWriteRoutes)
  await app.register(rangeRoutes)
  await app.register(eventRoutes)
  await app.register(metricsRoutes)
  await app.register(statusPageRoutes)
  await app.register(uploadRoutes)

  // The server's close waits for every reply: one whose client stopped reading is cut once the grace period is over.
  app.addHook('preClose', (done) => {
    setTimeout(() => {
      for (const volume of volumes.list()) volume.cutReaders()
    }, config.shutdownGraceMs).unref()
    done()
  })
  app.addHook('onClose', async () => {
    clearInterval(sweeper)
    await app.volumesOpen.catch(() => {})
    await volumes.closeAll(config.shutdownGraceMs)
  })
  return app
}

/** A request id that is safe in a header and a log line: visible ASCII, at most 200 characters. */
const REQUEST_ID = /^[\x21-\x7e]{1,200}$/

/** The caller's X-Request-Id when it is one we can safely echo and log, else a new UUID. */
export function requestIdOf(request: IncomingMessage): string {
  const incoming = request.headers['x-request-id']
  return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID()
}

/** Sends a problem with its headers; `instance` is the path without its query, plus the request id. */
function sendProblem(request: FastifyRequest, reply: FastifyReply, problem: Problem) {
  for (const [name, value] of Object.entries(problem.extra.headers ?? {})) reply.header(name, value)
  // A body left unread would be taken as the next request, or hang it: the connection ends with this reply.
  if (!request.raw.complete) reply.header('connection', 'close')
  const body = { ...problem.toJSON(request.url.split('?')[0]), requestId: request.id }
  return reply.code(problem.status).header('content-type', 'application/problem+json').send(Buffer.from(JSON.stringify(body)))
}

/** Errors Node's parser finds before any route runs (a head too large or too slow, bad framing) still get a problem. */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const problem =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? new Problem(431, 'Request Header Fields Too Large', 'the request head is larger than the limit')
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? problems.requestTimeout('the request head did not arrive in time')
        : problems.badRequest('the request could not be parsed as HTTP/1.1')
  const body = JSON.stringify(problem.toJSON())
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${problem.status} ${problem.title}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}

/** Every error becomes a problem; a 5xx never carries the error's own message (it may hold a path). */
export function toProblem(error: unknown): Problem {
  if (error instanceof Problem) return error
  if (error instanceof EngineError) return problemOfEngineError(error)
  if (error instanceof ZodError) return problems.badRequest(describeZodError(error), { errors: error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) })
  const status = (error as FastifyError).statusCode
  if (typeof status === 'number' && status >= 400 && status < 500) {
    // Fastify's 415 says only "Unsupported Media Type": the routes it guards (the others parse every type) take JSON.
    if ((error as FastifyError).code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return problems.unsupportedMediaType('this route takes a JSON body: send it with Content-Type: application/json')
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
