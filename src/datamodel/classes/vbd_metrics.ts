import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("VBD_metrics", {
  doc: "Live figures about a VBD.",
  write: "vm-admin",
  fields: [
    rt("uuid", "string"),
    rt("io_read_kbs", "float", { lifecycle: "removed" }),
    rt("io_write_kbs", "float", { lifecycle: "removed" }),
    rt("last_updated", "datetime", { lifecycle: "removed" }),
    rw("other_config", "(string -> string) map", { lifecycle: "removed" }),
  ],
  messages: [
  ],
});
