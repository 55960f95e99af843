import { createRoot } from 'react-dom/client';
import './style.css';
import { App } from './app.tsx';

const root = document.getElementById('root');
if (root) createRoot(root).render(<App />);
