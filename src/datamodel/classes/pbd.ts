import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("PBD", {
  doc: "How a host reaches an SR.",
  write: "pool-operator",
  ctor: "pool-operator",
  fields: [
    rt("uuid", "string"),
    cn("host", "host ref"),
    cn("SR", "SR ref"),
    cn("device_config", "(string -> string) map"),
    rt("currently_attached", "bool"),
    rw("other_config", "(string -> string) map"),
  ],
  messages: [
    msg("set_device_config", "PBD ref self, (string -> string) map value", "void", "pool-operator"),
    msg("unplug", "PBD ref self", "void", "pool-operator"),
    msg("plug", "PBD ref self", "void", "pool-operator"),
  ],
});
