import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("blob", {
  doc: "A binary object attached to another object.",
  write: "pool-operator",
  byNameLabel: true,
  fields: [
    rt("uuid", "string"),
    rw("name_label", "string"),
    rw("name_description", "string"),
    rt("size", "int"),
    rw("public", "bool"),
    cn("last_updated", "datetime"),
    cn("mime_type", "string"),
  ],
  messages: [
    msg("destroy", "blob ref self", "void", "pool-operator"),
    msg("create", "string mime_type, bool public = false", "blob ref", "pool-operator"),
  ],
});
