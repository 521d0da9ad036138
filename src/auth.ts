import { createHash, timingSafeEqual } from 'node:crypto'

/** Routes a load balancer or orchestrator probes without credentials. */
export const OPEN_PATHS = new Set(['/healthz', '/readyz'])

const digest = (s: string) => createHash('sha256').update(s).digest()

/** Whether an Authorization header carries the bearer token; compared in constant time (hashes equalise lengths). */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(header ?? '')
  const presented = match ? match[1] : ''
  return timingSafeEqual(digest(presented), digest(token)) && match !== null
}
