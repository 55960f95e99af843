/**
 * Performance alarms as xapi's perfmon raises them: a host's or VM's
 * `other_config:perfmon` holds
 * `<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.9"/>…</variable>…</config>`;
 * each step a variable's value (its sources consolidated: average or sum) is
 * compared with its level, and when it has been beyond it for
 * `alarm_trigger_period` seconds an `ALARM` message is created
 * (priority, class `VM`/`Host`, the object's uuid, a body with the value and
 * the variable's configuration), then none for that variable during
 * `alarm_auto_inhibit_period`. Clients see messages through events.
 *
 * The configuration is the owner's to write (vm-admin for a VM): it is
 * untrusted. It is bounded in size, and a `rrd_regex` with nested
 * quantifiers (the kind that backtracks without end) is refused.
 */
import type { Logger } from 'pino';
import { formatDateTime } from '../datamodel/types.ts';
import type { Store } from '../db/store.ts';
import type { MetricsOwner as Owner } from '../messages/context.ts';

export interface AlarmVariable {
  name: string;
  regex: RegExp;
  consolidate: 'average' | 'sum';
  level: number;
  /** true: alarm above the level; false: below it. */
  high: boolean;
  periodS: number;
  inhibitS: number;
  priority: number;
  /** The variable's XML, for the message body. */
  xml: string;
}

const MAX_CONFIG = 16 * 1024;
const MAX_REGEX = 200;

interface Defaults { regex?: string; consolidate?: 'average' | 'sum'; level?: number; high?: boolean }

/** perfmon's defaults by variable name, for hosts and for VMs. */
function defaults(kind: Owner['kind'], name: string): Defaults {
  if (name === 'cpu_usage') return { regex: 'cpu[0-9]+', consolidate: 'average' };
  if (kind === 'vm') {
    if (name === 'network_usage') return { regex: 'vif_[0-9]+_[rt]x' };
    if (name === 'disk_usage') return { regex: 'vbd_(xvd|hd)[a-z]+_(read|write)' };
    if (name === 'memory_internal_free') return { regex: name, high: false };
    return {};
  }
  if (name === 'network_usage') return { regex: 'pif_eth[0-9]+_[rt]x' };
  if (name === 'memory_free_kib') return { regex: name, high: false };
  return {};
}

const unescapeXml = (s: string): string =>
  s.replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

/** `<tag value="…"/>` inside a variable. */
function tagValue(xml: string, tag: string): string | undefined {
  const m = new RegExp(`<${tag}\\s+value\\s*=\\s*("([^"]*)"|'([^']*)')\\s*/?>`).exec(xml);
  return m ? unescapeXml(m[2] ?? m[3] ?? '') : undefined;
}

