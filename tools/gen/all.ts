/** Regenerates every derived file (tools/gen/outputs.ts lists them). */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { OUTPUTS } from './outputs.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
for (const o of OUTPUTS) writeFileSync(`${root}${o.path}`, o.generate());
process.stdout.write(`generated ${OUTPUTS.map((o) => o.path).join(', ')}\n`);
