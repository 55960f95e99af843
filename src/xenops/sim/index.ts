export { SimBackend, type SimBackendOptions } from './backend.ts';
