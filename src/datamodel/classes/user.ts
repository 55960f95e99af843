import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("user", {
  doc: "A local user account (legacy).",
  write: "pool-admin",
  ctor: "pool-admin",
  getAll: false,
  fields: [
    rt("uuid", "string"),
    cn("short_name", "string"),
    rw("fullname", "string"),
    rw("other_config", "(string -> string) map"),
  ],
  messages: [
  ],
});
