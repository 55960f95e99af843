/** The login form: the session it makes is kept for this tab only (sessionStorage). */
import { useState, type FormEvent } from 'react';
import { BrowserXenApiClient } from '../../src/client/browser.ts';
import { errorText } from './format.ts';

export function Login({ error, onLoggedIn }: { error: string; onLoggedIn: (c: BrowserXenApiClient) => void }) {
  const [user, setUser] = useState('root');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState(error);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setFailure('');
    const client = new BrowserXenApiClient();
    try {
      await client.login(user, password);
      onLoggedIn(client);
    } catch (err) {
      setFailure(errorText(err));
      setBusy(false);
    }
  }

  return (
    <main className="login">
      <form onSubmit={submit} aria-label="Log in">
        <h1>Xenon</h1>
        <label>
          User
          <input name="user" autoComplete="username" value={user} onChange={(e) => setUser(e.target.value)} required />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} autoFocus />
        </label>
        <button type="submit" className="primary" disabled={busy}>{busy ? 'Logging in…' : 'Log in'}</button>
        {failure && <p className="error" role="alert">{failure}</p>}
      </form>
    </main>
  );
}
