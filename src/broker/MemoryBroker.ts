/**
 * In-memory Broker with the AMQP semantics the service relies on (topic routing, prefetch, ack / requeue /
 * dead-letter, redelivery of unsettled messages), for tests and the embedded mode. `MemoryBroker` exposes its state
 * and a few controls for tests and the simulation.
 */
import { Cause, Context, Deferred, Effect, FiberSet, Layer, Semaphore } from "effect"
import { deadLetterReasonHeader, Exchanges, Queues } from "../domain/Messages.ts"
import { Broker, BrokerUnavailable, type Delivery, Disposition, type OutgoingMessage } from "./Broker.ts"

/** A message as the broker holds it: ids may be missing when an outside producer left them out. */
export type BrokerMessage = Omit<Delivery, "redelivered">

/** Optional AMQP properties of an injected message. */
export interface InjectProperties {
  readonly messageId?: string | undefined
  readonly correlationId?: string | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
}

export interface Binding {
  readonly queue: string
  readonly exchange: string
  readonly pattern: string
}

export class MemoryBroker extends Context.Service<
  MemoryBroker,
  {
    /** Declares a topic exchange; declaring it again changes nothing. */
    readonly declareExchange: (name: string) => Effect.Effect<void>
    /** Declares a queue; declaring it again changes nothing. */
    readonly declareQueue: (name: string) => Effect.Effect<void>
    /** Binds a queue (declaring it) to an exchange with a topic pattern; the exchange must exist. */
    readonly bind: (queue: string, exchange: string, pattern: string) => Effect.Effect<void, BrokerUnavailable>
    /** Publishes a raw message, e.g. a malformed one or one without ids, as an outside producer could. */
    readonly inject: (
      exchange: string,
      routingKey: string,
      body: string,
      properties?: InjectProperties
    ) => Effect.Effect<void, BrokerUnavailable>
    /** While unavailable, every publish fails with `BrokerUnavailable` (consumers keep their deliveries). */
    readonly setAvailable: (available: boolean) => Effect.Effect<void>
    /** Messages waiting in a queue, in delivery order; not those delivered and not yet settled. */
    readonly messages: (queue: string) => Effect.Effect<ReadonlyArray<Delivery>>
    /** Messages of a queue delivered to a consumer and not yet settled. */
    readonly unacknowledged: (queue: string) => Effect.Effect<ReadonlyArray<Delivery>>
    /** Every message accepted by an exchange, in order: published, injected and dead-lettered ones. */
    readonly published: Effect.Effect<ReadonlyArray<BrokerMessage>>
    /** Accepted messages that no binding matched, so no queue received them. */
    readonly unroutable: Effect.Effect<ReadonlyArray<BrokerMessage>>
    readonly bindings: Effect.Effect<ReadonlyArray<Binding>>
  }
>()("saga-orchestrator/broker/MemoryBroker") {}

/** AMQP topic matching: words separated by `.`, `*` matches exactly one word, `#` zero or more. */
export const matchesTopic = (pattern: string, routingKey: string): boolean => {
  const words = pattern.split(".")
  const key = routingKey.split(".")
  const match = (w: number, k: number): boolean => {
    if (w === words.length) return k === key.length
    if (words[w] === "#") return match(w + 1, k) || (k < key.length && match(w, k + 1))
    if (k === key.length) return false
    return (words[w] === "*" || words[w] === key[k]) && match(w + 1, k + 1)
  }
  return match(0, 0)
}

/** One copy of a message in one queue. `seq` is its position: a requeued message goes back to where it was. */
interface Stored {
  readonly seq: number
  readonly message: BrokerMessage
  readonly redelivered: boolean
}

interface QueueState {
  ready: Array<Stored>
  readonly unacked: Set<Stored>
  readonly waiters: Set<Deferred.Deferred<void>>
}

const toDelivery = (stored: Stored): Delivery => ({ ...stored.message, redelivered: stored.redelivered })

const notFound = (what: string) => new BrokerUnavailable({ reason: `NOT_FOUND - no ${what}` })

