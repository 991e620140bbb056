/**
 * The Kubernetes manifests' workloads (the service's Deployment, the migration Job) and what a container of theirs
 * gets: its pod spec, its environment as Kubernetes assembles it, and the secret files mounted into it.
 */
import { at, list, type Manifest, readManifests, record, stringRecord, text } from "./files.ts"
import type { Labels } from "./networkPolicy.ts"

export const manifests: ReadonlyArray<Manifest> = readManifests()

export const objectsOf = (kind: string) => manifests.filter((m) => m.object.kind === kind).map((m) => m.object)

export const theOne = (kind: string, name: string) => {
  const found = objectsOf(kind).filter((o) => at(o, "metadata", "name") === name)
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length}`)
  return found[0]!
}

export const deployment = theOne("Deployment", "orchestrator")
export const job = theOne("Job", "orchestrator-migrate")
export const configMap = theOne("ConfigMap", "orchestrator-config")

export const podSpec = (workload: Record<string, unknown>) =>
  record(at(workload, "spec", "template", "spec"), "pod spec")

export const podLabels = (workload: Record<string, unknown>): Labels =>
  stringRecord(at(workload, "spec", "template", "metadata", "labels"), "pod labels")

export const containerOf = (workload: Record<string, unknown>) => {
  const containers = list(podSpec(workload).containers, "containers")
  if (containers.length !== 1) throw new Error(`expected one container, found ${containers.length}`)
  return record(containers[0], "container")
}

export const volumeNamed = (workload: Record<string, unknown>, name: string) =>
  record(
    list(podSpec(workload).volumes, "volumes").find((v) => at(v, "name") === name),
    `volume ${name}`
  )

/** The files a secret volume puts in its mount: item paths of a `secret` or of a `projected` volume's secrets. */
export const secretFiles = (volume: Record<string, unknown>): ReadonlyArray<string> => {
  const secrets =
    volume.secret !== undefined ? [volume.secret] : list(at(volume, "projected", "sources")).map((s) => at(s, "secret"))
  return secrets.flatMap((secret) => list(at(secret, "items"), "secret items").map((item) => text(at(item, "path"))))
}

/** The secret files a workload's container finds in /run/secrets. */
export const mountedSecretFiles = (workload: Record<string, unknown>): ReadonlyArray<string> => {
  const mounts = list(containerOf(workload).volumeMounts, "volumeMounts")
  const mount = mounts.find((m) => at(m, "mountPath") === "/run/secrets")
  return mount === undefined ? [] : secretFiles(volumeNamed(workload, text(at(mount, "name"))))
}

/** The container's environment as Kubernetes builds it: `envFrom` ConfigMaps first, then `env` (values, keys). */
export const environmentOf = (workload: Record<string, unknown>): Record<string, string> => {
  const container = containerOf(workload)
  const configMapData = (name: unknown) => {
    const data = at(theOne("ConfigMap", text(name, "ConfigMap name")), "data")
    return stringRecord(data, `ConfigMap ${String(name)}`)
  }
  const env: Record<string, string> = {}
  for (const source of list(container.envFrom ?? [], "envFrom")) {
    const name = at(source, "configMapRef", "name")
    if (name === undefined) throw new Error(`envFrom other than a ConfigMap: ${JSON.stringify(source)}`)
    Object.assign(env, configMapData(name))
  }
  for (const item of list(container.env ?? [], "env")) {
    const name = text(at(item, "name"), "env name")
    const ref = at(item, "valueFrom", "configMapKeyRef")
    if (ref !== undefined) {
      const value = configMapData(at(ref, "name"))[text(at(ref, "key"))]
      if (value === undefined) throw new Error(`${name}: the ConfigMap has no key ${String(at(ref, "key"))}`)
      env[name] = value
    } else {
      env[name] = text(at(item, "value"), `${name}: a literal value or a ConfigMap key`)
    }
  }
  return env
}
