/**
 * The AsyncAPI 3.0 document of the RabbitMQ contract, seen from the orchestrator: it sends tasks and cancellation
 * notices on `orchestrator.tasks` and receives replies and heartbeats on `orchestrator.replies`. A worker is the
 * other side of each operation. Payload schemas come from src/domain/Messages.ts; the per-task payload and result
 * schemas are the files under tasks/.
 */
import { stringify } from "yaml"
import {
  CancellationNotice,
  deadLetterReasonHeader,
  Exchanges,
  HeartbeatMessage,
  Queues,
  ReplyMessage,
  TaskMessage
} from "../domain/Messages.ts"
import type { TaskContract } from "./Contract.ts"
import { fromSchema } from "./JsonSchemaFile.ts"

const bindingVersion = "0.3.0"

const exchange = (name: string) => ({
  amqp: {
    is: "routingKey",
    exchange: { name, type: "topic", durable: true, autoDelete: false, vhost: "/" },
    bindingVersion
  }
})

const queue = (name: string) => ({
  amqp: { is: "queue", queue: { name, durable: true, exclusive: false, autoDelete: false, vhost: "/" }, bindingVersion }
})

const messageIdHeader = {
  type: "string",
  description:
    "AMQP basic property `message-id` (not an entry of the headers table): unique per message. A message published " +
    "again (after a lost confirm) keeps its id, so receivers may deduplicate by it."
}
const correlationIdHeader = {
  type: "string",
  description:
    "AMQP basic property `correlation-id` (not an entry of the headers table): the saga's correlation id. A reply " +
    "or heartbeat carries the correlation id of its task."
}
const traceparentHeader = {
  type: "string",
  pattern: "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
  description:
    "W3C trace context, an entry of the AMQP headers table, present when the sender has a trace. A worker copies " +
    "the task's `traceparent` (or one of a span of its own in the same trace) onto its reply and heartbeats."
}

const headers = (extra: Record<string, unknown> = {}) => ({
  type: "object",
  properties: {
    message_id: messageIdHeader,
    correlation_id: correlationIdHeader,
    traceparent: traceparentHeader,
    ...extra
  },
  required: ["message_id", "correlation_id"]
})

const correlationId = {
  description: "The saga's correlation id, as the AMQP property `correlation-id`.",
  location: "$message.header#/correlation_id"
}

const messageBindings = { amqp: { contentEncoding: "utf-8", bindingVersion } }

/** Persistent (delivery mode 2); `mandatory` where an unroutable message must come back to the sender. */
const publishBindings = (mandatory: boolean) => ({ amqp: { deliveryMode: 2, mandatory, bindingVersion } })
const consumeBindings = { amqp: { ack: true, bindingVersion } }

const taskTypeParameter = (tasks: ReadonlyArray<TaskContract>) => ({
  enum: tasks.map((task) => task.taskType),
  description:
    "A task type of a registered saga definition (a step's or a compensation's). Its payload and result schemas " +
    "are tasks/<taskType>.payload.schema.json and tasks/<taskType>.result.schema.json."
})

const message = (name: string, title: string, summary: string, payload: string, extraHeaders = {}) => ({
  name,
  title,
  summary,
  contentType: "application/json",
  correlationId,
  headers: headers(extraHeaders),
  payload: { $ref: `#/components/schemas/${payload}` },
  bindings: messageBindings
})

