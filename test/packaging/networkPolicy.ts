/**
 * What a set of NetworkPolicies lets through, evaluated as Kubernetes does for the features the manifests use:
 * podSelector.matchLabels, Ingress rules with `from` podSelectors and TCP ports. A policy using anything else
 * (namespaceSelector, ipBlock, matchExpressions, named or ranged ports) is refused, so the evaluation can't silently
 * be wrong about it.
 */
import { at, list, record, stringRecord, text } from "./files.ts"

export type Labels = Readonly<Record<string, string>>

/** A pod in the policies' namespace, or (`otherNamespace`) one anywhere else. */
export interface Pod {
  readonly labels: Labels
  readonly otherNamespace?: boolean
}

interface Peer {
  readonly podSelector: Labels
}

interface Rule {
  /** undefined: from anywhere. */
  readonly from: ReadonlyArray<Peer> | undefined
  /** undefined: every port. */
  readonly ports: ReadonlyArray<number> | undefined
}

export interface Policy {
  readonly name: string
  readonly podSelector: Labels
  readonly ingress: ReadonlyArray<Rule>
}

const allowedKeys = (value: Record<string, unknown>, keys: ReadonlyArray<string>, what: string) => {
  for (const key of Object.keys(value)) {
    if (!keys.includes(key)) throw new Error(`${what}: ${key} is not supported by this evaluation`)
  }
}

const selector = (value: unknown, what: string): Labels => {
  const fields = record(value, what)
  allowedKeys(fields, ["matchLabels"], what)
  return fields.matchLabels === undefined ? {} : stringRecord(fields.matchLabels, `${what}.matchLabels`)
}

export const readPolicy = (object: Record<string, unknown>): Policy => {
  const name = text(at(object, "metadata", "name"), "metadata.name")
  const spec = record(object.spec, `${name}.spec`)
  allowedKeys(spec, ["podSelector", "policyTypes", "ingress"], `${name}.spec`)
  const types = list(spec.policyTypes ?? ["Ingress"], `${name}.policyTypes`)
  if (types.length !== 1 || types[0] !== "Ingress") throw new Error(`${name}: only Ingress policies are evaluated`)
  const ingress = list(spec.ingress ?? [], `${name}.ingress`).map((item, index): Rule => {
    const what = `${name}.ingress[${index}]`
    const rule = record(item, what)
    allowedKeys(rule, ["from", "ports"], what)
    return {
      from:
        rule.from === undefined
          ? undefined
          : list(rule.from, `${what}.from`).map((peer, i) => {
              const fields = record(peer, `${what}.from[${i}]`)
              allowedKeys(fields, ["podSelector"], `${what}.from[${i}]`)
              return { podSelector: selector(fields.podSelector, `${what}.from[${i}].podSelector`) }
            }),
      ports:
        rule.ports === undefined
          ? undefined
          : list(rule.ports, `${what}.ports`).map((port, i) => {
              const fields = record(port, `${what}.ports[${i}]`)
              allowedKeys(fields, ["protocol", "port"], `${what}.ports[${i}]`)
              if ((fields.protocol ?? "TCP") !== "TCP") throw new Error(`${what}.ports[${i}]: only TCP is evaluated`)
              if (typeof fields.port !== "number")
                throw new Error(`${what}.ports[${i}]: only numeric ports are evaluated`)
              return fields.port
            })
    }
  })
  return { name, podSelector: selector(spec.podSelector, `${name}.podSelector`), ingress }
}

export const matches = (selectorLabels: Labels, labels: Labels) =>
  Object.entries(selectorLabels).every(([key, value]) => labels[key] === value)

/** The policies that isolate a pod. */
export const selecting = (policies: ReadonlyArray<Policy>, target: Labels) =>
  policies.filter((policy) => matches(policy.podSelector, target))

/** Whether `source` may open a TCP connection to `port` of a pod labelled `target`. */
export const allows = (policies: ReadonlyArray<Policy>, source: Pod, target: Labels, port: number): boolean => {
  const isolating = selecting(policies, target)
  // A pod no policy selects is not isolated: everything may reach it.
  if (isolating.length === 0) return true
  return isolating.some((policy) =>
    policy.ingress.some(
      (rule) =>
        (rule.ports === undefined || rule.ports.length === 0 || rule.ports.includes(port)) &&
        (rule.from === undefined ||
          rule.from.length === 0 ||
          // A podSelector without a namespaceSelector means pods of the policy's own namespace.
          rule.from.some((peer) => source.otherNamespace !== true && matches(peer.podSelector, source.labels)))
    )
  )
}
