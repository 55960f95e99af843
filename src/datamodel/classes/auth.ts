import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("auth", {
  doc: "Queries of the external authentication service.",
  write: "pool-operator",
  accessors: false,
  fields: [
  ],
  messages: [
    msg("get_group_membership", "string subject_identifier", "string set", "read-only+cert", { async: false }),
    msg("get_subject_information_from_identifier", "string subject_identifier", "(string -> string) map", "read-only+cert", { async: false }),
    msg("get_subject_identifier", "string subject_name", "string", "read-only+cert", { async: false }),
  ],
});
