"""Sends hostile strings with the real Python XenAPI binding, then reads every
class's records: every reply must parse (an XML-RPC reply made malformed by one
stored character would raise ExpatError here).

Usage: /usr/bin/python3 xenapi_hostile.py URL USER PASSWORD
Prints one JSON object; the test asserts on it.
"""
import json
import sys

from os_xenapi.client import XenAPI

# what XML 1.0 cannot carry: Python's xmlrpc sends these as they are
REFUSED = ['a\x01b', 'nul\x00', 'esc\x1b[31m', 'x\x0bx', 'x\x0cx', 'x\x1fx', '\ufffe', '\uffff']
# awkward but legal: must be stored and come back as sent
KEPT = ['tab\there', 'line\nbreak', '<b>&amp;</b> "q" \'a\'', ']]>', 'caf\u00e9 \u4e2d\u6587 \U0001f600', '\ufffd', ' lead and trail ']


def failure(call):
    try:
        call()
        return None
    except XenAPI.Failure as e:
        return e.details


def main():
    url, user, password = sys.argv[1:4]
    session = XenAPI.Session(url)
    session.xenapi.login_with_password(user, password)
    x = session.xenapi
    out = {'refused': [], 'kept': [], 'records': {}, 'errors': []}
    net = x.network.create({'name_label': 'hostile', 'name_description': '', 'MTU': '1500', 'other_config': {}})
    for s in REFUSED:
        out['refused'].append({
            'label': failure(lambda: x.network.set_name_label(net, s)),
            'key': failure(lambda: x.network.add_to_other_config(net, s, 'v')),
            'value': failure(lambda: x.network.add_to_other_config(net, 'k', s)),
            'create': failure(lambda: x.network.create({'name_label': s, 'name_description': '', 'MTU': '1500', 'other_config': {}})),
        })
    for i, s in enumerate(KEPT):
        x.network.set_name_description(net, s)
        x.network.add_to_other_config(net, 'k%d' % i, s)
        rec = x.network.get_record(net)
        out['kept'].append(rec['name_description'] == s and rec['other_config']['k%d' % i] == s)
    for method in x.system.listMethods():
        if not method.endswith('.get_all_records') or method.startswith('Async.'):
            continue
        cls = method[:-len('.get_all_records')]
        try:
            out['records'][cls] = len(getattr(x, cls).get_all_records())
        except XenAPI.Failure as e:
            out['records'][cls] = e.details[0]
        except Exception as e:  # a reply that does not parse
            out['errors'].append('%s: %s: %s' % (method, type(e).__name__, e))
    out['labels'] = sorted(r['name_label'] for r in x.network.get_all_records().values())
    x.network.destroy(net)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
