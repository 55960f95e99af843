/**
 * GET /export and PUT /import: a VM as an XVA, as xapi streams it — an
 * uncompressed tar whose first member `ova.xml` is an XML-RPC struct
 * {version, objects} of the VM, its VBDs, VIFs, networks, VDIs and SRs under
 * archive-local ids (`Ref:0`, `Ref:1`…), followed by each disk's 1 MiB
 * chunks with checksums. Authenticated by session_id, tracked by a task
 * (the import's result is the new VMs' refs, as XML-RPC), streamed with
 * backpressure; a failed import leaves nothing behind.
 */
export { exportVm } from './xva-export.ts';
export { importVm } from './xva-import.ts';
