import { z } from 'zod'
import { groupStatusSchema } from '../engine/status.js'
import { nameSchema } from '../engine/spec.js'

/** Query of GET /operations/{id}. */
export const groupQuerySchema = z.strictObject({ wait: z.coerce.number().int().min(0).max(60_000).optional() })
/** Query of GET /volumes/{name}/operations. */
export const groupListQuerySchema = z.strictObject({ status: groupStatusSchema.optional() })
/** Query of the data routes. */
export const dataQuerySchema = z.strictObject({ replica: nameSchema.optional() })
