import { assert, describe, it } from "@effect/vitest"
import { Deployment } from "kubernetes-models/apps/v1"
import { Job } from "kubernetes-models/batch/v1"
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1"
import { PodDisruptionBudget } from "kubernetes-models/policy/v1"
import { ConfigMap, Secret, Service } from "kubernetes-models/v1"
import {
  at,
  dockerfileInstructions,
  list,
  type Manifest,
  readText,
  record,
  stringRecord,
  strings,
  text
} from "./files.ts"
import { allows, type Labels, matches, readPolicy, selecting } from "./networkPolicy.ts"
import {
  configMap,
  containerOf,
  deployment,
  job,
  manifests,
  objectsOf,
  podLabels,
  podSpec,
  secretFiles,
  theOne,
  volumeNamed
} from "./workloads.ts"

/** The kinds the manifests may use, each with its schema (Kubernetes' OpenAPI, as kubernetes-models compiles it). */
interface Schema<T> {
  readonly is: (value: unknown) => value is T
  new (data: T): { validate(): void }
}
const schema =
  <T>(model: Schema<T>) =>
  (object: unknown): boolean => {
    if (!model.is(object)) return false
    new model(object).validate()
    return true
  }
const schemas = [
  schema(ConfigMap),
  schema(Secret),
  schema(Service),
  schema(Deployment),
  schema(Job),
  schema(PodDisruptionBudget),
  schema(NetworkPolicy)
]

const policies = objectsOf("NetworkPolicy").map(readPolicy)

const imageUser = Number(
  dockerfileInstructions(readText("docker/Dockerfile"))
    .find((i) => i.keyword === "USER")
    ?.args.split(":")[0]
)

/** Labels of pods the policies must tell apart. */
const pods = {
  server: podLabels(deployment),
  migrate: podLabels(job),
  worker: { "app.kubernetes.io/component": "worker", "app.kubernetes.io/part-of": "balance-plus" },
  postgres: { "app.kubernetes.io/name": "postgresql", "app.kubernetes.io/instance": "orchestrator-db" },
  rabbitmq: { "app.kubernetes.io/name": "rabbitmq" },
  other: { app: "something-else" }
} satisfies Record<string, Labels>

