import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("role", {
  doc: "A named set of permissions.",
  write: "pool-operator",
  byNameLabel: true,
  fields: [
    rt("uuid", "string"),
    cn("name_label", "string"),
    cn("name_description", "string"),
    cn("subroles", "role ref set"),
    rt("is_internal", "bool"),
  ],
  messages: [
    msg("get_by_permission_name_label", "string label", "role ref set", "read-only+cert", { async: false }),
    msg("get_by_permission", "role ref permission", "role ref set", "read-only+cert", { async: false }),
    msg("get_permissions_name_label", "role ref self", "string set", "read-only+cert", { async: false }),
    msg("get_permissions", "role ref self", "role ref set", "read-only+cert", { async: false }),
  ],
});
