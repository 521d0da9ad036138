import { resolve } from 'node:path'
import { z } from 'zod'

const port = z.coerce.number().int().min(0).max(65535)
const positiveInt = z.coerce.number().int().positive()

/** The service's settings, read from the environment and validated once at start. */
export const configSchema = z.object({
  PORT: port.default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATA_DIR: z.string().min(1).default('./data'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  STORAGE_ROOTS: z.string().optional(),
  /** How long write-behind may go on after SIGTERM before its journal is left for the next start. */
  SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).default(10_000),
  /** Finished operation groups are kept at least this long... */
  GROUP_RETENTION_MS: positiveInt.default(600_000),
  /** ...within this many groups. */
  MAX_GROUPS: positiveInt.default(100_000),
  /** Read groups are kept in a separate, smaller window so reads never crowd out writes. */
  MAX_READ_GROUPS: positiveInt.default(1_000),
  /** Ranges one GET may ask for before the Range header is ignored. */
  MAX_RANGES: positiveInt.default(100),
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
  }
}
