// Runs the built CLI (node dist/src/cli/main.js) as a child process and reads what it prints: JSON lines
// when its stdout is a pipe, a terminal's output when run under `script` (util-linux) for a pty.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { startServer, whenReady, type ServerProcess } from '../helpers/server-process.js'
import { scratch } from '../helpers/scratch.js'

export const CLI_ENTRY = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url))
export const cliBuilt = existsSync(CLI_ENTRY)
export const skipUnbuilt = cliBuilt ? false : 'run npm run build first (the CLI runs from dist/)'

/** `script -qfc` runs a command under a pseudo-terminal; false where util-linux's script is missing. */
export const hasScript = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0

export interface CliRun {
  child: ChildProcess
  stdout: () => string
  stderr: () => string
  /** stdout's complete lines parsed as JSON (lines that are not JSON are skipped). */
  lines: () => Record<string, any>[]
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Resolves with the first JSON line matching `predicate` (rejects if the process ends first, or after timeoutMs). */
  waitForLine: (predicate: (line: Record<string, any>) => boolean, timeoutMs?: number) => Promise<Record<string, any>>
}

/** Starts the CLI with `args`; env is added to the test's own (FILEMIRROR_CACHE_DIR should point into a scratch dir). */
export function startCli(args: string[], env: Record<string, string> = {}, options: { cwd?: string } = {}): CliRun {
  const child = spawn(process.execPath, [CLI_ENTRY, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd })
  return watch(child)
}

/** Runs the CLI under a pseudo-terminal (script -qfc): its stdout is a TTY, as a person's terminal. */
export function startCliInPty(args: string[], env: Record<string, string> = {}): CliRun {
  // exec: with no shell between script(1) and the CLI, a Ctrl-C reaches only the CLI (dash, as $SHELL, dies of it: exit 130).
  const command = ['exec', ...[process.execPath, CLI_ENTRY, ...args].map(shellQuote)].join(' ')
  const child = spawn('script', ['-qfec', command, '/dev/null'], { env: { ...process.env, SHELL: '/bin/sh', TERM: 'xterm', COLUMNS: '120', LINES: '40', ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
  return watch(child)
}

function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`
}

function watch(child: ChildProcess): CliRun {
  let out = ''
  let err = ''
  const listeners = new Set<() => void>()
  child.stdout!.on('data', (d) => {
    out += d
    for (const l of listeners) l()
  })
  child.stderr!.on('data', (d) => (err += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      resolve({ code, signal })
      for (const l of listeners) l()
    }),
  )
  const lines = () =>
    out
      .split('\n')
      .slice(0, -1)
      .flatMap((line) => {
        try {
          const value = JSON.parse(line) as unknown
          return value && typeof value === 'object' ? [value as Record<string, any>] : []
        } catch {
          return []
        }
      })
  const waitForLine = (predicate: (line: Record<string, any>) => boolean, timeoutMs = 30_000) =>
    new Promise<Record<string, any>>((resolve, reject) => {
      const check = () => {
        const found = lines().find(predicate)
        if (found) done(() => resolve(found))
        else if (child.exitCode !== null || child.signalCode !== null) done(() => reject(new Error(`the CLI ended (${child.exitCode ?? child.signalCode}) first; stdout:\n${out}\nstderr:\n${err}`)))
      }
      const timer = setTimeout(() => done(() => reject(new Error(`no such line after ${timeoutMs} ms; stdout:\n${out}\nstderr:\n${err}`))), timeoutMs)
      const done = (then: () => void) => {
        clearTimeout(timer)
        listeners.delete(check)
        then()
      }
      listeners.add(check)
      check()
    })
  return { child, stdout: () => out, stderr: () => err, lines, exited, waitForLine }
}

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  lines: Record<string, any>[]
  /** The final {"type":"result"} line, if any. */
  result: Record<string, any> | undefined
}

/** Runs the CLI to its end. */
export async function runCli(args: string[], env: Record<string, string> = {}, options: { cwd?: string } = {}): Promise<CliResult> {
  const run = startCli(args, env, options)
  const { code, signal } = await run.exited
  const lines = run.lines()
  return { code, signal, stdout: run.stdout(), stderr: run.stderr(), lines, result: lines.filter((l) => l.type === 'result').pop() }
}

/** Kills the CLI with SIGKILL (as a crash or a pulled plug) and waits until it is gone. */
export async function killCli(run: CliRun): Promise<void> {
  if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL')
  await run.exited
}

/** A real server over a scratch DATA_DIR, ready, stopped (SIGKILL) when the test ends. */
export async function cliServer(t: Test, env: Record<string, string> = {}): Promise<{ server: ServerProcess; url: string; dataDir: string }> {
  const dataDir = env.DATA_DIR ?? (await scratch(t, 'filemirror-cli-'))
  const server = await startServer({ DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: '0', ...env })
  t.teardown(async () => {
    if (server.child.exitCode === null) server.child.kill('SIGKILL')
    await server.exited
  })
  await whenReady(server)
  return { server, url: server.url, dataDir }
}

/** PUT /volumes/{name} with these replicas. */
export async function createVolume(url: string, name: string, replicas: Record<string, unknown>[], headers: Record<string, string> = {}): Promise<void> {
  const res = await fetch(`${url}/volumes/${name}`, { method: 'PUT', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ replicas }) })
  if (res.status !== 201 && res.status !== 200) throw new Error(`creating volume ${name}: ${res.status} ${await res.text()}`)
}

/** A whole PUT of `body`; returns the reply's operation-id. */
export async function putData(url: string, name: string, body: Uint8Array, headers: Record<string, string> = {}): Promise<string> {
  const res = await fetch(`${url}/volumes/${name}/data`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', ...headers }, body: new Uint8Array(body) })
  if (res.status !== 200 && res.status !== 202) throw new Error(`PUT ${name}: ${res.status} ${await res.text()}`)
  await res.arrayBuffer()
  return res.headers.get('operation-id')!
}

export async function readVolume(url: string, name: string, headers: Record<string, string> = {}): Promise<Buffer> {
  const res = await fetch(`${url}/volumes/${name}/data`, { headers })
  if (res.status !== 200) throw new Error(`GET ${name}: ${res.status}`)
  return Buffer.from(await res.arrayBuffer())
}

/** A loopback URL where nothing listens (a port just freed). */
export async function deadUrl(): Promise<string> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return `http://127.0.0.1:${port}`
}
