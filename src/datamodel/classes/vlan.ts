import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("VLAN", {
  doc: "A tagged VLAN on a PIF.",
  write: "pool-operator",
  fields: [
    rt("uuid", "string"),
    cn("tagged_PIF", "PIF ref"),
    rt("untagged_PIF", "PIF ref"),
    cn("tag", "int", { default: -1 }),
    rw("other_config", "(string -> string) map"),
  ],
  messages: [
    msg("destroy", "VLAN ref self", "void", "pool-operator"),
    msg("create", "PIF ref tagged_PIF, int tag, network ref network", "VLAN ref", "pool-operator"),
  ],
});
