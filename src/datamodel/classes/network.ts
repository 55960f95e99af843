import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("network", {
  doc: "A virtual network (a switch) that VIFs and PIFs attach to.",
  write: "pool-operator",
  ctor: "vm-admin",
  byNameLabel: true,
  fields: [
    rt("uuid", "string"),
    rw("name_label", "string"),
    rw("name_description", "string"),
    rt("allowed_operations", "enum network_operations set"),
    rt("current_operations", "(string -> enum network_operations) map"),
    rt("VIFs", "VIF ref set"),
    rt("PIFs", "PIF ref set"),
    rw("MTU", "int", { default: 1500, write: "vm-admin" }),
    rw("other_config", "(string -> string) map"),
    cn("bridge", "string"),
    cn("managed", "bool", { default: true }),
    rt("blobs", "(string -> blob ref) map"),
    rw("tags", "string set", { write: "vm-operator" }),
    rt("default_locking_mode", "enum network_default_locking_mode", { default: "unlocked" }),
    rt("assigned_ips", "(VIF ref -> string) map"),
    rt("purpose", "enum network_purpose set"),
  ],
  messages: [
    msg("remove_purpose", "network ref self, enum network_purpose value", "void", "pool-admin"),
    msg("add_purpose", "network ref self, enum network_purpose value", "void", "pool-admin"),
    msg("set_default_locking_mode", "network ref network, enum network_default_locking_mode value", "void", "pool-operator"),
    msg("create_new_blob", "network ref network, string name, string mime_type, bool public = false", "blob ref", "pool-operator"),
  ],
});
