/** Every generated file and the function that makes it (used by `npm run gen` and the freshness test). */
import { generateClient } from './client.ts';
import { generateCoverage } from './coverage.ts';
import { generateHandlers } from './handlers.ts';
import { generateRecords } from './records.ts';

export const OUTPUTS: readonly { readonly path: string; readonly generate: () => string }[] = [
  { path: 'src/datamodel/generated/records.ts', generate: generateRecords },
  { path: 'src/messages/generated/handlers.ts', generate: generateHandlers },
  { path: 'src/client/generated.ts', generate: generateClient },
  { path: 'docs/api-coverage.md', generate: generateCoverage },
];
