import { z } from 'zod'
import { BLOCK_HASH_IMPLEMENTATIONS } from './block-hash.js'
import { durabilitySchema, ioErrorSchema, replicaModeSchema, replicaStateSchema } from './spec.js'

/** What the engine reports of a volume and of an operation group: the JSON the API returns. */
/** Where an S3 replica lives, as the status shows it (never a credential). */
export const s3StatusSchema = z.object({ bucket: z.string(), prefix: z.string(), endpoint: z.string().nullable(), region: z.string() })

export const replicaStatusSchema = z.object({
  id: z.string(),
  /** Exactly one of path, url and s3 is set: the replica's backend. */
  path: z.string().nullable(),
  url: z.string().nullable(),
  s3: s3StatusSchema.nullable(),
  read: z.boolean(),
  write: z.boolean(),
  mode: replicaModeSchema,
  label: z.json(),
  maxBytesPerSecond: z.number().nullable(),
  state: replicaStateSchema,
  dirtyBytes: z.number().int().min(0),
  cachedPercent: z.number().min(0).max(100),
  error: ioErrorSchema.nullable(),
  /** A remote replica waiting to try again after a retryable error (timeout, refused connection, 5xx): when, else null. */
  nextRetryAt: z.string().nullable(),
  /** Since when that remote has been failing without a success in between, else null. */
  unreachableSince: z.string().nullable(),
})
export type ReplicaStatus = z.infer<typeof replicaStatusSchema>

/** The backend members of a replica's status: its path, or its url, or its S3 bucket, prefix, endpoint and region. */
export function backendStatus(r: { path?: string; url?: string; s3?: { bucket: string; prefix: string; endpoint?: string; region: string } }): Pick<ReplicaStatus, 'path' | 'url' | 's3'> {
  return {
    path: r.path ?? null,
    url: r.url ?? null,
    s3: r.s3 ? { bucket: r.s3.bucket, prefix: r.s3.prefix, endpoint: r.s3.endpoint ?? null, region: r.s3.region } : null,
  }
}

/**
 * ok: every replica healthy; degraded: some replica failed, the rest serve; read-only: no replica is known to hold
 * every acknowledged write (or writes cannot be made safe), reads only, waiting for the operator; failed: the volume
 * cannot serve at all (it could not be opened). `error` says why for the last two.
 */
export const volumeStateSchema = z.enum(['ok', 'degraded', 'read-only', 'failed'])
export type VolumeState = z.infer<typeof volumeStateSchema>

/** A block that failed its checksum on a replica, as the last scrub found it. */
export const scrubMismatchSchema = z.object({ replica: z.string(), offset: z.number().int().min(0), length: z.number().int().min(1), repaired: z.boolean() })

/**
 * Block checksums of a volume: whether kept, how they are computed, how much of the content has a trusted one
 * (the rest is checksummed in the background and read unverified meanwhile), and what the last scrub found.
 */
export const checksumStatusSchema = z.object({
  enabled: z.boolean(),
  algorithm: z.literal('crc32c'),
  implementation: z.enum(BLOCK_HASH_IMPLEMENTATIONS),
  blockBytes: z.number().int().positive(),
  coveredBytes: z.number().int().min(0),
  coveredPercent: z.number().min(0).max(100),
  lastScrub: z.object({ at: z.string(), bytes: z.number().int().min(0), mismatches: z.array(scrubMismatchSchema) }).nullable(),
})
export type ChecksumStatus = z.infer<typeof checksumStatusSchema>

export const volumeStatusSchema = z.object({
  name: z.string(),
  state: volumeStateSchema,
  error: ioErrorSchema.nullable(),
  size: z.number().int().min(0),
  etag: z.string(),
  durability: durabilitySchema,
  replicas: z.array(replicaStatusSchema),
  /** Absent for a volume that could not be opened. */
  checksums: checksumStatusSchema.optional(),
})
export type VolumeStatus = z.infer<typeof volumeStatusSchema>

export const groupKindSchema = z.enum(['read', 'write', 'scrub'])
export const groupStatusSchema = z.enum(['pending', 'done', 'failed'])
export const operationStatusSchema = z.enum(['queued', 'started', 'done', 'failed'])

export const replicaOperationSchema = z.object({
  replica: z.string(),
  mode: replicaModeSchema,
  status: operationStatusSchema,
  bytes: z.number().int().min(0),
  error: ioErrorSchema.nullable(),
  durationMs: z.number().min(0),
})

export const operationGroupSchema = z.object({
  id: z.string(),
  volume: z.string(),
  kind: groupKindSchema,
  offset: z.number().int().min(0),
  length: z.number().int().min(0),
  status: groupStatusSchema,
  createdAt: z.string(),
  finishedAt: z.string().nullable(),
  operations: z.array(replicaOperationSchema),
  /** A write whose body was verified against its Content-Digest (RFC 9530): the digests it matched, base64 by algorithm. */
  digest: z.object({ 'sha-256': z.string().optional(), 'sha-512': z.string().optional() }).optional(),
})
export type OperationGroupView = z.infer<typeof operationGroupSchema>
export type GroupKind = z.infer<typeof groupKindSchema>
export type GroupStatus = z.infer<typeof groupStatusSchema>
export type OperationStatus = z.infer<typeof operationStatusSchema>
