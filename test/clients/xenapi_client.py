"""Drives Xenon with the real Python XenAPI binding (Debian's python3-os-xenapi).

Usage: /usr/bin/python3 xenapi_client.py URL USER PASSWORD
Prints one JSON object describing what it saw; the test asserts on it.
"""
import json
import sys
import time
import xmlrpc.client

from os_xenapi.client import XenAPI


def kinds(record, fields):
    """The Python type each field arrived as (XML-RPC ints come as strings)."""
    return {f: type(record[f]).__name__ for f in fields}


def wait_task(x, task, timeout=10):
    end = time.time() + timeout
    while x.task.get_status(task) == 'pending':
        if time.time() > end:
            raise RuntimeError('task still pending: ' + task)
        time.sleep(0.05)
    return x.task.get_record(task)


def main():
    url, user, password = sys.argv[1:4]
    out = {}
    session = XenAPI.Session(url)
    session.xenapi.login_with_password(user, password)
    x = session.xenapi
    out['handle'] = session.handle
    # the binding reads this itself at login (pool.get_all, pool.get_master, host.get_API_version_*)
    out['api_version'] = session.API_version

    # VMs and templates
    vms = x.VM.get_all_records()
    out['vm_count'] = len(vms)
    out['vm_refs_ok'] = all(r.startswith('OpaqueRef:') for r in vms)
    out['templates'] = sorted(v['name_label'] for v in vms.values() if v['is_a_template'])
    dom0 = [r for r, v in vms.items() if v['is_control_domain']]
    out['dom0_count'] = len(dom0)
    out['vm_kinds'] = kinds(vms[dom0[0]], ['name_label', 'is_a_template', 'memory_static_max', 'VCPUs_max',
                                           'other_config', 'VBDs', 'power_state', 'resident_on', 'user_version'])
    out['vm_get_all_matches'] = sorted(x.VM.get_all()) == sorted(vms)

    # the host
    pool = x.pool.get_all()[0]
    host = x.pool.get_master(pool)
    h = x.host.get_record(host)
    out['host'] = {
        'is_master': h['uuid'] == x.host.get_uuid(host) and x.host.get_by_uuid(h['uuid']) == host,
        'API_version_major': h['API_version_major'],
        'enabled': h['enabled'],
        'cpu_count': len(h['host_CPUs']),
        'resident_dom0': dom0[0] in h['resident_VMs'],
    }
    out['host_kinds'] = kinds(h, ['API_version_major', 'enabled', 'memory_overhead', 'cpu_info', 'host_CPUs',
                                  'software_version', 'name_label'])
    cpu = x.host_cpu.get_record(h['host_CPUs'][0])
    out['host_cpu_kinds'] = kinds(cpu, ['number', 'speed', 'utilisation', 'host'])

    # a network, and its other_config map
    net = x.network.create({'name_label': 'py net', 'name_description': 'from XenAPI.py',
                            'MTU': '1500', 'other_config': {'a': '1'}, 'tags': []})
    x.network.add_to_other_config(net, 'b', '2')
    after_add = x.network.get_other_config(net)
    x.network.remove_from_other_config(net, 'a')
    x.network.remove_from_other_config(net, 'not-there')  # a missing key is no error
    try:
        x.network.add_to_other_config(net, 'b', '3')
        dup = None
    except XenAPI.Failure as e:
        dup = e.details
    n = x.network.get_record(net)
    out['network'] = {
        'ref': net,
        'name_label': n['name_label'],
        'MTU': n['MTU'],
        'after_add': after_add,
        'other_config': n['other_config'],
        'duplicate': dup,
        'by_name': x.network.get_by_name_label('py net') == [net],
    }

    # a task's datetime and number fields
    task = x.task.create('py task', 'made by XenAPI.py')
    t = x.task.get_record(task)
    out['task'] = {
        'created_type': type(t['created']).__name__,
        'created': str(t['created']),
        'finished': str(t['finished']),
        'progress': t['progress'],
        'progress_type': type(t['progress']).__name__,
        'status': t['status'],
        'name_label': t['name_label'],
    }
    x.task.destroy(task)

    # Async: a task at once, the result in it
    atask = x.Async.network.create({'name_label': 'py async net', 'name_description': '', 'other_config': {}, 'tags': []})
    a = wait_task(x, atask)
    out['async'] = {'task': atask, 'status': a['status'], 'result': a['result'], 'error_info': a['error_info']}
    ftask = x.Async.network.destroy(net)
    out['async_void'] = {'status': wait_task(x, ftask)['status'], 'result': x.task.get_result(ftask)}

    # events: a float timeout, real-case class names
    batch = getattr(x.event, 'from')(['VM', 'network'], '', 0.1)
    out['events'] = {
        'classes': sorted(set(e['class'] for e in batch['events'])),
        'token_type': type(batch['token']).__name__,
        'id_type': type(batch['events'][0]['id']).__name__,
        'task_count_type': type(batch['valid_ref_counts']['task']).__name__,
    }

    # errors
    try:
        x.VM.get_record('OpaqueRef:bogus')
        out['error'] = None
    except XenAPI.Failure as e:
        out['error'] = e.details
    try:
        x.VM.frobnicate()
        out['unknown'] = None
    except XenAPI.Failure as e:
        out['unknown'] = e.details

    # SESSION_INVALID: the binding logs in again by itself and retries
    getattr(session, 'session.logout')(session.handle)
    out['after_relogin'] = {'vm_count': len(x.VM.get_all()), 'new_handle': session.handle != out['handle']}

    x.session.logout()
    out['logged_out'] = session.handle is None
    # the raw envelope, as a plain xmlrpc.client sees it
    out['stale_session'] = xmlrpc.client.ServerProxy(url).VM.get_all(out['handle'])
    print(json.dumps(out))


if __name__ == '__main__':
    main()
