// The CLI's usage: --help for each command (exit 0), usage errors (exit 2) said on stderr, a server that
// cannot be reached (exit 1), and the package's bin entry.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { CLI_ENTRY, deadUrl, runCli, skipUnbuilt } from './cli-process.js'

t.test('--help: the program and each command, exit 0', { skip: skipUnbuilt }, async (t) => {
  const top = await runCli(['--help'])
  t.equal(top.code, 0)
  for (const command of ['put', 'get', 'status', 'wait']) t.match(top.stdout, new RegExp(`^  ${command} `, 'm'), `lists ${command}`)
  t.match(top.stdout, /FILEMIRROR_TOKEN/, 'names the token variable')
  t.match(top.stdout, /Exit codes: 0 ok, 1 failed, 2 usage/)

  const usages: Record<string, RegExp[]> = {
    put: [/Usage: filemirror put \[options\] <FILE> <URL>/, /--offset <N>/, /--limit-rate <BYTES>/, /resumes/],
    get: [/Usage: filemirror get \[options\] <URL> <FILE>/, /--range <FIRST-LAST>/, /If-Range/, /filemirror-etag/],
    status: [/Usage: filemirror status \[options\] <URL> \[NAME\]/, /-w, --watch/, /--until-in-sync/, /ETA/],
    wait: [/Usage: filemirror wait \[options\] <URL> <OPID>/, /--timeout <SECONDS>/, /exit 0 when\s+done, 1\s+when\s+failed/],
  }
  for (const [command, patterns] of Object.entries(usages)) {
    for (const args of [[command, '--help'], ['help', command]]) {
      const run = await runCli(args)
      t.equal(run.code, 0, `${args.join(' ')}: exit 0`)
      for (const p of patterns) t.match(run.stdout, p, `${args.join(' ')} says ${p}`)
    }
  }
  const version = await runCli(['--version'])
  t.equal(version.code, 0)
  t.match(version.stdout, /^\d+\.\d+\.\d+\n$/)
})

t.test('usage errors: exit 2, said on stderr', { skip: skipUnbuilt }, async (t) => {
  const cases: [string[], RegExp][] = [
    [[], /Usage: filemirror/],
    [['bogus'], /unknown command 'bogus'/],
    [['get'], /missing required argument 'URL'/],
    [['get', 'http://127.0.0.1:1/volumes/v'], /missing required argument 'FILE'/],
    [['put', 'f', 'http://127.0.0.1:1/volumes/v', 'extra'], /too many arguments/],
    [['put', 'f', 'http://127.0.0.1:1/volumes/v', '--offset', 'abc'], /--offset must be a byte count/],
    [['put', 'f', 'http://127.0.0.1:1/volumes/v', '--nope'], /unknown option '--nope'/],
    [['get', 'http://127.0.0.1:1/volumes/v', 'f', '--range', '9-3'], /LAST must not be before FIRST/],
    [['get', 'http://127.0.0.1:1/volumes/v', 'f', '--range', 'x'], /expected FIRST-LAST or FIRST-/],
    [['get', 'http://127.0.0.1:1/elsewhere', 'f'], /must end in \/volumes\/NAME/],
    [['get', 'not a url', 'f'], /is not a URL/],
    [['status', 'ftp://127.0.0.1:1'], /only http and https URLs/],
    [['status', 'http://127.0.0.1:1', '--interval', '0'], /positive number of seconds/],
    [['wait', 'http://127.0.0.1:1'], /missing required argument 'OPID'/],
  ]
  for (const [args, message] of cases) {
    const run = await runCli(args)
    t.equal(run.code, 2, `filemirror ${args.join(' ')}: exit 2`)
    t.match(run.stderr, message, `and says ${message}`)
  }
  const dir = fileURLToPath(new URL('.', import.meta.url))
  const notFile = await runCli(['put', dir, 'http://127.0.0.1:1/volumes/v'])
  t.equal(notFile.code, 2, 'put of a directory: exit 2')
  t.match(notFile.stderr, /is not a regular file/)
})

t.test('a server that cannot be reached: exit 1, for each command; JSON result line when not a terminal', { skip: skipUnbuilt }, async (t) => {
  const url = await deadUrl()
  const file = fileURLToPath(import.meta.url)
  for (const args of [['get', `${url}/volumes/v`, '/dev/null'], ['put', file, `${url}/volumes/v`], ['status', url], ['wait', url, 'x']]) {
    const run = await runCli(args, { FILEMIRROR_CACHE_DIR: '/nonexistent/cache' })
    t.equal(run.code, 1, `${args[0]}: exit 1`)
    t.match(run.stderr, /ECONNREFUSED/, `${args[0]}: says why`)
    t.match(run.result, { type: 'result', ok: false, command: args[0] }, `${args[0]}: a result line`)
  }
})

t.test('package.json: bin filemirror is the built entry, with a node shebang', { skip: skipUnbuilt }, async (t) => {
  const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8'))
  t.same(pkg.bin, { filemirror: 'dist/src/cli/main.js' })
  t.match(readFileSync(CLI_ENTRY, 'utf8'), /^#!\/usr\/bin\/env node\n/)
  for (const dep of ['commander', 'cli-progress', 'tus-js-client']) t.ok(pkg.dependencies[dep], `${dep} is a production dependency`)
  // Every package the built CLI imports is a production dependency (the image installs those alone).
  const cliDir = fileURLToPath(new URL('.', `file://${CLI_ENTRY}`))
  const imported = new Set<string>()
  for (const name of readdirSync(cliDir).filter((f) => f.endsWith('.js'))) {
    for (const m of readFileSync(join(cliDir, name), 'utf8').matchAll(/^import .*? from '([^'.][^']*)'/gm)) {
      if (!m[1].startsWith('node:')) imported.add(m[1].startsWith('@') ? m[1].split('/').slice(0, 2).join('/') : m[1].split('/')[0])
    }
  }
  t.ok(imported.size >= 3, `the CLI imports ${[...imported].join(', ')}`)
  for (const dep of imported) t.ok(pkg.dependencies[dep], `${dep} (imported by the CLI) is in dependencies`)
  t.ok(existsSync(fileURLToPath(new URL('../../public/eta.js', import.meta.url))), 'public/eta.js (lag and ETA, shared with the status page) is there for it to load')
})
