import { BlockList, isIP } from 'node:net'
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
  /** `true` lets the service listen on a non-loopback HOST without AUTH_TOKEN (protected mode off). */
  ALLOW_UNAUTHENTICATED: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false'),
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
  /** Largest reply whose asked-for digest (RFC 9530 Want-*) is computed in a pass of its own before the body, for a client without trailers. */
  DIGEST_MAX_BYTES: digits.pipe(z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)).default(64 << 20),
  /** A resumable (tus) upload idle this long is forgotten: its record is removed, the bytes it wrote stay. */
  UPLOAD_EXPIRY_MS: positiveInt.default(86_400_000),
  /**
   * Origins remote replicas may be on (comma-separated, `http://127.0.0.1:8081`; `aws` for S3 without an endpoint).
   * Empty: no remote replica is allowed (a configuration cannot make the service call arbitrary hosts).
   */
  REMOTE_ALLOW: z.string().optional(),
  /** A remote replica unreachable (retryable errors only) this long without a success is failed. */
  REMOTE_FAIL_AFTER_MS: positiveInt.default(600_000),
  /** Bytes per PUT that write-behind sends to an HTTP remote replica (its copy unit; write-behind copies at most 64 MiB at once). */
  REMOTE_HTTP_WRITE_BYTES: digits.pipe(z.number().int().min(4096).max(64 << 20)).default(1 << 20),
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
  /** Serving without a token on a non-loopback HOST was asked for explicitly (ALLOW_UNAUTHENTICATED=true). */
  allowUnauthenticated: boolean
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
  digestMaxBytes: number
  uploadExpiryMs: number
  /** Origins (`http://host:port`) remote replicas may be on; `aws` for S3 without an endpoint. */
  remoteAllow: string[]
  remoteFailAfterMs: number
  remoteHttpWriteBytes: number
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
  const allowUnauthenticated = e.ALLOW_UNAUTHENTICATED === 'true'
  // Protected mode (as Redis's): reachable from other machines means a token, unless explicitly waived.
  if (!e.AUTH_TOKEN && !allowUnauthenticated && !isLoopback(e.HOST)) {
    throw new ConfigError(
      `refusing to listen on HOST=${e.HOST} without authentication: set AUTH_TOKEN (16+ characters; clients send Authorization: Bearer <token>), or set ALLOW_UNAUTHENTICATED=true to serve every volume to anyone who can reach the port`,
    )
  }
  const remoteAllow = parseRemoteAllow(e.REMOTE_ALLOW ?? '')
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
    allowUnauthenticated,
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
    digestMaxBytes: e.DIGEST_MAX_BYTES,
    uploadExpiryMs: e.UPLOAD_EXPIRY_MS,
    remoteAllow,
    remoteFailAfterMs: e.REMOTE_FAIL_AFTER_MS,
    remoteHttpWriteBytes: e.REMOTE_HTTP_WRITE_BYTES,
  }
}

/** REMOTE_ALLOW's entries as origins; a bad one stops the start, naming it. */
export function parseRemoteAllow(text: string): string[] {
  const entries = text.split(',').map((s) => s.trim()).filter(Boolean)
  return entries.map((entry) => {
    if (entry.toLowerCase() === 'aws') return 'aws'
    const url = URL.canParse(entry) ? new URL(entry) : undefined
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password || (url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
      throw new ConfigError(`invalid configuration: REMOTE_ALLOW: ${JSON.stringify(entry)} is not an origin (scheme://host[:port], as http://127.0.0.1:8081) nor aws`)
    }
    return url.origin
  })
}

const loopback = new BlockList()
loopback.addSubnet('127.0.0.0', 8, 'ipv4')
loopback.addAddress('::1', 'ipv6')

/** Whether HOST only takes connections from this machine: 127.0.0.0/8, ::1 or localhost. */
export function isLoopback(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true
  const family = isIP(host)
  return family === 4 ? loopback.check(host, 'ipv4') : family === 6 ? loopback.check(host, 'ipv6') : false
}
