// filemirror wait URL OPID: long-polls an operation group (GET /operations/{id}?wait=ms) until it settles.
import { CliError, failure, parseServerUrl, request } from './http.js'
import { jsonLine, outputMode, result } from './output.js'
import { formatDuration } from './format.js'

export interface WaitOptions {
  /** Give up after this many seconds (exit 1); none by default. */
  timeout?: number
  json?: boolean
}

interface GroupView {
  id: string
  volume: string
  kind: string
  offset: number
  length: number
  status: 'pending' | 'done' | 'failed'
  operations: { replica: string; mode: string; status: string; bytes: number; error: { code?: string; message?: string } | null; durationMs: number }[]
}

/** Longest wait the server takes per request (its own limit is 60 s). */
const POLL_MS = 30_000

/** OPID, or the Location a write answered (/operations/OPID), or a whole URL of it. */
export function operationId(text: string): string {
  const m = /(?:^|\/)operations\/([^/?#]+)\/?(?:[?#].*)?$/.exec(text)
  return decodeURIComponent(m ? m[1] : text)
}

function describe(group: GroupView): string {
  const ops = group.operations
    .map((op) => `${op.replica} ${op.status}${op.error ? ` (${op.error.code ?? ''}${op.error.message ? `: ${op.error.message}` : ''})` : ''}`)
    .join(', ')
  return `operation ${group.id} (${group.kind} of ${group.length} bytes at ${group.offset} on ${group.volume}): ${group.status}${ops ? `: ${ops}` : ''}`
}

export async function waitCommand(serverText: string, opidText: string, options: WaitOptions): Promise<number> {
  const mode = outputMode(options.json)
  const base = parseServerUrl(serverText)
  const id = operationId(opidText)
  const url = `${base}/operations/${encodeURIComponent(id)}`
  const deadline = options.timeout === undefined ? Infinity : Date.now() + options.timeout * 1000
  const startedAt = Date.now()
  let printedPending = false
  for (;;) {
    const waitMs = Math.max(0, Math.min(POLL_MS, deadline - Date.now()))
    const res = await request(`${url}?wait=${Math.floor(waitMs)}`, { headers: { accept: 'application/json' } })
    if (res.status === 404) {
      await res.body?.cancel()
      throw new CliError(`no operation group ${id} on ${base} (unknown, or no longer retained)`, 1, { status: 404 })
    }
    if (!res.ok) throw await failure(res, `GET ${url}`)
    const group = (await res.json()) as GroupView
    if (group.status !== 'pending') {
      const ok = group.status === 'done'
      result(mode, { ok, command: 'wait', id: group.id, status: group.status, group }, describe(group))
      return ok ? 0 : 1
    }
    if (Date.now() >= deadline) {
      result(mode, { ok: false, command: 'wait', id: group.id, status: 'pending', timedOut: true, group }, `${describe(group)}; still pending after ${formatDuration(options.timeout ?? 0)}`)
      return 1
    }
    // A tick per poll: where each replica stands.
    if (mode === 'json') jsonLine({ type: 'progress', command: 'wait', id: group.id, status: group.status, elapsedSeconds: Math.round((Date.now() - startedAt) / 100) / 10, operations: group.operations })
    else if (!printedPending) {
      process.stdout.write(`waiting: ${describe(group)}\n`)
      printedPending = true
    }
  }
}
