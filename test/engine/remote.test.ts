// Remote replicas in the configuration: exactly one of path, url and s3; mode async by default for remotes,
// sync refused for S3; tokenEnv only FILEMIRROR_REMOTE_* and only for url; REMOTE_ALLOW parsed into origins and
// checked against each remote's origin; the retry backoff.
import t from 'tap'
import { ConfigError, loadConfig, parseRemoteAllow } from '../../src/config.js'
import { checkRemoteAllowed, remoteOrigin, retryDelay, RemoteRefusedError } from '../../src/engine/remote.js'
import { backendKey, replicaSpecSchema, volumeSpecSchema } from '../../src/engine/spec.js'

const thrown = (fn: () => unknown): unknown => {
  try {
    fn()
  } catch (err) {
    return err
  }
  return undefined
}
const parse = (r: Record<string, unknown>) => replicaSpecSchema.safeParse({ id: 'x', ...r })
const messages = (r: Record<string, unknown>) => (parse(r).error?.issues ?? []).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')

t.test('a replica has exactly one of path, url and s3', async (t) => {
  t.ok(parse({ path: 'a.img' }).success)
  t.ok(parse({ url: 'http://node-b:8080/volumes/x/data' }).success)
  t.ok(parse({ s3: { bucket: 'b-1' } }).success)
  t.match(messages({}), /exactly one of path \(a local file\), url \(an HTTP remote\) or s3/)
  t.match(messages({ path: 'a.img', url: 'http://h/x' }), /not path and url/)
  t.match(messages({ url: 'http://h/x', s3: { bucket: 'b-1' } }), /not url and s3/)
})

t.test('modes: sync by default for a file, async for a remote; S3 is async only, saying why', async (t) => {
  t.equal(parse({ path: 'a.img' }).data?.mode, 'sync')
  t.equal(parse({ url: 'http://h/x' }).data?.mode, 'async')
  t.equal(parse({ url: 'http://h/x', mode: 'sync' }).data?.mode, 'sync', 'an HTTP replica may be sync')
  t.equal(parse({ s3: { bucket: 'b-1' } }).data?.mode, 'async')
  t.match(messages({ s3: { bucket: 'b-1' }, mode: 'sync' }), /mode: an S3 replica is async only: .*chunk-granular/)
})

t.test('an S3 location takes defaults and refuses what S3 would', async (t) => {
  t.same(parse({ s3: { bucket: 'b-1' } }).data?.s3, { bucket: 'b-1', prefix: '', region: 'us-east-1', forcePathStyle: false, chunkBytes: 4 << 20 })
  t.match(messages({ s3: { bucket: 'B' } }), /bucket/)
  t.match(messages({ s3: { bucket: 'b-1', chunkBytes: 10 } }), /chunkBytes/)
  t.match(messages({ s3: { bucket: 'b-1', secret: 'x' } }), /Unrecognized key/, 'no credentials in the configuration')
})

t.test('urls: http or https, without credentials or fragment; tokenEnv only FILEMIRROR_REMOTE_* and only for url', async (t) => {
  t.match(messages({ url: 'ftp://h/x' }), /url must be an http: or https: URL/)
  t.match(messages({ url: 'http://user:pw@h/x' }), /must not hold credentials: name an environment variable holding the token in tokenEnv/)
  t.ok(parse({ url: 'https://h/x', tokenEnv: 'FILEMIRROR_REMOTE_DR_TOKEN' }).success)
  t.match(messages({ url: 'https://h/x', tokenEnv: 'AUTH_TOKEN' }), /tokenEnv: must name an environment variable starting with FILEMIRROR_REMOTE_/)
  t.match(messages({ url: 'https://h/x', tokenEnv: 'FILEMIRROR_REMOTE_' }), /tokenEnv/)
  t.match(messages({ path: 'a.img', tokenEnv: 'FILEMIRROR_REMOTE_X' }), /tokenEnv is for url replicas/)
  t.match(messages({ s3: { bucket: 'b-1' }, tokenEnv: 'FILEMIRROR_REMOTE_X' }), /AWS SDK/)
})