export const make = Effect.sync(() => {
  const exchanges = new Set<string>()
  const queues = new Map<string, QueueState>()
  let bindings: Array<Binding> = []
  const published: Array<BrokerMessage> = []
  const unroutable: Array<BrokerMessage> = []
  let available = true
  let seq = 0

  const declareQueueUnsafe = (name: string): QueueState => {
    const existing = queues.get(name)
    if (existing !== undefined) return existing
    const state: QueueState = { ready: [], unacked: new Set(), waiters: new Set() }
    queues.set(name, state)
    return state
  }

  const wake = (state: QueueState) => {
    // Snapshot first: a woken consumer may resume synchronously and register its next waiter right away.
    const waiters = [...state.waiters]
    state.waiters.clear()
    for (const waiter of waiters) Deferred.doneUnsafe(waiter, Effect.void)
  }

  const enqueue = (state: QueueState, stored: Stored) => {
    // Keep `ready` ordered by position, so a requeued message is delivered before the ones published after it.
    let index = state.ready.length
    while (index > 0 && (state.ready[index - 1]?.seq ?? 0) > stored.seq) index--
    state.ready.splice(index, 0, stored)
    wake(state)
  }

  /** Routes accepted messages; runs synchronously, so a batch lands in the queues as a whole. */
  const routeUnsafe = (message: BrokerMessage) => {
    published.push(message)
    const targets = new Set(
      bindings
        .filter((b) => b.exchange === message.exchange && matchesTopic(b.pattern, message.routingKey))
        .map((b) => b.queue)
    )
    if (targets.size === 0) unroutable.push(message)
    seq += 1
    for (const queue of targets) enqueue(declareQueueUnsafe(queue), { seq, message, redelivered: false })
  }

  const accept = (messages: ReadonlyArray<BrokerMessage>): Effect.Effect<void, BrokerUnavailable> =>
    Effect.suspend(() => {
      if (!available) return Effect.fail(new BrokerUnavailable({ reason: "connection closed (simulated outage)" }))
      const unknown = messages.find((message) => !exchanges.has(message.exchange))
      if (unknown !== undefined) return Effect.fail(notFound(`exchange '${unknown.exchange}'`))
      for (const message of messages) routeUnsafe(message)
      return Effect.void
    })

  /** Waits for the next ready message and marks it unacknowledged; only the waiting is interruptible. */
  const take = (state: QueueState): Effect.Effect<Stored> =>
    Effect.suspend(() => {
      const next = state.ready.shift()
      if (next !== undefined) {
        state.unacked.add(next)
        return Effect.succeed(next)
      }
      const waiter = Deferred.makeUnsafe<void>()
      state.waiters.add(waiter)
      return Effect.interruptible(Deferred.await(waiter)).pipe(
        Effect.ensuring(Effect.sync(() => state.waiters.delete(waiter))),
        Effect.flatMap(() => take(state))
      )
    })

  const settle = (state: QueueState, stored: Stored, disposition: Disposition) => {
    if (!state.unacked.delete(stored)) return
    switch (disposition._tag) {
      case "Ack":
        return
      case "Requeue":
        return enqueue(state, { ...stored, redelivered: true })
      case "DeadLetter":
        // As RabbitMQ dead-lettering: same routing key and properties, to the dead-letter exchange.
        return routeUnsafe({
          ...stored.message,
          exchange: Exchanges.deadLetter,
          headers: { ...stored.message.headers, [deadLetterReasonHeader]: disposition.reason }
        })
    }
  }

  const consume = Effect.fnUntraced(function* <R>(
    queue: string,
    handle: (delivery: Delivery) => Effect.Effect<Disposition, never, R>,
    options?: { readonly prefetch?: number | undefined }
  ): Effect.fn.Return<never, BrokerUnavailable, R> {
    const prefetch = options?.prefetch ?? 10
    if (!Number.isInteger(prefetch) || prefetch < 1) {
      return yield* Effect.die(new Error(`prefetch must be a positive integer, got ${prefetch}`))
    }
    const state = queues.get(queue)
    if (state === undefined) return yield* notFound(`queue '${queue}'`)
    const permits = yield* Semaphore.make(prefetch)
    // Deliveries of this consumer not yet settled. Whatever is left when it stops goes back to the queue.
    const mine = new Set<Stored>()
    const release = (stored: Stored, disposition: Disposition) =>
      Effect.sync(() => {
        if (mine.delete(stored)) settle(state, stored, disposition)
      })
    // A handler that dies or is interrupted leaves its message to be delivered again: at least once.
    const deliver = (stored: Stored) =>
      Effect.interruptible(handle(toDelivery(stored))).pipe(
        Effect.exit,
        Effect.flatMap((exit) => {
          if (exit._tag === "Success") return release(stored, exit.value)
          const requeue = release(stored, Disposition.requeue)
          return Cause.hasInterruptsOnly(exit.cause)
            ? requeue
            : Effect.logError("message handler died; requeueing the message", exit.cause).pipe(Effect.andThen(requeue))
        }),
        Effect.ensuring(permits.release(1)),
        Effect.uninterruptible
      )
    return yield* Effect.scoped(
      Effect.gen(function* () {
        const handlers = yield* FiberSet.make()
        return yield* Effect.forever(
          Effect.uninterruptibleMask((restore) =>
            Effect.gen(function* () {
              yield* restore(permits.take(1))
              const stored = yield* take(state)
              mine.add(stored)
              yield* FiberSet.run(handlers, deliver(stored), { startImmediately: true })
            })
          ),
          // Dispatch every ready message up to the prefetch at once, as a broker pushes them.
          { disableYield: true }
        )
      })
    ).pipe(
      Effect.ensuring(Effect.suspend(() => Effect.forEach([...mine], (stored) => release(stored, Disposition.requeue))))
    )
  })

  const broker = Broker.of({
    publish: Effect.fn("MemoryBroker.publish")(function* (messages: ReadonlyArray<OutgoingMessage>) {
      yield* accept(messages)
    }),
    consume,
    health: Effect.suspend(() =>
      available ? Effect.void : Effect.fail(new BrokerUnavailable({ reason: "connection closed (simulated outage)" }))
    )
  })

  const control = MemoryBroker.of({
    declareExchange: (name) => Effect.sync(() => void exchanges.add(name)),
    declareQueue: (name) => Effect.sync(() => void declareQueueUnsafe(name)),
    bind: (queue, exchange, pattern) =>
      Effect.suspend(() => {
        if (!exchanges.has(exchange)) return Effect.fail(notFound(`exchange '${exchange}'`))
        declareQueueUnsafe(queue)
        const exists = bindings.some((b) => b.queue === queue && b.exchange === exchange && b.pattern === pattern)
        if (!exists) bindings = [...bindings, { queue, exchange, pattern }]
        return Effect.void
      }),
    inject: (exchange, routingKey, body, properties = {}) =>
      accept([
        {
          exchange,
          routingKey,
          body,
          messageId: properties.messageId,
          correlationId: properties.correlationId,
          headers: properties.headers ?? {}
        }
      ]),
    setAvailable: (value) =>
      Effect.sync(() => {
        available = value
      }),
    messages: (queue) => Effect.sync(() => (queues.get(queue)?.ready ?? []).map(toDelivery)),
    unacknowledged: (queue) => Effect.sync(() => [...(queues.get(queue)?.unacked ?? [])].map(toDelivery)),
    published: Effect.sync(() => [...published]),
    unroutable: Effect.sync(() => [...unroutable]),
    bindings: Effect.sync(() => [...bindings])
  })

  // The topology (docs/contract/asyncapi.yaml).
  for (const exchange of Object.values(Exchanges)) exchanges.add(exchange)
  bindings = [
    { queue: Queues.replies, exchange: Exchanges.replies, pattern: "#" },
    { queue: Queues.deadLetters, exchange: Exchanges.deadLetter, pattern: "#" }
  ]
  for (const { queue } of bindings) declareQueueUnsafe(queue)

  return { broker, control }
})

/** One in-memory broker, provided both as the `Broker` port and as `MemoryBroker` for inspection. */
export const layerMemory: Layer.Layer<Broker | MemoryBroker> = Layer.effectContext(
  Effect.map(make, ({ broker, control }) => Context.make(Broker, broker).pipe(Context.add(MemoryBroker, control)))
)
