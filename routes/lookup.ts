import type { FastifyInstance } from 'fastify'
import type { z } from 'zod'
import { problems } from '../src/http/problem.js'
import { NAME_PATTERN } from '../src/engine/spec.js'
import type { Volume } from '../src/engine/volume.js'

/** Parses with a zod schema; a mismatch becomes a 400 problem naming every bad field. */
export function parseOr400<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  return schema.parse(value)
}

/** The named volume, or a 404 (503 while volumes are still opening). */
export function volumeOr404(app: FastifyInstance, name: string): Volume {
  if (!NAME_PATTERN.test(name)) throw problems.notFound(`no volume named ${JSON.stringify(name)}`)
  const volume = app.volumes.get(name)
  if (volume) return volume
  if (!app.isReady()) throw problems.unavailable('volumes are still being opened', 1)
  throw problems.notFound(`no volume named ${name}`)
}
