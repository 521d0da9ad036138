// Where `put` remembers its tus uploads, so that an interrupted put resumes when run again: one JSON file,
// uploads.json in $FILEMIRROR_CACHE_DIR, else $XDG_CACHE_HOME/filemirror, else ~/.cache/filemirror.
//
// tus-js-client's own FileUrlStorage rewrites its file in place, which a kill -9 in the middle can leave torn;
// this one writes a temporary file and renames it over, so the file is always whole.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import type { PreviousUpload, UrlStorage } from 'tus-js-client'

/** Entries older than this are dropped at the next write: their uploads are long expired on the server. */
const MAX_AGE_MS = 30 * 24 * 3600 * 1000

export function cacheDir(): string {
  if (process.env.FILEMIRROR_CACHE_DIR) return process.env.FILEMIRROR_CACHE_DIR
  if (process.env.XDG_CACHE_HOME) return join(process.env.XDG_CACHE_HOME, 'filemirror')
  return join(homedir(), '.cache', 'filemirror')
}

type Stored = Omit<PreviousUpload, 'urlStorageKey'>

export class JsonFileUrlStorage implements UrlStorage {
  readonly path: string

  constructor(dir = cacheDir()) {
    this.path = join(dir, 'uploads.json')
  }

  private async load(): Promise<Record<string, Stored>> {
    try {
      const data = JSON.parse(await readFile(this.path, 'utf8')) as unknown
      return data && typeof data === 'object' ? (data as Record<string, Stored>) : {}
    } catch {
      return {}
    }
  }

  private async save(data: Record<string, Stored>): Promise<void> {
    const now = Date.now()
    for (const [key, entry] of Object.entries(data)) {
      const created = Date.parse(entry.creationTime)
      if (Number.isFinite(created) && now - created > MAX_AGE_MS) delete data[key]
    }
    await mkdir(join(this.path, '..'), { recursive: true, mode: 0o700 })
    const tmp = `${this.path}.${process.pid}.tmp`
    await writeFile(tmp, `${JSON.stringify(data, null, 1)}\n`, { mode: 0o600 })
    await rename(tmp, this.path)
  }

  async findAllUploads(): Promise<PreviousUpload[]> {
    return this.find('tus::')
  }

  async findUploadsByFingerprint(fingerprint: string): Promise<PreviousUpload[]> {
    return this.find(`tus::${fingerprint}::`)
  }

  private async find(prefix: string): Promise<PreviousUpload[]> {
    const data = await this.load()
    return Object.entries(data)
      .filter(([key]) => key.startsWith(prefix))
      .map(([key, entry]) => ({ ...entry, urlStorageKey: key }))
      .sort((a, b) => Date.parse(b.creationTime) - Date.parse(a.creationTime))
  }

  async removeUpload(urlStorageKey: string): Promise<void> {
    const data = await this.load()
    if (!(urlStorageKey in data)) return
    delete data[urlStorageKey]
    await this.save(data)
  }

  async addUpload(fingerprint: string, upload: PreviousUpload): Promise<string> {
    const data = await this.load()
    const key = `tus::${fingerprint}::${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`
    const { urlStorageKey: _unused, ...entry } = upload as PreviousUpload & { urlStorageKey?: string }
    void _unused
    data[key] = { ...entry, creationTime: new Date().toISOString() }
    await this.save(data)
    return key
  }
}
