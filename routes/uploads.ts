import { join } from 'node:path'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { z } from 'zod'
import { isEngineError } from '../src/engine/errors.js'
import type { OperationGroup } from '../src/engine/operation-group.js'
import { receive, stillHeld, UploadRegistry, type UploadRecord } from '../src/engine/upload-registry.js'
import { METADATA_DIR } from '../src/engine/volume-registry.js'
import type { Volume } from '../src/engine/volume.js'
import { headerOf } from '../src/http/data-requests.js'
import { problems } from '../src/http/problem.js'
import * as tus from '../src/http/tus.js'
import { parseOr400, volumeOr404 } from './lookup.js'

const nameParams = z.object({ name: z.string() })
const uploadParams = z.object({ name: z.string(), id: z.string() })

/** tus 1.0.0 resumable uploads into a volume (README "Resumable uploads (tus)"). */
export default async function uploadRoutes(app: FastifyInstance): Promise<void> {
  // Bodies are bytes for the volume: no parser may consume them.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, _payload, done) => done(null))
  const uploads = new UploadRegistry(join(app.config.dataDir, METADATA_DIR, 'uploads'), app.config.uploadExpiryMs)
  const sweep = () => void uploads.sweep().catch((err) => app.log.warn({ err }, 'uploads: sweep failed'))
  const sweeper = setInterval(sweep, Math.min(Math.max(app.config.uploadExpiryMs / 4, 1_000), 600_000)).unref()
  app.addHook('onReady', (done) => (sweep(), done()))
  app.addHook('onClose', (_app, done) => (clearInterval(sweeper), done()))

  app.addHook('onRequest', (request, _reply, done) => {
    done(request.method === 'OPTIONS' || headerOf(request, 'tus-resumable') === tus.TUS_VERSION ? undefined : tus.tusProblems.resumableRequired())
  })
  app.addHook('onSend', (_request, reply, payload, done) => {
    reply.header('tus-resumable', tus.TUS_VERSION)
    if (reply.statusCode === 460) reply.raw.statusMessage = 'Checksum Mismatch'
    done(null, payload)
  })

  const limits = (request: FastifyRequest) => ({ idleTimeoutMs: app.config.bodyIdleTimeoutMs, maxVolumeBytes: app.config.maxVolumeBytes, stopBody: (err: Error) => request.raw.destroy(err) })

  /** The request's body into the upload; Upload-Checksum makes it a checked write (460 when it fails, nothing written). */
  async function receiveBody(request: FastifyRequest, volume: Volume, record: UploadRecord, checksum: ReturnType<typeof tus.checksumOf>) {
    try {
      return await receive(uploads, volume, record, { body: request.raw, contentLength: tus.bodyLength(request), check: checksum?.check, limits: limits(request) })
    } catch (err) {
      if (checksum && isEngineError(err, 'digest-mismatch')) throw tus.tusProblems.checksumMismatch(checksum.algorithm)
      throw err
    }
  }

  /** 410 (and the upload forgotten) when the volume no longer holds what an unfinished upload wrote. */
  async function checkHeld(volume: Volume, record: UploadRecord): Promise<void> {
    if (record.offset === record.length || (await stillHeld(volume, record))) return
    await uploads.remove(record)
    throw tus.tusProblems.gone(record.id)
  }

  async function checked(volume: Volume, name: string, id: string): Promise<UploadRecord | undefined> {
    const record = await uploads.get(name, id)
    if (record) await checkHeld(volume, record)
    return record
  }

  /** Runs `work` holding the upload (423 while another request does), with its record (404 when unknown or expired). */
  async function holding<T>(name: string, id: string, work: (record: UploadRecord) => Promise<T>): Promise<T> {
    if (!uploads.lock(name, id)) throw tus.tusProblems.locked(id)
    try {
      const record = await uploads.get(name, id)
      if (!record) throw problems.notFound(`no upload ${id} on volume ${name} (unknown, finished long ago, or expired)`)
      return await work(record)
    } finally {
      uploads.unlock(name, id)
    }
  }

  app.options('/volumes/:name/uploads', async (request, reply) => {
    volumeOr404(app, parseOr400(nameParams, request.params).name)
    reply.header('tus-version', tus.TUS_VERSION).header('tus-extension', tus.TUS_EXTENSIONS)
    reply.header('tus-max-size', String(app.config.maxVolumeBytes)).header('tus-checksum-algorithm', tus.CHECKSUM_ALGORITHMS.join(','))
    return reply.code(204).send()
  })

  app.post('/volumes/:name/uploads', async (request, reply) => {
    const { name } = parseOr400(nameParams, request.params)
    const volume = volumeOr404(app, name)
    if (headerOf(request, 'upload-defer-length') !== undefined) throw problems.badRequest('Upload-Defer-Length is not supported: send Upload-Length')
    const length = tus.integerHeader(request, 'upload-length')
    if (length === undefined) throw problems.badRequest('Upload-Length is required')
    const metadata = headerOf(request, 'upload-metadata') ?? null
    const placement = tus.placementOf(tus.parseMetadata(metadata ?? undefined), volume)
    if (placement.start + length > app.config.maxVolumeBytes) throw problems.contentTooLarge(`the upload would reach past ${app.config.maxVolumeBytes} bytes (Tus-Max-Size)`)
    const withBody = tus.bodyLength(request) !== 0
    if (withBody && !tus.isOffsetStream(request)) throw tus.tusProblems.notOffsetStream()
    const checksum = tus.checksumOf(request)
    let record = await uploads.create({ volume: name, ...placement, length, metadata })
    let group: OperationGroup | null = null
    if (withBody || (length === 0 && placement.replace)) {
      try {
        ;({ group, record } = await receiveBody(request, volume, record, checksum))
      } catch (err) {
        // Nobody knows its URL yet: it goes with the failed request.
        await uploads.remove(record)
        throw err
      }
      tus.offsetHeaders(reply, record, uploads.expiresAt(record))
    } else if (length > 0) reply.header('upload-expires', new Date(uploads.expiresAt(record)).toUTCString())
    if (group) reply.header('operation-id', group.id)
    return reply.code(201).header('location', `/volumes/${name}/uploads/${record.id}`).send()
  })

  app.head('/volumes/:name/uploads/:id', async (request, reply) => {
    const { name, id } = parseOr400(uploadParams, request.params)
    const volume = volumeOr404(app, name)
    // While a PATCH holds the upload, its record is the last acknowledged state: answered as it is.
    const record = uploads.lock(name, id) ? await checked(volume, name, id).finally(() => uploads.unlock(name, id)) : await uploads.get(name, id)
    if (!record) throw problems.notFound(`no upload ${id} on volume ${name} (unknown, finished long ago, or expired)`)
    tus.offsetHeaders(reply, record, uploads.expiresAt(record)).header('upload-length', String(record.length)).header('cache-control', 'no-store')
    if (record.metadata !== null) reply.header('upload-metadata', record.metadata)
    return reply.code(200).send()
  })

  app.patch('/volumes/:name/uploads/:id', async (request, reply) => {
    const { name, id } = parseOr400(uploadParams, request.params)
    const volume = volumeOr404(app, name)
    if (!tus.isOffsetStream(request)) throw tus.tusProblems.notOffsetStream()
    const sent = tus.integerHeader(request, 'upload-offset')
    if (sent === undefined) throw problems.badRequest('Upload-Offset is required')
    const checksum = tus.checksumOf(request)
    return holding(name, id, async (record) => {
      await checkHeld(volume, record)
      if (sent !== record.offset) throw tus.tusProblems.offsetConflict(sent, record.offset)
      const received = await receiveBody(request, volume, record, checksum)
      if (received.group) reply.header('operation-id', received.group.id)
      return tus.offsetHeaders(reply, received.record, uploads.expiresAt(received.record)).code(204).send()
    })
  })

  app.delete('/volumes/:name/uploads/:id', async (request, reply) => {
    const { name, id } = parseOr400(uploadParams, request.params)
    volumeOr404(app, name)
    await holding(name, id, (record) => uploads.remove(record))
    return reply.code(204).send()
  })
}
