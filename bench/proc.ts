/** Process helpers for the benchmark: free ports, waiting for a server, peak RSS (VmHWM) of a process tree. */
import { type ChildProcess, spawn, type SpawnOptions } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import { chmodSync, closeSync, openSync, readdirSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs'
import net from 'node:net'

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** The median (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Polls `url` until it answers (any status below 500), or throws after `timeoutMs`. */
export async function waitForHttp(url: string, timeoutMs = 20_000, alive?: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    if (alive && !alive()) throw new Error(`process for ${url} exited before it answered`)
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      if (res.status < 500) return
      last = new Error(`status ${res.status}`)
    } catch (err) {
      last = err
    }
    await sleep(50)
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms: ${String(last)}`)
}

/** The pid and every descendant (nginx and Apache workers), from /proc. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      const list = children.get(ppid) ?? []
      list.push(Number(entry))
      children.set(ppid, list)
    } catch {
      // the process ended meanwhile
    }
  }
  const out: number[] = []
  const walk = (pid: number) => {
    out.push(pid)
    for (const c of children.get(pid) ?? []) walk(c)
  }
  walk(root)
  return out
}

function statusField(pid: number, field: string): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : 0
  } catch {
    return 0
  }
}

/** Summed peak RSS (VmHWM, MiB) of a process tree. Shared pages (code, page-cache mappings) count once per process. */
export function peakRssMiB(root: number): number {
  return processTree(root).reduce((n, pid) => n + statusField(pid, 'VmHWM'), 0)
}

/** Resets VmHWM to the current RSS for every process of the tree (Linux >= 4.0, needs ptrace rights: root or same user). */
export function resetPeakRss(root: number): boolean {
  let ok = true
  for (const pid of processTree(root)) {
    try {
      writeFileSync(`/proc/${pid}/clear_refs`, '5')
    } catch {
      ok = false
    }
  }
  return ok
}

export interface Started {
  child: ChildProcess
  exited: Promise<number | null>
  alive: () => boolean
}

/** Spawns with stdout/stderr appended to `logPath` (the way a service logs to a file in production). */
export function spawnLogged(command: string, args: string[], logPath: string, options: SpawnOptions = {}): Started {
  const fd = openSync(logPath, 'a')
  const child = spawn(command, args, { ...options, stdio: ['ignore', fd, fd] })
  let running = true
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      running = false
      resolve(code)
    }),
  )
  return { child, exited, alive: () => running }
}

/** SIGTERM (or `signal`), then SIGKILL after `graceMs`. */
export async function stopChild(started: Started, graceMs = 15_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!started.alive()) return
  started.child.kill(signal)
  const timer = setTimeout(() => started.child.kill('SIGKILL'), graceMs)
  await started.exited
  clearTimeout(timer)
}

const CLOCK_TICKS = 100

/** CPU seconds (user + system) used so far by a process tree; diff two readings for the CPU a run cost. */
export function cpuSeconds(root: number): number {
  const { user, system } = cpuSplit(root)
  return user + system
}

/** CPU seconds in user space and in the kernel so far, of a process tree (a change of mode shows which side moved). */
export function cpuSplit(root: number): { user: number; system: number } {
  let user = 0
  let system = 0
  for (const pid of processTree(root)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      // utime and stime are fields 14 and 15 of /proc/pid/stat; fields[0] here is field 3.
      user += Number(fields[11])
      system += Number(fields[12])
    } catch {
      // the process ended meanwhile
    }
  }
  return { user: user / CLOCK_TICKS, system: system / CLOCK_TICKS }
}

/** A file of `size` random bytes, readable and writable by every peer (nginx, Apache run as other users). */
export function makeRandomFile(path: string, size: number): void {
  const fd = openSync(path, 'w', 0o666)
  const chunk = Buffer.allocUnsafe(4 << 20)
  for (let at = 0; at < size; at += chunk.length) writeSync(fd, randomFillSync(chunk), 0, Math.min(chunk.length, size - at), at)
  closeSync(fd)
  chmodSync(path, 0o666)
}

/** `length` bytes of a file from `offset` (what a server should have served or written there). */
export function readFileAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r')
  const buffer = Buffer.alloc(length)
  readSync(fd, buffer, 0, length, offset)
  closeSync(fd)
  return buffer
}
