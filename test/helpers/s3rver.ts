import { spawn, type ChildProcess } from 'node:child_process'
import { createRequire } from 'node:module'
import { scratch } from './scratch.js'

/** s3rver's fixed credentials: it checks signatures made with them, and refuses any other. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }

/** An s3rver (a test double of S3 on the filesystem) in a child process on a loopback port. */
export interface S3rverHandle {
  /** `http://127.0.0.1:<port>`: use path-style addressing. */
  readonly endpoint: string
  readonly port: number
  /** Where it keeps buckets and objects; kept across stop() and start(). */
  readonly directory: string
  /** Whether the process is running. */
  readonly running: boolean
  /** Kills the process (SIGKILL: connections drop as a crashed or unplugged server's would). */
  stop(): Promise<void>
  /** Starts it again on the same port and directory. */
  start(): Promise<void>
}

const S3RVER_MAIN = createRequire(import.meta.url).resolve('s3rver')

/**
 * The child: runs s3rver on the port given (0: any free one), prints its port, and exits when its stdin
 * closes, so it never outlives the test process.
 */
const CHILD = `
const S3rver = require(process.argv[1]);
const [directory, port, buckets] = process.argv.slice(2);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
new S3rver({ address: '127.0.0.1', port: Number(port), silent: true, directory, configureBuckets: JSON.parse(buckets).map((name) => ({ name })) })
  .run()
  .then((address) => process.stdout.write(JSON.stringify({ port: address.port }) + '\\n'))
  .catch((err) => { process.stderr.write(String(err && err.stack || err)); process.exit(1); });
`

function launch(directory: string, port: number, buckets: string[], timeoutMs: number): Promise<{ child: ChildProcess; port: number }> {
  // s3rver makes ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only has in its legacy provider:
  // without it every truncated listing is a 500 InternalError.
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '-e', CHILD, S3RVER_MAIN, directory, String(port), JSON.stringify(buckets)], { stdio: ['pipe', 'pipe', 'pipe'] })
  return new Promise((resolve, reject) => {
    let out = ''
    let err = ''
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`s3rver did not start within ${timeoutMs} ms:\n${err}`))
    }, timeoutMs)
    child.stderr!.on('data', (d) => (err += d))
    child.stdout!.on('data', (d) => {
      out += d
      const line = out.split('\n')[0]
      if (out.includes('\n')) {
        clearTimeout(timer)
        try {
          resolve({ child, port: (JSON.parse(line) as { port: number }).port })
        } catch {
          reject(new Error(`s3rver printed ${line}`))
        }
      }
    })
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`s3rver exited (${code ?? signal}) before listening:\n${err}`))
    })
  })
}

/**
 * Starts s3rver in a fresh scratch directory with `buckets` created, on a free loopback port; it is stopped
 * when the test ends.
 */
export async function startS3rver(t: { teardown(fn: () => unknown): void }, buckets: string[] = ['filemirror'], timeoutMs = 20_000): Promise<S3rverHandle> {
  const directory = await scratch(t, 'filemirror-s3rver-')
  const first = await launch(directory, 0, buckets, timeoutMs)
  const port = first.port
  let child = first.child
  let running = true
  const stop = async () => {
    if (!running) return
    running = false
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  }
  t.teardown(stop)
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    directory,
    get running() {
      return running
    },
    stop,
    async start() {
      if (running) return
      ;({ child } = await launch(directory, port, buckets, timeoutMs))
      running = true
    },
  }
}