t.test('two replicas on one remote are refused', async (t) => {
  const res = volumeSpecSchema.safeParse({
    replicas: [
      { id: 'a', path: 'a.img' },
      { id: 'b', s3: { bucket: 'b-1', prefix: 'v' } },
      { id: 'c', s3: { bucket: 'b-1', prefix: 'v/' } },
    ],
  })
  t.match(res.error?.issues.map((i) => i.message).join(), /duplicate replica s3 s3:\/\/b-1\/v\//)
  t.not(backendKey({ s3: { bucket: 'b-1', prefix: 'v', region: 'r', forcePathStyle: false, chunkBytes: 1024, endpoint: 'http://m:9000' } }), backendKey({ s3: { bucket: 'b-1', prefix: 'v', region: 'r', forcePathStyle: false, chunkBytes: 1024 } }), 'another store is another replica')
})

t.test('REMOTE_ALLOW: origins (or aws), empty by default, a bad entry stops the start naming it', async (t) => {
  t.same(loadConfig({}).remoteAllow, [])
  t.same(parseRemoteAllow(' http://127.0.0.1:8081, https://Node-B , AWS,http://h:80/'), ['http://127.0.0.1:8081', 'https://node-b', 'aws', 'http://h'])
  t.ok(thrown(() => parseRemoteAllow('http://h/volumes')) instanceof ConfigError, 'a path is not an origin: a ConfigError')
  t.throws(() => loadConfig({ REMOTE_ALLOW: 'node-b:8080' }), /REMOTE_ALLOW: "node-b:8080" is not an origin/)
  t.equal(loadConfig({}).remoteFailAfterMs, 600_000)
  t.equal(loadConfig({ REMOTE_FAIL_AFTER_MS: '3000' }).remoteFailAfterMs, 3000)
  t.equal(loadConfig({}).remoteHttpWriteBytes, 1 << 20, 'HTTP remotes get 1 MiB PUTs by default')
  t.equal(loadConfig({ REMOTE_HTTP_WRITE_BYTES: '16777216' }).remoteHttpWriteBytes, 16 << 20)
  t.throws(() => loadConfig({ REMOTE_HTTP_WRITE_BYTES: String(128 << 20) }), /REMOTE_HTTP_WRITE_BYTES/, 'past 64 MiB')
})

t.test("a remote's origin must be in REMOTE_ALLOW; refusals name the variable and what to add", async (t) => {
  const http = replicaSpecSchema.parse({ id: 'dr', url: 'http://127.0.0.1:8081/volumes/x/data' })
  const minio = replicaSpecSchema.parse({ id: 's3', s3: { bucket: 'b-1', endpoint: 'http://127.0.0.1:9000' } })
  const aws = replicaSpecSchema.parse({ id: 'aws', s3: { bucket: 'b-1' } })
  t.equal(remoteOrigin(http), 'http://127.0.0.1:8081')
  t.equal(remoteOrigin(minio), 'http://127.0.0.1:9000')
  t.equal(remoteOrigin(aws), 'aws')
  t.ok(thrown(() => checkRemoteAllowed(http, [])) instanceof RemoteRefusedError, 'a 400 (invalid) for the client')
  t.throws(() => checkRemoteAllowed(http, []), /remote replicas are refused: REMOTE_ALLOW is empty; .*REMOTE_ALLOW=http:\/\/127.0.0.1:8081/)
  t.throws(() => checkRemoteAllowed(http, ['http://127.0.0.1:8082']), /url origin http:\/\/127.0.0.1:8081 is not in REMOTE_ALLOW/)
  t.throws(() => checkRemoteAllowed(aws, ['http://127.0.0.1:9000']), /AWS S3 .* add aws to REMOTE_ALLOW/)
  t.doesNotThrow(() => checkRemoteAllowed(http, ['http://127.0.0.1:8081']))
  t.doesNotThrow(() => checkRemoteAllowed(minio, ['http://127.0.0.1:9000']))
  t.doesNotThrow(() => checkRemoteAllowed(aws, ['aws']))
  t.doesNotThrow(() => checkRemoteAllowed(replicaSpecSchema.parse({ id: 'l', path: 'a.img' }), []), 'local files need no entry')
})

t.test('retry backoff: 1 s doubling to 30 s, a Retry-After honoured up to the cap', async (t) => {
  const policy = { baseMs: 1000, maxMs: 30_000, failAfterMs: 600_000 }
  t.same([0, 1, 2, 3, 4, 5, 6, 50].map((a) => retryDelay(a, policy)), [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000])
  t.equal(retryDelay(0, policy, 5000), 5000)
  t.equal(retryDelay(0, policy, 120_000), 30_000)
})
