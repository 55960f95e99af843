import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("PIF_metrics", {
  doc: "Live figures about a PIF.",
  write: "pool-operator",
  fields: [
    rt("uuid", "string"),
    rt("io_read_kbs", "float", { lifecycle: "removed" }),
    rt("io_write_kbs", "float", { lifecycle: "removed" }),
    rt("carrier", "bool"),
    rt("vendor_id", "string"),
    rt("vendor_name", "string"),
    rt("device_id", "string"),
    rt("device_name", "string"),
    rt("speed", "int"),
    rt("duplex", "bool"),
    rt("pci_bus_path", "string"),
    rt("last_updated", "datetime"),
    rw("other_config", "(string -> string) map"),
  ],
  messages: [
  ],
});
