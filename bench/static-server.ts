/** The @fastify/static peer: Fastify 5 serving STATIC_ROOT (ranges on), logging each request at LOG_LEVEL (info by default). */
import fastifyStatic from '@fastify/static'
import Fastify from 'fastify'

const level = process.env.LOG_LEVEL ?? 'info'
const app = Fastify({ logger: level === 'silent' ? false : { level } })
await app.register(fastifyStatic, { root: process.env.STATIC_ROOT!, acceptRanges: true })
await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' })
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void app.close().then(() => process.exit(0)))
