import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { z } from 'zod'
import { parseOr400, volumeOr404 } from './lookup.js'

const nameParams = z.object({ name: z.string() })

/** Server-Sent Events: one stream of the engine's events, for one volume or all of them. */
export default async function eventRoutes(app: FastifyInstance): Promise<void> {
  // A stream lasts as long as its client: its duration would only distort the request histogram.
  const config = { metrics: false }

  // No automatic HEAD: it would run the stream and never end.
  app.get('/events', { config, exposeHeadRoute: false }, (request, reply) => stream(app, request, reply, undefined))

  app.get('/volumes/:name/events', { config, exposeHeadRoute: false }, (request, reply) => {
    const { name } = parseOr400(nameParams, request.params)
    volumeOr404(app, name)
    return stream(app, request, reply, name)
  })

  // Open streams would hold the server's close forever: end them first.
  app.addHook('preClose', async () => app.events.closeAll())
}

const STREAM_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  // Tell buffering proxies (nginx) to pass events through as they come.
  'x-accel-buffering': 'no',
}

function stream(app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, volume: string | undefined): void {
  const lastEventId = request.headers['last-event-id']
  reply.hijack()
  const res = reply.raw
  res.writeHead(200, { ...STREAM_HEADERS, connection: 'keep-alive', 'x-request-id': request.id })
  res.flushHeaders()
  const subscription = app.events.subscribe({
    volume,
    lastEventId: Array.isArray(lastEventId) ? lastEventId[0] : lastEventId,
    sink: {
      write: (text) => res.write(text),
      end: () => res.end(),
      destroy: () => res.destroy(),
    },
  })
  request.log.info({ volume: volume ?? null }, 'event stream opened')
  res.on('drain', () => subscription.drained())
  res.on('close', () => {
    subscription.close()
    if (subscription.dropped) request.log.warn({ volume: volume ?? null }, 'event stream client dropped: it fell behind')
    else request.log.info({ volume: volume ?? null }, 'event stream closed')
  })
}
