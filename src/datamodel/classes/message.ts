import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("message", {
  doc: "An alert or notice addressed to an administrator.",
  write: "pool-operator",
  accessors: false,
  fields: [
    rt("uuid", "string"),
    rt("name", "string"),
    rt("priority", "int"),
    rt("cls", "enum cls"),
    rt("obj_uuid", "string"),
    rt("timestamp", "datetime"),
    rt("body", "string"),
  ],
  messages: [
    msg("get_all_records_where", "string expr", "(message ref -> message record) map", "read-only+cert", { async: false }),
    msg("get_all_records", "", "(message ref -> message record) map", "read-only+cert", { async: false }),
    msg("get_by_uuid", "string uuid", "message ref", "read-only+cert", { async: false }),
    msg("get_record", "message ref self", "message record", "read-only+cert", { async: false }),
    msg("get_since", "datetime since", "(message ref -> message record) map", "read-only+cert", { async: false }),
    msg("get_all", "", "message ref set", "read-only+cert", { async: false }),
    msg("get", "enum cls cls, string obj_uuid, datetime since", "(message ref -> message record) map", "read-only+cert", { async: false }),
    msg("destroy_many", "message ref set messages", "void", "pool-operator", { async: false, lifecycle: "prototyped" }),
    msg("destroy", "message ref self", "void", "pool-operator", { async: false }),
    msg("create", "string name, int priority, enum cls cls, string obj_uuid, string body", "message ref", "pool-operator", { async: false }),
  ],
});