/** A pattern whose repeated group itself repeats: refused (catastrophic backtracking). */
const nestedQuantifier = /\([^()]*[+*}][^()]*\)\s*[+*{]/;

function compile(pattern: string): RegExp | undefined {
  if (pattern.length > MAX_REGEX || nestedQuantifier.test(pattern)) return undefined;
  try {
    return new RegExp(`^(?:${pattern})$`);
  } catch {
    return undefined;
  }
}

/** The variables of a `perfmon` configuration; one that cannot be understood is skipped (and said). */
export function parseAlarmConfig(kind: Owner['kind'], text: string, log?: Logger): AlarmVariable[] {
  if (text.length > MAX_CONFIG) {
    log?.warn({ length: text.length }, 'perfmon configuration too long: ignored');
    return [];
  }
  const out: AlarmVariable[] = [];
  for (const m of text.matchAll(/<variable>([\s\S]*?)<\/variable>/g)) {
    const body = m[1]!;
    const name = tagValue(body, 'name');
    if (!name) continue;
    const d = defaults(kind, name);
    const num = (tag: string, fallback: number | undefined): number | undefined => {
      const raw = tagValue(body, tag);
      if (raw === undefined) return fallback;
      const n = Number(raw);
      return raw.trim() !== '' && Number.isFinite(n) ? n : undefined;
    };
    const regex = compile(tagValue(body, 'rrd_regex') ?? d.regex ?? '');
    const level = num('alarm_trigger_level', d.level);
    const periodS = num('alarm_trigger_period', 60);
    const inhibitS = num('alarm_auto_inhibit_period', 3600);
    const priority = num('alarm_priority', 3);
    const fn = tagValue(body, 'consolidation_fn') ?? d.consolidate ?? 'sum';
    const sense = tagValue(body, 'alarm_trigger_sense');
    if (!regex || level === undefined || periodS === undefined || inhibitS === undefined || priority === undefined || (fn !== 'average' && fn !== 'sum')) {
      log?.warn({ variable: name }, 'perfmon variable not understood: ignored');
      continue;
    }
    out.push({
      name, regex, consolidate: fn, level, periodS, inhibitS, priority: Math.trunc(priority),
      high: sense === undefined ? d.high ?? true : sense !== 'low',
      xml: `<variable>${body}</variable>`,
    });
  }
  return out;
}

interface State { config: string; variables: AlarmVariable[]; countdown: number[]; lastAlarm: number[] }

/** The alarms of every host and VM with a perfmon configuration; `check` runs once a step. */
export class Alarms {
  private readonly states = new Map<string, State>();

  constructor(private readonly store: Store, private readonly log: Logger, private readonly stepS: number) {}

  private stateOf(key: string, kind: Owner['kind'], config: string): State {
    let s = this.states.get(key);
    if (!s || s.config !== config) {
      const variables = parseAlarmConfig(kind, config, this.log);
      // a fresh variable may alarm at once: its last alarm is an inhibit period ago
      s = { config, variables, countdown: variables.map((v) => v.periodS), lastAlarm: variables.map((v) => -v.inhibitS) };
      this.states.set(key, s);
    }
    return s;
  }

  /**
   * One step: `valuesOf` gives an owner's newest value per source (asked
   * only for owners with a configuration); `now` in seconds. Messages are
   * created in one transaction.
   */
  check(owners: readonly Owner[], valuesOf: (owner: Owner) => ReadonlyMap<string, number>, now: number): void {
    const created: { name: string; priority: number; cls: 'VM' | 'Host'; obj_uuid: string; timestamp: string; body: string }[] = [];
    const seen = new Set<string>();
    for (const owner of owners) {
      const config = this.configOf(owner);
      const key = `${owner.kind}:${owner.uuid}`;
      if (!config) continue;
      seen.add(key);
      const state = this.stateOf(key, owner.kind, config);
      const values = valuesOf(owner);
      state.variables.forEach((v, i) => {
        const picked = [...values].filter(([name, x]) => v.regex.test(name) && !Number.isNaN(x)).map(([, x]) => x);
        if (picked.length === 0) return;
        const sum = picked.reduce((a, b) => a + b, 0);
        const value = v.consolidate === 'average' ? sum / picked.length : sum;
        const bad = v.high ? value > v.level : value < v.level;
        if (!bad) {
          state.countdown[i] = v.periodS;
          return;
        }
        state.countdown[i]! -= this.stepS;
        if (state.countdown[i]! > 0) return;
        state.countdown[i] = v.periodS;
        if (now - state.lastAlarm[i]! < v.inhibitS) return;
        state.lastAlarm[i] = now;
        created.push({
          name: 'ALARM', priority: v.priority, cls: owner.kind === 'host' ? 'Host' : 'VM', obj_uuid: owner.uuid,
          timestamp: formatDateTime(new Date(now * 1000)), body: `value: ${value.toFixed(6)}\nconfig:\n${v.xml}\n`,
        });
      });
    }
    for (const key of [...this.states.keys()]) if (!seen.has(key)) this.states.delete(key);
    if (created.length && !this.store.isReplica) this.store.transact((tx) => { for (const m of created) tx.create('message', m); });
  }

  private configOf(owner: Owner): string | undefined {
    if (owner.kind === 'host') {
      const ref = this.store.byUuid('host', owner.uuid);
      return ref ? this.store.get('host', ref)?.other_config.perfmon : undefined;
    }
    const ref = this.store.byUuid('VM', owner.uuid);
    return ref ? this.store.get('VM', ref)?.other_config.perfmon : undefined;
  }
}
