/** Which page a route shows. */
import type { Route } from '../route.ts';
import { HostPage, PoolPage } from './pool.tsx';
import { NetworkPage, NetworksPage } from './network.tsx';
import { SrPage, StoragePage } from './storage.tsx';
import { VmPage } from './vm.tsx';
import { NewVmWizard } from './wizard.tsx';

export function Page({ route }: { route: Route }) {
  const [kind, ref = '', tab = ''] = route.parts;
  switch (kind) {
    case 'VM': return <VmPage key={ref} vmRef={ref} tab={tab} />;
    case 'host': return <HostPage hostRef={ref} />;
    case 'SR': return <SrPage srRef={ref} />;
    case 'network': return <NetworkPage netRef={ref} />;
    case 'storage': return <StoragePage />;
    case 'networks': return <NetworksPage />;
    case 'new-vm': return <NewVmWizard />;
    default: return <PoolPage />;
  }
}