/** The document as a plain value, in a fixed key order. */
export const document = (tasks: ReadonlyArray<TaskContract>) => {
  const taskType = taskTypeParameter(tasks)
  return {
    asyncapi: "3.0.0",
    info: {
      title: "Saga orchestrator message contract",
      version: "1.0.0",
      description:
        "Tasks, replies, heartbeats and cancellation notices between the saga orchestrator and its workers on " +
        "RabbitMQ. Every message is persistent, `content_type: application/json`, with a unique AMQP `message_id`, " +
        "`correlation_id` = the saga's correlation id, and a `traceparent` header when there is a trace. " +
        `Exchanges ${Exchanges.tasks}, ${Exchanges.replies} and ${Exchanges.deadLetter} are topic exchanges, ` +
        `durable; the queues ${Queues.replies} and ${Queues.deadLetters} are durable quorum queues ` +
        `(x-queue-type: quorum). The service declares this topology on every connection; a worker declares its own ` +
        "queue, bound to its task types.\n\n" +
        "Delivery is at least once: a worker may see a task twice (deduplicate by `taskId`), and a retried step " +
        "sends a new task with a new `taskId` and the same `stepKey` (make side effects idempotent by `stepKey`). " +
        "See docs/workers.md."
    },
    defaultContentType: "application/json",
    servers: {
      rabbitmq: {
        host: "rabbitmq.example.com:5672",
        protocol: "amqp",
        protocolVersion: "0-9-1",
        description: "Placeholder: the RabbitMQ of the deployment (the service's ORCH_AMQP_URL, vhost included)."
      }
    },
    channels: {
      tasks: {
        address: "{taskType}",
        title: `Tasks (exchange ${Exchanges.tasks})`,
        description: `A task for a worker, on the topic exchange \`${Exchanges.tasks}\` with routing key = its task type.`,
        servers: [{ $ref: "#/servers/rabbitmq" }],
        parameters: { taskType },
        messages: { task: { $ref: "#/components/messages/task" } },
        bindings: exchange(Exchanges.tasks)
      },
      cancellations: {
        address: "{taskType}.cancel",
        title: `Cancellation notices (exchange ${Exchanges.tasks})`,
        description:
          `A notice that the orchestrator stopped waiting for a task, on \`${Exchanges.tasks}\` with routing key ` +
          "`<taskType>.cancel`. It reaches only the queues bound to that key: bind `<taskType>.cancel` (or `#.cancel`) to " +
          "receive notices.",
        servers: [{ $ref: "#/servers/rabbitmq" }],
        parameters: { taskType },
        messages: { cancellationNotice: { $ref: "#/components/messages/cancellationNotice" } },
        bindings: exchange(Exchanges.tasks)
      },
      replies: {
        address: "{taskType}",
        title: `Replies (exchange ${Exchanges.replies})`,
        description: `A worker's reply to a task, on \`${Exchanges.replies}\` with routing key = the task's type.`,
        servers: [{ $ref: "#/servers/rabbitmq" }],
        parameters: { taskType },
        messages: { reply: { $ref: "#/components/messages/reply" } },
        bindings: exchange(Exchanges.replies)
      },
      heartbeats: {
        address: "{taskType}.heartbeat",
        title: `Heartbeats (exchange ${Exchanges.replies})`,
        description: `A worker's sign of life for a task, on \`${Exchanges.replies}\` with routing key \`<taskType>.heartbeat\`.`,
        servers: [{ $ref: "#/servers/rabbitmq" }],
        parameters: { taskType },
        messages: { heartbeat: { $ref: "#/components/messages/heartbeat" } },
        bindings: exchange(Exchanges.replies)
      },
      repliesQueue: {
        address: Queues.replies,
        title: `Queue ${Queues.replies}`,
        description:
          `Quorum queue bound to \`${Exchanges.replies}\` with \`#\`, dead-letter exchange \`${Exchanges.deadLetter}\`. ` +
          "The orchestrator consumes replies and heartbeats from it.",
        servers: [{ $ref: "#/servers/rabbitmq" }],
        messages: {
          reply: { $ref: "#/components/messages/reply" },
          heartbeat: { $ref: "#/components/messages/heartbeat" }
        },
        bindings: queue(Queues.replies)
      },
      deadLetters: {
        address: Queues.deadLetters,
        title: `Queue ${Queues.deadLetters}`,
        description:
          `Quorum queue bound to the topic exchange \`${Exchanges.deadLetter}\` with \`#\`. A reply the orchestrator ` +
          `cannot process (malformed JSON, wrong shape, unknown saga, …) is copied to \`${Exchanges.deadLetter}\` ` +
          `with its routing key, body and properties and the reason in the header \`${deadLetterReasonHeader}\`, ` +
          "then acknowledged. Messages RabbitMQ itself dead-letters from the replies queue (a delivery limit) land " +
          "here too, without that header. Nothing consumes it automatically: operators inspect it.",
        servers: [{ $ref: "#/servers/rabbitmq" }],
        messages: { deadLetteredReply: { $ref: "#/components/messages/deadLetteredReply" } },
        bindings: queue(Queues.deadLetters)
      }
    },
    operations: {
      sendTask: {
        action: "send",
        channel: { $ref: "#/channels/tasks" },
        title: "Send a task",
        summary: "The orchestrator asks a worker to do one attempt of a step (or compensation).",
        description:
          "Published with publisher confirms and `mandatory`: a task no queue is bound for comes back to the " +
          "orchestrator instead of vanishing. `taskId` is new for each attempt; `stepKey` is the same for every " +
          "attempt of one step.",
        messages: [{ $ref: "#/channels/tasks/messages/task" }],
        bindings: publishBindings(true),
        reply: {
          channel: { $ref: "#/channels/replies" },
          messages: [{ $ref: "#/channels/replies/messages/reply" }]
        }
      },
      sendCancellationNotice: {
        action: "send",
        channel: { $ref: "#/channels/cancellations" },
        title: "Send a cancellation notice",
        summary: "The orchestrator stopped waiting for a task: a worker still on it may stop.",
        description:
          "Not `mandatory`: dropped when no queue is bound to `<taskType>.cancel`. Best effort: a worker must not rely " +
          "on receiving one; a reply to a cancelled task is ignored.",
        messages: [{ $ref: "#/channels/cancellations/messages/cancellationNotice" }],
        bindings: publishBindings(false)
      },
      receiveReply: {
        action: "receive",
        channel: { $ref: "#/channels/repliesQueue" },
        title: "Receive a reply",
        summary: "A worker's outcome of a task.",
        description:
          "Acknowledged once the saga's transaction applied it. Only a reply to the awaited task id counts; others " +
          "are recorded as ignored. A `succeeded` result that does not validate against the task's result schema " +
          "fails the step for good (`invalid_result`). A reply that cannot be processed is dead-lettered.",
        messages: [{ $ref: "#/channels/repliesQueue/messages/reply" }],
        bindings: consumeBindings
      },
      receiveHeartbeat: {
        action: "receive",
        channel: { $ref: "#/channels/repliesQueue" },
        title: "Receive a heartbeat",
        summary: "A worker's sign of life (and optional progress) for a task it works on.",
        description:
          "Keeps an attempt whose task has `heartbeatTimeoutMs` from timing out; send one at least every third of " +
          "it. Not a step: it changes neither the saga's state nor its history; one for a task no longer awaited " +
          "is ignored.",
        messages: [{ $ref: "#/channels/repliesQueue/messages/heartbeat" }],
        bindings: consumeBindings
      },
      sendDeadLetter: {
        action: "send",
        channel: { $ref: "#/channels/deadLetters" },
        title: "Dead-letter an unprocessable reply",
        summary: `A copy of the reply, with \`${deadLetterReasonHeader}\`, then the original is acknowledged.`,
        messages: [{ $ref: "#/channels/deadLetters/messages/deadLetteredReply" }],
        bindings: publishBindings(true)
      }
    },
    components: {
      messages: {
        task: message("task", "Task", "One attempt of a step for a worker.", "TaskMessage"),
        reply: message("reply", "Reply", "A worker's outcome of one task.", "ReplyMessage"),
        heartbeat: message("heartbeat", "Heartbeat", "A worker's sign of life for one task.", "HeartbeatMessage"),
        cancellationNotice: message(
          "cancellationNotice",
          "Cancellation notice",
          "The orchestrator no longer waits for this task.",
          "CancellationNotice"
        ),
        deadLetteredReply: message(
          "deadLetteredReply",
          "Dead-lettered reply",
          "A reply (or any message) the orchestrator could not process, as it was received.",
          "DeadLetteredBody",
          {
            [deadLetterReasonHeader]: {
              type: "string",
              description: "Why the orchestrator could not process the message, e.g. `malformed reply: …`."
            }
          }
        )
      },
      schemas: {
        TaskMessage: describe(
          fromSchema(TaskMessage),
          "A task. `payload` follows tasks/<taskType>.payload.schema.json. `heartbeatTimeoutMs`, when present: an " +
            "attempt without a heartbeat or reply for that long is given up (`heartbeat_missed`)."
        ),
        ReplyMessage: describe(
          fromSchema(ReplyMessage),
          "A reply: `outcome` `succeeded` with `result` (following tasks/<taskType>.result.schema.json), or `failed` " +
            "with `error`. `retryable: true` lets the step be retried per its policy; `false` starts compensation."
        ),
        HeartbeatMessage: describe(fromSchema(HeartbeatMessage), "A heartbeat, with optional progress."),
        CancellationNotice: describe(
          fromSchema(CancellationNotice),
          "A cancellation notice: `saga_cancelled`, `timed_out`, `heartbeat_missed`, or `superseded` (an operator " +
            "retried the step; a new task with a new `taskId` replaces this one)."
        ),
        DeadLetteredBody: {
          description: "The original body, unchanged (it may not even be JSON)."
        }
      }
    }
  }
}

const describe = (schema: { readonly [key: string]: unknown }, description: string) => ({ ...schema, description })

export const render = (tasks: ReadonlyArray<TaskContract>): string =>
  stringify(document(tasks), { lineWidth: 0, aliasDuplicateObjects: false })
