import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("VIF_metrics", {
  doc: "Live figures about a VIF.",
  write: "vm-admin",
  fields: [
    rt("uuid", "string"),
    rt("io_read_kbs", "float", { lifecycle: "removed" }),
    rt("io_write_kbs", "float", { lifecycle: "removed" }),
    rt("last_updated", "datetime"),
    rw("other_config", "(string -> string) map"),
  ],
  messages: [
  ],
});
