import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("host_cpu", {
  doc: "One physical CPU of a host.",
  write: "pool-operator",
  fields: [
    rt("uuid", "string"),
    rt("host", "host ref"),
    rt("number", "int"),
    rt("vendor", "string"),
    rt("speed", "int"),
    rt("modelname", "string"),
    rt("family", "int"),
    rt("model", "int"),
    rt("stepping", "string"),
    rt("flags", "string"),
    rt("features", "string"),
    rt("utilisation", "float"),
    rw("other_config", "(string -> string) map"),
  ],
  messages: [
  ],
});
