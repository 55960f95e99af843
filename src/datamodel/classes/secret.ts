import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("secret", {
  doc: "A secret value kept by the pool (e.g. a storage password).",
  read: "pool-operator",
  write: "pool-operator",
  ctor: "pool-operator",
  fields: [
    rt("uuid", "string"),
    rw("value", "string", { read: "pool-admin" }),
    rw("other_config", "(string -> string) map", { read: "read-only+cert" }),
  ],
  messages: [
  ],
});
