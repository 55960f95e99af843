/**
 * The HTTP actions (xapi's `http_actions`): each path a client may use beside
 * the RPC endpoints, its method, the roles that may use it and whether it
 * takes the client's task (`task_id=`). Declared once here; the HTTP handlers
 * authorise through it (messages/http-handlers.ts), and the RBAC permission
 * a refusal names is xapi's `http/<name>`.
 */
import { expandRoles, type Role, type RoleSpec } from './dsl.ts';

export type HttpMethod = 'GET' | 'PUT' | 'POST' | 'CONNECT';

export interface HttpActionDecl {
  /** xapi's public name, e.g. `put_import_raw_vdi`. */
  readonly name: HttpActionName;
  readonly method: HttpMethod;
  readonly path: string;
  /** The weakest role allowed, as in the class files. */
  readonly roles: RoleSpec;
  /** Takes a `task_id=` of the client's own, whose progress and outcome it sets. */
  readonly task: boolean;
}

export interface HttpAction extends Omit<HttpActionDecl, 'roles'> {
  readonly roles: readonly Role[];
  /** The permission RBAC_PERMISSION_DENIED names. */
  readonly permission: string;
}

const action = (name: HttpActionName, method: HttpMethod, path: string, roles: RoleSpec, task: boolean): HttpActionDecl => ({ name, method, path, roles, task });

/** Those Xenon serves, with xapi's roles. */
export const HTTP_ACTION_DECLS: readonly HttpActionDecl[] = [
  action('put_import', 'PUT', '/import', 'vm-admin', true),
  action('put_import_raw_vdi', 'PUT', '/import_raw_vdi', 'vm-admin', true),
  action('get_export', 'GET', '/export', 'vm-admin', true),
  action('get_export_raw_vdi', 'GET', '/export_raw_vdi', 'vm-admin', true),
  action('connect_console', 'CONNECT', '/console', 'vm-operator', false),
  // xapi's GET /console is the websocket form of the console; ours is the serial log, under the same role
  action('connect_console_ws', 'GET', '/console', 'vm-operator', false),
  action('get_rrd_updates', 'GET', '/rrd_updates', 'read-only', false),
  action('get_host_rrd', 'GET', '/host_rrd', 'read-only', false),
  action('get_vm_rrd', 'GET', '/vm_rrd', 'read-only', false),
  // not xapi's: the same figures for Prometheus, readable by the role that reads /rrd_updates
  action('get_metrics', 'GET', '/metrics', 'read-only', false),
];

export const HTTP_ACTIONS: readonly HttpAction[] = HTTP_ACTION_DECLS.map((d) => ({
  ...d,
  roles: expandRoles(d.roles),
  permission: `http/${d.name}`,
}));

export type HttpActionName = 'put_import' | 'put_import_raw_vdi' | 'get_export' | 'get_export_raw_vdi' | 'connect_console' | 'connect_console_ws'
  | 'get_rrd_updates' | 'get_host_rrd' | 'get_vm_rrd' | 'get_metrics';

/** Where a declared action is served: handlers are registered under it, so a path is never written twice. */
export function httpActionPath(name: HttpActionName): string {
  const found = HTTP_ACTIONS.find((a) => a.name === name);
  if (!found) throw new Error(`HTTP action ${name} is not declared`);
  return found.path;
}

/**
 * The action a request is for: CONNECT requests match CONNECT actions, any
 * other method the path's other action (the handler itself answers a method
 * it does not take with 405).
 */
export function httpActionFor(method: string | undefined, path: string): HttpAction | undefined {
  const connect = method === 'CONNECT';
  // a trailing slash names the same action (Xen Orchestra calls /import_raw_vdi/)
  const bare = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  return HTTP_ACTIONS.find((a) => a.path === bare && (a.method === 'CONNECT') === connect);
}
