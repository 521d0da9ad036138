/**
 * Replicas on other machines: which remotes a configuration may name (REMOTE_ALLOW), how one is opened (an
 * HttpFile or an S3File, its token read from the environment at that moment), and how long a remote that
 * fails with retryable errors is retried before it is failed.
 */
import { HttpFile, type HttpFileOptions } from './backends/http-file.js'
import { S3File, type S3FileOptions } from './backends/s3-file.js'
import { EngineError } from './errors.js'
import type { ReplicaFile } from './replica-file.js'
import { backendName, isRemoteSpec, normalPrefix, TOKEN_ENV_PREFIX, type ReplicaSpec } from './spec.js'

/** How a remote replica failing with retryable errors is retried: `baseMs` doubling up to `maxMs`, failed after `failAfterMs` without a success. */
export interface RemoteRetryPolicy {
  baseMs: number
  maxMs: number
  failAfterMs: number
}

export const DEFAULT_RETRY_POLICY: RemoteRetryPolicy = { baseMs: 1_000, maxMs: 30_000, failAfterMs: 600_000 }

/** The wait before retry number `attempt` (0 first): doubling from baseMs, at most maxMs; a remote's Retry-After is honoured up to maxMs. */
export function retryDelay(attempt: number, policy: RemoteRetryPolicy, retryAfterMs?: number): number {
  const backoff = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt, 30))
  return retryAfterMs === undefined ? backoff : Math.min(policy.maxMs, Math.max(backoff, retryAfterMs))
}

/** Whether trying again later may work: a remote backend's error that says so (timeout, refused connection, 5xx, throttling). */
export function isRetryable(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { retryable?: unknown }).retryable === true
}

/** A Retry-After the remote sent, in ms, if any. */
export function retryAfterOf(err: unknown): number | undefined {
  const ms = (err as { retryAfterMs?: unknown } | null)?.retryAfterMs
  return typeof ms === 'number' && Number.isFinite(ms) ? ms : undefined
}

export { isRemoteSpec }

/** The origin REMOTE_ALLOW must list for a remote replica: its URL's, its S3 endpoint's, or `aws` for AWS S3 itself. */
export function remoteOrigin(r: Pick<ReplicaSpec, 'url' | 's3'>): string {
  if (r.url !== undefined) return new URL(r.url).origin
  if (r.s3?.endpoint !== undefined) return new URL(r.s3.endpoint).origin
  return 'aws'
}

/** A remote replica that the configuration may not name. */
export class RemoteRefusedError extends EngineError {
  readonly code = 'EREMOTE_REFUSED'
  constructor(message: string) {
    super('invalid', message, { code: 'EREMOTE_REFUSED' })
  }
}

/**
 * Refuses a remote replica whose origin REMOTE_ALLOW does not list (none is allowed when it is empty), so a
 * configuration cannot make the service send requests to hosts the operator did not name (SSRF).
 */
export function checkRemoteAllowed(r: ReplicaSpec, allow: readonly string[]): void {
  if (!isRemoteSpec(r)) return
  const origin = remoteOrigin(r)
  if (allow.includes(origin)) return
  const what = r.url !== undefined ? `url origin ${origin}` : origin === 'aws' ? 'AWS S3 (an s3 replica without endpoint)' : `S3 endpoint origin ${origin}`
  const entry = origin === 'aws' ? 'aws' : origin
  throw new RemoteRefusedError(
    allow.length === 0
      ? `replica ${r.id}: remote replicas are refused: REMOTE_ALLOW is empty; to allow ${what}, start the service with REMOTE_ALLOW=${entry}`
      : `replica ${r.id}: ${what} is not in REMOTE_ALLOW (${allow.join(',')}); add ${entry} to REMOTE_ALLOW to allow it`,
  )
}

/** What opening a remote replica needs besides its configuration. */
export interface RemoteOpenContext {
  /** Where tokenEnv is read (process.env). */
  env: Record<string, string | undefined>
  /** The volume's and the replica's UUIDs (the volume's health record): an S3 manifest carries them. */
  identity?: { volume: string; replica: string }
  /**
   * The replica is new (a volume created, a replica added): an HTTP remote file missing is created (mod_dav),
   * and an S3 prefix whose manifest names another volume is taken over. Never when an existing replica is reopened.
   */
  fresh: boolean
  /** Options for every HttpFile / S3File (timeouts, credentials in tests). */
  http?: Partial<HttpFileOptions>
  s3?: Partial<S3FileOptions>
}

/** An Error with a code, as backends throw them. */
function coded(code: string, message: string): Error {
  return Object.assign(new Error(message), { code })
}

/** The bearer token of a url replica, read from its tokenEnv now; an unset variable is an error (never a request without it). */
function tokenOf(r: ReplicaSpec, env: Record<string, string | undefined>): string | undefined {
  if (r.tokenEnv === undefined) return undefined
  if (!r.tokenEnv.startsWith(TOKEN_ENV_PREFIX)) throw coded('EACCES', `replica ${r.id}: tokenEnv must start with ${TOKEN_ENV_PREFIX}`)
  const token = env[r.tokenEnv]
  if (token === undefined || token === '') throw coded('EACCES', `replica ${r.id}: the environment variable ${r.tokenEnv} (its tokenEnv) is not set: set it to the remote's bearer token and restart, then resync the replica`)
  return token
}

function s3Options(r: ReplicaSpec, context: RemoteOpenContext): Omit<S3FileOptions, 'identity'> {
  const s3 = r.s3!
  return {
    bucket: s3.bucket,
    prefix: normalPrefix(s3.prefix),
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: s3.forcePathStyle,
    chunkBytes: s3.chunkBytes,
    ...context.s3,
  }
}

/** Opens a remote replica: an HttpFile for `url`, an S3File for `s3`. Errors are the backend's (code, retryable). */
export async function openRemote(r: ReplicaSpec, context: RemoteOpenContext): Promise<ReplicaFile> {
  if (r.url !== undefined) {
    return HttpFile.open(r.url, { ...context.http, token: tokenOf(r, context.env), create: context.fresh })
  }
  if (r.s3 !== undefined) {
    if (!context.identity) throw coded('EINVAL', `replica ${r.id}: an S3 replica is opened with its volume's identity`)
    return S3File.open({ ...s3Options(r, context), identity: context.identity, claim: context.fresh })
  }
  throw coded('EINVAL', `replica ${r.id} is not a remote replica`)
}

/**
 * How many bytes a remote replica holds now, without changing it: 0 when it does not exist yet (a missing
 * mod_dav file, an S3 prefix without manifest). For deciding which replica holds the truth of a new volume.
 */
export async function remoteSize(r: ReplicaSpec, context: Omit<RemoteOpenContext, 'identity' | 'fresh'>): Promise<number> {
  if (r.s3 !== undefined) return (await S3File.peek(s3Options(r, { ...context, fresh: false })))?.size ?? 0
  let file: HttpFile
  try {
    file = await HttpFile.open(r.url!, { ...context.http, token: tokenOf(r, context.env) })
  } catch (err) {
    // A file that does not exist yet (mod_dav) is created when the replica opens: it holds nothing. (A filemirror
    // volume cannot be created so: opening it says so then.)
    if ((err as { code?: unknown }).code === 'ENOENT') return 0
    throw err
  }
  try {
    return await file.size()
  } finally {
    await file.close()
  }
}

/** A remote replica's name in messages (its URL or s3://bucket/prefix). */
export const remoteName = backendName
