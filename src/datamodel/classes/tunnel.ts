import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("tunnel", {
  doc: "A tunnel between hosts carrying a private network.",
  write: "pool-operator",
  fields: [
    rt("uuid", "string"),
    cn("access_PIF", "PIF ref"),
    cn("transport_PIF", "PIF ref"),
    rw("status", "(string -> string) map", { default: { "active": "false" } }),
    rw("other_config", "(string -> string) map"),
    rw("protocol", "enum tunnel_protocol", { default: "gre" }),
  ],
  messages: [
    msg("destroy", "tunnel ref self", "void", "pool-operator"),
    msg("create", 'PIF ref transport_PIF, network ref network, enum tunnel_protocol protocol = "gre"', "tunnel ref", "pool-operator"),
  ],
});
