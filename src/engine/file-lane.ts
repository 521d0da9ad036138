/** Operations of one file running at once: enough to keep positional I/O busy, few enough that one slow file cannot take every I/O thread. */
export const LANE_CONCURRENCY = 4
/** How far down the queue a task may be started ahead of a blocked one. */
const LOOKAHEAD = 64

/** The bytes an operation touches, and whether it changes them. */
export interface Footprint {
  start: number
  end: number
  write: boolean
}

interface Task extends Footprint {
  run: () => Promise<void>
}

/**
 * Whether two operations must keep their order: two writes touching a common byte, or a read and a write
 * that ends past the read's start (a write beyond the read may extend the file the read would find too short).
 */
export function conflicts(a: Footprint, b: Footprint): boolean {
  if (a.start === a.end || b.start === b.end) return false
  if (a.write && b.write) return a.start < b.end && b.start < a.end
  if (a.write) return b.start < a.end
  if (b.write) return a.start < b.end
  return false
}

/**
 * One file's ordered queue: operations that conflict (see conflicts) run in the order they were queued; the
 * others (reads, writes to other bytes) run together, up to LANE_CONCURRENCY at once. Every outcome is the
 * one running them one by one in queue order would give. A lane never waits on another file.
 */
export class FileLane {
  private readonly tasks: Task[] = []
  private readonly active = new Set<Task>()
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
    return this.active.size > 0 || this.tasks.length > 0
  }

  get depth(): number {
    return this.tasks.length + this.active.size
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

  /** Queues a task touching `footprint`; an async task must have reserved room first. */
  push(task: () => Promise<void>, reserved: boolean, footprint: Footprint): void {
    this.tasks.push({
      start: footprint.start,
      end: footprint.end,
      write: footprint.write,
      run: reserved
        ? async () => {
            try {
              await task()
            } finally {
              this.queuedAsync--
              this.grant()
            }
          }
        : task,
    })
    if (reserved) {
      this.granted--
      this.grant()
    }
    this.schedule()
  }

  /** Resolves once every task queued so far, and any queued meanwhile, has run. */
  drained(): Promise<void> {
    if (!this.busy) return Promise.resolve()
    return new Promise((resolve) => this.drainWaiters.push(resolve))
  }

  /** Starts every queued task that touches nothing an earlier unfinished one writes (or writes what it touches). */
  private schedule(): void {
    if (this.tasks.length === 0 || this.active.size >= LANE_CONCURRENCY) return
    // An idle lane runs its only task at once: nothing earlier to check it against.
    if (this.active.size === 0 && this.tasks.length === 1) return this.start(this.tasks.pop()!)
    const earlier: Footprint[] = [...this.active]
    for (let i = 0; i < this.tasks.length && i < LOOKAHEAD && this.active.size < LANE_CONCURRENCY; ) {
      const task = this.tasks[i]
      const blocked = earlier.some((e) => conflicts(e, task))
      earlier.push(task)
      if (blocked) {
        i++
        continue
      }
      this.tasks.splice(i, 1)
      this.start(task)
    }
  }

  private start(task: Task): void {
    this.active.add(task)
    // Tasks report their own failures (an operation's error); a rejection must still free the lane.
    const settle = () => this.settle(task)
    void task.run().then(settle, settle)
  }

  private settle(task: Task): void {
    this.active.delete(task)
    this.schedule()
    if (this.busy) return
    const waiters = this.drainWaiters
    this.drainWaiters = []
    for (const resolve of waiters) resolve()
    this.onIdle()
  }
}
