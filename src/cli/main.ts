#!/usr/bin/env node
// filemirror: the command-line client of the filemirror service, over its HTTP API only.
// Exit codes: 0 ok, 1 failed, 2 usage (a bad argument or option, or a missing one).
import { existsSync, readFileSync } from 'node:fs'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { getCommand, parseRangeOption } from './get.js'
import { CliError } from './http.js'
import { jsonLine, outputMode } from './output.js'
import { parseByteCount } from './format.js'
import { putCommand } from './put.js'
import { statusCommand } from './status.js'
import { waitCommand } from './wait.js'

/** The package's version, from its package.json (above dist/src/cli, or src/cli). */
function version(): string {
  for (const relative of ['../../../package.json', '../../package.json']) {
    const url = new URL(relative, import.meta.url)
    if (!existsSync(url)) continue
    try {
      const pkg = JSON.parse(readFileSync(url, 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'filemirror' && pkg.version) return pkg.version
    } catch {
      // not ours
    }
  }
  return 'unknown'
}

function byteCount(what: string) {
  return (text: string): number => {
    const n = parseByteCount(text)
    if (n === null) throw new InvalidArgumentError(`${what} must be a byte count (1048576, 64K, 8M, 1G)`)
    return n
  }
}

function positiveNumber(text: string): number {
  const n = Number(text)
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number of seconds')
  return n
}

function rangeOption(text: string) {
  try {
    return parseRangeOption(text)
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message.replace(/^--range "[^"]*": /, ''))
  }
}

const ENVIRONMENT = `
Environment:
  FILEMIRROR_TOKEN      bearer token for a server started with AUTH_TOKEN
  FILEMIRROR_CACHE_DIR  where put remembers unfinished uploads (default: $XDG_CACHE_HOME/filemirror or ~/.cache/filemirror)

Output: a progress bar on a terminal; JSON lines otherwise (or with --json): one object per progress tick,
then one {"type":"result"} line. Exit codes: 0 ok, 1 failed, 2 usage.`

/** The command running, for the error's result line. */
let running: { command: string; json: boolean } | null = null

function jsonOption(): Option {
  return new Option('--json', 'JSON lines even on a terminal')
}

export function buildProgram(): Command {
  const program = new Command('filemirror')
    .description('Command-line client of the filemirror service: resumable uploads (tus) and downloads (If-Range), replica status, operation waits.')
    .version(version(), '-V, --version')
    .showHelpAfterError('(add --help for usage)')
    .addHelpText('after', ENVIRONMENT)
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(text.startsWith('error:') ? `filemirror: ${text}` : text) })

  program
    .command('put')
    .description('upload FILE to a volume with tus: it replaces the volume\'s content and sets its size, or with --offset writes at N (growing the volume if need be). An interrupted put resumes where it stopped when run again.')
    .argument('<FILE>', 'the file to upload')
    .argument('<URL>', 'the volume: http://host:port/volumes/NAME')
    .addOption(new Option('--offset <N>', 'write at byte offset N instead of replacing the content').argParser(byteCount('--offset')))
    .addOption(new Option('--limit-rate <BYTES>', 'send at most BYTES per second (64K, 8M…)').argParser(byteCount('--limit-rate')))
    .addOption(jsonOption())
    .action(async (file: string, url: string, opts: { offset?: number; limitRate?: number; json?: boolean }) => {
      running = { command: 'put', json: outputMode(opts.json) === 'json' }
      process.exitCode = await putCommand(file, url, opts)
    })

  program
    .command('get')
    .description('download a volume (or --range of it) to FILE. An interrupted get resumes with If-Range when run again (the ETag is kept in FILE.filemirror-etag); if the content changed meanwhile, it starts over. The final size is checked.')
    .argument('<URL>', 'the volume: http://host:port/volumes/NAME')
    .argument('<FILE>', 'where to write it (overwritten, unless it is the partial file of the same download)')
    .addOption(new Option('--range <FIRST-LAST>', 'only these bytes (inclusive; FIRST- for the rest)').argParser(rangeOption))
    .addOption(new Option('--limit-rate <BYTES>', 'receive at most BYTES per second (64K, 8M…)').argParser(byteCount('--limit-rate')))
    .addOption(jsonOption())
    .action(async (url: string, file: string, opts: { range?: ReturnType<typeof parseRangeOption>; limitRate?: number; json?: boolean }) => {
      running = { command: 'get', json: outputMode(opts.json) === 'json' }
      process.exitCode = await getCommand(url, file, opts)
    })

  program
    .command('status')
    .description('replica states, lag (dirty bytes) and ETA to in-sync, of every volume or of NAME')
    .argument('<URL>', 'the server: http://host:port')
    .argument('[NAME]', 'one volume')
    .option('-w, --watch', 'refresh every second (until Ctrl-C)')
    .addOption(new Option('--interval <SECONDS>', 'seconds between refreshes with --watch').default(1).argParser(positiveNumber))
    .option('--until-in-sync', 'with --watch: exit once every replica is in-sync')
    .addOption(jsonOption())
    .action(async (url: string, name: string | undefined, opts: { watch?: boolean; interval: number; untilInSync?: boolean; json?: boolean }) => {
      running = { command: 'status', json: outputMode(opts.json) === 'json' }
      process.exitCode = await statusCommand(url, name, opts)
    })

  program
    .command('wait')
    .description('wait for an operation group (the operation-id of a write) to settle: exit 0 when done, 1 when failed')
    .argument('<URL>', 'the server: http://host:port')
    .argument('<OPID>', 'the operation id (or its /operations/OPID location)')
    .addOption(new Option('--timeout <SECONDS>', 'give up after SECONDS (exit 1)').argParser(positiveNumber))
    .addOption(jsonOption())
    .action(async (url: string, opid: string, opts: { timeout?: number; json?: boolean }) => {
      running = { command: 'wait', json: outputMode(opts.json) === 'json' }
      process.exitCode = await waitCommand(url, opid, opts)
    })

  for (const command of program.commands) {
    command.exitOverride().showHelpAfterError(`(add --help for usage)`).configureOutput(program.configureOutput())
    command.addHelpText('after', ENVIRONMENT)
  }
  return program
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram()
  try {
    await program.parseAsync(argv)
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2
    const cliError = err instanceof CliError ? err : null
    const message = cliError ? cliError.message : `unexpected error: ${(err as Error)?.stack ?? String(err)}`
    if (running?.json) jsonLine({ type: 'result', ok: false, command: running.command, error: message, ...(cliError?.details ?? {}) })
    process.stderr.write(`filemirror${running ? ` ${running.command}` : ''}: ${message}\n`)
    return cliError?.exitCode ?? 1
  }
}

process.on('SIGINT', () => {
  // put and get leave what they did for the next run; status --watch handles its own.
  if (running?.command === 'status') return
  const resumable = running?.command === 'put' || running?.command === 'get'
  process.stderr.write(`\nfilemirror${running ? ` ${running.command}` : ''}: interrupted${resumable ? '; run the same command again to resume' : ''}\n`)
  process.exit(130)
})

main(process.argv).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    process.stderr.write(`filemirror: ${String(err)}\n`)
    process.exitCode = 1
  },
)
