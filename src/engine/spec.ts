import { z } from 'zod'

/** Volume names and replica ids: safe as file names and URL segments. */
export const NAME_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/
export const nameSchema = z.string().regex(NAME_PATTERN, 'must be 1-128 characters of A-Z a-z 0-9 . _ - and not start with a dot')

export const replicaModeSchema = z.enum(['sync', 'async'])
export const durabilitySchema = z.enum(['os', 'fsync'])

/** An http: or https: URL without credentials or fragment (a token goes in tokenEnv, never in the configuration). */
function httpUrl(what: string) {
  return z
    .string()
    .min(1)
    .max(4096)
    .superRefine((text, ctx) => {
      const url = URL.canParse(text) ? new URL(text) : undefined
      if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) ctx.addIssue({ code: 'custom', message: `${what} must be an http: or https: URL` })
      else if (url.username || url.password) ctx.addIssue({ code: 'custom', message: `${what} must not hold credentials: name an environment variable holding the token in tokenEnv` })
      else if (url.hash) ctx.addIssue({ code: 'custom', message: `${what} must not have a #fragment` })
    })
}

/** Environment variables a replica may read its token from: only these, so a configuration never reads the service's own secrets. */
export const TOKEN_ENV_PREFIX = 'FILEMIRROR_REMOTE_'
export const tokenEnvSchema = z
  .string()
  .regex(/^FILEMIRROR_REMOTE_[A-Z0-9_]{1,100}$/, `must name an environment variable starting with ${TOKEN_ENV_PREFIX} (A-Z 0-9 _ after it)`)

export const DEFAULT_S3_CHUNK_BYTES = 4 << 20

/** Where an S3 replica lives: chunk objects and a manifest under `prefix` in `bucket`. */
export const s3SpecSchema = z.strictObject({
  bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name (3-63 characters of a-z 0-9 . -)'),
  prefix: z.string().max(1024).refine((p) => !p.includes('\0'), 'must not contain NUL bytes').default(''),
  /** An S3-compatible store (MinIO, Ceph RGW); AWS S3 when absent. */
  endpoint: httpUrl('endpoint').optional(),
  region: z.string().min(1).max(64).default('us-east-1'),
  forcePathStyle: z.boolean().default(false),
  chunkBytes: z.number().int().min(1024).max(256 << 20).default(DEFAULT_S3_CHUNK_BYTES),
})
export type S3Spec = z.infer<typeof s3SpecSchema>

/** A replica as written, before the checks that span its members (replicaSpecSchema). */
export const replicaFieldsSchema = z.strictObject({
  id: nameSchema,
  /** A local file. */
  path: z.string().min(1).max(4096).refine((p) => !p.includes('\0'), 'must not contain NUL bytes').optional(),
  /** A remote taking RFC 9110 partial PUT: another filemirror's data URL, or a file under Apache mod_dav. */
  url: httpUrl('url').optional(),
  /** The environment variable holding the bearer token for `url`, read when the replica is opened. */
  tokenEnv: tokenEnvSchema.optional(),
  /** An S3 bucket (AWS S3, MinIO, Ceph RGW). */
  s3: s3SpecSchema.optional(),
  read: z.boolean().default(true),
  write: z.boolean().default(true),
  /** sync by default for a local file, async for a remote one. */
  mode: replicaModeSchema.optional(),
  label: z.json().default(null),
  maxBytesPerSecond: z.number().int().positive().max(Number.MAX_SAFE_INTEGER).nullable().default(null),
})

export const replicaSpecSchema = replicaFieldsSchema
  .superRefine((r, ctx) => {
    const backends = (['path', 'url', 's3'] as const).filter((k) => r[k] !== undefined)
    if (backends.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        path: backends.length > 1 ? [backends[1]] : [],
        message: `a replica has exactly one of path (a local file), url (an HTTP remote) or s3 (an S3 bucket)${backends.length > 1 ? `, not ${backends.join(' and ')}` : ''}`,
      })
    }
    if (r.tokenEnv !== undefined && r.url === undefined) {
      ctx.addIssue({ code: 'custom', path: ['tokenEnv'], message: 'tokenEnv is for url replicas (an S3 replica takes its credentials from the AWS SDK: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, shared config files, instance roles)' })
    }
    if (r.s3 !== undefined && r.mode === 'sync') {
      ctx.addIssue({
        code: 'custom',
        path: ['mode'],
        message: 'an S3 replica is async only: S3 is written a whole chunk object at a time (chunk-granular), not byte ranges in the request path; use mode async (the default for remote replicas)',
      })
    }
  })
  .transform((r) => ({ ...r, mode: r.mode ?? (r.path !== undefined ? ('sync' as const) : ('async' as const)) }))

