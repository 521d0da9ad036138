import { resolve } from 'node:path'
import { z } from 'zod'

/** Decimal digits only: '', ' ', '0x50' and '1e3' are mistakes, not numbers. */
const digits = z.string().trim().regex(/^\d{1,16}$/, 'must be a whole number in decimal digits').transform(Number)
const port = digits.pipe(z.number().int().min(0).max(65535))
const positiveInt = digits.pipe(z.number().int().positive())

/** The service's settings, read from the environment and validated once at start. */
export const configSchema = z.object({
  PORT: port.default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATA_DIR: z.string().min(1).default('./data'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  STORAGE_ROOTS: z.string().optional(),
  /** How long write-behind may go on after SIGTERM before its journal is left for the next start. */
  SHUTDOWN_GRACE_MS: digits.default(10_000),
  /** Finished operation groups are kept at least this long... */
  GROUP_RETENTION_MS: positiveInt.default(600_000),
  /** ...within this many groups. */
  MAX_GROUPS: positiveInt.default(20_000),
  /** Read groups are kept in a separate, smaller window so reads never crowd out writes. */
  MAX_READ_GROUPS: positiveInt.default(1_000),
  /** Ranges one GET may ask for before the Range header is ignored. */
  MAX_RANGES: positiveInt.default(100),
  /** With a token set, every route but /healthz and /readyz needs `Authorization: Bearer <token>`. */
  AUTH_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  /** Largest JSON request body (413 beyond). */
  MAX_JSON_BYTES: positiveInt.default(1 << 20),
  /** Largest request head (431 beyond). */
  MAX_HEADER_BYTES: positiveInt.default(16 << 10),
  /** Largest offset a write may reach, so the largest volume (413 beyond): 16 TiB. */
  MAX_VOLUME_BYTES: digits.pipe(z.number().int().positive().max(Number.MAX_SAFE_INTEGER)).default(2 ** 44),
  /** Writes in flight per volume before new ones get 503 with Retry-After. */
  MAX_INFLIGHT_WRITES: positiveInt.default(256),
  /** Bytes a volume without a sync replica may hold in memory for its async replicas before new writes get 503. */
  MAX_QUEUED_BYTES: positiveInt.default(64 << 20),
  /** A connection that has not sent its whole head by then is closed. */
  HEADERS_TIMEOUT_MS: positiveInt.default(20_000),
  /** An upload that sends nothing for this long is aborted, with nothing acknowledged. */
  BODY_IDLE_TIMEOUT_MS: positiveInt.default(30_000),
  /** Event streams send a comment this often so proxies and clients see the connection alive. */
  EVENTS_HEARTBEAT_MS: positiveInt.default(15_000),
  /** Events kept for Last-Event-ID resumption. */
  EVENTS_REPLAY_WINDOW: positiveInt.default(1_000),
  /** Events queued for one stream client that is not reading before it is dropped. */
  EVENTS_QUEUE_LIMIT: positiveInt.default(1_000),
})

export interface Config {
  port: number
  host: string
  dataDir: string
  logLevel: z.infer<typeof configSchema>['LOG_LEVEL']
  storageRoots: string[]
  shutdownGraceMs: number
  groupRetentionMs: number
  maxGroups: number
  maxReadGroups: number
  maxRanges: number
  authToken: string | undefined
  maxJsonBytes: number
  maxHeaderBytes: number
  maxVolumeBytes: number
  maxInflightWrites: number
  maxQueuedBytes: number
  headersTimeoutMs: number
  bodyIdleTimeoutMs: number
  eventsHeartbeatMs: number
  eventsReplayWindow: number
  eventsQueueLimit: number
}

/** Thrown for a bad environment; the message names every bad variable. */
export class ConfigError extends Error {}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const parsed = configSchema.safeParse(env)
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`)
    throw new ConfigError(`invalid configuration: ${lines.join('; ')}`)
  }
  const e = parsed.data
  const dataDir = resolve(e.DATA_DIR)
  const roots = (e.STORAGE_ROOTS ?? '').split(',').map((s) => s.trim()).filter(Boolean).map((r) => resolve(r))
  return {
    port: e.PORT,
    host: e.HOST,
    dataDir,
    logLevel: e.LOG_LEVEL,
    storageRoots: roots.length > 0 ? roots : [dataDir],
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    groupRetentionMs: e.GROUP_RETENTION_MS,
    maxGroups: e.MAX_GROUPS,
    maxReadGroups: e.MAX_READ_GROUPS,
    maxRanges: e.MAX_RANGES,
    authToken: e.AUTH_TOKEN,
    maxJsonBytes: e.MAX_JSON_BYTES,
    maxHeaderBytes: e.MAX_HEADER_BYTES,
    maxVolumeBytes: e.MAX_VOLUME_BYTES,
    maxInflightWrites: e.MAX_INFLIGHT_WRITES,
    maxQueuedBytes: e.MAX_QUEUED_BYTES,
    headersTimeoutMs: e.HEADERS_TIMEOUT_MS,
    bodyIdleTimeoutMs: e.BODY_IDLE_TIMEOUT_MS,
    eventsHeartbeatMs: e.EVENTS_HEARTBEAT_MS,
    eventsReplayWindow: e.EVENTS_REPLAY_WINDOW,
    eventsQueueLimit: e.EVENTS_QUEUE_LIMIT,
  }
}
