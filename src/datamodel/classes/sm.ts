import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("SM", {
  doc: "A storage manager plugin (SR driver).",
  write: "pool-operator",
  byNameLabel: true,
  fields: [
    rt("uuid", "string"),
    rt("name_label", "string"),
    rt("name_description", "string"),
    rt("type", "string"),
    rt("vendor", "string"),
    rt("copyright", "string"),
    rt("version", "string"),
    rt("required_api_version", "string"),
    rt("configuration", "(string -> string) map"),
    rt("capabilities", "string set", { lifecycle: "deprecated" }),
    rt("features", "(string -> int) map"),
    rw("other_config", "(string -> string) map"),
    rt("driver_filename", "string"),
    rt("required_cluster_stack", "string set"),
  ],
  messages: [
  ],
});
