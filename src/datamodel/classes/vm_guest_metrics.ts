import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("VM_guest_metrics", {
  doc: "What the guest agent reports from inside a VM.",
  write: "vm-admin",
  fields: [
    rt("uuid", "string"),
    rt("os_version", "(string -> string) map"),
    rt("PV_drivers_version", "(string -> string) map"),
    rt("PV_drivers_up_to_date", "bool", { lifecycle: "deprecated" }),
    rt("memory", "(string -> string) map", { lifecycle: "removed" }),
    rt("disks", "(string -> string) map", { lifecycle: "removed" }),
    rt("networks", "(string -> string) map"),
    rt("other", "(string -> string) map"),
    rt("last_updated", "datetime"),
    rw("other_config", "(string -> string) map"),
    rt("live", "bool"),
    rt("can_use_hotplug_vbd", "enum tristate_type", { default: "unspecified" }),
    rt("can_use_hotplug_vif", "enum tristate_type", { default: "unspecified" }),
    rt("PV_drivers_detected", "bool"),
  ],
  messages: [
  ],
});
