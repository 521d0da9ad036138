import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { eventually } from './eventually.js'

export const SERVER_ENTRY = fileURLToPath(new URL('../../dist/src/server.js', import.meta.url))
export const serverBuilt = existsSync(SERVER_ENTRY)

export interface ServerProcess {
  child: ChildProcess
  url: string
  /** Everything the process printed so far. */
  output: () => string
  /** Resolves with the exit code (or signal) once the process ends. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** Starts the compiled server as a child process on a free port and waits until it listens. */
export async function startServer(env: Record<string, string>, timeoutMs = 20_000): Promise<ServerProcess> {
  const child = spawn(process.execPath, [SERVER_ENTRY], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  child.stderr!.on('data', (d) => (out += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)
    if (match) return { child, url: match[1], output: () => out, exited }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`server did not start:\n${out}`)
    }
    await new Promise((r) => setTimeout(r, 25))
  }
}

/** Resolves once the server's volumes are open (GET /readyz is 200); before that, volume routes answer 503. */
export async function whenReady(server: ServerProcess, timeoutMs = 20_000): Promise<void> {
  await eventually(async () => (await fetch(`${server.url}/readyz`)).status === 200, 'readyz', timeoutMs)
}

/** One JSON log line the server printed. */
export interface LogLine {
  level: number
  msg: string
  [key: string]: unknown
}

/** The JSON log lines the process printed, in order. */
export function logLines(server: ServerProcess): LogLine[] {
  return server
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as LogLine)
}
