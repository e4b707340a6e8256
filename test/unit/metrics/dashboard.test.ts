/**
 * deploy/grafana/ambientd-dashboard.json: every panel query is valid PromQL
 * (promtool check rules) and names only metrics the agent exports (the
 * registry AgentMetrics builds, default process/nodejs metrics included).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { AgentMetrics, type MetricsSource } from '../../../src/metrics/metrics.js';
import { MeshIndex, emptySnapshot } from '../../../src/discovery/model.js';
import { ROOT } from '../../helpers/paths.js';

const DASHBOARD = path.join(ROOT, 'deploy', 'grafana', 'ambientd-dashboard.json');
const PROMTOOL = process.env.PROMTOOL ?? 'promtool';

interface Panel {
  title?: string;
  type?: string;
  targets?: Array<{ expr?: string }>;
  panels?: Panel[];
}

function allPanels(ps: Panel[]): Panel[] {
  return ps.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

function targets(): Array<{ panel: string; expr: string }> {
  const d = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[] };
  return allPanels(d.panels).flatMap((p) => (p.targets ?? []).filter((t) => t.expr).map((t) => ({ panel: p.title ?? '?', expr: t.expr! })));
}

/** Grafana variables -> literals, so the expression is plain PromQL. */
export function substitute(expr: string): string {
  return expr
    .replace(/\$\{?__(rate_interval|interval|range)(_ms|_s)?\}?/g, '5m')
    .replace(/\$\{node(:[a-z]+)?\}|\$node\b/g, 'n1')
    .replace(/\$\{datasource\}|\$datasource\b/g, 'prometheus');
}

const FUNCTIONS_AND_KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'offset',
  'bool',
  'atan2',
  'inf',
  'nan',
  'sum',
  'min',
  'max',
  'avg',
  'count',
  'stddev',
  'stdvar',
  'topk',
  'bottomk',
  'quantile',
  'count_values',
  'group',
]);

/**
 * Metric names an expression selects: identifiers that are not functions
 * (followed by "("), aggregation keywords, label names inside {} or in
 * by/without/on/ignoring/group_x (...) lists, durations or numbers.
 */
export function metricNames(expr: string): string[] {
  let s = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""'); // strings
  s = s.replace(/\{[^}]*\}/g, ' '); // label matchers
  s = s.replace(/\[[^\]]*\]/g, ' '); // ranges / subqueries
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // label lists
  s = s.replace(/\boffset\s+-?[0-9a-z]+/g, ' ');
  const names = new Set<string>();
  const re = /[A-Za-z_:][A-Za-z0-9_:]*/g;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const id = m[0];
    const before = s[m.index - 1];
    if (before !== undefined && /[0-9.]/.test(before)) continue; // 1e3, 5m
    const rest = s.slice(m.index + id.length);
    if (/^\s*\(/.test(rest)) continue; // function call
    if (FUNCTIONS_AND_KEYWORDS.has(id.toLowerCase())) continue;
    names.add(id);
  }
  return [...names];
}

const fakeSource: MetricsSource = {
  index: () => new MeshIndex(emptySnapshot()),
  spiffeOf: (p) => `spiffe://cluster.local/ns/${p.namespace}/sa/${p.serviceAccount}`,
  pods: () => [{ namespace: 'ns', name: 'p', state: 'enrolled' }],
  certificates: () => [{ id: 'spiffe://cluster.local/ns/ns/sa/sa', notAfter: new Date(Date.now() + 3600_000).toISOString() }],
  podStats: () => [{ namespace: 'ns', name: 'p', stats: { capturedOut: 1n } }],
};

async function exportedNames(): Promise<Set<string>> {
  const m = new AgentMetrics(fakeSource);
  const out = new Set<string>();
  for (const metric of await m.registry.getMetricsAsJSON()) {
    out.add(metric.name);
    if (String(metric.type) === 'histogram') for (const sfx of ['_bucket', '_sum', '_count']) out.add(metric.name + sfx);
    if (String(metric.type) === 'summary') for (const sfx of ['_sum', '_count']) out.add(metric.name + sfx);
  }
  // and what the exposition really carries (# TYPE lines), so a name never drifts from the text Prometheus scrapes
  const text = await m.exposition();
  for (const l of text.split('\n')) {
    const t = /^# TYPE (\S+) /.exec(l);
    if (t) assert.ok(out.has(t[1]!), `exposition has ${t[1]} that getMetricsAsJSON lacks`);
  }
  return out;
}

test('the metric-name extractor finds selectors and skips functions, labels and durations', () => {
  assert.deepEqual(metricNames('sum by (source_workload, le) (rate(istio_tcp_sent_bytes_total{reporter="source", x=~"a(b)"}[5m])) offset 1h'), [
    'istio_tcp_sent_bytes_total',
  ]);
  assert.deepEqual(metricNames('min by (identity) (foo_seconds{instance=~"n1"} - time())').sort(), ['foo_seconds']);
  assert.deepEqual(metricNames('a_total / on (instance) group_left (pod) b_info == 1e3').sort(), ['a_total', 'b_info']);
  assert.deepEqual(metricNames('histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m:1m])))'), ['x_bucket']);
});

test('the dashboard has queries, the datasource and node variables', () => {
  const d = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as { schemaVersion: number; templating: { list: Array<{ name: string; type: string }> } };
  assert.ok(d.schemaVersion >= 36);
  const vars = new Map(d.templating.list.map((v) => [v.name, v.type]));
  assert.equal(vars.get('datasource'), 'datasource');
  assert.equal(vars.get('node'), 'query');
  assert.ok(targets().length >= 10);
});

test('every panel query parses as PromQL (promtool check rules)', (t) => {
  const probe = spawnSync(PROMTOOL, ['--version'], { encoding: 'utf8' });
  if (probe.error) {
    t.skip(`${PROMTOOL} not installed`);
    return;
  }
  const ts = targets();
  const rules = { groups: [{ name: 'ambientd-dashboard', rules: ts.map((x, i) => ({ record: `dashboard:query_${i}`, expr: substitute(x.expr) })) }] };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-dash-'));
  try {
    const file = path.join(dir, 'rules.json.yml');
    fs.writeFileSync(file, JSON.stringify(rules, null, 2)); // JSON is YAML
    const r = spawnSync(PROMTOOL, ['check', 'rules', file], { encoding: 'utf8' });
    assert.equal(
      r.status,
      0,
      `promtool check rules failed:\n${r.stdout}\n${r.stderr}\n${ts.map((x, i) => `query_${i} (${x.panel}): ${substitute(x.expr)}`).join('\n')}`,
    );
    assert.match(r.stdout, new RegExp(`SUCCESS: ${ts.length} rules found`));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('every panel query names only metrics the agent exports', async () => {
  const exported = await exportedNames();
  assert.ok(exported.has('istio_tcp_sent_bytes_total') && exported.has('ambientd_bpf_redirect_total'));
  const missing: string[] = [];
  for (const { panel, expr } of targets()) {
    const names = metricNames(substitute(expr));
    assert.ok(names.length > 0, `${panel}: no metric in ${expr}`);
    for (const n of names) if (!exported.has(n)) missing.push(`${panel}: ${n} (in ${expr})`);
  }
  assert.deepEqual(missing, [], `metrics the agent does not export:\n${missing.join('\n')}`);
});
