/** A stored object as the database holds it: frozen, replaced whole on change. */
export type DbRecord = Readonly<Record<string, unknown>>;