describe("Kubernetes manifests (docker/k8s)", () => {
  it("are each an object with apiVersion, kind and metadata.name", () => {
    assert.isAtLeast(manifests.length, 10)
    for (const { file, object } of manifests) {
      assert.isString(object.apiVersion, `${file}: apiVersion`)
      assert.isString(object.kind, `${file}: kind`)
      assert.match(text(at(object, "metadata", "name"), `${file}: metadata.name`), /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/)
    }
  })

  it("validate against the Kubernetes API schema of their kind", () => {
    for (const { file, object } of manifests) {
      const validated = schemas.some((validate) => validate(object))
      assert.isTrue(validated, `${file}: no schema for ${String(object.apiVersion)} ${String(object.kind)}`)
    }
  })

  it("the schema check rejects a malformed object (it can fail)", () => {
    const broken = structuredClone(deployment)
    record(broken.spec).replicas = "two"
    assert.throws(() => schemas.some((validate) => validate(broken)), /replicas must be integer/)
  })

  it("give every object a unique kind and name", () => {
    const keys = manifests.map(({ object }) => `${String(object.kind)}/${String(at(object, "metadata", "name"))}`)
    assert.strictEqual(new Set(keys).size, keys.length)
  })

  it("run at least two replicas, rolled one at a time, kept available through disruptions", () => {
    const replicas = Number(at(deployment, "spec", "replicas"))
    assert.isAtLeast(replicas, 2)
    assert.strictEqual(at(deployment, "spec", "strategy", "rollingUpdate", "maxUnavailable"), 0)
    const selector = stringRecord(at(deployment, "spec", "selector", "matchLabels"))
    assert.isTrue(matches(selector, podLabels(deployment)))
    const pdb = theOne("PodDisruptionBudget", "orchestrator")
    assert.deepStrictEqual(stringRecord(at(pdb, "spec", "selector", "matchLabels")), selector)
    const minAvailable = Number(at(pdb, "spec", "minAvailable"))
    assert.isTrue(minAvailable >= 1 && minAvailable < replicas, "a drain can proceed and one replica stays")
    const service = theOne("Service", "orchestrator")
    assert.deepStrictEqual(stringRecord(at(service, "spec", "selector")), selector)
    // The migration Job's pod is none of the Deployment's, the Service's or the budget's.
    assert.isFalse(matches(selector, podLabels(job)))
  })

  it("mount the secrets read-only at /run/secrets, the directory the service reads them from", () => {
    assert.strictEqual(stringRecord(at(configMap, "data")).ORCH_SECRETS_DIR, "/run/secrets")
    for (const workload of [deployment, job]) {
      const mounts = list(containerOf(workload).volumeMounts, "volumeMounts").map((m) => record(m))
      const mount = mounts.find((m) => m.mountPath === "/run/secrets")
      assert.isDefined(mount, "a volume at /run/secrets")
      assert.strictEqual(mount?.readOnly, true)
      const volume = volumeNamed(workload, text(mount?.name))
      assert.isTrue(volume.secret !== undefined || volume.projected !== undefined, "a secret volume")
      // Readable by the service's group only (fsGroup), not by everyone.
      assert.strictEqual(at(volume, "secret", "defaultMode") ?? at(volume, "projected", "defaultMode"), 0o440)
      assert.strictEqual(at(podSpec(workload), "securityContext", "fsGroup"), imageUser)
    }
    // The service holds no DDL credentials; the migration Job holds them and needs the runtime password too.
    assert.sameMembers(
      [...secretFiles(volumeNamed(deployment, "secrets"))],
      ["db_password", "amqp_password", "api_tokens"]
    )
    assert.sameMembers([...secretFiles(volumeNamed(job, "secrets"))], ["db_password", "db_migration_password"])
  })

  it("probe liveness on /healthz and readiness on /readyz, on the service's HTTP port", () => {
    const container = containerOf(deployment)
    const port = record(list(container.ports, "ports")[0])
    assert.strictEqual(port.containerPort, Number(stringRecord(at(configMap, "data")).ORCH_HTTP_PORT))
    const probe = (name: string) => record(at(container, name, "httpGet"), name)
    assert.strictEqual(probe("livenessProbe").path, "/healthz")
    assert.strictEqual(probe("readinessProbe").path, "/readyz")
    assert.strictEqual(probe("startupProbe").path, "/healthz")
    for (const name of ["livenessProbe", "readinessProbe", "startupProbe"]) {
      assert.oneOf(probe(name).port, [port.name, port.containerPort], `${name} targets the HTTP port`)
    }
  })

  it("run as the image's non-root user, read-only, without capabilities, within resource limits", () => {
    for (const workload of [deployment, job]) {
      const pod = podSpec(workload)
      const container = containerOf(workload)
      assert.strictEqual(at(pod, "securityContext", "runAsNonRoot"), true)
      assert.strictEqual(at(pod, "securityContext", "runAsUser"), imageUser)
      assert.strictEqual(at(pod, "securityContext", "seccompProfile", "type"), "RuntimeDefault")
      assert.strictEqual(at(container, "securityContext", "readOnlyRootFilesystem"), true)
      assert.strictEqual(at(container, "securityContext", "allowPrivilegeEscalation"), false)
      assert.deepStrictEqual(at(container, "securityContext", "capabilities", "drop"), ["ALL"])
      assert.strictEqual(pod.automountServiceAccountToken, false)
      for (const bound of ["requests", "limits"]) {
        for (const resource of ["cpu", "memory"]) {
          assert.isString(at(container, "resources", bound, resource), `${bound}.${resource}`)
        }
      }
    }
    assert.strictEqual(imageUser, 10001)
  })

  it("migrate with `orchestrator migrate` as the schema owner, from the same image", () => {
    const container = containerOf(job)
    assert.deepStrictEqual(strings(container.args), ["migrate"])
    assert.strictEqual(container.image, containerOf(deployment).image)
    assert.deepStrictEqual(strings(containerOf(deployment).args), ["serve"])
    const env = list(container.env).map((e) => record(e))
    assert.deepInclude(env, { name: "ORCH_DB_MIGRATION_USER", value: "orchestrator_owner" })
    assert.strictEqual(at(podSpec(job), "restartPolicy"), "Never")
    // The service itself does not migrate: without ORCH_DB_MIGRATION_USER it only checks the schema.
    assert.notProperty(stringRecord(at(configMap, "data")), "ORCH_DB_MIGRATION_USER")
  })

  it("never put a password or token into an environment variable or the ConfigMap", () => {
    const secretName = /PASSWORD|PASSWD|TOKEN|CREDENTIAL/i
    const data = stringRecord(at(configMap, "data"))
    for (const key of Object.keys(data)) assert.notMatch(key, secretName, `ConfigMap key ${key}`)
    assert.strictEqual(new URL(text(data.ORCH_AMQP_URL)).password, "", "no password in ORCH_AMQP_URL")
    for (const workload of [deployment, job]) {
      for (const item of list(containerOf(workload).env ?? [])) {
        const variable = record(item)
        if (variable.value !== undefined) {
          assert.notMatch(text(variable.name), secretName, `${text(variable.name)} has a literal value`)
        }
      }
      assert.isUndefined(
        list(containerOf(workload).envFrom ?? []).find((source) => at(source, "secretRef") !== undefined),
        "secrets come as files, not as envFrom"
      )
    }
  })

  it("keep the example Secrets clearly marked, with placeholder values only", () => {
    const examples = manifests.filter((m: Manifest) => m.object.kind === "Secret")
    assert.isNotEmpty(examples)
    for (const { file, object } of examples) {
      assert.match(file, /^docker\/k8s\/example\//, "outside the directory `kubectl apply -f docker/k8s/` reads")
      assert.match(readText(file), /EXAMPLE ONLY: PLACEHOLDER VALUES/)
      for (const [key, value] of Object.entries(stringRecord(object.stringData))) {
        assert.match(value, /^REPLACE-ME-example-/, `${file}: ${key}`)
      }
      assert.isUndefined(object.data, "no base64 data that could hide a real value")
    }
    const keys = examples.flatMap(({ object }) => Object.keys(record(object.stringData)))
    const mounted = [...secretFiles(volumeNamed(deployment, "secrets")), ...secretFiles(volumeNamed(job, "secrets"))]
    assert.sameMembers(keys, [...new Set(mounted)])
  })

  it("let only the orchestrator's pods reach PostgreSQL on 5432 (and the cluster's own members replicate)", () => {
    assert.isNotEmpty(selecting(policies, pods.postgres), "a policy isolates the PostgreSQL pods")
    const clients = policies.find((p) => p.name === "postgresql-clients")
    assert.isDefined(clients)
    assert.isTrue(matches(clients!.podSelector, pods.postgres))
    assert.deepStrictEqual(clients!.ingress, [
      { from: [{ podSelector: { "app.kubernetes.io/name": "orchestrator" } }], ports: [5432] }
    ])
    assert.isTrue(allows(policies, { labels: pods.server }, pods.postgres, 5432))
    assert.isTrue(allows(policies, { labels: pods.migrate }, pods.postgres, 5432))
    // Streaming replication and pg_rewind: a replica connects to the leader on 5432.
    assert.isTrue(allows(policies, { labels: pods.postgres }, pods.postgres, 5432))
    for (const source of [pods.worker, pods.rabbitmq, pods.other]) {
      assert.isFalse(allows(policies, { labels: source }, pods.postgres, 5432), JSON.stringify(source))
    }
    assert.isFalse(allows(policies, { labels: pods.server, otherNamespace: true }, pods.postgres, 5432))
    // Patroni's REST API only among the members; the orchestrator has no business there.
    assert.isFalse(allows(policies, { labels: pods.server }, pods.postgres, 8008))
  })

  it("let only the orchestrator and the workers reach RabbitMQ on 5672", () => {
    assert.isTrue(allows(policies, { labels: pods.server }, pods.rabbitmq, 5672))
    assert.isTrue(allows(policies, { labels: pods.worker }, pods.rabbitmq, 5672))
    for (const source of [pods.migrate, pods.postgres, pods.other]) {
      assert.isFalse(allows(policies, { labels: source }, pods.rabbitmq, 5672), JSON.stringify(source))
    }
    assert.isFalse(allows(policies, { labels: pods.worker }, pods.rabbitmq, 15672), "no management API")
  })

  it("let the orchestrator's pods be reached on 8080 only", () => {
    assert.isTrue(allows(policies, { labels: pods.other }, pods.server, 8080))
    for (const port of [22, 5432, 9229, 8081]) {
      assert.isFalse(allows(policies, { labels: pods.other }, pods.server, port), `port ${port}`)
    }
  })
})
