/**
 * The sandbox's network: N "nodes" with P "pods" each, built on this one
 * machine out of network namespaces, veth pairs and a bridge.
 *
 *   netns ambs-fabric: br0 ── n<i> ═══ eth0 (10.100.0.<i>/24) netns ambs-n<i>
 *   netns ambs-n<i>:   vp<j> ═══ eth0 (10.244.<i>.<j+1>/32) netns ambs-n<i>-p<j>
 *
 * Pods route everything via the link-local gateway 169.254.1.1, which the
 * node answers by proxy ARP on vp<j> (Calico style). For proxy ARP to answer,
 * the node needs *a* unicast route to 169.254.1.1 out of another device, so
 * each node also gets `169.254.1.1 dev lo scope link` (it carries no traffic).
 */
import fs from 'node:fs';
import os from 'node:os';
import { chunk, concurrency, ipBatch, pool, run, sysctlIn } from './helpers.js';
import { FABRIC_BRIDGE, FABRIC_NETNS, NETNS_PREFIX, NETNS_RUN_DIR, POD_GATEWAY_IP, POD_GATEWAY_IP6, type SandboxState } from './model.js';

/** Every `ambs-*` netns, also files left without a mount. */
export async function listSandboxNetns(): Promise<string[]> {
  const out = await run('ip', ['netns', 'list']);
  const names = out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(NETNS_PREFIX));
  // Also catch files left behind without a mount (crash during `netns add`).
  try {
    for (const f of fs.readdirSync(NETNS_RUN_DIR)) if (f.startsWith(NETNS_PREFIX) && !names.includes(f)) names.push(f);
  } catch {
    /* no /run/netns */
  }
  return names;
}

export async function buildNetwork(state: SandboxState): Promise<void> {
  const limit = concurrency();
  const podsOf = new Map(state.nodes.map((n) => [n.name, state.pods.filter((p) => p.node === n.name)]));

  // 1. namespaces. The first `netns add` alone: it may set up the /run/netns mount.
  await run('ip', ['netns', 'add', FABRIC_NETNS]);
  const rest = [...state.nodes.map((n) => n.netns), ...state.pods.map((p) => p.netns)];
  await pool(chunk(rest, limit), limit, async (names) => {
    await ipBatch(names.map((n) => `netns add ${n}`));
  });

  // 2. fabric bridge; node sysctls first so interfaces created later inherit rp_filter=0.
  await Promise.all([
    ipBatch(['link set lo up', `link add ${FABRIC_BRIDGE} type bridge`, `link set ${FABRIC_BRIDGE} up`], ['-n', FABRIC_NETNS]),
    pool(state.nodes, limit, async (n) => {
      await sysctlIn(n.netns, { 'net.ipv4.ip_forward': 1, 'net.ipv4.conf.all.rp_filter': 0, 'net.ipv4.conf.default.rp_filter': 0 });
    }),
  ]);

  // 3. veth pairs, created directly inside their namespaces (one batch per node).
  await pool(state.nodes, limit, async (n) => {
    const lines = [`link add eth0 netns ${n.netns} type veth peer name ${n.name} netns ${FABRIC_NETNS}`];
    podsOf.get(n.name)!.forEach((p, idx) => {
      lines.push(`link add eth0 netns ${p.netns} type veth peer name vp${idx + 1} netns ${n.netns}`);
    });
    await ipBatch(lines);
  });

  // 4. addresses, routes, links up, proxy ARP. This needs one `ip -n <ns>`
  // per namespace; spawning those from Node costs several ms each, so the
  // per-namespace steps are written as shell snippets and run by a few
  // `sh` processes in parallel (50 x 20 pods: ~2 s instead of ~8 s).
  const snippets: string[] = [];
  const step = (ns: string, lines: string[]) =>
    `ip -n ${ns} -batch - <<'AMBS_EOF' || { echo "sandbox: configuring netns ${ns} failed" >&2; exit 1; }\n${lines.join('\n')}\nAMBS_EOF\n`;
  snippets.push(
    step(
      FABRIC_NETNS,
      state.nodes.flatMap((n) => [`link set ${n.name} master ${FABRIC_BRIDGE}`, `link set ${n.name} up`]),
    ),
  );
  const v4 = (ips: string[]): string | undefined => ips.find((a) => !a.includes(':'));
  const v6 = (ips: string[]): string | undefined => ips.find((a) => a.includes(':'));
  for (const n of state.nodes) {
    const pods = podsOf.get(n.name)!;
    const lines = ['link set lo up', `addr add ${n.ip}/24 dev eth0`, 'link set eth0 up'];
    // IPv6 (ipFamily ipv6/dual): the fabric carries both families; every vp<j> holds the pods'
    // link-local gateway fe80::1 (no DAD: the same address on each link, as Calico's)
    if (n.ip6) lines.push(`addr add ${n.ip6}/64 dev eth0 nodad`);
    pods.forEach((p, idx) => {
      const ips = p.ips ?? [p.ip];
      lines.push(`link set vp${idx + 1} up`);
      const a4 = v4(ips);
      if (a4) lines.push(`route add ${a4}/32 dev vp${idx + 1}`);
      const a6 = v6(ips);
      if (a6) lines.push(`addr add ${POD_GATEWAY_IP6}/64 dev vp${idx + 1} nodad`, `route add ${a6}/128 dev vp${idx + 1}`);
    });
    lines.push(`route add ${POD_GATEWAY_IP}/32 dev lo scope link`);
    for (const other of state.nodes) {
      if (other === n) continue;
      lines.push(`route add 10.244.${other.name.slice(1)}.0/24 via ${other.ip} dev eth0`);
      if (n.ip6 && other.ip6) lines.push(`route add fd00:10:244:${other.name.slice(1)}::/64 via ${other.ip6} dev eth0`);
    }
    // proxy_delay=0: otherwise the kernel delays each proxy ARP reply by up to 0.8 s (Calico does the same).
    const proxyArp =
      pods.map((_p, idx) => `net.ipv4.conf.vp${idx + 1}.proxy_arp=1 net.ipv4.neigh.vp${idx + 1}.proxy_delay=0`).join(' ') +
      (n.ip6 ? ' net.ipv6.conf.all.forwarding=1' : '');
    snippets.push(
      step(n.netns, lines) + `ip netns exec ${n.netns} sysctl -q -w ${proxyArp} || { echo "sandbox: sysctl in netns ${n.netns} failed" >&2; exit 1; }\n`,
    );
  }
  for (const p of state.pods) {
    const ips = p.ips ?? [p.ip];
    const a4 = v4(ips);
    const a6 = v6(ips);
    const lines = ['link set lo up'];
    if (a4) lines.push(`addr add ${a4}/32 dev eth0`);
    // nodad: the address is usable at once (a tentative one cannot be bound), as CNIs add pod addresses
    if (a6) lines.push(`addr add ${a6}/128 dev eth0 nodad`);
    lines.push('link set eth0 up');
    if (a4) lines.push(`route add ${POD_GATEWAY_IP} dev eth0 scope link`, `route add default via ${POD_GATEWAY_IP} dev eth0`);
    if (a6) lines.push(`route add ::/0 via ${POD_GATEWAY_IP6} dev eth0`);
    snippets.push(step(p.netns, lines));
  }
  const k = Math.min(snippets.length, Math.max(2, Math.min(32, os.availableParallelism() * 2)));
  const scripts = Array.from({ length: k }, (_, i) => snippets.filter((_s, idx) => idx % k === i).join(''));
  await pool(scripts, scripts.length, async (script) => {
    await run('sh', ['-s'], script);
  });
}
