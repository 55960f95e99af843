/**
 * xapi's little query language for get_all_records_where:
 *   field "name_label" = "foo" and not (field "power_state" = "Halted" or false)
 */
import { XenApiError } from '../datamodel/api-error.ts';
import type { DbRecord } from '../db/store.ts';

type Pred = (r: DbRecord) => boolean;

function tokenize(expr: string): string[] {
  const out: string[] = [];
  if (expr.trim() === '') return out;
  const re = /\s*("(?:[^"\\]|\\.)*"|\(|\)|=|<>|[A-Za-z_]+)\s*/y;
  while (re.lastIndex < expr.length) {
    const m = re.exec(expr);
    if (!m) throw new XenApiError('INVALID_VALUE', 'expr', expr);
    out.push(m[1]);
  }
  return out;
}

const fieldText = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

export function compileWhere(expr: string): Pred {
  const tokens = tokenize(expr);
  let i = 0;
  const bad = (): never => {
    throw new XenApiError('INVALID_VALUE', 'expr', expr);
  };
  const next = (): string => tokens[i++] ?? bad();
  const str = (): string => {
    const t = next();
    if (!t.startsWith('"')) bad();
    return JSON.parse(t) as string;
  };
  const primary = (): Pred => {
    const t = next();
    if (t === 'true') return () => true;
    if (t === 'false') return () => false;
    if (t === 'not') {
      const p = primary();
      return (r) => !p(r);
    }
    if (t === '(') {
      const p = disjunction();
      if (next() !== ')') bad();
      return p;
    }
    if (t === 'field') {
      const name = str();
      const op = next();
      const value = str();
      if (op === '=') return (r) => fieldText(r[name]) === value;
      if (op === '<>') return (r) => fieldText(r[name]) !== value;
    }
    return bad();
  };
  const conjunction = (): Pred => {
    let p = primary();
    while (tokens[i] === 'and') {
      i++;
      const a = p;
      const b = primary();
      p = (r) => a(r) && b(r);
    }
    return p;
  };
  const disjunction = (): Pred => {
    let p = conjunction();
    while (tokens[i] === 'or') {
      i++;
      const a = p;
      const b = conjunction();
      p = (r) => a(r) || b(r);
    }
    return p;
  };
  if (tokens.length === 0) return () => true;
  const pred = disjunction();
  if (i !== tokens.length) bad();
  return pred;
}
