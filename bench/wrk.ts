/** Drives wrk with Lua scripts that pick random block-aligned ranges, and parses what it measured. */
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

export interface Load {
  method: 'GET' | 'PUT'
  /** Bytes per request, and the alignment of the random offsets. */
  block: number
  /** Size of the file the offsets fall in. */
  size: number
}

/** The loads profile.ts and ab.ts can drive, by name, on a file of `size` bytes. */
export function namedLoads(size: number): Record<string, Load> {
  return {
    get4k: { method: 'GET', block: 4096, size },
    put4k: { method: 'PUT', block: 4096, size },
    get1m: { method: 'GET', block: 1 << 20, size },
    put1m: { method: 'PUT', block: 1 << 20, size },
    /** PUT 4 KiB into a volume with an async mirror throttled to 8 MiB/s, starting in sync. */
    'put4k-mirror': { method: 'PUT', block: 4096, size },
  }
}

export interface WrkResult {
  requests: number
  seconds: number
  requestsPerSecond: number
  /** Payload bytes moved (requests x block) per second, in MB/s (10^6). */
  mbPerSecond: number
  /** Bytes wrk read (headers included) per second, MB/s. */
  readMbPerSecond: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  maxMs: number
  /** connect + read + write + timeout errors, and responses with status >= 400. */
  socketErrors: number
  badStatus: number
}

/**
 * The Lua script: each of wrk's threads seeds its own generator; GET sends `Range: bytes=a-b`, PUT a
 * body of `block` bytes (random, the same for every request of a thread) with `Content-Range: bytes a-b/*`.
 */
export function luaScript(dir: string, load: Load, path: string): string {
  const file = join(dir, `${load.method.toLowerCase()}-${load.block}-${load.size}-${path.replace(/\W/g, '_')}.lua`)
  writeFileSync(
    file,
    `local path, size, block, method = "${path}", ${load.size}, ${load.block}, "${load.method}"
local blocks = math.floor(size / block)
local body = nil
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  math.randomseed((tid or 1) * 104729 + os.time())
  for i = 1, 10 do math.random() end
  if method == "PUT" then
    local parts = {}
    for i = 1, 256 do parts[i] = string.char(math.random(0, 255)) end
    body = string.rep(table.concat(parts), block / 256)
  end
end
function request()
  local off = math.random(0, blocks - 1) * block
  local last = off + block - 1
  if method == "GET" then
    return wrk.format("GET", path, { ["Range"] = "bytes=" .. off .. "-" .. last })
  end
  return wrk.format("PUT", path, { ["Content-Range"] = "bytes " .. off .. "-" .. last .. "/*", ["Content-Type"] = "application/octet-stream" }, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
`,
  )
  return file
}

export interface WrkOptions {
  seconds: number
  threads?: number
  connections?: number
}

export function runWrk(url: string, script: string, load: Load, options: WrkOptions): Promise<WrkResult> {
  const args = ['-t', String(options.threads ?? 2), '-c', String(options.connections ?? 32), '-d', `${options.seconds}s`, '--timeout', '10s', '--latency', '-s', script, url]
  return new Promise((resolve, reject) => {
    execFile('wrk', args, { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`wrk ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`))
      try {
        resolve(parseWrk(stdout, load))
      } catch (e) {
        reject(e)
      }
    })
  })
}

export function parseWrk(stdout: string, load: Load): WrkResult {
  const m = /WRKJSON (\{.*\})/.exec(stdout)
  if (!m) throw new Error(`no summary in wrk output:\n${stdout}`)
  const j = JSON.parse(m[1]) as Record<string, number>
  const seconds = j.duration_us / 1e6
  const rps = j.requests / seconds
  return {
    requests: j.requests,
    seconds,
    requestsPerSecond: rps,
    mbPerSecond: (rps * load.block) / 1e6,
    readMbPerSecond: j.bytes / seconds / 1e6,
    p50Ms: j.p50 / 1000,
    p90Ms: j.p90 / 1000,
    p99Ms: j.p99 / 1000,
    maxMs: j.max / 1000,
    socketErrors: j.connect + j.read + j.write + j.timeout,
    badStatus: j.status,
  }
}
