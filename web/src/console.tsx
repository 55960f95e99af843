/**
 * A VM's consoles in the page: the graphical one (noVNC) and the serial one
 * (xterm), each over a WebSocket on /console that the daemon bridges to the
 * VM's VNC or serial socket after the same role check as xapi's /console.
 */
import RFB from '@novnc/novnc';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState } from 'react';
import type { VM_record } from '../../src/client/generated.ts';
import { useConsole } from './context.ts';
import { useTable } from './live.ts';

export function consoleSocketUrl(consoleRef: string, session: string): string {
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${window.location.host}/console?ref=${encodeURIComponent(consoleRef)}&session_id=${encodeURIComponent(session)}`;
}

const XK_RETURN = 0xff0d;
const XK_TAB = 0xff09;

/** X keysyms for text typed into the graphical console (Latin-1 maps to itself, the rest to Unicode keysyms). */
function keysymsOf(text: string): number[] {
  const out: number[] = [];
  for (const ch of text.replace(/\r\n?/g, '\n')) {
    const cp = ch.codePointAt(0) ?? 0;
    if (ch === '\n') out.push(XK_RETURN);
    else if (ch === '\t') out.push(XK_TAB);
    else if (cp >= 0x20 && cp <= 0xff) out.push(cp);
    else if (cp > 0xff) out.push(0x1000000 + cp);
  }
  return out;
}

type Status = { kind: 'connecting' } | { kind: 'connected' } | { kind: 'closed'; why: string };

function StatusLine({ status, retry }: { status: Status; retry: () => void }) {
  if (status.kind === 'connected') return <span className="console-status ok" role="status">connected</span>;
  if (status.kind === 'connecting') return <span className="console-status" role="status">connecting…</span>;
  return <span className="console-status error" role="alert">{status.why} <button className="small" onClick={retry}>Reconnect</button></span>;
}

function Graphical({ consoleRef }: { consoleRef: string }) {
  const { client } = useConsole();
  const screen = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB | null>(null);
  const [status, setStatus] = useState<Status>({ kind: 'connecting' });
  const [attempt, setAttempt] = useState(0);
  const [paste, setPaste] = useState('');
  useEffect(() => {
    if (!screen.current) return;
    setStatus({ kind: 'connecting' });
    const r = new RFB(screen.current, consoleSocketUrl(consoleRef, client.session), { shared: true });
    r.scaleViewport = true;
    r.background = '#000';
    r.addEventListener('connect', () => setStatus({ kind: 'connected' }));
    r.addEventListener('disconnect', () => setStatus({ kind: 'closed', why: 'The console connection closed.' }));
    r.addEventListener('securityfailure', () => setStatus({ kind: 'closed', why: 'The VNC server refused the connection.' }));
    rfb.current = r;
    return () => {
      rfb.current = null;
      r.disconnect();
    };
  }, [consoleRef, client, attempt]);
  const typeText = () => {
    const r = rfb.current;
    if (!r) return;
    for (const k of keysymsOf(paste)) {
      r.sendKey(k, null, true);
      r.sendKey(k, null, false);
    }
    setPaste('');
  };
  return (
    <div className="console graphical">
      <div className="console-bar">
        <StatusLine status={status} retry={() => setAttempt(attempt + 1)} />
        <button className="small" onClick={() => rfb.current?.sendCtrlAltDel()} disabled={status.kind !== 'connected'}>Ctrl+Alt+Del</button>
        <form className="inline" onSubmit={(e) => { e.preventDefault(); typeText(); }}>
          <input aria-label="Text to type into the console" placeholder="Paste text to type…" value={paste} onChange={(e) => setPaste(e.target.value)} />
          <button className="small" type="submit" disabled={status.kind !== 'connected' || paste === ''}>Type it</button>
        </form>
      </div>
      <div className="screen" ref={screen} data-testid="vnc-screen" />
    </div>
  );
}

function Serial({ consoleRef }: { consoleRef: string }) {
  const { client } = useConsole();
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>({ kind: 'connecting' });
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    if (!box.current) return;
    const term = new Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000, fontSize: 14 });
    term.open(box.current);
    const ws = new WebSocket(consoleSocketUrl(consoleRef, client.session));
    ws.binaryType = 'arraybuffer';
    const encoder = new TextEncoder();
    setStatus({ kind: 'connecting' });
    ws.onopen = () => { setStatus({ kind: 'connected' }); term.focus(); };
    ws.onmessage = (m) => term.write(m.data instanceof ArrayBuffer ? new Uint8Array(m.data) : String(m.data));
    ws.onclose = (e) => setStatus({ kind: 'closed', why: e.reason || 'The serial console connection closed.' });
    const typed = term.onData((d) => ws.readyState === WebSocket.OPEN && ws.send(encoder.encode(d)));
    return () => {
      typed.dispose();
      ws.close();
      term.dispose();
    };
  }, [consoleRef, client, attempt]);
  return (
    <div className="console serial">
      <div className="console-bar"><StatusLine status={status} retry={() => setAttempt(attempt + 1)} /> <span className="muted">Paste with Ctrl+Shift+V.</span></div>
      <div className="terminal" ref={box} data-testid="serial-terminal" />
    </div>
  );
}

export function ConsoleView({ vm }: { vm: VM_record }) {
  const { store } = useConsole();
  const consoles = useTable(store, 'console');
  const rfb = vm.consoles.find((r) => consoles.get(r)?.protocol === 'rfb');
  const serial = vm.consoles.find((r) => consoles.get(r)?.protocol === 'vt100');
  const [which, setWhich] = useState<'graphical' | 'serial'>('graphical');
  if (vm.power_state !== 'Running' && vm.power_state !== 'Paused') return <p className="muted">The console is there while the VM runs.</p>;
  if (!rfb && !serial) return <p className="muted">This VM has no console.</p>;
  const shown = which === 'graphical' && rfb ? 'graphical' : serial ? 'serial' : 'graphical';
  return (
    <div>
      <div className="segmented" role="radiogroup" aria-label="Console">
        <label><input type="radio" name="console" checked={shown === 'graphical'} disabled={!rfb} onChange={() => setWhich('graphical')} /> Graphical</label>
        <label><input type="radio" name="console" checked={shown === 'serial'} disabled={!serial} onChange={() => setWhich('serial')} /> Serial</label>
      </div>
      {shown === 'graphical' && rfb && <Graphical consoleRef={rfb} />}
      {shown === 'serial' && serial && <Serial consoleRef={serial} />}
    </div>
  );
}
