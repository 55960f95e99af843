/** Regenerates every derived file: the typed client and the API coverage report. */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const run = (script: string): string => execFileSync(process.execPath, ['--import', 'tsx', `${root}tools/gen/${script}`], { encoding: 'utf8', maxBuffer: 64 << 20 });
writeFileSync(`${root}src/client/generated.ts`, run('client.ts'));
writeFileSync(`${root}docs/api-coverage.md`, run('coverage.ts'));
process.stdout.write('generated src/client/generated.ts and docs/api-coverage.md\n');
