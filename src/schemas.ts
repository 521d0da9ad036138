import { z } from 'zod'

/** Volume names and replica ids: safe as file names and URL segments. */
export const NAME_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/
export const nameSchema = z.string().regex(NAME_PATTERN, 'must be 1-128 characters of A-Z a-z 0-9 . _ - and not start with a dot')

export const replicaModeSchema = z.enum(['sync', 'async'])
export const durabilitySchema = z.enum(['os', 'fsync'])

export const replicaSpecSchema = z.strictObject({
  id: nameSchema,
  path: z.string().min(1).max(4096).refine((p) => !p.includes('\0'), 'must not contain NUL bytes'),
  read: z.boolean().default(true),
  write: z.boolean().default(true),
  mode: replicaModeSchema.default('sync'),
  label: z.json().default(null),
  maxBytesPerSecond: z.number().int().positive().max(Number.MAX_SAFE_INTEGER).nullable().default(null),
})

export const volumeSpecSchema = z
  .strictObject({
    replicas: z.array(replicaSpecSchema).min(1).max(16),
    durability: durabilitySchema.default('os'),
  })
  .superRefine((spec, ctx) => {
    if (!spec.replicas.some((r) => r.read)) ctx.addIssue({ code: 'custom', path: ['replicas'], message: 'at least one replica must have read: true' })
    if (!spec.replicas.some((r) => r.write)) ctx.addIssue({ code: 'custom', path: ['replicas'], message: 'at least one replica must have write: true' })
    const ids = new Set<string>()
    const paths = new Set<string>()
    spec.replicas.forEach((r, i) => {
      if (ids.has(r.id)) ctx.addIssue({ code: 'custom', path: ['replicas', i, 'id'], message: `duplicate replica id ${r.id}` })
      if (paths.has(r.path)) ctx.addIssue({ code: 'custom', path: ['replicas', i, 'path'], message: `duplicate replica path ${r.path}` })
      ids.add(r.id)
      paths.add(r.path)
    })
  })

export type ReplicaSpec = z.infer<typeof replicaSpecSchema>
export type VolumeSpec = z.infer<typeof volumeSpecSchema>
export type ReplicaMode = z.infer<typeof replicaModeSchema>

export const replicaStateSchema = z.enum(['in-sync', 'behind', 'resyncing', 'failed'])
export type ReplicaState = z.infer<typeof replicaStateSchema>

export const ioErrorSchema = z.object({ code: z.string(), message: z.string() })
export type IoError = z.infer<typeof ioErrorSchema>

export const replicaStatusSchema = z.object({
  id: z.string(),
  path: z.string(),
  read: z.boolean(),
  write: z.boolean(),
  mode: replicaModeSchema,
  label: z.json(),
  maxBytesPerSecond: z.number().nullable(),
  state: replicaStateSchema,
  dirtyBytes: z.number().int().min(0),
  cachedPercent: z.number().min(0).max(100),
  error: ioErrorSchema.nullable(),
})

export const volumeStatusSchema = z.object({
  name: z.string(),
  state: z.enum(['ok', 'degraded']),
  size: z.number().int().min(0),
  etag: z.string(),
  durability: durabilitySchema,
  replicas: z.array(replicaStatusSchema),
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
})
export type OperationGroupView = z.infer<typeof operationGroupSchema>
export type GroupKind = z.infer<typeof groupKindSchema>
export type GroupStatus = z.infer<typeof groupStatusSchema>
export type OperationStatus = z.infer<typeof operationStatusSchema>

/** Query of GET /operations/{id}. */
export const groupQuerySchema = z.strictObject({ wait: z.coerce.number().int().min(0).max(60_000).optional() })
/** Query of GET /volumes/{name}/operations. */
export const groupListQuerySchema = z.strictObject({ status: groupStatusSchema.optional() })
/** Query of the data routes. */
export const dataQuerySchema = z.strictObject({ replica: nameSchema.optional() })
