import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("VM_metrics", {
  doc: "Live figures about a VM.",
  write: "vm-admin",
  fields: [
    rt("uuid", "string"),
    rt("memory_actual", "int"),
    rt("VCPUs_number", "int"),
    rt("VCPUs_utilisation", "(int -> float) map", { lifecycle: "removed" }),
    rt("VCPUs_CPU", "(int -> int) map"),
    rt("VCPUs_params", "(string -> string) map"),
    rt("VCPUs_flags", "(int -> string set) map"),
    rt("state", "string set"),
    rt("start_time", "datetime"),
    rt("install_time", "datetime"),
    rt("last_updated", "datetime"),
    rw("other_config", "(string -> string) map"),
    rt("hvm", "bool"),
    rt("nested_virt", "bool"),
    rt("nomigrate", "bool"),
    rt("current_domain_type", "enum domain_type", { default: "unspecified" }),
  ],
  messages: [
  ],
});
