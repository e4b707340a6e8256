/**
 * The CA's view of where pods run: identities by node (spec.nodeName), from
 * the snapshots of a WorkloadSource (the Kubernetes pod watch, or the
 * sandbox's workload file). Node authorization asks it "does a pod with this
 * identity run on this node?".
 *
 * Pods without a node (node null: the single-machine file source) are on no
 * node here, so no node agent gets their identity from the cluster CA.
 */
import type { WorkloadSource } from '../discovery/source.js';
import { podKey, podSpiffeId, type MeshSnapshot, type PodInfo } from '../discovery/model.js';

export class NodePodIndex {
  /** node -> identity -> pods ("namespace/name") */
  #byNode = new Map<string, Map<string, string[]>>();
  #pods = new Map<string, PodInfo>();
  #synced = false;
  #version = 0;

  constructor(readonly trustDomain: string) {}

  /** Replaces the index with the pods of `snap`. */
  update(snap: MeshSnapshot): void {
    const byNode = new Map<string, Map<string, string[]>>();
    for (const p of snap.pods.values()) {
      if (p.node === null) continue;
      const id = podSpiffeId(p, this.trustDomain);
      let ids = byNode.get(p.node);
      if (!ids) byNode.set(p.node, (ids = new Map()));
      const l = ids.get(id);
      if (l) l.push(podKey(p));
      else ids.set(id, [podKey(p)]);
    }
    this.#byNode = byNode;
    this.#pods = snap.pods;
    this.#synced = true;
    this.#version++;
  }

  /** Follows a started source: takes its current snapshot and every update. Returns the unsubscribe. */
  follow(source: WorkloadSource): () => void {
    const on = (s: MeshSnapshot): void => this.update(s);
    source.on('update', on);
    this.update(source.current);
    return () => source.off('update', on);
  }

  /** true once a snapshot was taken (before that, every request is answered UNAVAILABLE) */
  get synced(): boolean {
    return this.#synced;
  }

  /** the number of snapshots taken */
  get version(): number {
    return this.#version;
  }

  /** pods ("namespace/name") on `node` with SPIFFE identity `id` */
  podsWith(node: string, id: string): readonly string[] {
    return this.#byNode.get(node)?.get(id) ?? [];
  }

  /** nodes where a pod with identity `id` runs (logs of a refusal) */
  nodesOf(id: string): string[] {
    const out: string[] = [];
    for (const [node, ids] of this.#byNode) if (ids.has(id)) out.push(node);
    return out.sort();
  }

  pod(namespace: string, name: string): PodInfo | undefined {
    return this.#pods.get(`${namespace}/${name}`);
  }

  get nodes(): number {
    return this.#byNode.size;
  }
}
