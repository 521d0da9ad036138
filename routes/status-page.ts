import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { problems } from '../src/problem.js'

/** The page's files, by URL path: public/ sits one level above routes/, two above dist/routes/. */
const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'status.html', type: 'text/html; charset=utf-8' },
  '/status.js': { file: 'status.js', type: 'text/javascript; charset=utf-8' },
  '/status.css': { file: 'status.css', type: 'text/css; charset=utf-8' },
}

/** Same-origin only: the page fetches the API and the event stream and nothing else. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

async function readPublic(file: string): Promise<Buffer> {
  for (const candidate of [`../public/${file}`, `../../public/${file}`]) {
    try {
      return await readFile(fileURLToPath(new URL(candidate, import.meta.url)))
    } catch {
      // try the next layout
    }
  }
  throw problems.notFound(`${file} is not installed`)
}

/** The live status page at `/` and its script and style. */
export default async function statusPageRoutes(app: FastifyInstance): Promise<void> {
  const cache = new Map<string, Buffer>()
  for (const [path, { file, type }] of Object.entries(FILES)) {
    app.get(path, async (_request, reply) => {
      let body = cache.get(file)
      if (!body) {
        body = await readPublic(file)
        cache.set(file, body)
      }
      return reply.type(type).header('cache-control', 'no-cache').header('content-security-policy', CSP).header('x-content-type-options', 'nosniff').send(body)
    })
  }
}
