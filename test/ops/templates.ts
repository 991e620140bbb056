/**
 * Loopback configurations for a two-node Patroni cluster (etcd v3 as the DCS) behind HAProxy, as the ops tests run
 * it: everything on 127.0.0.1, on ports away from the machine's own PostgreSQL (5432) and the packages' defaults.
 *
 * The choices that matter for the service riding through a failover:
 * - ttl 10 / loop_wait 2 / retry_timeout 3 (loop_wait + 2 × retry_timeout ≤ ttl): a dead leader is replaced
 *   in about ten seconds rather than thirty.
 * - `synchronous_mode: true`: a commit is acknowledged only once the replica has it, so a crash of the leader
 *   never loses a step the service was told had committed (with asynchronous streaming, a task could go out for a
 *   transition the promoted replica never saw). Not strict: alone, the leader goes on without a replica.
 * - `use_pg_rewind` with `wal_log_hints`: the old leader rejoins as a replica of the new one by itself.
 * - HAProxy asks each node's REST API `OPTIONS /primary` (200 only on the writable primary; OPTIONS keeps Patroni's
 *   log quiet) every 500 ms, and cuts the sessions of a node it marks down, so clients reconnect to the new leader
 *   instead of waiting on a dead one.
 */

export interface PatroniNode {
  readonly name: string
  /** PostgreSQL's port on 127.0.0.1. */
  readonly pgPort: number
  /** Patroni's REST API port on 127.0.0.1. */
  readonly restPort: number
  /** The node's own directory (owned by postgres): data directory, socket, pgpass. */
  readonly directory: string
}

export interface Passwords {
  readonly replication: string
  readonly rewind: string
}

export const patroniConfig = (options: {
  readonly scope: string
  readonly node: PatroniNode
  readonly etcdPort: number
  readonly binDir: string
  readonly passwords: Passwords
}) => {
  const { node } = options
  return `scope: ${options.scope}
name: ${node.name}
log:
  level: INFO
restapi:
  listen: 127.0.0.1:${node.restPort}
  connect_address: 127.0.0.1:${node.restPort}
etcd3:
  hosts: 127.0.0.1:${options.etcdPort}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 128MB
  initdb:
    - encoding: UTF8
    - locale: C
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all postgres 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:${node.pgPort}
  connect_address: 127.0.0.1:${node.pgPort}
  data_dir: ${node.directory}/data
  bin_dir: ${options.binDir}
  pgpass: ${node.directory}/pgpass
  use_unix_socket: true
  authentication:
    superuser:
      username: postgres
    replication:
      username: replicator
      password: ${options.passwords.replication}
    rewind:
      username: rewinder
      password: ${options.passwords.rewind}
  parameters:
    unix_socket_directories: '${node.directory}'
    max_connections: 100
    shared_buffers: 16MB
    log_line_prefix: '%m [%p] %q%u@%d '
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
`
}

/**
 * Clients connect to `port`; HAProxy sends them to whichever node's REST API says it is the writable primary. At
 * startup HAProxy counts every server up until its checks fail (`fall 2` × 500 ms): for about a second a client can
 * land on the replica and be refused writes (SQLSTATE 25006), which the service retries.
 */
export const haproxyConfig = (options: {
  readonly port: number
  readonly nodes: ReadonlyArray<PatroniNode>
  /** Where HAProxy answers `show stat` (which servers it sees up). */
  readonly statsSocket: string
}) => {
  const servers = options.nodes.map(
    (node) => `    server ${node.name} 127.0.0.1:${node.pgPort} maxconn 100 check port ${node.restPort}`
  )
  return `global
    maxconn 400
    stats socket ${options.statsSocket} mode 600 level user

defaults
    mode tcp
    retries 2
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s

listen postgres_primary
    bind 127.0.0.1:${options.port}
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
${servers.join("\n")}
`
}

/** etcd 3.4, one member, v3 API only (Patroni's `etcd3:` section). */
export const etcdArguments = (options: {
  readonly name: string
  readonly dataDir: string
  readonly clientPort: number
  readonly peerPort: number
}) => [
  "--name",
  options.name,
  "--data-dir",
  options.dataDir,
  "--listen-client-urls",
  `http://127.0.0.1:${options.clientPort}`,
  "--advertise-client-urls",
  `http://127.0.0.1:${options.clientPort}`,
  "--listen-peer-urls",
  `http://127.0.0.1:${options.peerPort}`,
  "--initial-advertise-peer-urls",
  `http://127.0.0.1:${options.peerPort}`,
  "--initial-cluster",
  `${options.name}=http://127.0.0.1:${options.peerPort}`,
  "--enable-v2=false"
]
