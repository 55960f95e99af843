/** The console: login, then the tree, the page of the selected object and the tasks panel. */
import { useCallback, useEffect, useRef, useState } from 'react';
import { BrowserXenApiClient } from '../../src/client/browser.ts';
import { ConsoleContext, useConsole, type Console, type Notice } from './context.ts';
import { errorText } from './format.ts';
import { LiveStore, useLink } from './live.ts';
import { Login } from './login.tsx';
import { PageErrorBoundary } from './error-boundary.tsx';
import { Page } from './pages/index.tsx';
import { useRoute } from './route.ts';
import { TasksPanel } from './tasks.tsx';
import { Tree } from './tree.tsx';

const SESSION_KEY = 'xenon-session';

export function App() {
  const [console_, setConsole] = useState<Console | null>(null);
  const [loginError, setLoginError] = useState('');
  const [notices, setNotices] = useState<Notice[]>([]);
  const nextNotice = useRef(0);

  const notify = useCallback((kind: Notice['kind'], text: string) => {
    const n = { id: nextNotice.current++, kind, text };
    setNotices((all) => [...all.slice(-4), n]);
    if (kind === 'info') setTimeout(() => setNotices((all) => all.filter((x) => x.id !== n.id)), 5000);
  }, []);

  const open = useCallback((client: BrowserXenApiClient) => {
    sessionStorage.setItem(SESSION_KEY, client.session);
    const store = new LiveStore(client, (why) => {
      sessionStorage.removeItem(SESSION_KEY);
      setConsole(null);
      setLoginError(why);
    });
    const run = async <T,>(what: string, action: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await action();
      } catch (e) {
        notify('error', `${what} failed: ${errorText(e)}`);
        return undefined;
      }
    };
    void store.run();
    setConsole({ client, store, run, notify });
  }, [notify]);

  // a reload keeps the session of this tab
  useEffect(() => {
    const kept = sessionStorage.getItem(SESSION_KEY);
    if (!kept) return;
    const client = new BrowserXenApiClient();
    client.resume(kept);
    open(client);
  }, [open]);

  const logout = useCallback(async () => {
    if (!console_) return;
    console_.store.stop();
    sessionStorage.removeItem(SESSION_KEY);
    await console_.client.logout();
    setConsole(null);
    setLoginError('');
  }, [console_]);

  if (!console_) return <Login error={loginError} onLoggedIn={open} />;
  return (
    <ConsoleContext.Provider value={console_}>
      <Shell onLogout={logout} notices={notices} dismiss={(id) => setNotices((all) => all.filter((n) => n.id !== id))} />
    </ConsoleContext.Provider>
  );
}

function LinkBanner({ store }: { store: LiveStore }) {
  const link = useLink(store);
  if (link.kind === 'retrying') return <div className="banner error" role="alert">Lost the connection to the server ({link.error}); retrying in {link.inSeconds} s. What you see may be out of date.</div>;
  return null;
}

function Shell({ onLogout, notices, dismiss }: { onLogout: () => void; notices: readonly Notice[]; dismiss: (id: number) => void }) {
  const c = useConsole();
  const route = useRoute();
  const link = useLink(c.store);
  const [treeOpen, setTreeOpen] = useState(false);
  useEffect(() => setTreeOpen(false), [route.path]);
  return (
    <div className="shell">
      <header className="top">
        <button className="menu" aria-label="Show the resource tree" aria-expanded={treeOpen} onClick={() => setTreeOpen(!treeOpen)}>☰</button>
        <a className="brand" href="#/">Xenon</a>
        <span className={`link ${link.kind}`} title="Live updates">{link.kind === 'live' ? '● live' : link.kind === 'loading' ? '○ loading…' : '○ offline'}</span>
        <a href="#/new-vm" className="button primary">New VM</a>
        <button onClick={onLogout}>Log out</button>
      </header>
      <LinkBanner store={c.store} />
      <div className="body">
        <nav className={`tree ${treeOpen ? 'open' : ''}`} aria-label="Resources">
          <Tree selected={route.path} />
        </nav>
        <main className="page" id="main">
          <PageErrorBoundary resetKey={route.path}>
            {c.store.loaded || link.kind === 'live' ? <Page route={route} /> : <p className="muted">Loading the pool…</p>}
          </PageErrorBoundary>
        </main>
      </div>
      <div className="notices" aria-live="polite">
        {notices.map((n) => (
          <div key={n.id} className={`notice ${n.kind}`} role={n.kind === 'error' ? 'alert' : 'status'}>
            <span>{n.text}</span>
            <button aria-label="Dismiss" onClick={() => dismiss(n.id)}>×</button>
          </div>
        ))}
      </div>
      <TasksPanel />
    </div>
  );
}
