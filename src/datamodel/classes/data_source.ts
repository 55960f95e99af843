import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("data_source", {
  doc: "A metric that can be recorded into the RRDs.",
  write: "pool-operator",
  accessors: false,
  persistent: false,
  fields: [
    rt("name_label", "string"),
    rt("name_description", "string"),
    rt("enabled", "bool"),
    rt("standard", "bool"),
    rt("units", "string"),
    rt("min", "float"),
    rt("max", "float"),
    rt("value", "float"),
  ],
  messages: [
  ],
});
