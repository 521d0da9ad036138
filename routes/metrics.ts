import type { FastifyInstance } from 'fastify'

/** Prometheus scrape endpoint (text exposition format). */
export default async function metricsRoutes(app: FastifyInstance): Promise<void> {
  app.get('/metrics', async (_request, reply) => {
    const body = await app.metrics.text()
    return reply.type(app.metrics.contentType).send(body)
  })
}
