/** One file's serial queue and worker: operations on a file run one at a time, in order, and never wait on another file. */
export class FileLane {
  private readonly tasks: Array<() => Promise<void>> = []
  private running = false
  private queuedAsync = 0
  /** Slots granted by reserve() whose task is not pushed yet: nobody may overtake them. */
  private granted = 0
  private readonly spaceWaiters: Array<() => void> = []
  private drainWaiters: Array<() => void> = []

  constructor(
    /** How many async operations may wait in this lane before callers wait for room. */
    private readonly capacity: number,
    private readonly onIdle: () => void,
  ) {}

  get busy(): boolean {
    return this.running || this.tasks.length > 0
  }

  get depth(): number {
    return this.tasks.length + (this.running ? 1 : 0)
  }

  /** Waits for room for one async operation (the bounded queue); callers get room in call order. */
  async reserve(): Promise<void> {
    if (this.spaceWaiters.length === 0 && this.granted === 0 && this.queuedAsync < this.capacity) {
      this.queuedAsync++
      this.granted++
      return
    }
    // grant() counts the slot for us before waking us, so a later caller cannot take it first.
    await new Promise<void>((resolve) => this.spaceWaiters.push(resolve))
  }

  /** Hands a free slot to the longest waiting caller, once the previous grantee has queued its task. */
  private grant(): void {
    if (this.granted > 0 || this.queuedAsync >= this.capacity) return
    const next = this.spaceWaiters.shift()
    if (!next) return
    this.queuedAsync++
    this.granted++
    next()
  }

  /** Queues a task; an async task must have reserved room first. */
  push(task: () => Promise<void>, reserved: boolean): void {
    this.tasks.push(
      reserved
        ? async () => {
            try {
              await task()
            } finally {
              this.queuedAsync--
              this.grant()
            }
          }
        : task,
    )
    if (reserved) {
      this.granted--
      this.grant()
    }
    if (!this.running) void this.pump()
  }

  /** Resolves once every task queued so far, and any queued meanwhile, has run. */
  drained(): Promise<void> {
    if (!this.busy) return Promise.resolve()
    return new Promise((resolve) => this.drainWaiters.push(resolve))
  }

  private async pump(): Promise<void> {
    this.running = true
    for (let task = this.tasks.shift(); task; task = this.tasks.shift()) {
      await task()
    }
    this.running = false
    const waiters = this.drainWaiters
    this.drainWaiters = []
    for (const resolve of waiters) resolve()
    this.onIdle()
  }
}
