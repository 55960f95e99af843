import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("Bond", {
  doc: "Several PIFs bonded into one.",
  write: "pool-operator",
  fields: [
    rt("uuid", "string"),
    cn("master", "PIF ref"),
    rt("slaves", "PIF ref set"),
    rw("other_config", "(string -> string) map"),
    rt("primary_slave", "PIF ref"),
    rt("mode", "enum bond_mode", { default: "balance-slb" }),
    rt("properties", "(string -> string) map"),
    rt("links_up", "int"),
    rt("auto_update_mac", "bool", { default: true }),
  ],
  messages: [
    msg("set_property", "Bond ref self, string name, string value", "void", "pool-operator"),
    msg("set_mode", "Bond ref self, enum bond_mode value", "void", "pool-operator"),
    msg("destroy", "Bond ref self", "void", "pool-operator"),
    msg("create", 'network ref network, PIF ref set members, string MAC, enum bond_mode mode = "balance-slb", (string -> string) map properties = {}', "Bond ref", "pool-operator"),
  ],
});