/** Whether a replica lives on another machine (an HTTP remote or an S3 bucket). */
export const isRemoteSpec = (r: { url?: string; s3?: unknown }): boolean => r.url !== undefined || r.s3 !== undefined

/** An S3 prefix as stored: empty, or ending in one `/`. */
export const normalPrefix = (prefix: string): string => (prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`)

/**
 * What a replica is stored on, as one string: two replicas with the same one are the same storage. A local
 * file's path (as written), a remote's URL, or an S3 store, bucket and prefix.
 */
export function backendKey(r: { path?: string; url?: string; s3?: S3Spec }): string {
  if (r.url !== undefined) return new URL(r.url).href
  if (r.s3 !== undefined) return `s3:${r.s3.endpoint === undefined ? 'aws' : new URL(r.s3.endpoint).href.replace(/\/$/, '')}/${r.s3.bucket}/${normalPrefix(r.s3.prefix)}`
  return r.path ?? ''
}

/** How a replica is named in messages: its path, its URL, or s3://bucket/prefix. */
export function backendName(r: { path?: string; url?: string; s3?: S3Spec }): string {
  if (r.url !== undefined) return r.url
  if (r.s3 !== undefined) return `s3://${r.s3.bucket}/${normalPrefix(r.s3.prefix)}${r.s3.endpoint === undefined ? '' : ` at ${r.s3.endpoint}`}`
  return r.path ?? ''
}

export const volumeSpecSchema = z
  .strictObject({
    replicas: z.array(replicaSpecSchema).min(1).max(16),
    durability: durabilitySchema.default('os'),
    /** Block checksums at rest (CRC-32C per 4 KiB block, verified on reads and by scrub); off costs nothing. */
    checksums: z.boolean().default(true),
    /** The replica whose file holds the truth when the volume is created over files that differ; never persisted. */
    source: nameSchema.optional(),
  })
  .superRefine((spec, ctx) => {
    if (spec.source !== undefined && !spec.replicas.some((r) => r.id === spec.source)) ctx.addIssue({ code: 'custom', path: ['source'], message: `source ${spec.source} is none of the replicas` })
    if (!spec.replicas.some((r) => r.read)) ctx.addIssue({ code: 'custom', path: ['replicas'], message: 'at least one replica must have read: true' })
    if (!spec.replicas.some((r) => r.write)) ctx.addIssue({ code: 'custom', path: ['replicas'], message: 'at least one replica must have write: true' })
    const ids = new Set<string>()
    const backends = new Set<string>()
    spec.replicas.forEach((r, i) => {
      const kind = r.url !== undefined ? 'url' : r.s3 !== undefined ? 's3' : 'path'
      const key = `${kind}\0${backendKey(r)}`
      if (ids.has(r.id)) ctx.addIssue({ code: 'custom', path: ['replicas', i, 'id'], message: `duplicate replica id ${r.id}` })
      if (backends.has(key)) ctx.addIssue({ code: 'custom', path: ['replicas', i, kind], message: `duplicate replica ${kind} ${backendName(r)}` })
      ids.add(r.id)
      backends.add(key)
    })
  })

export type ReplicaSpec = z.infer<typeof replicaSpecSchema>
export type VolumeSpec = z.infer<typeof volumeSpecSchema>
export type ReplicaMode = z.infer<typeof replicaModeSchema>

export const replicaStateSchema = z.enum(['in-sync', 'behind', 'resyncing', 'failed'])
export type ReplicaState = z.infer<typeof replicaStateSchema>

export const ioErrorSchema = z.object({ code: z.string(), message: z.string() })
export type IoError = z.infer<typeof ioErrorSchema>
