import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("host_metrics", {
  doc: "Live figures about a host.",
  write: "pool-operator",
  fields: [
    rt("uuid", "string"),
    rt("memory_total", "int"),
    rt("memory_free", "int", { lifecycle: "removed" }),
    rt("live", "bool"),
    rt("last_updated", "datetime"),
    rw("other_config", "(string -> string) map"),
  ],
  messages: [
  ],
});
